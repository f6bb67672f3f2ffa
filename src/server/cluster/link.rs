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

use crossbeam_channel::Receiver;
use log::{info, warn};
use mio::{Events, Poll, Token};

use super::envelope::{keys, parse_envelope, parse_epoch, splitmix64};
use super::resp::{self, Value};
use super::sock::Sock;
use super::{ClusterState, FromCluster, ToCluster};
use crate::config::ClusterConfig;
use crate::relay::RoomId;
use crate::server::bus::{Frame, Mailbox, ToWorker};
use crate::server::wire::{self, Opcode};

pub(super) const WAKER: Token = Token(0);
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

/// Makes the epoch once per room incarnation, then returns it with the room's last number.
const ATTACH: &str = "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n\
    return {redis.call('GET', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}";

/// One message: the room's epoch (made once per incarnation), its next number, and the
/// envelope `<epoch> <seq> <origin>\n<payload>` published to the room's channel. Atomic, so
/// numbers and publications are in the same order.
const PUBLISH: &str = "local e = redis.call('GET', KEYS[1])\n\
    if not e then e = ARGV[1]; redis.call('SET', KEYS[1], e) end\n\
    local s = redis.call('INCR', KEYS[2])\n\
    redis.call('PUBLISH', KEYS[3], e .. ' ' .. string.format('%d', s) .. ' ' .. ARGV[2] .. '\\n' .. ARGV[3])\n\
    return s";

/// An answer awaited on `cmd`, in the order the commands went out.
enum Pending {
    Ping,
    /// `SCRIPT LOAD` of [`PUBLISH`]: its SHA1, for `EVALSHA` (a message then carries its bytes
    /// and keys, not the script's text).
    Load,
    /// The frame is held for its publisher's credit.
    Publish(#[allow(dead_code)] Arc<Frame>),
    Attach {
        channel: Vec<u8>,
        room: RoomId,
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
}

impl Redis {
    pub(super) fn new(
        config: &ClusterConfig,
        name: String,
        poll: Poll,
        inbox: Receiver<Vec<ToCluster>>,
        workers: Vec<Mailbox<ToWorker>>,
        state: Arc<ClusterState>,
        seed: u64,
    ) -> Redis {
        let mut rng = seed;
        let node = splitmix64(&mut rng);
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
            let again = self.conns.as_ref().map_or([false; 2], |c| c.again);
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
                failed = self.on_sub().err();
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

    fn owner(&self, room: RoomId) -> usize {
        room.owner(self.workers.len()).0 as usize
    }

    fn channel(&self, path: &str) -> Vec<u8> {
        format!("{}:room:{{{path}}}", self.prefix).into_bytes()
    }

    fn take(&mut self, msg: ToCluster) {
        match msg {
            ToCluster::Attach { room, path } => {
                let channel = self.channel(&path);
                self.channels.insert(room, channel.clone());
                self.rooms.insert(
                    channel.clone(),
                    Room {
                        id: room,
                        state: RoomState::Subscribing,
                        waiting: Vec::new(),
                    },
                );
                if let Some(c) = &mut self.conns {
                    resp::command(&mut c.sub.wbuf, &[b"SUBSCRIBE", &channel]);
                }
            }
            ToCluster::Detach { room } => {
                let Some(channel) = self.channels.remove(&room) else {
                    return;
                };
                if self.rooms.get(&channel).is_some_and(|r| r.id == room) {
                    self.rooms.remove(&channel);
                    if let Some(c) = &mut self.conns {
                        resp::command(&mut c.sub.wbuf, &[b"UNSUBSCRIBE", &channel]);
                    }
                }
            }
            ToCluster::Publish {
                path,
                origin,
                frame,
            } => {
                let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
                    self.state.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let channel = format!("{}:room:{{{path}}}", self.prefix).into_bytes();
                let (op, payload) = wire::parts(&frame.bytes);
                let op = if op == Opcode::Binary { 'b' } else { 't' };
                let header = format!(
                    "{:016x} {} {} {} {op}",
                    self.node, origin.0.0, origin.1.key, origin.1.generation
                );
                let candidate = format!("{:016x}", splitmix64(&mut self.rng));
                let keys = keys(&channel);
                resp::command(
                    &mut c.cmd.wbuf,
                    &[
                        b"EVALSHA",
                        &c.publish_sha,
                        b"3",
                        &keys.0,
                        &keys.1,
                        &channel,
                        candidate.as_bytes(),
                        header.as_bytes(),
                        payload,
                    ],
                );
                let now = Instant::now();
                c.pending.push_back((Pending::Publish(frame), now));
                c.last_sent = now;
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(c) = &mut self.conns {
            c.cmd.flush()?;
            c.sub.flush()?;
        }
        Ok(())
    }

    fn on_cmd(&mut self) -> io::Result<()> {
        let Some(c) = &mut self.conns else {
            return Ok(());
        };
        c.cmd.check_connected()?;
        c.again[0] = c.cmd.fill()?;
        let values = c.cmd.values()?;
        for v in values {
            let Some(c) = &mut self.conns else {
                return Ok(());
            };
            let Some((pending, _)) = c.pending.pop_front() else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an answer nobody asked for",
                ));
            };
            match pending {
                Pending::Ping => {
                    if !c.ready {
                        c.ready = true;
                        self.state.up.store(true, Ordering::Relaxed);
                        if self.failures > 0 {
                            self.state.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        info!("cluster: node {} connected to {}", self.name, self.url);
                        self.failures = 0;
                        self.backoff = BACKOFF_MIN;
                    }
                }
                Pending::Load => match v {
                    Value::Bulk(Some(sha)) => c.publish_sha = sha,
                    other => {
                        let why = format!("SCRIPT LOAD answered {other:?}");
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                    }
                },
                Pending::Publish(_) => match v {
                    Value::Int(_) => {
                        self.state.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Value::Error(e) if e.starts_with("NOSCRIPT") => {
                        // The script cache was flushed: make the link again, which loads it.
                        self.state.dropped.fetch_add(1, Ordering::Relaxed);
                        return Err(io::Error::other("the publish script left Redis's cache"));
                    }
                    other => {
                        self.state.dropped.fetch_add(1, Ordering::Relaxed);
                        warn!("cluster: redis refused a message: {other:?}");
                    }
                },
                Pending::Attach { channel, room } => self.attached(channel, room, v)?,
            }
        }
        Ok(())
    }

    fn attached(&mut self, channel: Vec<u8>, room: RoomId, v: Value) -> io::Result<()> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let Value::Array(Some(items)) = v else {
            return Err(bad(&format!("attach answered {v:?}")));
        };
        let (epoch, seq) = match &items[..] {
            [Value::Bulk(Some(e)), Value::Int(s)] => (parse_epoch(e), u64::try_from(*s).ok()),
            _ => (None, None),
        };
        let (Some(epoch), Some(seq)) = (epoch, seq) else {
            return Err(bad("attach answered something else than epoch and number"));
        };
        let owner = self.owner(room);
        let Some(r) = self.rooms.get_mut(&channel).filter(|r| r.id == room) else {
            return Ok(()); // detached meanwhile
        };
        r.state = RoomState::Attached;
        self.out[owner].push(FromCluster::Attached { room, epoch, seq });
        self.out[owner].append(&mut r.waiting);
        Ok(())
    }

    fn on_sub(&mut self) -> io::Result<()> {
        let Some(c) = &mut self.conns else {
            return Ok(());
        };
        c.sub.check_connected()?;
        c.again[1] = c.sub.fill()?;
        let values = c.sub.values()?;
        for v in values {
            let Value::Array(Some(items)) = v else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("subscription sent {v:?}"),
                ));
            };
            match &items[..] {
                [
                    Value::Bulk(Some(kind)),
                    Value::Bulk(Some(channel)),
                    Value::Int(_),
                ] if kind == b"subscribe" => self.subscribed(channel),
                [
                    Value::Bulk(Some(kind)),
                    Value::Bulk(Some(channel)),
                    Value::Bulk(Some(data)),
                ] if kind == b"message" => self.message(channel, data),
                _ => {} // unsubscribe confirmations
            }
        }
        Ok(())
    }

