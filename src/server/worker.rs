//! A worker thread: one mio `Poll`, its connections in a slab, its share of the rooms (a [`Hub`]).
//!
//! Each loop pass takes in a bounded amount, then writes: it reads connections (a connection cut
//! short is read again next pass) and carries out what other threads sent (the rest waits, in
//! order, for the next pass) until it has taken in [`PASS_INTAKE`] or until any recipient has been
//! given a quarter of `send_queue_limit` since its last write, then sends
//! the batched envelopes to other workers, writes every connection that got frames (one gathered
//! write each), closes those still over `send_queue_limit` after that write (too slow), drops
//! finished connections and reports their tickets to the acceptor. So no backlog is ever
//! delivered without writes in between, and a reader that keeps up is never cut by a burst.
//!
//! Flow control (`flow`): a connection whose published bytes other workers have not taken yet
//! reach its share, or all of them once the worker's publishers reach theirs, is not read until
//! they come down; TCP pushes back on the publisher. No locks; counters are added to the shared
//! ones once per pass, with the pass's heartbeat for the watchdog.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, warn};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::bus::{
    Frame, Handoff, HubEnvelope, Mailbox, MemberId, SharedFrame, ToAcceptor, ToWorker,
};
use super::conn::{Conn, Readable, Timers};
use super::faults::{self, Fault};
use super::flow::{Limits, WorkerFlow};
use crate::deflate::{Compressor, Inflater};
use crate::metrics::{CloseReason, Tally, WorkerCounters};
use crate::relay::WorkerId;
use crate::relay::admission::Ticket;
use crate::relay::hub::{Envelope, Hub, Joining};

pub(super) mod encode;
mod fanout;
mod upkeep;

use encode::encode;
use fanout::{Fanout, mark_dirty, top_up};

/// The waker's token; connections use their slab keys, which never reach this.
pub const WAKER: Token = Token(usize::MAX);

/// Readiness events taken per poll, hence per loop pass. A pass ends with one gathered write per
/// connection that got frames, so the more reads a pass takes in, the more frames each write
/// carries: in the 1000 rooms x 10 members benchmark 1024 gave 1.19 M deliveries per server
/// CPU-second, 4096 gave 1.40 M, 16384 gave 1.46 M. 12 bytes each.
const EVENTS_PER_PASS: usize = 16 * 1024;

/// The worker's read buffer, shared by all its connections: bytes go from here into the
/// connection's (small) tungstenite buffer.
const SCRATCH_SIZE: usize = 64 * 1024;

/// What one recipient may be given between two writes, as a fraction of `send_queue_limit`:
/// once a delivery takes any recipient past it, the pass stops reading and taking envelopes, and
/// writes. (A read call reads at most this much too, so the last one adds at most this plus one
/// message.) A recipient's queue thus grows by about half its limit at most between two writes,
/// and one that keeps up is never over the limit after a write.
pub(super) const SHARE_DIVISOR: usize = 4;

/// Bytes one pass reads, and bytes of messages it takes from other workers, at most: a pass ends
/// with one gathered write per connection that got frames, so the more it takes in the more
/// frames each write carries (1,000 rooms of 10: many small messages per pass), but a pass stays
/// short enough for timers and fairness.
const PASS_INTAKE: usize = 1 << 20;

/// Times per pass a connection's replay is topped up and written while its socket takes it
/// all: up to this many shares of `send_queue_limit` per connection per pass.
const REPLAY_ROUNDS: usize = 4;

