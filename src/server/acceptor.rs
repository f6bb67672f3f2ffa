//! The acceptor thread: listens, reads each upgrade request without blocking under the handshake
//! deadline, answers plain HTTP and refusals itself, and hands admitted WebSocket connections to
//! the workers, round-robin. It alone admits connections, so the connection and room counts
//! ([`Admission`]) need no locks; workers report every closed connection back.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use std::path::PathBuf;

use super::bus::{Handoff, Mailbox, RoomSettings, ToAcceptor, ToWorker, WorkerConfig};
use super::conn::Timers;
use crate::auth::Rejection;
use crate::config::{AuthConfig, Config, IpNet, RoomAuth, RoomConfig};
use crate::http::{self, Parsed, Request, Status};
use crate::metrics::{self, AcceptorCounts, WorkerCounters};
use crate::relay::admission::{Admission, Refusal};

/// Wakes the acceptor when a worker reports.
pub const WAKER: Token = Token(usize::MAX);
/// SIGTERM or SIGINT arrived.
const SIGNAL: Token = Token(usize::MAX - 1);
/// SIGHUP arrived.
const RELOAD: Token = Token(usize::MAX - 2);
/// Listeners take tokens `0..LISTENER_END`; handshakes in progress the tokens after.
const LISTENER_END: usize = 1024;

/// Handshakes in progress at once. Each holds at most `max_header_size` bytes; past this many,
/// new connections are closed at once rather than letting half-open ones pile up memory.
const MAX_PENDING: usize = 16 * 1024;

/// The chat page served at `GET /` when `demo_page` is on: self-contained, no external assets.
const DEMO_PAGE: &str = include_str!("../demo/chat.html");

/// How long a plain HTTP answer waits to be read and for the client's EOF.
const ANSWER_LINGER: Duration = Duration::from_secs(1);

/// Per read of a request head: most heads fit in one read.
const READ_CHUNK: usize = 2048;

/// A TCP connection whose request is being read, or whose HTTP answer is being written.
struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    deadline: Instant,
    state: PendingState,
}

enum PendingState {
    Reading,
    /// An HTTP answer that ends the connection: write it, shut our side, wait for EOF.
    Answering {
        out: Vec<u8>,
        written: usize,
    },
}

/// What to do with a complete request.
enum Answer {
    Http(Vec<u8>),
    Upgrade(Box<Admitted>),
}

/// An admitted upgrade: everything a worker needs but the socket.
struct Admitted {
    peer: SocketAddr,
    ticket: crate::relay::admission::Ticket,
    path: Box<str>,
    settings: RoomSettings,
    response: Vec<u8>,
    early: Vec<u8>,
}

/// What the acceptor needs to start.
pub struct AcceptorSetup {
    pub poll: Poll,
    pub listeners: Vec<TcpListener>,
    pub inbox: Receiver<ToAcceptor>,
    pub workers: Vec<Mailbox<ToWorker>>,
    pub counters: Vec<Arc<WorkerCounters>>,
    pub signals: UnixStream,
    pub reloads: UnixStream,
    pub config: Config,
    pub source: Option<ConfigSource>,
    pub notify: Option<crate::notify::Notifier>,
}

/// Where the running config came from, for SIGHUP.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
    /// The file's own `listen` at start (before `--listen`), to notice an edit on reload.
    pub listen: Vec<SocketAddr>,
}

struct Acceptor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    inbox: Receiver<ToAcceptor>,
    workers: Vec<Mailbox<ToWorker>>,
    worker_counters: Vec<Arc<WorkerCounters>>,
    signals: UnixStream,
    reloads: UnixStream,
    config: Config,
    source: Option<ConfigSource>,
    notify: Option<crate::notify::Notifier>,
    pending: Slab<Pending>,
    admission: Admission,
    counts: AcceptorCounts,
    next_worker: usize,
}

