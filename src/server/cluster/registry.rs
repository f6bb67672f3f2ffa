//! The cluster registry (`[cluster]` only): what the API's room list, room info and presence
//! list show, over every node. A thread `wsrelay-registry` per node publishes this node's
//! snapshot into Redis every [`INTERVAL`] and answers those three calls from every live node's
//! snapshots.
//!
//! ```text
//!  acceptor ──Local Rooms / Presence──▶ (this node's members)   every INTERVAL
//!      ▲                                      │
//!      │                                      ▼
//!  API ── Rooms / Room / Presence ──▶ registry thread ──EVAL──▶ Redis
//!      ◀──────────── ToApi::Done ─────────────┘
//! ```
//!
//! **Keys** (`<prefix>` is `[cluster] prefix`):
//! - `<prefix>:nodes`: a sorted set, member the node's name, score the moment (Redis's clock,
//!   ms) until which the node counts as live: the write's time plus [`EXPIRY`].
//! - `<prefix>:node:<name>:rooms`: a hash, room path → members on that node.
//! - `<prefix>:node:<name>:presence`: a hash, path → JSON list of `{"member","user","joined"}`,
//!   for the rooms with `presence = true`.
//! - `<prefix>:node:<name>:rooms:new`, `…:presence:new`: a full write in progress (below).
//!
//! Both hashes carry a `PEXPIRE` of [`EXPIRY`]. Reads take live nodes only (`ZRANGEBYSCORE
//! now +inf`), so **a killed node's rooms, counts and members are gone from every node's API
//! within [`EXPIRY`] (5 s) of its last write**, which is at most [`INTERVAL`] before it died. A
//! node that stops cleanly stops writing the same way. What the API shows of live nodes is at
//! most about one [`INTERVAL`] old (plus the time to take the snapshot).
//!
//! **Writes.** The node keeps the snapshot it last wrote and, each [`INTERVAL`], writes only
//! what changed since (`HSET` of new and changed entries, `HDEL` of gone ones) with the
//! liveness (`ZADD`, dead names dropped) and both `PEXPIRE`s, in one script. That script first
//! checks that the hashes the last write left entries in still exist (`EXISTS`); when Redis lost
//! them (restarted empty, `FLUSHALL`, expired while the node was paused) it writes nothing and
//! says so, and the node writes everything at once. An `EXISTS` rather than a generation key:
//! no new key for readers to skip or to expire, and it sees every loss of whole keys; entries
//! lost one by one (an operator's `HDEL`, a second node under this name) are put right by the
//! full write every [`FULL_EVERY`] writes (30 s). A full write also follows a new connection
//! and a failed write (Redis's state is then unknown). It fills fresh keys (`…:new`) and
//! `RENAME`s them over the live hashes in its last chunk, so readers see the old entries or
//! the new ones, never a half-written or empty hash, whatever the number of chunks. Writes go in
//! chunks of at most 4,096 changes and about 512 KiB (`diff`), one `EVAL` each: a chunk of an
//! incremental write lands at once, which readers may see as a mix of last interval's and this
//! one's entries, never without an entry that is in both.
//!
//! Member ids in a cluster's presence list are `<worker>-<n>@<node>` (ids are only unique per
//! node). Node names must differ between nodes: two nodes with one name overwrite each other.
//!
//! **Costs** per node, in Redis: per [`INTERVAL`] without a change, one `EVAL` of constant
//! size (`TIME`, up to two `EXISTS`, `ZREMRANGEBYSCORE`, `ZADD`, two `PEXPIRE`), whatever the
//! number of rooms; per change, one `HSET` (a room's count, a presence list) or `HDEL` in that
//! interval's `EVAL` (a room whose count changed many times in the interval costs one; a member
//! joining a presence room, two: count and list), plus an `EVAL` per 4,096 changes; per full
//! write (connect, failure, lost hashes, every 30 s), one `HSET` per room with members and per
//! presence room plus two `RENAME`s, an `EVAL` per 4,096 of them, as every interval's write did
//! before: averaged, a thirtieth of a full write per second (100,000 rooms: about 3,300 `HSET`s
//! a second, from 100,000). In the node: the last snapshot written (each room's path and count,
//! each presence list's JSON, in B-trees) and, while writing, the new one and a list of
//! changes (40 bytes each); the snapshot is still taken whole each interval, one local rooms
//! call and one presence call per room (rooms without presence are refused at once by the
//! acceptor). Per API read: one `EVAL` reading every live node's hash (room list: `HGETALL` per
//! node; room and presence: one `HGET` per node), plus one `MGET` per 4,096 listed rooms for
//! their epochs.
//!
//! **Redis down.** Reads answer 503 (`Retry-After`) at once when the Redis link is down, and
//! after at most [`TIMEOUT`] (3 s, the link's reply timeout) when Redis stops answering this
//! connection; the connection is made again with a backoff from 250 ms to 5 s.

