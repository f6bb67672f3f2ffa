//! The hub in cluster mode, reading what the cluster keeps: a member's replay the owner cannot
//! give from its own history (it joined another node, or this node attached the room after the
//! messages it asks for), and the gaps in a room's numbers (messages lost between Redis and this
//! node: a dropped subscription, Redis's output-buffer limit, a reconnect).
//!
//! **Gaps.** The owner hands out a room's messages in number order only. A message past the next
//! number opens a fill: it and every later one are held while the missing ones are read from the
//! room's stream ([`Sink::range`]); those found are handed out, then the held ones. When the
//! stream cannot fill the gap (the room keeps nothing, the messages were trimmed or expired, the
//! epoch changed, Redis is gone), the room is *reset*: it goes on after the gap, its v1 members
//! get `{"type":"reset","epoch":…,"seq":…}` (they reload), raw members keep going, and the
//! messages missed are counted. A reset drops the owner's own history too, so a later replay
//! never spans a hole.
//!
//! **Replays.** A `Fetch` the owner's history covers is answered from it, as without a cluster.
//! Otherwise the owner reads the stream; the replay is the stream's messages after the member's
//! number, then the owner's own kept messages up to its last number (the read may be older than
//! the owner's last number, never newer than what it can complete: the owner attached the room
//! before the read went out). The member is admitted with the owner's last number, so replay and
//! live messages meet with no gap, as without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Envelope, Epoch, Hub, MemberKey, Message, Origin, RoomIds, Sink, Stamp, Welcome};
use crate::relay::history::{History, Want};
use crate::relay::{RoomId, WorkerId};

/// Messages a room holds while a gap before them is filled. Past it later ones are dropped,
/// and become a gap of their own once the fill is over.
const MAX_HELD: usize = 100_000;

/// What the owner asks of the cluster's kept messages of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Every kept message after this number, oldest first.
    After(u64),
    /// The latest `n` kept messages, oldest first.
    Last(usize),
}

/// A message read from the cluster: its number, sender and frame.
pub type Read<F, M> = (u64, Origin<M>, F);

/// The cluster's answer to [`Sink::range`]: the room's epoch there and the messages read;
/// `None` when it could not answer (Redis unavailable, the room unknown there).
pub type Ranged<F, M> = Option<(Epoch, Vec<Read<F, M>>)>;

/// Gaps filled and resets, since the caller last took them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GapCounts {
    /// Messages read from the cluster to fill a gap.
    pub filled: u64,
    /// Messages known missed by a reset (a reset on a new epoch adds none: it cannot know).
    pub missed: u64,
    pub resets: u64,
}

enum Request<M> {
    Fetch {
        room: RoomId,
        from: WorkerId,
        member: M,
        key: MemberKey,
        ticket: u64,
        want: Want,
    },
    Fill {
        room: RoomId,
    },
}

struct Fill<F, M> {
    req: u64,
    /// The last number of the gap.
    upto: u64,
    /// Messages after the gap, in the order they came.
    held: Vec<(Epoch, u64, Origin<M>, F)>,
}

/// What the owner awaits from the cluster.
pub(super) struct Reads<F, M> {
    next_req: u64,
    requests: HashMap<u64, Request<M>>,
    fills: HashMap<RoomId, Fill<F, M>, RoomIds>,
    counts: GapCounts,
}

impl<F, M> Default for Reads<F, M> {
    fn default() -> Self {
        Reads {
            next_req: 0,
            requests: HashMap::new(),
            fills: HashMap::default(),
            counts: GapCounts::default(),
        }
    }
}

impl<F: Message, M: Copy + PartialEq> Hub<F, M> {
    /// Cluster mode, on the owner: a message of `room` numbered by the cluster, as every node
    /// gets it. One already handed out (a number not past the last one, same epoch) is dropped:
    /// false. A number past the next one opens a fill; a new epoch resets the room.
    pub fn sequenced(
        &mut self,
        room: RoomId,
        epoch: Epoch,
        seq: u64,
        origin: Origin<M>,
        frame: F,
        sink: &mut impl Sink<F, M>,
    ) -> bool {
        if self.parked.contains_key(&room) {
            return false;
        }
        let Some(owned) = self.owned.get(&room) else {
            return false;
        };
        if owned.epoch == epoch && seq < owned.next_seq {
            return false;
        }
        if let Some(fill) = self.cl.fills.get_mut(&room) {
            if fill.held.len() < MAX_HELD {
                fill.held.push((epoch, seq, origin, frame));
            }
            return true;
        }
        if owned.epoch != epoch {
            self.reset(room, epoch, seq - 1, 0, sink);
        } else if seq > owned.next_seq && self.fill(room, seq - 1, sink) {
            let fill = self.cl.fills.get_mut(&room).expect("just opened");
            fill.held.push((epoch, seq, origin, frame));
            return true;
        }
        let Some(owned) = self.owned.get_mut(&room) else {
            return false;
        };
        owned.next_seq = seq + 1;
        self.fan_out(room, seq, origin, frame, sink);
        true
    }

