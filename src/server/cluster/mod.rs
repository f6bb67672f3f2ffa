//! Scale-out over Redis (`[cluster]`): one Redis thread per node numbers the rooms' messages in
//! Redis and brings every room's messages, from every node, back to the room's owner worker.
//!
//! ```text
//!  owner worker ──Attach/Detach/Publish──▶ redis thread ──EVAL (pipelined)──▶ Redis
//!       ▲          (Mailbox + Waker)            │  one script per message: epoch (SET once),
//!       │                                       │  INCR the room's counter, PUBLISH the envelope
//!       └──Attached, then Messages in seq order◀┘◀── SUBSCRIBE <prefix>:room:{<path>} ──┘
//! ```
//!
//! The room core (`relay::hub`, in cluster mode) does not number anything: the owner forwards a
//! message here, and hands out what comes back from the subscription, this node's own messages
//! included, so every node delivers one order with Redis's epoch and numbers. A room's record is
//! attached before anyone is welcomed: the thread subscribes, and once Redis confirms the
//! subscription it reads (or makes) the room's epoch and last number; messages that arrive
//! meanwhile wait, and follow the `Attached` answer (the hub drops those at or before its number).
//!
//! **Redis down.** Members stay connected. `/healthz` says 503 `redis unavailable`; a message
//! that cannot be sent is dropped and counted (`wsrelay_cluster_dropped_total`); the link is made
//! again with a backoff from 250 ms to 5 s, and every room is subscribed and attached again. A
//! Redis that holds the connections but answers nothing is given up on after [`REPLY_TIMEOUT`]
//! (a `PING` goes out every [`PROBE_INTERVAL`] when nothing else is waiting).
//!
//! **Bounded.** A published message holds its publisher's credit (`flow`) until Redis has
//! answered its script, so what the workers have on their way here is bounded the way the links
//! between workers are.
//!
//! The client is ours (`resp`, `sock`, `link`), on mio like the rest: see `link` for why.

mod envelope;
mod link;
pub mod registry;
pub mod resp;
mod scripts;
mod sock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::Receiver;

use std::time::Duration;

use super::api::work::Reply;
use super::bus::{Mailbox, MemberId, SharedFrame, ToWorker};
use crate::config::ClusterConfig;
use crate::relay::history::Keep;
use crate::relay::hub::{Ask, Epoch};
use crate::relay::{RoomId, WorkerId};

pub use link::{PROBE_INTERVAL, REPLY_TIMEOUT};
pub use registry::Registry;

/// Who published a message: a member (its worker and id), or an API call waiting for the
/// message's number.
#[derive(Debug)]
pub enum Sender {
    Member(WorkerId, MemberId),
    Api(Reply),
}

/// What owner workers tell the Redis thread, in batches (one per worker loop pass).
#[derive(Debug)]
pub enum ToCluster {
    /// The owner made a record of `room`: subscribe, and answer `Attached`.
    Attach {
        room: RoomId,
        path: Arc<str>,
        keep: Keep,
    },
    /// The room is over here: unsubscribe.
    Detach { room: RoomId },
    /// Number, keep (in the room's stream, per `keep`) and publish a message. A member's frame
    /// holds its credit until Redis answers; a member whose message Redis cannot take is told
    /// (`Refused`), an API call gets its number or a 503.
    Publish {
        path: Arc<str>,
        keep: Keep,
        sender: Sender,
        frame: SharedFrame,
    },
    /// Read the room's kept messages (`ask`, none older than `ttl`): answered `Ranged` with `req`.
    Range {
        room: RoomId,
        path: Arc<str>,
        req: u64,
        ask: Ask,
        ttl: Option<Duration>,
    },
    /// This node's member count of a room with presence, and a presence event of its members
    /// if any, for the other nodes (published as it is, not numbered).
    Share {
        path: Arc<str>,
        frame: Option<SharedFrame>,
        members: usize,
        ask: bool,
    },
    /// The API's history of a room (`GET /api/v1/rooms/<path>/history`), answered to `reply`.
    History {
        path: Arc<str>,
        since: Option<u64>,
        limit: usize,
        ttl: Duration,
        reply: Reply,
    },
}

/// A message's sender when it was published by this node (for rooms with `echo` off).
pub type LocalOrigin = Option<(WorkerId, MemberId)>;

/// Messages read from a room's stream, with the room's epoch; `None`: Redis could not answer.
pub type RangeAnswer = Option<(Epoch, Vec<(u64, LocalOrigin, SharedFrame)>)>;