mod diff;
mod lua;
mod merge;
mod store;
mod write;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::warn;
use mio::{Events, Poll, Token};

use super::ClusterState;
use crate::config::ClusterConfig;
use crate::server::api::{Call, CallId, Outcome, ToApi};
use crate::server::bus::{Mailbox, ToAcceptor};

/// This node's snapshot is written this often.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// A node not heard of for this long is dead: its entries are no longer read, and its hashes
/// expire. Five intervals: a write or two may be late (a busy node, a slow Redis) without the
/// node's members blinking out of the lists.
pub const EXPIRY: Duration = Duration::from_secs(5);
/// The longest wait for one Redis answer (and for a connect): the link's `REPLY_TIMEOUT`.
pub const TIMEOUT: Duration = super::REPLY_TIMEOUT;
/// A full write at least every this many writes (30 s), even when every incremental one went
/// well: the incremental write notices hashes that are gone, not entries lost one by one (an
/// operator's `HDEL`, a second node under this node's name), and this puts those right.
const FULL_EVERY: u32 = 30;
/// The longest wait for this node's own snapshot (the acceptor and the workers answer in
/// microseconds; a snapshot past this is dropped and taken again).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

const WAKER: Token = Token(0);

/// An API call the acceptor hands on to the registry.
#[derive(Debug)]
struct Ask {
    id: CallId,
    call: Call,
    reply: Mailbox<ToApi>,
}

/// The acceptor's handle on the registry thread.
#[derive(Debug, Clone)]
pub struct Registry {
    asks: Mailbox<Ask>,
}

impl Registry {
    /// Answer `call` (`Rooms`, `Room` or `Presence`) over every node, on `reply`.
    pub fn ask(&self, id: CallId, call: Call, reply: Mailbox<ToApi>) {
        let back = reply.clone();
        if !self.asks.send(Ask { id, call, reply }) {
            let reason = "shutting down".into();
            back.send(ToApi::Done(
                id,
                Outcome::Refused {
                    status: 503,
                    reason,
                },
            ));
        }
    }
}

/// Start the registry thread: it asks `acceptor` for this node's members, and reads the Redis
/// link's `state` (reads answer 503 at once while the link is down).
pub fn spawn(
    config: &ClusterConfig,
    name: String,
    acceptor: Mailbox<ToAcceptor>,
    state: Arc<ClusterState>,
) -> io::Result<Registry> {
    let poll = Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);
    let (asks, ask_rx) = Mailbox::new(Arc::clone(&waker));
    let (me, answers) = Mailbox::new(waker);
    let store = store::Store::new(
        config.redis.clone(),
        config.redis_url.clone(),
        name,
        config.prefix.clone(),
    );
    let thread = Thread {
        poll,
        asks: ask_rx,
        answers,
        me,
        acceptor,
        state,
        store,
        snap: None,
        next_snap: Instant::now(),
        next_id: 0,
    };
    std::thread::Builder::new()
        .name("wsrelay-registry".into())
        .spawn(move || thread.run())?;
    Ok(Registry { asks })
}

/// This node's snapshot while the acceptor and the workers answer for it.
struct Snap {
    started: Instant,
    rooms_call: CallId,
    rooms: Option<Vec<(String, usize)>>,
    /// Presence calls not answered yet: call → room path.
    waiting: HashMap<CallId, String>,
    presence: Vec<(String, String)>,
}

struct Thread {
    poll: Poll,
    asks: Receiver<Ask>,
    answers: Receiver<ToApi>,
    /// Where the acceptor answers this thread's own calls.
    me: Mailbox<ToApi>,
    acceptor: Mailbox<ToAcceptor>,
    state: Arc<ClusterState>,
    store: store::Store,
    snap: Option<Snap>,
    next_snap: Instant,
    next_id: CallId,
}