/// What a worker needs to start.
pub struct WorkerSetup {
    pub id: WorkerId,
    pub poll: Poll,
    pub inbox: Receiver<ToWorker>,
    /// Every worker's mailbox, by worker id (this one's included, unused).
    pub peers: Vec<Mailbox<ToWorker>>,
    pub acceptor: Mailbox<ToAcceptor>,
    pub counters: Arc<WorkerCounters>,
    pub timers: Timers,
    pub send_queue_limit: usize,
    /// The server's `history_memory`: this worker keeps its share for the rooms it sequences.
    pub history_memory: usize,
    /// This worker's flow-control account (its waker inside).
    pub flow: Arc<WorkerFlow>,
    /// Seeds the epochs of the rooms this worker owns.
    pub seed: u64,
    /// The Redis threads, one per shard, with `[cluster]`: they number the rooms this worker
    /// owns.
    pub cluster: Option<super::cluster::Links>,
}

/// Something from another thread waiting for its turn: a batch of envelopes is taken apart, so
/// the pass budget can stop in the middle of it.
enum Inbound {
    Envelopes(std::vec::IntoIter<HubEnvelope>),
    Other(ToWorker),
}

struct Worker {
    me: WorkerId,
    poll: Poll,
    inbox: Receiver<ToWorker>,
    peers: Vec<Mailbox<ToWorker>>,
    acceptor: Mailbox<ToAcceptor>,
    counters: Arc<WorkerCounters>,
    timers: Timers,
    limit: usize,
    flow: Arc<WorkerFlow>,
    limits: Limits,
    conns: Slab<Conn>,
    hub: Hub<SharedFrame, MemberId>,
    generation: u32,
    scratch: Vec<u8>,
    /// Connections with something to write (or to reap) at the end of the pass.
    dirty: Vec<usize>,
    /// Connections to read this pass, with whether the peer may have hung up (read until the
    /// end), in order: readable events, and those cut short by a budget last pass.
    to_read: VecDeque<(usize, bool)>,
    /// Connections not read because of flow control, until their credit comes back.
    paused: Vec<usize>,
    /// What other threads sent, in their order, not yet carried out.
    backlog: VecDeque<Inbound>,
    /// Messages read this call, encoded, waiting to be published (their credit not taken yet).
    published: Vec<Frame>,
    /// This thread's deflater: each message of a compressing room is deflated once, here.
    compressor: Compressor,
    /// Inflates every compressed message its connections send, one at a time.
    inflater: Inflater,
    outgoing: Vec<Vec<HubEnvelope>>,
    closed: Vec<Ticket>,
    tally: Tally,
    /// Set once a shutdown began: the moment to give up on the close handshakes.
    stopping: Option<Instant>,
    fault: Option<Fault>,
    /// The error the next poll returns instead of polling (test fault).
    fault_poll: Option<io::Error>,
    /// A recipient got its share this pass: take in nothing more until the writes.
    full: bool,
    /// Connections with a replay still behind whose socket took everything last pass: they are
    /// written again next pass (no writable edge will come for them).
    replaying: Vec<usize>,
    /// `[cluster]`: the Redis threads, and this worker's batch for each.
    cluster: Option<cluster::Cluster>,
    /// How members are named (welcome, presence).
    names: fanout::MemberNames,
    /// What this pass has for the Redis threads, in order; split by shard when flushed.
    to_cluster: Vec<super::cluster::ToCluster>,
}