/// Run the acceptor until a shutdown completes.
pub fn run(setup: AcceptorSetup) -> io::Result<()> {
    let server = &setup.config.server;
    let admission = Admission::new(server.max_connections, server.max_connections_per_ip);
    let mut a = Acceptor {
        poll: setup.poll,
        listeners: setup.listeners,
        inbox: setup.inbox,
        workers: setup.workers,
        worker_counters: setup.counters,
        signals: setup.signals,
        reloads: setup.reloads,
        config: setup.config,
        source: setup.source,
        notify: setup.notify,
        pending: Slab::new(),
        admission,
        counts: AcceptorCounts::default(),
        next_worker: 0,
    };
    for (i, l) in a.listeners.iter_mut().enumerate() {
        a.poll
            .registry()
            .register(l, Token(i), Interest::READABLE)?;
    }
    a.poll
        .registry()
        .register(&mut a.signals, SIGNAL, Interest::READABLE)?;
    a.poll
        .registry()
        .register(&mut a.reloads, RELOAD, Interest::READABLE)?;
    a.run()
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Acceptor {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let tick = |c: &Config| {
            (c.server.handshake_timeout / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        let mut next_tick = Instant::now() + tick(&self.config);
        let watchdog = self.notify.as_ref().and_then(|n| n.watchdog_interval());
        let mut next_ping = Instant::now();
        loop {
            let wake = match watchdog {
                Some(_) => next_tick.min(next_ping),
                None => next_tick,
            };
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {
                        self.drain_inbox();
                    }
                    SIGNAL => return self.shutdown(),
                    RELOAD => self.reload(),
                    Token(i) if i < LISTENER_END => self.accept(i, now),
                    Token(t) => self.on_pending(t - LISTENER_END, now),
                }
            }
            if let (Some(every), Some(n)) = (watchdog, &self.notify)
                && now >= next_ping
            {
                n.watchdog();
                next_ping = now + every;
            }
            if now >= next_tick {
                self.expire(now);
                next_tick = now + tick(&self.config);
            }
        }
    }

    fn drain_inbox(&mut self) -> usize {
        let mut stopped = 0;
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ToAcceptor::Closed(tickets) => {
                    for t in tickets {
                        self.admission.release(t);
                    }
                }
                ToAcceptor::Stopped => stopped += 1,
            }
        }
        stopped
    }

    fn accept(&mut self, listener: usize, now: Instant) {
        loop {
            let (stream, peer) = match self.listeners[listener].accept() {
                Ok(s) => s,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: the next turn of the loop retries.
                    warn!("accept failed: {e}");
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING {
                warn!("{peer}: {MAX_PENDING} handshakes in progress already; closing");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let entry = self.pending.vacant_entry();
            let mut p = Pending {
                stream,
                peer,
                buf: Vec::new(),
                deadline: now + self.config.server.handshake_timeout,
                state: PendingState::Reading,
            };
            let token = Token(LISTENER_END + entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut p.stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("{peer}: cannot register: {e}");
                continue;
            }
            entry.insert(p);
            // No readiness check here: the registration reports what is already readable.
        }
    }

    fn on_pending(&mut self, key: usize, now: Instant) {
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        match p.state {
            PendingState::Reading => self.read_request(key, now),
            PendingState::Answering { .. } => self.write_answer(key),
        }
    }

    fn read_request(&mut self, key: usize, now: Instant) {
        let max = self.config.server.max_header_size;
        let p = &mut self.pending[key];
        loop {
            let len = p.buf.len();
            // Read a little past the limit so an oversized head is recognised as such.
            let want = (max + 1).saturating_sub(len).clamp(1, READ_CHUNK);
            p.buf.resize(len + want, 0);
            match p.stream.read(&mut p.buf[len..]) {
                Ok(0) => {
                    p.buf.truncate(len);
                    self.drop_pending(key);
                    return;
                }
                Ok(n) => p.buf.truncate(len + n),
                Err(e) => {
                    p.buf.truncate(len);
                    if would_block(&e) {
                        break;
                    }
                    if e.kind() != io::ErrorKind::Interrupted {
                        self.drop_pending(key);
                        return;
                    }
                }
            }
            match http::parse(&p.buf, max) {
                Parsed::Partial if p.buf.len() <= max => continue,
                Parsed::Partial | Parsed::TooLarge => {
                    return self.answer_http(
                        key,
                        Status::HeadersTooLarge,
                        "request head too large\n",
                    );
                }
                Parsed::Invalid => {
                    return self.answer_http(key, Status::BadRequest, "malformed request\n");
                }
                Parsed::Complete { request, len } => {
                    let early = p.buf.split_off(len);
                    let peer = p.peer;
                    return match self.answer(&request, peer, early) {
                        Answer::Http(out) => self.answer_with(key, out, now),
                        Answer::Upgrade(h) => self.hand_off(key, *h),
                    };
                }
            }
        }
    }

    /// Decide what a complete request gets.
    fn answer(&mut self, req: &Request, peer: SocketAddr, early: Vec<u8>) -> Answer {
        let refuse = |counts: &mut AcceptorCounts, status: Status, why: &str| {
            counts.refused(status.code());
            debug!(
                "{peer} {} {}: {} {why}",
                req.method,
                req.path,
                status.code()
            );
            Answer::Http(http::refusal(status, &format!("{why}\n")))
        };
        if req.method == "GET" && req.path == "/healthz" {
            return Answer::Http(http::response(Status::Ok, &[], "ok\n"));
        }
        if req.method == "GET" && req.path == "/metrics" {
            self.counts.connections_open = self.admission.open() as u64;
            self.counts.rooms_open = self.admission.rooms() as u64;
            // Not counting this request, which is still among them.
            self.counts.handshakes_pending = self.pending.len().saturating_sub(1) as u64;
            let body = metrics::render(&self.counts, &self.worker_counters);
            return Answer::Http(http::response_typed(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            ));
        }
        if req.method == "GET"
            && req.path == "/"
            && !req.upgrade_websocket
            && self.config.server.demo_page
        {
            return Answer::Http(http::response_typed(
                Status::Ok,
                "text/html; charset=utf-8",
                DEMO_PAGE.as_bytes(),
            ));
        }
        let Some(room) = self.config.route(&req.path) else {
            return refuse(&mut self.counts, Status::NotFound, "no room at this path");
        };
        if req.method != "GET" {
            return refuse(
                &mut self.counts,
                Status::MethodNotAllowed,
                "use GET to join a room",
            );
        }
        if !req.upgrade_websocket {
            return refuse(
                &mut self.counts,
                Status::UpgradeRequired,
                "this is a WebSocket room: connect with a WebSocket client",
            );
        }
        match req.version.as_deref() {
            Some("13") => {}
            Some(_) => {
                return refuse(
                    &mut self.counts,
                    Status::UpgradeRequired,
                    "unsupported Sec-WebSocket-Version",
                );
            }
            None => {
                return refuse(
                    &mut self.counts,
                    Status::BadRequest,
                    "missing Sec-WebSocket-Version",
                );
            }
        }
        let key = match &req.key {
            Some(k) if http::is_valid_key(k) => k,
            _ => {
                return refuse(
                    &mut self.counts,
                    Status::BadRequest,
                    "missing or invalid Sec-WebSocket-Key",
                );
            }
        };
        if !req.http11 || !req.connection_upgrade || req.malformed {
            return refuse(
                &mut self.counts,
                Status::BadRequest,
                "malformed upgrade request",
            );
        }
        if let Some(origin) = &req.origin
            && !room.allowed_origins.is_empty()
            && !room.allowed_origins.iter().any(|o| o == origin)
        {
            return refuse(&mut self.counts, Status::Forbidden, "origin not allowed");
        }
        let may_publish = match authorize(req, room, self.config.auth.as_ref()) {
            Ok(may_publish) => may_publish,
            Err(r) if r.is_forbidden() => {
                return refuse(&mut self.counts, Status::Forbidden, r.reason());
            }
            Err(r) => return refuse(&mut self.counts, Status::Unauthorized, r.reason()),
        };
        let ip = client_ip(
            peer.ip(),
            req.forwarded_for.as_deref(),
            &self.config.server.trusted_proxies,
        );
        let ticket = match self.admission.admit(&req.path, room.max_members, ip) {
            Ok(t) => t,
            Err(r) => {
                let (status, why) = match r {
                    Refusal::ServerFull => (Status::ServiceUnavailable, "server full"),
                    Refusal::RoomFull => (Status::ServiceUnavailable, "room full"),
                    Refusal::TooManyFromAddress => (
                        Status::TooManyRequests,
                        "too many connections from this address",
                    ),
                };
                info!("{ip} {}: refused: {why}", req.path);
                return refuse(&mut self.counts, status, why);
            }
        };
        let protocol = http::choose_protocol(&req.protocols, &room.subprotocols);
        self.counts.accepted += 1;
        Answer::Upgrade(Box::new(Admitted {
            peer: SocketAddr::new(ip, peer.port()),
            ticket,
            path: req.path.as_str().into(),
            settings: RoomSettings {
                echo: room.echo,
                max_message_size: room.max_message_size,
                max_messages_per_second: room.max_messages_per_second,
                may_publish,
                authenticated: room.auth == crate::config::RoomAuth::Jwt,
            },
            response: http::switching_protocols(key, protocol),
            early,
        }))
    }

    fn hand_off(&mut self, key: usize, a: Admitted) {
        let mut p = self.pending.remove(key);
        let _ = self.poll.registry().deregister(&mut p.stream);
        let Admitted {
            peer,
            ticket,
            path,
            settings,
            response,
            early,
        } = a;
        let h = Handoff {
            stream: p.stream,
            peer,
            ticket,
            room: ticket.room,
            path,
            settings,
            response,
            early,
        };
        // A small room's members share the worker that sequences it: its messages never cross
        // threads. Past `colocate_members`, members are spread so a big room fans out on every core.
        let n = self.workers.len();
        let w = if self.admission.members_of(ticket.room) <= self.config.server.colocate_members {
            ticket.room.owner(n).0 as usize
        } else {
            self.next_worker = self.next_worker.wrapping_add(1);
            self.next_worker % n
        };
        if !self.workers[w].send(ToWorker::Conn(Box::new(h))) {
            self.admission.release(ticket);
        }
    }

    fn answer_http(&mut self, key: usize, status: Status, body: &str) {
        self.counts.refused(status.code());
        debug!(
            "{}: {} {}",
            self.pending[key].peer,
            status.code(),
            body.trim_end()
        );
        let now = Instant::now();
        self.answer_with(key, http::refusal(status, body), now);
    }

    fn answer_with(&mut self, key: usize, out: Vec<u8>, now: Instant) {
        let p = &mut self.pending[key];
        p.buf = Vec::new();
        p.state = PendingState::Answering { out, written: 0 };
        // The answer and the wait for the client's EOF get a short deadline of their own: a client
        // that reads nothing (a timed-out one, say) must not hold its slot much longer.
        p.deadline = now + self.config.server.handshake_timeout.min(ANSWER_LINGER);
        self.write_answer(key);
    }

    fn write_answer(&mut self, key: usize) {
        let p = &mut self.pending[key];
        let PendingState::Answering { out, written } = &mut p.state else {
            return;
        };
        while *written < out.len() {
            match p.stream.write(&out[*written..]) {
                Ok(0) => return self.drop_pending(key),
                Ok(n) => *written += n,
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_pending(key),
            }
        }
        if !out.is_empty() {
            // Shut our side and drain theirs until EOF, so that unread request bytes do not turn
            // the close into a reset that could destroy the answer in flight.
            let _ = p.stream.shutdown(Shutdown::Write);
            *out = Vec::new();
        }
        let mut sink = [0u8; 512];
        loop {
            match p.stream.read(&mut sink) {
                Ok(0) => return self.drop_pending(key),
                Ok(_) => {}
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.drop_pending(key),
            }
        }
    }

    fn drop_pending(&mut self, key: usize) {
        let mut p = self.pending.remove(key);
        let _ = self.poll.registry().deregister(&mut p.stream);
    }

    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.deadline)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            match self.pending[key].state {
                PendingState::Reading => {
                    debug!("{}: handshake timed out", self.pending[key].peer);
                    self.answer_http(key, Status::RequestTimeout, "handshake timed out\n");
                }
                PendingState::Answering { .. } => self.drop_pending(key),
            }
        }
    }

    /// SIGHUP: read the file again and apply it, or keep the running config if it is broken.
    fn reload(&mut self) {
        if let Some(n) = &self.notify {
            n.reloading();
        }
        self.apply_reload();
        if let Some(n) = &self.notify {
            n.ready();
        }
    }

    fn apply_reload(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.reloads.read(&mut buf), Ok(n) if n > 0) {}
        let Some(source) = &self.source else {
            warn!("SIGHUP: running on the built-in config (no --config); nothing to reload");
            return;
        };
        let mut new = match Config::load(&source.path) {
            Ok(c) => c,
            Err(e) => {
                self.counts.reloads_failed += 1;
                warn!("reload failed, the running config stays in force: {e}");
                return;
            }
        };
        if new.server.listen != source.listen {
            warn!(
                "{}: listen changed; the listen addresses cannot change on reload: restart to apply",
                source.path.display()
            );
        }
        if new.server.workers != self.config.server.workers {
            warn!(
                "{}: workers changed; the worker count cannot change on reload: restart to apply",
                source.path.display()
            );
        }
        new.server.listen = self.config.server.listen.clone();
        new.server.workers = self.config.server.workers;
        let s = &new.server;
        self.admission
            .set_limits(s.max_connections, s.max_connections_per_ip);
        let wc = Arc::new(WorkerConfig {
            timers: Timers {
                ping_interval: s.ping_interval,
                idle_timeout: s.idle_timeout,
                close_timeout: s.close_timeout,
            },
            send_queue_limit: s.send_queue_limit,
            config: new.clone(),
        });
        for w in &self.workers {
            w.send(ToWorker::Reload(Arc::clone(&wc)));
        }
        info!(
            "config reloaded from {}: {} rooms",
            source.path.display(),
            new.rooms.len()
        );
        self.config = new;
        self.counts.reloads_ok += 1;
    }

    /// Read the signal pipe empty; one byte per signal delivered.
    fn drain_signals(&mut self) -> usize {
        let mut buf = [0u8; 64];
        let mut n = 0;
        while let Ok(k @ 1..) = self.signals.read(&mut buf) {
            n += k;
        }
        n
    }

    /// Stop accepting, tell every worker to close its clients with 1001, and wait for them until
    /// `shutdown_grace` has passed.
    fn shutdown(&mut self) -> io::Result<()> {
        if let Some(n) = &self.notify {
            n.stopping();
        }
        let grace = self.config.server.shutdown_grace;
        info!(
            "shutting down: closing {} connections (grace {grace:?})",
            self.admission.open()
        );
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        let keys: Vec<usize> = self.pending.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drop_pending(key);
        }
        let deadline = Instant::now() + grace;
        for w in &self.workers {
            w.send(ToWorker::Shutdown { deadline });
        }
        if self.drain_signals() > 1 {
            warn!("second signal: exiting without waiting for clients");
            std::process::exit(1);
        }
        // Workers give up on their clients at the deadline; the slack lets them report.
        let hard_stop = deadline + Duration::from_secs(1);
        let mut stopped = 0;
        let mut events = Events::with_capacity(64);
        while stopped < self.workers.len() {
            let left = hard_stop.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(
                    "{} workers did not stop in time",
                    self.workers.len() - stopped
                );
                break;
            }
            match self.poll.poll(&mut events, Some(left)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => stopped += self.drain_inbox(),
                    SIGNAL => {
                        warn!("second signal: exiting without waiting for clients");
                        std::process::exit(1);
                    }
                    _ => {}
                }
            }
        }
        info!("shutdown complete");
        Ok(())
    }
}

/// Whether the client may join `room` (`Err`: why not) and, if so, publish there. A room with
/// `auth = "jwt"` needs a token, in the query or an `Authorization: Bearer` header, that opens
/// the request path; its `publish` claim is the answer. Checked before admission, so a client
/// without a valid token never holds a slot. The token itself is never logged.
fn authorize(
    req: &Request,
    room: &RoomConfig,
    auth: Option<&AuthConfig>,
) -> Result<bool, Rejection> {
    let key = match (room.auth, auth) {
        (RoomAuth::None, _) => return Ok(true),
        (RoomAuth::Jwt, Some(auth)) => auth.jwt_secret.expose(),
        // The config refuses a jwt room without a key; were one to slip through, no token opens it.
        (RoomAuth::Jwt, None) => return Err(Rejection::BadSignature),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let query = req.query.as_deref();
    let claims = crate::auth::admit(query, req.authorization.as_deref(), key, now, &req.path)?;
    Ok(claims.publish)
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// rightmost `X-Forwarded-For` address that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(list) = forwarded_for else {
        return peer;
    };
    let mut last = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(ip) => last = ip,
            Ok(ip) => return ip,
            Err(_) => return last,
        }
    }
    last
}
