//! The Redis thread: two connections to Redis on one mio `Poll` — `cmd` for the scripts
//! (pipelined: every message is written at once, answers are matched in order) and `sub` for the
//! subscriptions — plus the waker the workers ring.
//!
//! Why our own client and not the `redis` crate: the crate's synchronous API blocks on each
//! reply (a pipeline is one blocking round trip), and its pub/sub connection blocks in `recv`, so
//! we would need two threads, read timeouts to look at the workers' channel, and its own
//! reconnection rules around them. What we need of RESP2 is about 150 lines (`resp`, unit
//! tested), and on mio the link has the same shape as every other thread here: non-blocking,
//! edge-triggered, no locks, our bounds on every buffer, our backoff and probe timers, and
//! nothing hidden that reconnects or retries behind our back.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod asks;
mod subs;

use crossbeam_channel::Receiver;
use log::warn;
use mio::{Events, Poll, Token};

use super::envelope::{Parsed, splitmix64};
use super::resp;
use super::scripts::PUBLISH;
use super::sock::Sock;
use super::{ClusterState, FromCluster, Sender, ToCluster};
use crate::config::ClusterConfig;
use crate::deflate::Compressor;
use crate::metrics::Tally;
use crate::relay::RoomId;
use crate::server::api::work::Reply;
use crate::server::bus::{Frame, Mailbox, MemberId, ToWorker};
use crate::server::flow::{ConnFlow, WorkerFlow};
use crate::server::worker::encode::encode;

pub(super) const WAKER: Token = Token(0);
/// The member id an API message is published as (see `worker::api`): never a connection's.
const NOBODY: MemberId = MemberId {
    key: u32::MAX,
    generation: 0,
};
const CMD: Token = Token(1);
const SUB: Token = Token(2);

/// The first wait before making the link again; doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait: a Redis back after a restart is found within this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A `PING` goes out this often when no answer is awaited, so a Redis that stopped answering
/// (SIGSTOP, a hung host) is noticed even without traffic.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// An answer awaited for longer than this means Redis is not answering: the link is dropped
/// and made again. Scripts take microseconds; seconds is a Redis that is stopped or swamped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages a room holds while it waits for its epoch and number (a few round trips' worth);
/// past it they are dropped (the hub would drop most of them anyway as already handed out).
const MAX_WAITING: usize = 100_000;

/// What a presence event published on a room's channel starts with (a message starts with its
/// epoch: hex digits).
const PRESENCE: &str = "p";

/// Bytes of frames made here (messages from the subscriptions, messages read from streams)
/// that the workers have not let go of yet. Past it the subscriptions are not read: Redis then
/// holds what comes, and past its output-buffer limit for pub/sub clients it cuts the link,
/// which is made again and the gaps filled from the streams.
const FROM_REDIS_LIMIT: usize = 16 << 20;

/// An answer awaited on `cmd`, in the order the commands went out.
enum Pending {
    Ping,
    /// A presence event's `PUBLISH`.
    Shared,
    /// `CLIENT SETNAME`.
    Named,
    /// `SCRIPT LOAD` of [`PUBLISH`]: its SHA1, for `EVALSHA` (a message then carries its bytes
    /// and keys, not the script's text).
    Load,
    /// The frame is held for its publisher's credit; an API sender waits for the number.
    Publish {
        path: Arc<str>,
        sender: Sender,
        #[allow(dead_code)]
        frame: Arc<Frame>,
    },
    Attach {
        channel: Vec<u8>,
        room: RoomId,
    },
    /// A `Range` for the owner of `room`.
    Range {
        room: RoomId,
        req: u64,
        newest_first: bool,
    },
    /// An API history page.
    History {
        path: Arc<str>,
        since: Option<u64>,
        newest_first: bool,
        reply: Reply,
    },
}

