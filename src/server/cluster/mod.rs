//! Scale-out over Redis (`[cluster]`): one Redis thread per Redis shard numbers the rooms'
//! messages in Redis and brings every room's messages, from every node, back to the room's owner
//! worker.
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
//! **Shards.** `[cluster] redis` may list several Redis: each room lives on exactly one, the
//! same on every node, picked by [`shard_of`] (jump hash of the room path, see `shard`). Each
//! shard has its own thread and state ([`Links`], [`ClusterHealth`]); an owner worker sends
//! each room's messages to its shard's thread, and any thread answers any worker. `/healthz` is
//! 503 while any shard is down; new members are refused only for rooms on a shard that is down.
//!
//! The client is ours (`resp`, `sock`, `link`), on mio like the rest: see `link` for why.

mod envelope;
mod link;
pub mod registry;
pub mod resp;
mod scripts;
mod shard;
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
pub use shard::shard_of;

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

/// One Redis thread's state and counters, shared by it, the workers and the acceptor.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// The shard's Redis, `redis://host[:port]` as configured: the `redis` label of its metrics.
    pub url: String,
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
}

/// Every shard's state, in `[cluster] redis` order: what the acceptor reports and admits by.
#[derive(Debug, Clone)]
pub struct ClusterHealth {
    pub shards: Vec<Arc<ClusterState>>,
    /// This node's name: the API's disconnect takes member ids of this node only.
    pub node: Arc<str>,
}

impl ClusterHealth {
    /// Every Redis answers. A room on a Redis that does not cannot be served, so `/healthz`
    /// says 503 as soon as one is down: the load balancer sends new clients to a node that
    /// can serve them all (if one can).
    pub fn all_up(&self) -> bool {
        self.shards.iter().all(|s| s.is_up())
    }

    /// The shard of the room at `path` answers: a new member of it can be welcomed.
    pub fn up_for(&self, path: &str) -> bool {
        self.shards[shard_of(path, self.shards.len())].is_up()
    }

    /// The Prometheus lines for `/metrics`: counters summed over the shards under the names a
    /// single Redis had; `redis_up` one line per shard, labelled with its URL.
    pub fn render(&self) -> String {
        let mut out = String::new();
        head(
            &mut out,
            "redis_up",
            "gauge",
            "1 when this Redis shard answers.",
        );
        for s in &self.shards {
            out.push_str(&format!(
                "wsrelay_cluster_redis_up{{redis=\"{}\"}} {}\n",
                label_value(&s.url),
                u8::from(s.is_up())
            ));
        }
        type Counter = fn(&ClusterState) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 9] = [
            (
                "dropped_total",
                "Members' messages dropped because Redis could not sequence them.",
                |s| &s.dropped,
            ),
            (
                "unconfirmed_total",
                "Messages sent to Redis whose answer was lost with the connection.",
                |s| &s.unconfirmed,
            ),
            (
                "published_total",
                "Messages sequenced by Redis for this node.",
                |s| &s.published,
            ),
            (
                "received_total",
                "Messages received from the Redis subscriptions.",
                |s| &s.received,
            ),
            (
                "duplicates_total",
                "Messages dropped because their sequence number was handed out already.",
                |s| &s.duplicates,
            ),
            (
                "reconnects_total",
                "Times the Redis connections were made again after a failure.",
                |s| &s.reconnects,
            ),
            (
                "gap_filled_total",
                "Messages read from a room's stream to fill a gap in its sequence.",
                |s| &s.filled,
            ),
            (
                "missed_total",
                "Messages members missed because a gap in a room's sequence could not be filled.",
                |s| &s.missed,
            ),
            (
                "resets_total",
                "Times a room was reset: v1 members were told to reload.",
                |s| &s.resets,
            ),
        ];
        for (name, help, counter) in counters {
            let sum: u64 = self
                .shards
                .iter()
                .map(|s| counter(s).load(Ordering::Relaxed))
                .sum();
            head(&mut out, name, "counter", help);
            out.push_str(&format!("wsrelay_cluster_{name} {sum}\n"));
        }
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

/// The `# HELP` and `# TYPE` lines of `wsrelay_cluster_<name>`.
fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!(
        "# HELP wsrelay_cluster_{name} {help}\n# TYPE wsrelay_cluster_{name} {kind}\n"
    ));
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A worker's side of one Redis thread.
#[derive(Debug, Clone)]
pub struct Link {
    pub to_redis: Mailbox<Vec<ToCluster>>,
    pub state: Arc<ClusterState>,
}

