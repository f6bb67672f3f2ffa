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

use super::envelope::{Parsed, parse_envelope, splitmix64};
use super::resp::{self, Value};
use super::scripts::{self, ATTACH, PUBLISH, RANGE, keys, meta_ttl, ms};
use super::sock::Sock;
use super::{ClusterState, FromCluster, Sender, ToCluster};
use crate::config::ClusterConfig;
use crate::deflate::Compressor;
use crate::metrics::Tally;
use crate::relay::RoomId;
use crate::relay::hub::Ask;
use crate::server::api::work::Reply;
use crate::server::api::{Body, Kept, Outcome};
use crate::server::bus::{Frame, Mailbox, MemberId, ToWorker};
use crate::server::flow::{ConnFlow, WorkerFlow};
use crate::server::wire::{self, Opcode};
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

    fn take(&mut self, msg: ToCluster) {
        match msg {
            ToCluster::Attach { room, path, keep } => {
                let channel = self.channel(&path);
                self.channels.insert(room, channel.clone());
                let r = Room {
                    id: room,
                    keep,
                    state: RoomState::Subscribing,
                    waiting: Vec::new(),
                };
                self.rooms.insert(channel.clone(), r);
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
                keep,
                sender,
                frame,
            } => self.publish(path, keep, sender, frame),
            ToCluster::Range {
                room,
                path,
                req,
                ask,
                ttl,
            } => {
                let newest_first = matches!(ask, Ask::Last(_));
                let (mode, n, limit) = match ask {
                    Ask::After(seq) => ("after", seq, crate::config::HISTORY_SIZE_CEILING),
                    Ask::Last(n) => ("last", n as u64, n),
                };
                let pending = Pending::Range {
                    room,
                    req,
                    newest_first,
                };
                let args = [
                    mode,
                    &n.to_string(),
                    &ttl.map_or("0".into(), ms),
                    &limit.to_string(),
                ];
                if self.try_range(&path, args, pending).is_err() {
                    let owner = self.owner(room);
                    self.out[owner].push(FromCluster::Ranged { req, answer: None });
                }
            }
            ToCluster::Share {
                path,
                frame,
                members,
                ask,
            } => {
                let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
                    return; // presence events are not kept: one lost with the link is gone
                };
                let channel = format!("{}:room:{{{path}}}", self.prefix).into_bytes();
                let ask = if ask { " ?" } else { "" };
                let head = format!("{PRESENCE} {:016x} {members}{ask}\n", self.node);
                let mut data = head.into_bytes();
                if let Some(frame) = frame {
                    data.extend_from_slice(wire::parts(&frame.bytes).1);
                }
                resp::command(&mut c.cmd.wbuf, &[b"PUBLISH", &channel, &data]);
                c.pending.push_back((Pending::Shared, Instant::now()));
            }
            ToCluster::History {
                path,
                since,
                limit,
                ttl,
                reply,
            } => {
                let (mode, n) = match since {
                    Some(seq) => ("after", seq),
                    None => ("last", limit as u64),
                };
                let args = [mode, &n.to_string(), &ms(ttl), &limit.to_string()];
                let pending = Pending::History {
                    path: Arc::clone(&path),
                    since,
                    newest_first: since.is_none(),
                    reply,
                };
                if let Err(Pending::History { reply, .. }) = self.try_range(&path, args, pending) {
                    reply.done(unavailable());
                }
            }
        }
    }

    fn publish(
        &mut self,
        path: Arc<str>,
        keep: crate::relay::history::Keep,
        sender: Sender,
        frame: Arc<Frame>,
    ) {
        let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
            self.refuse(sender);
            return;
        };
        let channel = format!("{}:room:{{{path}}}", self.prefix).into_bytes();
        let (op, payload) = wire::parts(&frame.bytes);
        let op = match (op, frame.deflated.is_some()) {
            (Opcode::Binary, false) => "b",
            (Opcode::Binary, true) => "bz",
            (_, false) => "t",
            (_, true) => "tz",
        };
        let (worker, member) = match &sender {
            Sender::Member(w, m) => (w.0, *m),
            Sender::Api(_) => (u32::MAX, NOBODY),
        };
        let header = format!(
            "{:016x} {worker} {} {} {op}",
            self.node, member.key, member.generation
        );
        let candidate = format!("{:016x}", splitmix64(&mut self.rng));
        let [epoch_key, seq_key, log_key] = keys(&channel);
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVALSHA",
                &c.publish_sha,
                b"4",
                &epoch_key,
                &seq_key,
                &channel,
                &log_key,
                candidate.as_bytes(),
                header.as_bytes(),
                payload,
                keep.size.to_string().as_bytes(),
                ms(keep.ttl).as_bytes(),
                ms(meta_ttl(keep)).as_bytes(),
            ],
        );
        let now = Instant::now();
        let pending = Pending::Publish {
            path,
            sender,
            frame,
        };
        c.pending.push_back((pending, now));
        c.last_sent = now;
    }

    /// A message Redis did not number: dropped and counted; its sender is told.
    fn refuse(&mut self, sender: Sender) {
        self.state.dropped.fetch_add(1, Ordering::Relaxed);
        match sender {
            Sender::Member(worker, member) => {
                if let Some(out) = self.out.get_mut(worker.0 as usize) {
                    out.push(FromCluster::Refused { member });
                }
            }
            Sender::Api(reply) => reply.done(unavailable()),
        }
    }

    /// Send the range script for `path`; `pending` back when Redis is not there to answer.
    fn try_range(&mut self, path: &str, args: [&str; 4], pending: Pending) -> Result<(), Pending> {
        let channel = self.channel(path);
        let Some(c) = self.conns.as_mut().filter(|c| c.ready) else {
            return Err(pending);
        };
        let [epoch_key, seq_key, log_key] = keys(&channel);
        let [a, b, t, l] = args.map(str::as_bytes);
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVAL",
                RANGE.as_bytes(),
                b"3",
                &epoch_key,
                &seq_key,
                &log_key,
                a,
                b,
                t,
                l,
            ],
        );
        let now = Instant::now();
        c.pending.push_back((pending, now));
        c.last_sent = now;
        Ok(())
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
                Pending::Shared => {}
                Pending::Named => {
                    if let Value::Error(e) = v {
                        return Err(io::Error::other(format!("CLIENT SETNAME answered {e}")));
                    }
                }
                Pending::Load => match v {
                    Value::Bulk(Some(sha)) => c.publish_sha = sha,
                    other => {
                        let why = format!("SCRIPT LOAD answered {other:?}");
                        return Err(io::Error::new(io::ErrorKind::InvalidData, why));
                    }
                },
                Pending::Publish { path, sender, .. } => match v {
                    Value::Error(e) => {
                        let noscript = e.starts_with("NOSCRIPT");
                        self.refuse(sender);
                        if noscript {
                            // The script cache was flushed: make the link again, which loads it.
                            return Err(io::Error::other("the publish script left Redis's cache"));
                        }
                        warn!("cluster: redis refused a message: {e}");
                    }
                    v => {
                        let (epoch, seq) = scripts::epoch_and_seq(&v)?;
                        self.state.published.fetch_add(1, Ordering::Relaxed);
                        if let Sender::Api(reply) = sender {
                            let room = path.to_string();
                            let epoch = epoch.to_string();
                            reply.done(Outcome::Published { room, epoch, seq });
                        }
                    }
                },
                Pending::Range {
                    room,
                    req,
                    newest_first,
                } => {
                    let (epoch, _, entries) = scripts::range(&v, newest_first, self.node)?;
                    let read = entries
                        .into_iter()
                        .map(|e| (e.seq, e.origin, self.frame(&e)))
                        .collect();
                    let answer = epoch.map(|epoch| (epoch, read));
                    let owner = self.owner(room);
                    self.out[owner].push(FromCluster::Ranged { req, answer });
                }
                Pending::History {
                    path,
                    since,
                    newest_first,
                    reply,
                } => {
                    let (epoch, last, entries) = scripts::range(&v, newest_first, self.node)?;
                    reply.done(history_page(&path, since, epoch, last, &entries));
                }
                Pending::Attach { channel, room } => self.attached(channel, room, v)?,
            }
        }
        Ok(())
    }

    fn attached(&mut self, channel: Vec<u8>, room: RoomId, v: Value) -> io::Result<()> {
        let (epoch, seq) = scripts::epoch_and_seq(&v)?;
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
            let items = match v {
                Value::Array(Some(items)) => items,
                Value::Simple(ok) if ok == "OK" => continue, // CLIENT SETNAME
                v => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("subscription sent {v:?}"),
                    ));
                }
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
        let [epoch_key, seq_key, log_key] = keys(channel);
        let candidate = format!("{:016x}", splitmix64(&mut self.rng));
        let life = ms(meta_ttl(r.keep));
        resp::command(
            &mut c.cmd.wbuf,
            &[
                b"EVAL",
                ATTACH.as_bytes(),
                b"3",
                &epoch_key,
                &seq_key,
                &log_key,
                candidate.as_bytes(),
                life.as_bytes(),
            ],
        );
        let now = Instant::now();
        let (channel, room) = (channel.to_vec(), r.id);
        c.pending
            .push_back((Pending::Attach { channel, room }, now));
        c.last_sent = now;
    }

    fn message(&mut self, channel: &[u8], data: &[u8]) {
        if let Some(rest) = data.strip_prefix(PRESENCE.as_bytes()) {
            return self.presence(channel, rest);
        }
        self.state.received.fetch_add(1, Ordering::Relaxed);
        let Some(parsed) = parse_envelope(data, self.node) else {
            warn!(
                "cluster: a message on {} that is not ours; dropped",
                String::from_utf8_lossy(channel)
            );
            return;
        };
        if !self.rooms.contains_key(channel) {
            return;
        }
        let frame = self.frame(&parsed);
        let workers = self.workers.len();
        let Parsed {
            epoch, seq, origin, ..
        } = parsed;
        let Some(r) = self.rooms.get_mut(channel) else {
            return;
        };
        let msg = FromCluster::Message {
            room: r.id,
            epoch,
            seq,
            origin,
            frame,
        };
        if r.state == RoomState::Attached {
            self.out[r.id.owner(workers).0 as usize].push(msg);
        } else if r.waiting.len() < MAX_WAITING {
            r.waiting.push(msg);
        }
    }

    /// Another node's presence (` <node> <members>[ ?]\n<event or nothing>`; `?` asks for
    /// ours) for an attached
    /// room: to its owner.
    fn presence(&mut self, channel: &[u8], data: &[u8]) {
        let Some(nl) = data.iter().position(|&b| b == b'\n') else {
            return;
        };
        let head = std::str::from_utf8(&data[..nl]).unwrap_or("");
        let mut f = head.split_ascii_whitespace();
        let node = f.next().and_then(|n| u64::from_str_radix(n, 16).ok());
        let members = f.next().and_then(|n| n.parse().ok());
        let ask = f.next() == Some("?");
        let (Some(node), Some(members)) = (node, members) else {
            return;
        };
        if node == self.node {
            return;
        }
        let Some(r) = self
            .rooms
            .get(channel)
            .filter(|r| r.state == RoomState::Attached)
        else {
            return;
        };
        let event = &data[nl + 1..];
        let frame = (!event.is_empty())
            .then(|| Arc::new(Frame::new(wire::shared(Opcode::Text, event), None)));
        let room = r.id;
        let owner = self.owner(room);
        self.out[owner].push(FromCluster::Notice {
            room,
            node,
            members,
            frame,
            ask,
        });
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

    /// The link failed before Redis answered `pending`: whoever waits is told.
    fn unanswered(&mut self, pending: Pending) {
        match pending {
            Pending::Publish { sender, .. } => {
                // Numbered and published, or not: nobody knows. Members' messages are counted
                // (a gap, if it was numbered, is filled when the link is back); an API call
                // is not told it was sent.
                self.state.unconfirmed.fetch_add(1, Ordering::Relaxed);
                if let Sender::Api(reply) = sender {
                    reply.done(Outcome::Refused {
                        status: 503,
                        reason: "redis unavailable: the message may or may not have been sent"
                            .into(),
                    });
                }
            }
            Pending::Range { room, req, .. } => {
                let owner = self.owner(room);
                self.out[owner].push(FromCluster::Ranged { req, answer: None });
            }
            Pending::History { reply, .. } => reply.done(unavailable()),
            Pending::Ping
            | Pending::Shared
            | Pending::Named
            | Pending::Load
            | Pending::Attach { .. } => {}
        }
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

/// What the API is told when Redis is not there to answer.
fn unavailable() -> Outcome {
    Outcome::Refused {
        status: 503,
        reason: "redis unavailable".into(),
    }
}

/// The API's history page from what the range script read: 404 when Redis has no such room,
/// 416 when `since` is older than what the stream keeps.
fn history_page(
    path: &str,
    since: Option<u64>,
    epoch: Option<crate::relay::hub::Epoch>,
    last: u64,
    entries: &[scripts::Entry<'_>],
) -> Outcome {
    let Some(epoch) = epoch else {
        return Outcome::Refused {
            status: 404,
            reason: "room not open and keeps nothing".into(),
        };
    };
    if let Some(since) = since
        && since < last
        && entries.first().is_none_or(|e| e.seq != since + 1)
    {
        return Outcome::Refused {
            status: 416,
            reason: "since is older than what the room keeps".into(),
        };
    }
    let messages = entries
        .iter()
        .map(|e| Kept {
            seq: e.seq,
            message: Body {
                binary: e.op == Opcode::Binary,
                bytes: e.payload.to_vec(),
            },
        })
        .collect();
    Outcome::History {
        room: path.to_owned(),
        epoch: epoch.to_string(),
        seq: last,
        messages,
    }
}