impl Thread {
    fn run(mut self) {
        let mut events = Events::with_capacity(4);
        loop {
            let now = Instant::now();
            let due = match &self.snap {
                Some(s) => s.started + SNAPSHOT_TIMEOUT,
                None => self.next_snap,
            };
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(due.saturating_duration_since(now)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                log::error!("cluster: the registry thread's poll failed: {e}; exiting");
                std::process::exit(super::super::EXIT_THREAD_DIED);
            }
            self.drain_answers();
            while let Ok(ask) = self.asks.try_recv() {
                let outcome = self.read(ask.call);
                ask.reply.send(ToApi::Done(ask.id, outcome));
            }
            // What came while a read waited for Redis, before the snapshot's time is judged.
            self.drain_answers();
            let now = Instant::now();
            match &self.snap {
                Some(s) if now >= s.started + SNAPSHOT_TIMEOUT => {
                    warn!("cluster registry: this node's snapshot took over {SNAPSHOT_TIMEOUT:?}");
                    self.snap = None;
                    self.next_snap = now;
                }
                None if now >= self.next_snap => self.start_snapshot(now),
                _ => {}
            }
        }
    }

    fn drain_answers(&mut self) {
        while let Ok(answer) = self.answers.try_recv() {
            if let ToApi::Done(id, outcome) = answer {
                self.local_answer(id, outcome);
            }
        }
    }

    fn local(&mut self, call: Call) -> CallId {
        self.next_id += 1;
        let id = self.next_id;
        let reply = self.me.clone();
        self.acceptor.send(ToAcceptor::Local { id, call, reply });
        id
    }

    fn start_snapshot(&mut self, now: Instant) {
        self.next_snap = now + INTERVAL;
        let call = Call::Rooms {
            prefix: String::new(),
            limit: usize::MAX,
        };
        let rooms_call = self.local(call);
        self.snap = Some(Snap {
            started: now,
            rooms_call,
            rooms: None,
            waiting: HashMap::new(),
            presence: Vec::new(),
        });
    }

    /// An answer to one of this thread's local calls.
    fn local_answer(&mut self, id: CallId, outcome: Outcome) {
        let Some(mut s) = self.snap.take() else {
            return; // a snapshot given up on
        };
        if id == s.rooms_call {
            let Outcome::Rooms(rooms) = outcome else {
                // Shutting down: the node's entries expire as a dead node's do.
                return;
            };
            let mut asked = Vec::new();
            for r in &rooms {
                let call = Call::Presence {
                    path: r.room.clone(),
                };
                asked.push((self.local(call), r.room.clone()));
            }
            s.waiting.extend(asked);
            s.rooms = Some(rooms.into_iter().map(|r| (r.room, r.members)).collect());
        } else if let Some(path) = s.waiting.remove(&id) {
            // Refused: presence is off in the room (or the node is stopping).
            if let Outcome::Presence { members, .. } = outcome
                && !members.is_empty()
            {
                s.presence.push((path, merge::presence_json(&members)));
            }
        }
        if s.rooms.is_some() && s.waiting.is_empty() {
            let rooms = s.rooms.take().unwrap_or_default();
            let snap = diff::Snapshot::new(rooms, std::mem::take(&mut s.presence));
            // A node whose Redis is down writes (all) next time; the reads say 503 meanwhile.
            let _ = self.store.write(snap);
        } else {
            self.snap = Some(s);
        }
    }

    /// A read over every live node.
    fn read(&mut self, call: Call) -> Outcome {
        let unavailable = || Outcome::Refused {
            status: 503,
            reason: "redis unavailable".into(),
        };
        if !self.state.is_up() {
            return unavailable();
        }
        match call {
            Call::Rooms { prefix, limit } => match self.store.rooms(&prefix, limit) {
                Ok(rooms) => Outcome::Rooms(rooms),
                Err(_) => unavailable(),
            },
            Call::Room { path } => match self.store.room(&path) {
                Ok(Some(room)) => Outcome::Room(room),
                Ok(None) => Outcome::Refused {
                    status: 404,
                    reason: "room not open".into(),
                },
                Err(_) => unavailable(),
            },
            Call::Presence { path } => match self.store.presence(&path) {
                Ok(members) => Outcome::Presence {
                    room: path,
                    members,
                },
                Err(_) => unavailable(),
            },
            other => {
                debug_assert!(false, "the registry was asked {other:?}");
                Outcome::Refused {
                    status: 500,
                    reason: "not a registry call".into(),
                }
            }
        }
    }
}