/// Both connections, while they live.
struct Conns {
    cmd: Sock,
    sub: Sock,
    pending: VecDeque<(Pending, Instant)>,
    /// Redis answered the first `PING` (after the script was loaded).
    ready: bool,
    /// The SHA1 of [`PUBLISH`] in Redis's script cache.
    publish_sha: Vec<u8>,
    last_sent: Instant,
    /// A read stopped at its budget: read `cmd`, `sub` again next pass.
    again: [bool; 2],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoomState {
    /// SUBSCRIBE sent (or to be sent when the link is made).
    Subscribing,
    /// Subscribed; the attach script sent.
    Attaching,
    Attached,
}

struct Room {
    id: RoomId,
    keep: crate::relay::history::Keep,
    state: RoomState,
    /// Messages that came before the room's epoch and number did.
    waiting: Vec<FromCluster>,
}

pub(super) struct Redis {
    name: String,
    url: String,
    host: (String, u16),
    prefix: String,
    poll: Poll,
    inbox: Receiver<Vec<ToCluster>>,
    workers: Vec<Mailbox<ToWorker>>,
    out: Vec<Vec<FromCluster>>,
    state: Arc<ClusterState>,
    /// Tells this node's messages from others' (for `echo = false`): random per start.
    node: u64,
    rng: u64,
    conns: Option<Conns>,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Failures since the link was last up (the first is logged at warn, the rest at debug).
    failures: u32,
    rooms: HashMap<Vec<u8>, Room>,
    channels: HashMap<RoomId, Vec<u8>>,
    /// Credit for the frames made here ([`FROM_REDIS_LIMIT`]); its worker side wakes this
    /// thread when credit comes back.
    flow: Arc<ConnFlow>,
    flow_limit: Arc<WorkerFlow>,
    /// The subscriptions have something unread (left while over the limit).
    sub_owed: bool,
    /// For the messages of rooms that compress; deflate counts are not reported from here.
    compressor: Compressor,
    tally: Tally,
}

impl Redis {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        config: &ClusterConfig,
        name: String,
        poll: Poll,
        inbox: Receiver<Vec<ToCluster>>,
        workers: Vec<Mailbox<ToWorker>>,
        state: Arc<ClusterState>,
        seed: u64,
        waker: Arc<mio::Waker>,
    ) -> Redis {
        let mut rng = seed;
        let node = splitmix64(&mut rng);
        let flow_limit = WorkerFlow::new(waker);
        let flow = ConnFlow::new(Arc::clone(&flow_limit));
        Redis {
            name,
            url: config.redis_url.clone(),
            host: config.redis.clone(),
            prefix: config.prefix.clone(),
            poll,
            inbox,
            out: workers.iter().map(|_| Vec::new()).collect(),
            workers,
            state,
            node,
            rng,
            conns: None,
            backoff: BACKOFF_MIN,
            retry_at: Some(Instant::now()),
            failures: 0,
            rooms: HashMap::new(),
            channels: HashMap::new(),
            flow,
            flow_limit,
            sub_owed: false,
            compressor: Compressor::new(),
            tally: Tally::default(),
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            let mut timeout = now + PROBE_INTERVAL;
            if let Some(at) = self.retry_at {
                timeout = timeout.min(at);
            }
            let mut again = self.conns.as_ref().map_or([false; 2], |c| c.again);
            let sub_open = self.sub_open();
            again[1] = again[1] && sub_open;
            if sub_open && self.sub_owed {
                again[1] = true;
            }
            let wait = match again {
                [false, false] => timeout.saturating_duration_since(now),
                _ => Duration::ZERO,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("cluster: the Redis thread's poll failed: {e}; exiting");
                std::process::exit(super::super::EXIT_THREAD_DIED);
            }
            let mut failed: Option<io::Error> = None;
            let mut due = again;
            for ev in events.iter() {
                match ev.token() {
                    CMD => due[0] = true,
                    SUB => due[1] = true,
                    _ => {}
                }
            }
            if due[0] {
                failed = self.on_cmd().err();
            }
            if due[1] && failed.is_none() {
                if self.sub_open() {
                    self.sub_owed = false;
                    failed = self.on_sub().err();
                } else {
                    self.sub_owed = true;
                }
            }
            while let Ok(batch) = self.inbox.try_recv() {
                for msg in batch {
                    self.take(msg);
                }
            }
            if failed.is_none() {
                failed = self.flush().err();
            }
            let now = Instant::now();
            if failed.is_none()
                && let Some(c) = &mut self.conns
            {
                match c.pending.front() {
                    Some((_, sent)) if now.duration_since(*sent) > REPLY_TIMEOUT => {
                        failed = Some(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no answer for {REPLY_TIMEOUT:?}"),
                        ));
                    }
                    None if now.duration_since(c.last_sent) >= PROBE_INTERVAL => {
                        resp::command(&mut c.cmd.wbuf, &[b"PING"]);
                        c.pending.push_back((Pending::Ping, now));
                        c.last_sent = now;
                        failed = c.cmd.flush().err();
                    }
                    _ => {}
                }
            }
            if let Some(e) = failed {
                self.fail(e);
            }
            if self.conns.is_none() && self.retry_at.is_some_and(|at| at <= Instant::now()) {
                self.connect();
            }
            for (w, batch) in self.out.iter_mut().enumerate() {
                if !batch.is_empty() {
                    self.workers[w].send(ToWorker::Cluster(std::mem::take(batch)));
                }
            }
        }
    }

    /// Whether the subscriptions may be read: the workers hold less than [`FROM_REDIS_LIMIT`]
    /// of what was read. When not, the workers' next returned credit wakes this thread.
    fn sub_open(&self) -> bool {
        if self.flow.in_flight() < FROM_REDIS_LIMIT {
            return true;
        }
        self.flow_limit.wait();
        self.flow.in_flight() < FROM_REDIS_LIMIT
    }

    /// A message's frames, made here once for this node (compressed too when its room
    /// compresses), holding their share of [`FROM_REDIS_LIMIT`].
    fn frame(&mut self, m: &Parsed<'_>) -> Arc<Frame> {
        let from = m.deflate.then_some(0);
        let mut frame = encode(m.op, m.payload, from, &mut self.compressor, &mut self.tally);
        frame.credit = Some(self.flow.take(frame.len()));
        Arc::new(frame)
    }

    fn owner(&self, room: RoomId) -> usize {
        room.owner(self.workers.len()).0 as usize
    }

    fn channel(&self, path: &str) -> Vec<u8> {
        format!("{}:room:{{{path}}}", self.prefix).into_bytes()
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(c) = &mut self.conns {
            c.cmd.flush()?;
            c.sub.flush()?;
        }
        Ok(())
    }

    fn connect(&mut self) {
        self.retry_at = None;
        let addr = match (self.host.0.as_str(), self.host.1).to_socket_addrs() {
            Ok(mut a) => a.next(),
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let Some(addr) = addr else {
            self.fail(io::Error::new(io::ErrorKind::NotFound, "no address"));
            return;
        };
        let opened = Sock::open(addr, &self.poll, CMD)
            .and_then(|cmd| Ok((cmd, Sock::open(addr, &self.poll, SUB)?)));
        let (mut cmd, mut sub) = match opened {
            Ok(s) => s,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        let now = Instant::now();
        // Named, so that `CLIENT LIST` tells an operator whose connections these are.
        let name = |role: &str| format!("wsrelay:{}:{role}", self.name.replace(' ', "_"));
        resp::command(
            &mut cmd.wbuf,
            &[b"CLIENT", b"SETNAME", name("cmd").as_bytes()],
        );
        resp::command(
            &mut sub.wbuf,
            &[b"CLIENT", b"SETNAME", name("sub").as_bytes()],
        );
        resp::command(&mut cmd.wbuf, &[b"SCRIPT", b"LOAD", PUBLISH.as_bytes()]);
        resp::command(&mut cmd.wbuf, &[b"PING"]);
        for (channel, r) in &mut self.rooms {
            r.state = RoomState::Subscribing;
            r.waiting.clear();
            resp::command(&mut sub.wbuf, &[b"SUBSCRIBE", channel]);
        }
        self.conns = Some(Conns {
            cmd,
            sub,
            pending: VecDeque::from([
                (Pending::Named, now),
                (Pending::Load, now),
                (Pending::Ping, now),
            ]),
            ready: false,
            publish_sha: Vec::new(),
            last_sent: now,
            again: [false; 2],
        });
    }

    /// The link failed: members stay, messages are dropped until it is made again.
    fn fail(&mut self, e: io::Error) {
        if let Some(c) = self.conns.take() {
            for (pending, _) in c.pending {
                self.unanswered(pending);
            }
        }
        self.state.up.store(false, Ordering::Relaxed);
        if self.failures == 0 {
            warn!(
                "cluster: node {}: redis {} unavailable: {e}; retrying every {:?} to {:?}",
                self.name, self.url, BACKOFF_MIN, BACKOFF_MAX
            );
        } else {
            log::debug!("cluster: redis {} still unavailable: {e}", self.url);
        }
        self.failures += 1;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        for r in self.rooms.values_mut() {
            r.state = RoomState::Subscribing;
            r.waiting.clear();
        }
    }
}