/// What the Redis thread tells a worker: about the rooms it owns, in the order it must be
/// carried out, and about its members' messages Redis could not take.
#[derive(Debug)]
pub enum FromCluster {
    /// The room's epoch and last number in Redis: its messages after `seq` follow.
    Attached {
        room: RoomId,
        epoch: Epoch,
        seq: u64,
    },
    /// A message of the room, numbered by Redis.
    Message {
        room: RoomId,
        epoch: Epoch,
        seq: u64,
        origin: LocalOrigin,
        frame: SharedFrame,
    },
    /// The answer to `Range` with `req`: the room's epoch in Redis and the messages read,
    /// oldest first; `None` when Redis could not answer.
    Ranged { req: u64, answer: RangeAnswer },
    /// Another node's member count of `room` (a room with presence), and a presence event of
    /// its members if any.
    Notice {
        room: RoomId,
        node: u64,
        members: usize,
        frame: Option<SharedFrame>,
        /// It asks for this node's count.
        ask: bool,
    },
    /// This worker's member published a message Redis did not number (unavailable): it is
    /// dropped, and a v1 member is told.
    Refused { member: MemberId },
}

/// The link's state and counters, shared by the Redis thread, the workers and the acceptor.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// Redis answered since the link was last made: `/healthz` is 200.
    pub up: AtomicBool,
    /// Members' messages dropped because Redis could not number them (down, or an error).
    pub dropped: AtomicU64,
    /// Messages sent whose answer was lost with the link: numbered or not, nobody knows.
    pub unconfirmed: AtomicU64,
    /// Messages Redis numbered for this node.
    pub published: AtomicU64,
    /// Messages that came back from the subscriptions.
    pub received: AtomicU64,
    /// Messages dropped by an owner because it had handed out that number already.
    pub duplicates: AtomicU64,
    /// Times the link was made again after a failure.
    pub reconnects: AtomicU64,
    /// Messages read from a room's stream to fill a gap in its numbers.
    pub filled: AtomicU64,
    /// Messages members missed because a gap could not be filled.
    pub missed: AtomicU64,
    /// Times a room was reset (v1 members told to reload).
    pub resets: AtomicU64,
}

impl ClusterState {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The Prometheus lines for `/metrics`.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP wsrelay_cluster_{name} {help}\n# TYPE wsrelay_cluster_{name} {kind}\n\
                 wsrelay_cluster_{name} {v}\n"
            ));
        };
        metric(
            "redis_up",
            "gauge",
            "1 when Redis answers.",
            u64::from(self.is_up()),
        );
        metric(
            "dropped_total",
            "counter",
            "Members' messages dropped because Redis could not sequence them.",
            get(&self.dropped),
        );
        metric(
            "unconfirmed_total",
            "counter",
            "Messages sent to Redis whose answer was lost with the connection.",
            get(&self.unconfirmed),
        );
        metric(
            "published_total",
            "counter",
            "Messages sequenced by Redis for this node.",
            get(&self.published),
        );
        metric(
            "received_total",
            "counter",
            "Messages received from the Redis subscriptions.",
            get(&self.received),
        );
        metric(
            "duplicates_total",
            "counter",
            "Messages dropped because their sequence number was handed out already.",
            get(&self.duplicates),
        );
        metric(
            "reconnects_total",
            "counter",
            "Times the Redis connections were made again after a failure.",
            get(&self.reconnects),
        );
        metric(
            "gap_filled_total",
            "counter",
            "Messages read from a room's stream to fill a gap in its sequence.",
            get(&self.filled),
        );
        metric(
            "missed_total",
            "counter",
            "Messages members missed because a gap in a room's sequence could not be filled.",
            get(&self.missed),
        );
        metric(
            "resets_total",
            "counter",
            "Times a room was reset: v1 members were told to reload.",
            get(&self.resets),
        );
        out
    }
}

/// Every reader of what Redis sends, on one value and on raw bytes as a message would carry them
/// (the `resp` fuzz target): none may panic, whatever the bytes.
#[doc(hidden)]
pub fn read_everything(value: &resp::Value, bytes: &[u8]) {
    let _ = scripts::epoch_and_seq(value);
    let _ = scripts::range(value, false, 1).map(|(_, _, e)| e.len());
    let _ = scripts::range(value, true, 0).map(|(_, _, e)| e.len());
    let _ = envelope::parse_envelope(bytes, 0);
    let _ = envelope::parse_envelope(bytes, u64::MAX);
}

/// A worker's side of the Redis thread.
#[derive(Debug, Clone)]
pub struct Link {
    pub to_redis: Mailbox<Vec<ToCluster>>,
    pub state: Arc<ClusterState>,
}

/// Start the Redis thread. `workers` are the workers' mailboxes by id (the owners it answers).
pub fn spawn(
    config: &ClusterConfig,
    name: String,
    workers: Vec<Mailbox<ToWorker>>,
    seed: u64,
) -> std::io::Result<Link> {
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), link::WAKER)?);
    let (to_redis, inbox): (_, Receiver<Vec<ToCluster>>) = Mailbox::new(Arc::clone(&waker));
    let state = Arc::new(ClusterState::default());
    let shared = Arc::clone(&state);
    let thread = link::Redis::new(config, name, poll, inbox, workers, shared, seed, waker);
    std::thread::Builder::new()
        .name("wsrelay-redis".into())
        .spawn(move || thread.run())?;
    Ok(Link { to_redis, state })
}