    /// Redis confirmed a subscription: from now on the room's messages come in, so its last
    /// number read now leaves no gap.
    fn subscribed(&mut self, channel: &[u8]) {
        let Some(c) = &mut self.conns else {
            return;
        };
        let Some(r) = self.rooms.get_mut(channel) else {
            return;
        };
        if r.state != RoomState::Subscribing {
            return;
        }
        r.state = RoomState::Attaching;
        let keys = keys(channel);
        let candidate = format!("{:016x}", splitmix64(&mut self.rng));
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVAL",
                ATTACH.as_bytes(),
                b"2",
                &keys.0,
                &keys.1,
                candidate.as_bytes(),
            ],
        );
        let now = Instant::now();
        let (channel, room) = (channel.to_vec(), r.id);
        c.pending
            .push_back((Pending::Attach { channel, room }, now));
        c.last_sent = now;
    }

    fn message(&mut self, channel: &[u8], data: &[u8]) {
        self.state.received.fetch_add(1, Ordering::Relaxed);
        let Some(parsed) = parse_envelope(data, self.node) else {
            warn!(
                "cluster: a message on {} that is not ours; dropped",
                String::from_utf8_lossy(channel)
            );
            return;
        };
        let owner_of = |id: RoomId| id.owner(self.workers.len()).0 as usize;
        let Some(r) = self.rooms.get_mut(channel) else {
            return;
        };
        let (epoch, seq, origin, op, payload) = parsed;
        let frame = Arc::new(Frame::new(wire::shared(op, payload), None));
        let msg = FromCluster::Message {
            room: r.id,
            epoch,
            seq,
            origin,
            frame,
        };
        if r.state == RoomState::Attached {
            self.out[owner_of(r.id)].push(msg);
        } else if r.waiting.len() < MAX_WAITING {
            r.waiting.push(msg);
        }
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
            pending: VecDeque::from([(Pending::Load, now), (Pending::Ping, now)]),
            ready: false,
            publish_sha: Vec::new(),
            last_sent: now,
            again: [false; 2],
        });
    }

    /// The link failed: members stay, messages are dropped until it is made again.
    fn fail(&mut self, e: io::Error) {
        if let Some(c) = self.conns.take() {
            let sent = c
                .pending
                .iter()
                .filter(|(p, _)| matches!(p, Pending::Publish(_)))
                .count();
            self.state
                .unconfirmed
                .fetch_add(sent as u64, Ordering::Relaxed);
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
