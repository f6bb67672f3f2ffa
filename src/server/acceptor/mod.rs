//! The acceptor thread: listens, reads each upgrade request without blocking under the handshake
//! deadline, answers plain HTTP and refusals itself, and hands admitted WebSocket connections to
//! the workers (a small room to its owner worker, else round-robin). It alone admits
//! connections, so the connection and room counts ([`Admission`]) need no locks; workers report
//! every closed connection back. `gate` decides what a complete request gets; `control` answers
//! SIGHUP and SIGTERM.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
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

mod api;
mod control;
mod gate;

pub use gate::client_ip;

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
const DEMO_PAGE: &str = include_str!("../../demo/chat.html");

/// The browser client for `wsrelay.v1` the demo page imports, served at `GET /wsrelay.js` when
/// `demo_page` is on.
const DEMO_CLIENT: &str = include_str!("../../demo/wsrelay.js");

/// How long a plain HTTP answer waits to be read and for the client's EOF.
const ANSWER_LINGER: Duration = Duration::from_secs(1);

/// Per read of a request head: most heads fit in one read.
const READ_CHUNK: usize = 2048;

/// A worker that has not completed a loop pass for this long is wedged: `/healthz` answers 503
/// and the systemd watchdog is no longer fed. An idle worker passes at least once a second.
const STALL: Duration = Duration::from_secs(5);

/// After `accept` fails for want of file descriptors (or memory), when to try again: readiness
/// is edge-triggered, so the connections already queued are not announced again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// At most one warning about failing accepts per this long (with the count since the last).
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// `TCP_DEFER_ACCEPT` on the listeners, in seconds: the kernel hands us a connection only once
/// its first bytes (the request) have arrived, so accepting it costs no wake-up, no empty read
/// and no register/deregister pair in the acceptor's poll. A connection that sends nothing is
/// handed over after about this long anyway (the first SYN-ACK retransmission, 1 s); its
/// handshake deadline is then shortened by as much (see [`Acceptor::accept`]).
const DEFER_ACCEPT_SECS: libc::c_int = 1;
const DEFER_ACCEPT: Duration = Duration::from_secs(DEFER_ACCEPT_SECS as u64);

/// A TCP connection whose request is being read, or whose HTTP answer is being written.
struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    deadline: Instant,
    state: PendingState,
    /// In the acceptor's poll (only once a first read found the request incomplete).
    registered: bool,
}

enum PendingState {
    Reading,
    /// An HTTP answer that ends the connection: write it, shut our side, wait for EOF.
    Answering {
        out: Vec<u8>,
        written: usize,
    },
}

/// What a [`Acceptor::read_request`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// The socket had nothing yet.
    Nothing,
    /// Part of the head is in; the rest is awaited.
    Partial,
    /// The request was answered, handed off, or the connection dropped.
    Done,
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
    /// The API thread's mailbox, when `[api]` is configured: it is told of reloads.
    pub api: Option<Mailbox<crate::server::api::ToApi>>,
    /// Per listener, what [`tune`] set on it.
    pub tuned: Vec<Tuned>,
    /// The Redis shards' states, with `[cluster]`: `/healthz` and `/metrics` report them.
    pub cluster: Option<crate::server::cluster::ClusterHealth>,
    /// With `[cluster]`: answers the API's room list, room info and presence over every node.
    pub registry: Option<crate::server::cluster::Registry>,
    /// The API thread's counters, for `/metrics`, when `[api]` is configured.
    pub api_counters: Option<Arc<crate::metrics::ApiCounters>>,
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
    /// Workers handed a connection this pass, to be woken once at its end.
    to_wake: Vec<bool>,
    /// Accepting failed for want of resources: try again at this moment.
    accept_retry: Option<Instant>,
    /// Failed accepts not yet reported, and when the last report was.
    accept_failures: u64,
    accept_warned: Option<Instant>,
    /// Users banned from rooms through the API.
    bans: api::Bans,
    api: Option<Mailbox<crate::server::api::ToApi>>,
    /// Where request heads are read: a head that comes whole is parsed in place.
    scratch: Box<[u8]>,
    /// Per listener: its sockets inherit `TCP_NODELAY` (set once on the listener) and its
    /// connections wait in the kernel until they have sent something (`TCP_DEFER_ACCEPT`).
    tuned: Vec<Tuned>,
    cluster: Option<crate::server::cluster::ClusterHealth>,
    registry: Option<crate::server::cluster::Registry>,
}

/// What a listener's options spare each of its connections ([`tune`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuned {
    nodelay: bool,
    defer: bool,
}