/// Run a worker until it is told to shut down and its connections are gone. An error means it
/// could not go on (its poll failed): the caller must not let the daemon live on half-dead.
pub fn run(setup: WorkerSetup) -> io::Result<()> {
    let workers = setup.peers.len();
    let mut w = Worker {
        me: setup.id,
        poll: setup.poll,
        inbox: setup.inbox,
        peers: setup.peers,
        acceptor: setup.acceptor,
        counters: setup.counters,
        timers: setup.timers,
        limit: setup.send_queue_limit,
        flow: setup.flow,
        limits: Limits::from_queue_limit(setup.send_queue_limit),
        conns: Slab::new(),
        hub: Hub::new(setup.id, workers, setup.seed),
        generation: 0,
        scratch: vec![0; SCRATCH_SIZE],
        dirty: Vec::new(),
        to_read: VecDeque::new(),
        paused: Vec::new(),
        backlog: VecDeque::new(),
        published: Vec::new(),
        compressor: Compressor::new(),
        inflater: Inflater::new(),
        outgoing: (0..workers).map(|_| Vec::new()).collect(),
        closed: Vec::new(),
        tally: Tally::default(),
        stopping: None,
        fault: faults::from_env(),
        fault_poll: None,
        full: false,
        replaying: Vec::new(),
        names: fanout::MemberNames {
            me: setup.id,
            suffix: setup
                .cluster
                .as_ref()
                .map_or_else(|| Arc::from(""), |l| Arc::from(format!("@{}", l.node))),
        },
        cluster: setup.cluster.map(cluster::Cluster::new),
        to_cluster: Vec::new(),
    };
    if w.cluster.is_some() {
        w.hub.set_cluster();
    }
    w.hub.set_memory(setup.history_memory / workers);
    w.run()
}