    /// Cluster mode, on the owner: the answer to the [`Sink::range`] call made with `req`.
    pub fn ranged(&mut self, req: u64, answer: Ranged<F, M>, sink: &mut impl Sink<F, M>) {
        match self.cl.requests.remove(&req) {
            Some(Request::Fill { room }) => self.filled(room, req, answer, sink),
            Some(Request::Fetch {
                room,
                from,
                member,
                key,
                ticket,
                want,
            }) => {
                let Some(owned) = self.owned.get(&room) else {
                    return;
                };
                let last = owned.next_seq - 1;
                let answer = answer.filter(|(epoch, _)| *epoch == owned.epoch);
                let (recovered, replay) = match (want, answer) {
                    (Want::Since { seq, epoch }, Some((_, read))) if epoch == owned.epoch.0 => {
                        match merge_since(seq, last, read, &owned.history) {
                            Some(replay) => (true, replay),
                            None => (false, Vec::new()),
                        }
                    }
                    (Want::Last(n), Some((_, read))) => {
                        (false, merge_last(n as usize, last, read, &owned.history))
                    }
                    (Want::Last(n), None) => (false, owned.history.last(n as usize)),
                    _ => (false, Vec::new()),
                };
                let welcome = Welcome {
                    epoch: owned.epoch,
                    seq: last,
                    recovered,
                    replay,
                    members: owned.presence.as_ref().map(super::Presence::total),
                };
                let fetched = Envelope::Fetched {
                    room,
                    member,
                    key,
                    ticket,
                    welcome,
                };
                self.send_to(from, fetched, sink);
            }
            None => {}
        }
    }

    /// The room is over: a fill it had open is dropped (its answer will find nothing).
    pub(super) fn forget(&mut self, room: RoomId) {
        self.cl.fills.remove(&room);
    }

    /// Gaps filled and resets since the last call.
    pub fn take_gap_counts(&mut self) -> GapCounts {
        std::mem::take(&mut self.cl.counts)
    }