/// Set an integer TCP option on a socket.
fn set_tcp_option(fd: &impl AsRawFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid descriptor and a pointer to an int that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tune a listener for cheap accepts: accepted sockets inherit `TCP_NODELAY` from it (no
/// `setsockopt` per connection), and `TCP_DEFER_ACCEPT` keeps a connection in the kernel until
/// its request has arrived. Either may fail (not TCP, an old kernel): then each connection gets
/// `TCP_NODELAY` itself, or waits in our poll for its request, as before. Call it before the
/// listener is announced: a connection made before it is not deferred, and if silent it would
/// be taken for one that was (its deadline shortened).
pub fn tune(listener: &TcpListener) -> Tuned {
    Tuned {
        nodelay: set_tcp_option(listener, libc::TCP_NODELAY, 1).is_ok(),
        defer: set_tcp_option(listener, libc::TCP_DEFER_ACCEPT, DEFER_ACCEPT_SECS).is_ok(),
    }
}

/// Run the acceptor until a shutdown completes.
pub fn run(setup: AcceptorSetup) -> io::Result<()> {
    let server = &setup.config.server;
    let admission = Admission::new(server.max_connections, server.max_connections_per_ip);
    let to_wake = vec![false; setup.workers.len()];
    assert_eq!(
        setup.tuned.len(),
        setup.listeners.len(),
        "one Tuned per listener"
    );
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
        counts: AcceptorCounts {
            api: setup.api_counters.clone(),
            ..AcceptorCounts::default()
        },
        next_worker: 0,
        to_wake,
        accept_retry: None,
        accept_failures: 0,
        accept_warned: None,
        bans: api::Bans::default(),
        api: setup.api,
        tuned: setup.tuned,
        scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        cluster: setup.cluster,
        registry: setup.registry,
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
            let mut wake = match watchdog {
                Some(_) => next_tick.min(next_ping),
                None => next_tick,
            };
            if let Some(retry) = self.accept_retry {
                wake = wake.min(retry);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            // Workers hand back tickets without waking us (a wake-up per worker pass would cost
            // a context switch per handshake or so): whatever woke us, take them first, so
            // every admission and every /metrics answer counts what has closed.
            self.drain_inbox();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    SIGNAL => return self.shutdown(),
                    RELOAD => self.reload(),
                    Token(i) if i < LISTENER_END => self.accept(i, now),
                    Token(t) => self.on_pending(t - LISTENER_END, now),
                }
            }
            if self.accept_retry.is_some_and(|t| now >= t) {
                self.accept_retry = None;
                for i in 0..self.listeners.len() {
                    self.accept(i, now);
                }
            }
            for (w, wake) in self.to_wake.iter_mut().enumerate() {
                if std::mem::take(wake) {
                    self.workers[w].wake();
                }
            }
            if let (Some(every), Some(n)) = (watchdog, &self.notify)
                && now >= next_ping
            {
                // Fed only while every worker completes its loop passes: a wedged worker
                // lets systemd's watchdog restart the daemon.
                match self.stalled_worker() {
                    None => n.watchdog(),
                    Some(w) => warn!(
                        "worker w{w} has not completed a loop pass for {STALL:?}; not feeding the watchdog"
                    ),
                }
                next_ping = now + every;
            }
            if now >= next_tick {
                self.expire(now);
                next_tick = now + tick(&self.config);
            }
        }
    }

    /// The first worker that has not completed a loop pass within [`STALL`].
    fn stalled_worker(&self) -> Option<usize> {
        self.worker_counters
            .iter()
            .position(|c| c.since_last_pass() > STALL.as_millis() as u64)
    }

    fn drain_inbox(&mut self) -> usize {
        let mut stopped = 0;
        let n = self.workers.len();
        let mut closed: Vec<Vec<crate::relay::RoomId>> = vec![Vec::new(); n];
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ToAcceptor::Closed(tickets) => {
                    let config = &self.config;
                    // A room that keeps messages outlives its members, until its owner finds
                    // it idle.
                    let lingers =
                        |path: &str| config.route(path).is_some_and(|r| r.history_size > 0);
                    for t in tickets {
                        if let Some(room) = self.admission.release(t, lingers) {
                            closed[room.owner(n).0 as usize].push(room);
                        }
                    }
                }
                ToAcceptor::Idle(rooms) => {
                    for room in rooms {
                        if self.admission.expire(room) {
                            closed[room.owner(n).0 as usize].push(room);
                        }
                    }
                }
                ToAcceptor::Stopped => stopped += 1,
                ToAcceptor::Api { id, call, reply } => self.api_call(id, call, reply, false),
                ToAcceptor::Local { id, call, reply } => self.api_call(id, call, reply, true),
            }
        }
        // The owner forgets a room only when it is over: after every member's ticket is back,
        // hence after every Join and Leave for it has been sent.
        for (w, rooms) in closed.into_iter().enumerate() {
            if !rooms.is_empty() {
                self.workers[w].send(ToWorker::RoomsClosed(rooms));
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
                    // Out of file descriptors (EMFILE, ENFILE) or memory: the connections stay
                    // queued in the kernel, and no new edge will announce them; retry on a timer.
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    self.accept_failures += 1;
                    if self
                        .accept_warned
                        .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY)
                    {
                        warn!(
                            "accept failed {} times: {e}; retrying every {ACCEPT_RETRY:?} (raise LimitNOFILE or lower max_connections)",
                            self.accept_failures
                        );
                        self.accept_failures = 0;
                        self.accept_warned = Some(now);
                    }
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING {
                warn!("{peer}: {MAX_PENDING} handshakes in progress already; closing");
                continue;
            }
            let tuned = self.tuned[listener];
            if !tuned.nodelay {
                let _ = stream.set_nodelay(true);
            }
            let key = self.pending.insert(Pending {
                stream,
                peer,
                buf: Vec::new(),
                deadline: now + self.config.server.handshake_timeout,
                state: PendingState::Reading,
                registered: false,
            });
            // The request has usually arrived with the connection (always, with
            // `TCP_DEFER_ACCEPT`, unless the client sent nothing): read it at once, and take the
            // connection into the poll only if it must wait (no register/deregister pair for a
            // connection that is answered or handed off right away). Registration reports what
            // became readable in between, so nothing is missed.
            if self.read_request(key, now) == Got::Nothing && tuned.defer {
                // Deferred for DEFER_ACCEPT already: the deadline runs from the connect, about
                // that long ago (a quarter of the timeout at least is left).
                let timeout = self.config.server.handshake_timeout;
                let left = timeout.saturating_sub(DEFER_ACCEPT).max(timeout / 4);
                self.pending[key].deadline = now + left;
            }
            if let Some(p) = self.pending.get_mut(key) {
                let token = Token(LISTENER_END + key);
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut p.stream, token, interest)
                {
                    warn!("{peer}: cannot register: {e}");
                    self.drop_pending(key);
                    continue;
                }
                p.registered = true;
            }
        }
    }

    fn on_pending(&mut self, key: usize, now: Instant) {
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        match p.state {
            PendingState::Reading => {
                self.read_request(key, now);
            }
            PendingState::Answering { .. } => self.write_answer(key),
        }
    }

    /// Read what the socket has of the request head; answer or hand off once it is complete.
    fn read_request(&mut self, key: usize, now: Instant) -> Got {
        let max = self.config.server.max_header_size;
        let p = &mut self.pending[key];
        let mut got = Got::Nothing;
        loop {
            // Read a little past the limit so an oversized head is recognised as such.
            let want = (max + 1).saturating_sub(p.buf.len()).clamp(1, READ_CHUNK);
            let n = match p.stream.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    self.drop_pending(key);
                    return Got::Done;
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_pending(key);
                    return Got::Done;
                }
            };
            got = Got::Partial;
            // A head usually comes in one read: it is parsed where it landed, and only a head
            // still incomplete is kept (exactly its bytes: no zero-filled 2 KiB per connection).
            let fresh = p.buf.is_empty();
            let head = if fresh {
                &self.scratch[..n]
            } else {
                p.buf.extend_from_slice(&self.scratch[..n]);
                &p.buf[..]
            };
            match http::parse(head, max) {
                Parsed::Partial if head.len() <= max => {
                    if fresh {
                        p.buf.extend_from_slice(&self.scratch[..n]);
                    }
                    continue;
                }
                Parsed::Partial | Parsed::TooLarge => {
                    self.answer_http(key, Status::HeadersTooLarge, "request head too large\n");
                }
                Parsed::Invalid => {
                    self.answer_http(key, Status::BadRequest, "malformed request\n");
                }
                Parsed::Complete { request, len } => {
                    let early = head[len..].to_vec();
                    let peer = p.peer;
                    match self.answer(&request, peer, early) {
                        Answer::Http(out) => self.answer_with(key, out, now),
                        Answer::Upgrade(h) => self.hand_off(key, *h),
                    }
                }
            }
            return Got::Done;
        }
    }

    fn hand_off(&mut self, key: usize, a: Admitted) {
        let mut p = self.pending.remove(key);
        if p.registered {
            // The socket lives on in a worker's poll: it must leave this one.
            let _ = self.poll.registry().deregister(&mut p.stream);
        }
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
        // Woken once at the end of the pass, however many connections it got.
        if self.workers[w].push(ToWorker::Conn(Box::new(h))) {
            self.to_wake[w] = true;
        } else {
            // The worker is gone (shutting down): the room's owner is going with it.
            let _ = self.admission.release(ticket, |_| false);
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

    /// Dropping the socket closes it, which also takes it out of the poll.
    fn drop_pending(&mut self, key: usize) {
        self.pending.remove(key);
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
}