/// A worker's side of every Redis thread, one per shard in `[cluster] redis` order.
#[derive(Debug, Clone)]
pub struct Links {
    pub shards: Vec<Link>,
    /// This node's name (`[cluster] name`, or hostname:port).
    pub node: Arc<str>,
}

impl Links {
    /// The shard of the room at `path`: the same on every node (see `shard`).
    pub fn shard_of(&self, path: &str) -> usize {
        shard_of(path, self.shards.len())
    }

    /// What the acceptor needs: the states.
    pub fn health(&self) -> ClusterHealth {
        ClusterHealth {
            shards: self.shards.iter().map(|l| Arc::clone(&l.state)).collect(),
            node: Arc::clone(&self.node),
        }
    }
}

/// Start one Redis thread per shard. `workers` are the workers' mailboxes by id (the owners
/// they answer); `seed` makes each thread's node id (told apart from other nodes' in envelopes).
pub fn spawn(
    config: &ClusterConfig,
    name: String,
    workers: Vec<Mailbox<ToWorker>>,
    seed: u64,
) -> std::io::Result<Links> {
    let shards = (0..config.shards.len())
        .map(|i| {
            let seed = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            spawn_one(&config.for_shard(i), i, name.clone(), workers.clone(), seed)
        })
        .collect::<std::io::Result<_>>()?;
    let node = Arc::from(name);
    Ok(Links { shards, node })
}

/// Start the Redis thread of shard `i`, whose address `config.redis` names.
fn spawn_one(
    config: &ClusterConfig,
    i: usize,
    name: String,
    workers: Vec<Mailbox<ToWorker>>,
    seed: u64,
) -> std::io::Result<Link> {
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), link::WAKER)?);
    let (to_redis, inbox): (_, Receiver<Vec<ToCluster>>) = Mailbox::new(Arc::clone(&waker));
    let state = Arc::new(ClusterState {
        url: config.redis_url.clone(),
        ..ClusterState::default()
    });
    let shared = Arc::clone(&state);
    let thread = link::Redis::new(config, name, poll, inbox, workers, shared, seed, waker);
    std::thread::Builder::new()
        .name(format!("wsrelay-redis{i}"))
        .spawn(move || thread.run())?;
    Ok(Link { to_redis, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(url: &str, up: bool, published: u64) -> Arc<ClusterState> {
        let s = ClusterState {
            url: url.to_owned(),
            ..ClusterState::default()
        };
        s.up.store(up, Ordering::Relaxed);
        s.published.store(published, Ordering::Relaxed);
        Arc::new(s)
    }

    #[test]
    fn health_is_per_shard() {
        let h = ClusterHealth {
            shards: vec![state("redis://a", true, 0), state("redis://b", false, 0)],
            node: Arc::from("n"),
        };
        assert!(!h.all_up());
        let on = |shard| {
            (0..)
                .map(|i| format!("/r/{i}"))
                .find(|p| shard_of(p, 2) == shard)
                .unwrap()
        };
        assert!(h.up_for(&on(0)));
        assert!(!h.up_for(&on(1)));
        h.shards[1].up.store(true, Ordering::Relaxed);
        assert!(h.all_up());
    }

    #[test]
    fn metrics_sum_counters_and_label_each_shard() {
        let h = ClusterHealth {
            shards: vec![
                state("redis://a", true, 3),
                state("redis://\"odd\\\n", false, 4),
            ],
            node: Arc::from("n"),
        };
        let text = h.render();
        assert!(text.contains("wsrelay_cluster_redis_up{redis=\"redis://a\"} 1\n"));
        assert!(text.contains("wsrelay_cluster_redis_up{redis=\"redis://\\\"odd\\\\\\n\"} 0\n"));
        assert!(text.contains("\nwsrelay_cluster_published_total 7\n"));
        assert_eq!(
            text.matches("# TYPE wsrelay_cluster_redis_up gauge")
                .count(),
            1
        );
        // One HELP and one TYPE per family, however many shards.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let unique: std::collections::HashSet<&&str> = types.iter().collect();
        assert_eq!(unique.len(), types.len(), "{text}");
        assert_eq!(text.matches("# HELP ").count(), types.len());
    }
}