    /// Cluster mode, on the owner, answering a `Fetch`: when the owner's own history cannot give
    /// the replay but the cluster may, read the cluster and answer later (true).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fetch_remote(
        &mut self,
        room: RoomId,
        from: WorkerId,
        member: M,
        key: MemberKey,
        ticket: u64,
        want: Want,
        sink: &mut impl Sink<F, M>,
    ) -> bool {
        let Some(owned) = self.owned.get(&room) else {
            return false;
        };
        if owned.keep.size == 0 {
            return false;
        }
        let last = owned.next_seq - 1;
        let ask = match want {
            Want::Since { seq, epoch }
                if epoch == owned.epoch.0
                    && seq < last
                    && owned.history.since(seq, last).is_none() =>
            {
                Ask::After(seq)
            }
            Want::Last(n) if (owned.history.len() as u64) < u64::from(n).min(last) => {
                Ask::Last(n as usize)
            }
            _ => return false,
        };
        let (path, ttl) = (Arc::clone(&owned.path), owned.keep.ttl);
        let req = self.next_req();
        let fetch = Request::Fetch {
            room,
            from,
            member,
            key,
            ticket,
            want,
        };
        self.cl.requests.insert(req, fetch);
        sink.range(room, &path, req, ask, Some(ttl));
        true
    }

    /// Cluster mode, on the owner: the room's messages after its next number up to `upto`
    /// were missed. Opens a fill (true), or resets the room when it keeps nothing.
    pub(super) fn fill(&mut self, room: RoomId, upto: u64, sink: &mut impl Sink<F, M>) -> bool {
        if let Some(fill) = self.cl.fills.get_mut(&room) {
            // One already open (the link came back meanwhile): it now ends further on.
            fill.upto = fill.upto.max(upto);
            return true;
        }
        let Some(owned) = self.owned.get(&room) else {
            return false;
        };
        let after = owned.next_seq - 1;
        if owned.keep.size == 0 {
            self.reset(room, owned.epoch, upto, upto - after, sink);
            return false;
        }
        let path = Arc::clone(&owned.path);
        let req = self.next_req();
        self.cl.requests.insert(req, Request::Fill { room });
        let held = Vec::new();
        self.cl.fills.insert(room, Fill { req, upto, held });
        sink.range(room, &path, req, Ask::After(after), None);
        true
    }

    /// The room goes on after `seq` of `epoch`, having missed `missed` messages: its history
    /// goes, and every worker with members is told.
    pub(super) fn reset(
        &mut self,
        room: RoomId,
        epoch: Epoch,
        seq: u64,
        missed: u64,
        sink: &mut impl Sink<F, M>,
    ) {
        let Some(owned) = self.owned.get_mut(&room) else {
            return;
        };
        let (n, bytes) = (owned.history.len(), owned.history.bytes());
        owned.history.trim(0);
        self.kept.messages -= n;
        self.kept.bytes -= bytes;
        if owned.epoch != epoch {
            log::warn!(
                "room {}: the cluster has a new epoch {epoch} (was {}); members reset",
                owned.path,
                owned.epoch
            );
        } else {
            log::warn!(
                "room {}: {missed} messages before {} are gone; members reset",
                owned.path,
                seq + 1
            );
        }
        owned.epoch = epoch;
        owned.next_seq = seq + 1;
        self.cl.counts.resets += 1;
        self.cl.counts.missed += missed;
        let frame = sink.stamp(room, Stamp::Reset(epoch), seq);
        let reset = |frame| Envelope::Reset {
            room,
            epoch,
            seq,
            frame,
        };
        if self.to_other_workers(room, sink, reset, &frame) {
            self.reset_local(room, epoch, seq, &frame, sink);
        }
    }

    /// A worker's members of `room` go on after `seq` of `epoch`; v1 members are told.
    pub(super) fn reset_local(
        &mut self,
        room: RoomId,
        epoch: Epoch,
        seq: u64,
        frame: &F,
        sink: &mut impl Sink<F, M>,
    ) {
        // Not yet registered: the owner's `Joined`, on its way, carries the new state.
        if let Some(local) = self.local.get_mut(&room).filter(|l| l.pending.is_none()) {
            local.epoch = epoch;
            local.seq = seq;
        }
        self.notice_local(room, frame, sink);
    }

    fn filled(&mut self, room: RoomId, req: u64, answer: Ranged<F, M>, sink: &mut impl Sink<F, M>) {
        let Some(fill) = self.cl.fills.remove(&room) else {
            return;
        };
        if fill.req != req {
            self.cl.fills.insert(room, fill);
            return;
        }
        let Some(owned) = self.owned.get(&room) else {
            return;
        };
        let epoch = owned.epoch;
        if let Some((read_epoch, read)) = answer
            && read_epoch == epoch
        {
            for (seq, origin, frame) in read {
                let Some(owned) = self.owned.get_mut(&room) else {
                    return;
                };
                if seq < owned.next_seq {
                    continue;
                }
                if seq > owned.next_seq || seq > fill.upto {
                    break;
                }
                owned.next_seq = seq + 1;
                self.cl.counts.filled += 1;
                self.fan_out(room, seq, origin, frame, sink);
            }
        }
        let Some(owned) = self.owned.get(&room) else {
            return;
        };
        if owned.next_seq <= fill.upto {
            let missed = fill.upto + 1 - owned.next_seq;
            self.reset(room, epoch, fill.upto, missed, sink);
        }
        for (epoch, seq, origin, frame) in fill.held {
            self.sequenced(room, epoch, seq, origin, frame, sink);
        }
    }

    fn next_req(&mut self) -> u64 {
        self.cl.next_req += 1;
        self.cl.next_req
    }
}

/// The replay after `since` up to `last`: the messages read from the cluster, then the owner's
/// own; `None` when they leave a hole.
fn merge_since<F: Message, M>(
    since: u64,
    last: u64,
    read: Vec<Read<F, M>>,
    history: &History<F>,
) -> Option<Vec<(u64, F)>> {
    let mut replay = Vec::new();
    let mut next = since + 1;
    for (seq, _, frame) in read {
        if seq < next {
            continue;
        }
        if seq != next || seq > last {
            break;
        }
        replay.push((seq, frame));
        next += 1;
    }
    if next <= last {
        replay.extend(history.since(next - 1, last)?);
    }
    Some(replay)
}

/// The latest `n` messages up to `last`, from the cluster's and the owner's together.
fn merge_last<F: Message, M>(
    n: usize,
    last: u64,
    read: Vec<Read<F, M>>,
    history: &History<F>,
) -> Vec<(u64, F)> {
    let mut all: BTreeMap<u64, F> = read.into_iter().map(|(s, _, f)| (s, f)).collect();
    all.extend(history.last(n));
    all.retain(|&s, _| s <= last);
    let skip = all.len().saturating_sub(n);
    all.into_iter().skip(skip).collect()
}
