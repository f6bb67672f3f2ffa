//! The API thread's event loop: its own mio `Poll` with the listener, the connections (a slab),
//! the waker the relay's answers come with, and a tick for deadlines. No thread per request:
//! every socket is non-blocking and read only as far as the current request needs.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::calls::{Backend, CallId, ToApi};
use super::conn::{Conn, Phase};
use super::idempotency;
use crate::config::{Config, Secret};
use crate::metrics::ApiCounters;

/// The relay's answers have arrived (or a reload).
pub const WAKER: Token = Token(usize::MAX);
/// The API listener.
const LISTENER: Token = Token(usize::MAX - 1);

/// How long a connection that has made an authorized request may stay open between requests.
/// A backend's HTTP client keeps its pooled connections open for about this long (nginx 75 s,
/// Go 90 s); a connection that never showed the key gets `handshake_timeout` only.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// How long an answer that closes the connection waits to be read and for the peer's EOF.
const LINGER: Duration = Duration::from_secs(1);

/// At most one warning about failing accepts per this long.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// A call in flight: whose it is, and where its outcome goes.
pub(super) struct Waiter {
    pub conn: usize,
    pub serial: u64,
    pub slot: usize,
    /// A publish (counted when published), with its `Idempotency-Key` if it had one.
    pub publish: bool,
    pub idempotency_key: Option<String>,
}

/// The thread's state.
pub(super) struct Front {
    pub poll: Poll,
    pub listener: TcpListener,
    /// The address in the config the listener was bound for (a reload cannot move it).
    pub listen: SocketAddr,
    pub inbox: Receiver<ToApi>,
    pub backend: Backend,
    pub config: Arc<Config>,
    pub key: Secret,
    pub max_connections: usize,
    /// `[api]` was removed by a reload: every request is refused until a restart.
    pub disabled: bool,
    pub conns: Slab<Conn>,
    pub calls: HashMap<CallId, Waiter>,
    pub next_call: CallId,
    pub next_serial: u64,
    pub idempotency: idempotency::Cache,
    pub counters: Arc<ApiCounters>,
    /// When a failed accept was last reported.
    pub accept_warned: Option<Instant>,
}

impl Front {
    pub fn run(&mut self) -> io::Result<()> {
        self.poll
            .registry()
            .register(&mut self.listener, LISTENER, Interest::READABLE)?;
        let mut events = Events::with_capacity(256);
        let tick = |c: &Config| {
            (c.server.handshake_timeout / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        let mut next_tick = Instant::now() + tick(&self.config);
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.drain_inbox(now),
                    LISTENER => self.accept(now),
                    Token(key) => self.drive(key, now),
                }
            }
            if now >= next_tick {
                self.expire(now);
                // Readiness is edge-triggered: a connection left queued by a failed accept
                // (out of descriptors) is announced by no new edge.
                self.accept(now);
                next_tick = now + tick(&self.config);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors: the connection stays queued; the next tick retries.
                    if self
                        .accept_warned
                        .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY)
                    {
                        warn!("api: accept failed: {e}; retrying on every tick");
                        self.accept_warned = Some(now);
                    }
                    return;
                }
            };
            if self.conns.len() >= self.max_connections {
                self.counters.connection_refused();
                debug!(
                    "api: {peer}: {} connections open already; closing",
                    self.max_connections
                );
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.next_serial += 1;
            let deadline = now + self.config.server.handshake_timeout;
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let conn = entry.insert(Conn::new(stream, peer, self.next_serial, deadline));
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut conn.stream, Token(key), interest)
            {
                warn!("api: {peer}: cannot register: {e}");
                self.conns.remove(key);
                continue;
            }
            self.counters.set_connections_open(self.conns.len());
            self.drive(key, now);
        }
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Ok(msg) = self.inbox.try_recv() {
            match msg {
                ToApi::Done(id, outcome) => {
                    if let Some(key) = self.done(id, outcome, now) {
                        self.drive(key, now);
                    }
                }
                ToApi::Reload(config) => self.reload(config),
            }
        }
    }

    fn reload(&mut self, config: Arc<Config>) {
        match &config.api {
            Some(api) => {
                if api.listen != self.listen {
                    warn!(
                        "[api] listen changed to {}; the API listen address cannot change on reload: restart to apply",
                        api.listen
                    );
                }
                self.key = api.key.clone();
                self.max_connections = api.max_connections;
                self.disabled = false;
                info!("api: config reloaded");
            }
            None => {
                warn!("[api] was removed: API requests get 503 until a restart closes its port");
                self.disabled = true;
            }
        }
        self.config = config;
    }

    /// Deadlines: a request not complete in time gets 408; an idle connection, an answer
    /// nobody reads and a linger that ends are dropped.
    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| now >= c.deadline && !matches!(c.phase, Phase::Waiting(_)))
            .map(|(k, _)| k)
            .collect();
        for key in late {
            let c = &self.conns[key];
            match c.phase {
                Phase::Head if c.buf.is_empty() => self.drop_conn(key),
                Phase::Head | Phase::Body { .. } => {
                    debug!("api: {}: request timed out", c.peer);
                    let why = "request not complete within handshake_timeout";
                    self.refuse(key, 408, why, true, now);
                    self.drive(key, now);
                }
                _ => self.drop_conn(key),
            }
        }
    }

    /// Move a connection on as far as it goes without waiting.
    pub(super) fn drive(&mut self, key: usize, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            let progressed = match c.phase {
                Phase::Head => self.read_head(key, now),
                Phase::Body { .. } => self.read_body(key, now),
                Phase::Waiting(_) => false,
                Phase::Writing => self.write(key, now),
                Phase::Closing => {
                    if c.discard() {
                        self.drop_conn(key);
                    }
                    false
                }
            };
            if !progressed {
                return;
            }
        }
    }

    /// Write the answer; then the next request (true: go on), or shut and linger.
    fn write(&mut self, key: usize, now: Instant) -> bool {
        let c = &mut self.conns[key];
        match c.flush() {
            Ok(false) => false,
            Err(_) => {
                self.drop_conn(key);
                false
            }
            Ok(true) if c.close_after || c.eof => {
                c.shut();
                c.phase = Phase::Closing;
                c.deadline = now + LINGER;
                true
            }
            Ok(true) => {
                c.phase = Phase::Head;
                c.deadline = match c.buf.is_empty() {
                    true => now + KEEPALIVE_IDLE,
                    false => now + self.config.server.handshake_timeout,
                };
                true
            }
        }
    }

    pub(super) fn drop_conn(&mut self, key: usize) {
        // Dropping the socket closes it, which also takes it out of the poll. Calls in flight
        // for it find no connection when they come back.
        if self.conns.try_remove(key).is_some() {
            self.counters.set_connections_open(self.conns.len());
        }
    }
}