/// How often timers are checked: a quarter of the shortest timeout, within [10 ms, 1 s]. An idle
/// worker still completes a pass this often, which is its heartbeat for the watchdog.
fn tick_interval(t: &Timers) -> Duration {
    let shortest = t.ping_interval.min(t.idle_timeout).min(t.close_timeout);
    (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

macro_rules! fanout {
    ($w:ident) => {
        Fanout {
            names: &$w.names,
            conns: &mut $w.conns,
            dirty: &mut $w.dirty,
            outgoing: &mut $w.outgoing,
            tally: &mut $w.tally,
            compressor: &mut $w.compressor,
            share: ($w.limit / $crate::server::worker::SHARE_DIVISOR).max(1),
            full: &mut $w.full,
            to_cluster: &mut $w.to_cluster,
        }
    };
}

// After the macro, which they use.
mod api;
mod cluster;

impl Worker {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_PER_PASS);
        let mut next_tick = Instant::now() + tick_interval(&self.timers);
        loop {
            self.resume_paused();
            let busy =
                !self.to_read.is_empty() || !self.backlog.is_empty() || !self.replaying.is_empty();
            let timeout = if busy {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let polled = match self.fault_poll.take() {
                Some(e) => Err(e),
                None => self.poll.poll(&mut events, Some(timeout)),
            };
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            self.hub.set_clock(now);
            for key in std::mem::take(&mut self.replaying) {
                mark_dirty(&mut self.conns, &mut self.dirty, key);
            }
            // Every pass looks at the inbox (an empty channel costs one atomic load), so a pass
            // that a credit's wake-up started also carries out what arrived meanwhile.
            self.take_inbox();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    Token(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            // Without a hang-up in the event, a short read ends the draining.
                            let hangup = ev.is_read_closed() || ev.is_error();
                            self.to_read.push_back((key, hangup));
                        }
                        if ev.is_writable() {
                            mark_dirty(&mut self.conns, &mut self.dirty, key);
                        }
                    }
                }
            }
            self.read_pass(now);
            self.inbox_pass(now);
            if now >= next_tick {
                self.hub.expire();
                self.hub.send_counts(&mut fanout!(self));
                self.tick(now);
                next_tick = now + tick_interval(&self.timers);
            }
            self.end_pass(now);
            if let Some(deadline) = self.stopping {
                if now >= deadline {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.reap(key);
                    }
                    self.end_pass(now);
                }
                if self.conns.is_empty() {
                    self.acceptor.send(ToAcceptor::Stopped);
                    return Ok(());
                }
            }
        }
    }

    /// Move what other threads sent into the backlog, in order.
    fn take_inbox(&mut self) {
        while let Ok(msg) = self.inbox.try_recv() {
            self.backlog.push_back(match msg {
                ToWorker::Hub(envelopes) => Inbound::Envelopes(envelopes.into_iter()),
                other => Inbound::Other(other),
            });
        }
    }

    /// Carry out the backlog until the pass's share of message bytes is used.
    fn inbox_pass(&mut self, now: Instant) {
        let mut budget = PASS_INTAKE;
        while budget > 0 && !self.full {
            let Some(front) = self.backlog.front_mut() else {
                break;
            };
            match front {
                Inbound::Envelopes(batch) => match batch.next() {
                    Some(e) => {
                        if let Envelope::Publish { frame, .. } | Envelope::Deliver { frame, .. } =
                            &e
                        {
                            budget = budget.saturating_sub(frame.len());
                        }
                        self.hub.handle(e, &mut fanout!(self));
                    }
                    None => {
                        self.backlog.pop_front();
                    }
                },
                Inbound::Other(_) => {
                    if let Some(Inbound::Other(msg)) = self.backlog.pop_front() {
                        self.carry_out(msg, now);
                    }
                }
            }
        }
    }

    fn carry_out(&mut self, msg: ToWorker, now: Instant) {
        match msg {
            ToWorker::Conn(h) => self.admit(*h, now),
            ToWorker::Hub(envelopes) => {
                for e in envelopes {
                    self.hub.handle(e, &mut fanout!(self));
                }
            }
            ToWorker::RoomsClosed(rooms) => {
                for room in rooms {
                    self.hub.close(room);
                    self.detach(room);
                }
            }
            ToWorker::Cluster(batch) => self.carry_out_cluster(batch),
            ToWorker::Reload(cfg) => self.reload(&cfg, now),
            ToWorker::Api { job, reply } => self.api_job(job, reply, now),
            ToWorker::Shutdown { deadline } => {
                self.stopping = Some(deadline);
                let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.close(
                        key,
                        1001,
                        "server shutting down",
                        CloseReason::Shutdown,
                        now,
                    );
                }
            }
        }
    }

    /// Read the connections due this pass until the pass has read [`PASS_INTAKE`] or a recipient
    /// has its share; the rest wait for the next pass, in order.
    fn read_pass(&mut self, now: Instant) {
        let mut budget = PASS_INTAKE;
        let mut left = self.to_read.len();
        while budget > 0 && left > 0 && !self.full {
            left -= 1;
            let Some((key, hangup)) = self.to_read.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get(key) else {
                continue;
            };
            if c.in_flight() >= self.limits.per_conn
                || self.flow.in_flight() >= self.limits.per_worker
            {
                if !self.paused.contains(&key) {
                    self.paused.push(key);
                    self.tally.reads_paused += 1;
                }
                continue;
            }
            let mut call = budget.min(self.share());
            let before = call;
            let more = self.read(key, now, hangup, &mut call) == Readable::More;
            budget -= before - call;
            if more {
                self.to_read.push_back((key, true));
            }
        }
    }

    /// Paused connections whose credit is back are read again. If some stay paused, ask the
    /// threads that hold their messages for a wake-up, then look once more: a credit returned
    /// between the first look and the request would otherwise wake nobody.
    fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        self.requeue_ready();
        if !self.paused.is_empty() {
            self.flow.wait();
            self.requeue_ready();
        }
    }

    /// What one recipient may be given between two writes.
    fn share(&self) -> usize {
        (self.limit / SHARE_DIVISOR).max(1)
    }

    /// Move the paused connections whose credit is back to the read queue, in the order they
    /// were paused (the longest waiting is read first).
    fn requeue_ready(&mut self) {
        let worker_ok = self.flow.in_flight() < self.limits.per_worker;
        let (conns, per_conn, to_read) = (&self.conns, self.limits.per_conn, &mut self.to_read);
        self.paused.retain(|&key| match conns.get(key) {
            Some(c) if !worker_ok || c.in_flight() >= per_conn => true,
            Some(_) => {
                to_read.push_back((key, true));
                false
            }
            None => false, // gone
        });
    }

    fn admit(&mut self, h: Handoff, now: Instant) {
        let Handoff {
            mut stream,
            peer,
            ticket,
            room,
            path,
            settings,
            response,
            early,
        } = h;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("{peer} {path}: cannot register the connection: {e}");
            self.closed.push(ticket);
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let id = MemberId {
            key: u32::try_from(key).expect("fewer than 2^32 connections"),
            generation: self.generation,
        };
        let has_early = !early.is_empty();
        let conn = Conn::new(
            id,
            stream,
            peer,
            ticket,
            room,
            path,
            &settings,
            response,
            early,
            now,
            &self.timers,
        );
        debug!("{peer} joined {} ({room} on {})", conn.path, self.me);
        entry.insert(conn);
        // Its 101 is queued when the room's owner has admitted it (at once when this worker is
        // registered with the owner already).
        // A copy: the hub may admit the member (and its welcome names the room) during the call.
        let path = self.conns[key].path.clone();
        let presence = settings.presence.map(|rate| {
            (
                rate,
                fanout::presence_note(&self.names, &self.conns[key], true),
            )
        });
        let joining = Joining {
            echo: settings.echo,
            path: &path,
            keep: settings.keep,
            want: settings.want,
            presence,
        };
        let member = self.hub.join(room, id, joining, &mut fanout!(self));
        self.conns[key].member = Some(member);
        mark_dirty(&mut self.conns, &mut self.dirty, key);
        if self.stopping.is_some() {
            self.close(
                key,
                1001,
                "server shutting down",
                CloseReason::Shutdown,
                now,
            );
        } else if has_early {
            let mut published = std::mem::take(&mut self.published);
            let (tally, compressor) = (&mut self.tally, &mut self.compressor);
            let c = &mut self.conns[key];
            let from = c.compress_from;
            c.process_early(now, &self.timers, &mut self.inflater, &mut |op, payload| {
                tally.messages_in += 1;
                published.push(encode(op, payload, from, compressor, tally));
            });
            self.published = published;
            self.after_read(key);
        }
    }

    /// Read a connection, within `budget` bytes.
    fn read(&mut self, key: usize, now: Instant, hangup: bool, budget: &mut usize) -> Readable {
        let Some(c) = self.conns.get_mut(key) else {
            return Readable::Drained;
        };
        let (tally, compressor) = (&mut self.tally, &mut self.compressor);
        let published = &mut self.published;
        let from = c.compress_from;
        let r = c.on_readable(
            &mut self.scratch,
            hangup,
            budget,
            now,
            &self.timers,
            &mut self.inflater,
            &mut |op, payload| {
                tally.messages_in += 1;
                published.push(encode(op, payload, from, compressor, tally));
            },
        );
        self.tally.bytes_in += c.take_rx_bytes();
        self.after_read(key);
        r
    }

    /// Publish what a connection sent, then leave its room if it is no longer open.
    fn after_read(&mut self, key: usize) {
        mark_dirty(&mut self.conns, &mut self.dirty, key);
        let mut published = std::mem::take(&mut self.published);
        for mut frame in published.drain(..) {
            if self.fault.is_some() && faults::is_trigger(&frame.bytes) {
                self.inject_fault();
            }
            let c = &mut self.conns[key];
            let (room, id) = (c.room, c.id);
            // A message that never leaves this thread needs no credit: it is taken (copied into
            // its recipients' queues) before this call returns.
            frame.credit = self
                .hub
                .crosses_threads(room)
                .then(|| c.credit(&self.flow, frame.len()));
            self.hub
                .publish(room, id, Arc::new(frame), &mut fanout!(self));
        }
        self.published = published;
        if !self.conns[key].is_open() {
            self.left(key);
        }
    }

    /// Start closing a connection from our side: its close frame is queued (and written at the
    /// end of the pass) and it leaves its room at once.
    fn close(&mut self, key: usize, code: u16, text: &str, reason: CloseReason, now: Instant) {
        self.conns[key].close(code, text, reason, now, &self.timers);
        self.left(key);
        mark_dirty(&mut self.conns, &mut self.dirty, key);
    }

    /// The connection no longer takes part in its room.
    fn left(&mut self, key: usize) {
        let c = &mut self.conns[key];
        if let Some(member) = c.member.take() {
            let room = c.room;
            if c.presence {
                let note = fanout::presence_note(&self.names, c, false);
                self.hub.note_leave(room, note, &mut fanout!(self));
            }
            self.hub.leave(room, member, &mut fanout!(self));
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut idle = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            let was_open = c.is_open();
            if c.on_tick(now, &self.timers) || c.finished() {
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(key);
                }
                if was_open && !c.is_open() {
                    idle.push(key);
                }
            }
        }
        for key in idle {
            debug!(
                "{} in {}: idle for {:?}, closing",
                self.conns[key].peer, self.conns[key].path, self.timers.idle_timeout
            );
            self.left(key);
        }
    }

    fn end_pass(&mut self, now: Instant) {
        self.full = false;
        // Reaping may send Leave envelopes, so writes come before the batches go out.
        while let Some(key) = self.dirty.pop() {
            let Some(c) = self.conns.get_mut(key) else {
                continue;
            };
            c.dirty = false;
            self.tally.bytes_out += c.flush(&mut self.scratch) as u64;
            // A replay goes out a share at a time, as the socket takes it: a few rounds per
            // pass; the rest next pass, or when the socket is writable again.
            let share = (self.limit / SHARE_DIVISOR).max(1);
            let mut rounds = 0;
            while c.has_behind() && c.out.is_empty() && rounds < REPLAY_ROUNDS {
                top_up(c, share, &mut self.compressor, &mut self.tally);
                self.tally.bytes_out += c.flush(&mut self.scratch) as u64;
                rounds += 1;
            }
            if c.has_behind() && c.out.is_empty() {
                self.replaying.push(key);
            }
            if c.over(self.limit) {
                // Still over its limit after a write: too slow. Its close frame is written on
                // the next turn of this loop.
                warn!(
                    "{} in {}: send queue over {} bytes; closing it as too slow",
                    c.peer, c.path, self.limit
                );
                self.close(
                    key,
                    1008,
                    "too slow: send queue full",
                    CloseReason::SlowConsumer,
                    now,
                );
            } else if c.finished() {
                self.reap(key);
            }
        }
        for (to, batch) in self.outgoing.iter_mut().enumerate() {
            if !batch.is_empty() {
                // The next batch is likely the same size: allocate it once instead of growing.
                let next = Vec::with_capacity(batch.len());
                self.peers[to].send(ToWorker::Hub(std::mem::replace(batch, next)));
            }
        }
        self.flush_cluster();
        if !self.closed.is_empty() {
            // Not woken: the acceptor takes the tickets whenever it wakes, before it admits
            // anyone or answers /metrics, and at least once per tick.
            self.acceptor
                .push(ToAcceptor::Closed(std::mem::take(&mut self.closed)));
        }
        let idle = self.hub.take_idle();
        if !idle.is_empty() {
            self.acceptor.send(ToAcceptor::Idle(idle));
        }
        let kept = self.hub.kept();
        self.counters.set_kept(kept.messages, kept.bytes);
        let presence = self.hub.take_presence_counts();
        self.tally.presence_sent += presence.sent;
        self.tally.presence_coalesced += presence.coalesced;
        self.counters.add(&mut self.tally);
        self.counters.beat();
    }

    fn reap(&mut self, key: usize) {
        self.left(key);
        // Dropping the socket closes it, which takes it out of the epoll set: no deregister call.
        let c = self.conns.remove(key);
        self.tally.closed(c.reason());
        debug!("{} left {} ({:?})", c.peer, c.path, c.reason());
        self.closed.push(c.ticket);
    }
}
