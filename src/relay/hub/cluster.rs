//! The hub in cluster mode (`[cluster]`): rooms are numbered by Redis, not by their owner.
//!
//! The owner still holds each room's record, its workers and its history, but a message it would
//! number goes out through [`Sink::forward`] instead, and comes back (from this node and from
//! every other) through [`Hub::sequenced`] with the cluster's epoch and number: every node hands
//! out a room's messages in that one order. A room record made here waits for the cluster's
//! epoch and last number ([`Sink::attach`], answered by [`Hub::attached`]) before it answers any
//! `Join` or `Fetch`, so a member's welcome names the cluster's epoch and sequence.

use super::{Envelope, Epoch, Hub, Message, Origin, OwnedRoom, Sink};
use crate::relay::RoomId;
use crate::relay::history::History;

impl<F: Message, M: Copy + PartialEq> Hub<F, M> {
    /// Number rooms through the cluster from now on (set once, before the first member).
    pub fn set_cluster(&mut self) {
        self.cluster = true;
    }

    /// Whether rooms are numbered by the cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Cluster mode: the envelopes about a room that is not attached yet wait for it; the first
    /// `Join` of a room makes its record and asks the cluster for its state. Gives the envelope
    /// back when it is to be handled now.
    pub(super) fn park(
        &mut self,
        envelope: Envelope<F, M>,
        sink: &mut impl Sink<F, M>,
    ) -> Option<Envelope<F, M>> {
        if !self.cluster {
            return Some(envelope);
        }
        let room = match &envelope {
            Envelope::Join {
                room, path, keep, ..
            } => {
                let room = *room;
                if let std::collections::hash_map::Entry::Vacant(e) = self.owned.entry(room) {
                    e.insert(OwnedRoom {
                        // Replaced by the cluster's in `attached`.
                        epoch: Epoch(0),
                        next_seq: 1,
                        workers: Vec::new(),
                        path: path.clone(),
                        keep: *keep,
                        history: History::default(),
                        reported: false,
                        presence: None,
                    });
                    self.parked.insert(room, Vec::new());
                    sink.attach(room, path);
                }
                room
            }
            Envelope::Leave { room, .. }
            | Envelope::Fetch { room, .. }
            | Envelope::Note { room, .. } => *room,
            _ => return Some(envelope),
        };
        match self.parked.get_mut(&room) {
            Some(waiting) => {
                waiting.push(envelope);
                None
            }
            None => Some(envelope),
        }
    }

    /// Cluster mode, on the owner: the room's epoch and last number in the cluster, now that
    /// its messages come in. The envelopes that waited for it are handled now. Called again
    /// after the cluster link came back: a new epoch (the cluster lost the room) drops the
    /// history kept under the old one.
    pub fn attached(&mut self, room: RoomId, epoch: Epoch, seq: u64, sink: &mut impl Sink<F, M>) {
        let Some(owned) = self.owned.get_mut(&room) else {
            self.parked.remove(&room);
            return;
        };
        let first = self.parked.contains_key(&room);
        if first || owned.epoch != epoch {
            if !first {
                log::warn!(
                    "room {}: the cluster has a new epoch {epoch} (was {})",
                    owned.path,
                    owned.epoch
                );
            }
            let (n, bytes) = (owned.history.len(), owned.history.bytes());
            owned.history.trim(0);
            self.kept.messages -= n;
            self.kept.bytes -= bytes;
            owned.epoch = epoch;
            owned.next_seq = seq + 1;
        } else {
            // Same incarnation: numbers past ours were missed while the link was down.
            owned.next_seq = owned.next_seq.max(seq + 1);
        }
        for envelope in self.parked.remove(&room).unwrap_or_default() {
            self.handle(envelope, sink);
        }
    }

    /// Cluster mode, on the owner: a message of `room` numbered by the cluster, as every node
    /// gets it. One already handed out (a number not past the last one, same epoch) is dropped:
    /// false. A new epoch is taken as it comes.
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
        let Some(owned) = self.owned.get_mut(&room) else {
            return false;
        };
        if owned.epoch == epoch && seq < owned.next_seq {
            return false;
        }
        if owned.epoch != epoch {
            let (n, bytes) = (owned.history.len(), owned.history.bytes());
            owned.history.trim(0);
            self.kept.messages -= n;
            self.kept.bytes -= bytes;
            owned.epoch = epoch;
        }
        owned.next_seq = seq + 1;
        self.fan_out(room, seq, origin, frame, sink);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{Joining, Recipients, Welcome};
    use super::*;
    use crate::relay::WorkerId;

    type F = Arc<[u8]>;

    fn f(s: &str) -> F {
        Arc::from(s.as_bytes())
    }

    fn text(f: &F) -> String {
        String::from_utf8_lossy(f).into_owned()
    }

    /// A sink that records what the hub asks of the cluster and what it hands out.
    #[derive(Default)]
    struct Rec {
        forwarded: Vec<(RoomId, String, String)>,
        attached: Vec<RoomId>,
        delivered: Vec<(u64, String, Vec<u32>)>,
        admitted: Vec<(u32, Epoch, u64)>,
        sent: Vec<WorkerId>,
    }

    impl Sink<F, u32> for Rec {
        fn send(&mut self, to: WorkerId, _: Envelope<F, u32>) {
            self.sent.push(to);
        }
        fn deliver(&mut self, _: RoomId, seq: u64, f: &F, to: Recipients<'_, u32>) {
            self.delivered.push((seq, text(f), to.collect()));
        }
        fn admitted(&mut self, _: RoomId, m: u32, w: Welcome<F>) {
            self.admitted.push((m, w.epoch, w.seq));
        }
        fn forward(&mut self, room: RoomId, path: &Arc<str>, _: Origin<u32>, f: F) {
            self.forwarded.push((room, path.to_string(), text(&f)));
        }
        fn attach(&mut self, room: RoomId, _: &Arc<str>) {
            self.attached.push(room);
        }
    }

    fn origin(member: u32) -> Origin<u32> {
        Origin {
            worker: WorkerId(0),
            member,
        }
    }

    #[test]
    fn members_wait_for_the_cluster_and_messages_are_numbered_there() {
        let mut hub: Hub<F, u32> = Hub::new(WorkerId(0), 1, 7);
        hub.set_cluster();
        let mut sink = Rec::default();
        let room = RoomId(0);
        let joining = Joining {
            path: "/chat",
            ..Joining::live(false)
        };
        hub.join(room, 1, joining, &mut sink);
        assert_eq!(sink.attached, vec![room]);
        assert!(
            sink.admitted.is_empty(),
            "no welcome before the cluster's state"
        );
        hub.publish(room, 1, f("early"), &mut sink);
        assert_eq!(sink.forwarded, vec![(room, "/chat".into(), "early".into())]);
        assert!(sink.delivered.is_empty(), "nothing numbered locally");
        hub.attached(room, Epoch(0xabc), 41, &mut sink);
        assert_eq!(sink.admitted, vec![(1, Epoch(0xabc), 41)]);
        hub.join(room, 2, Joining::live(false), &mut sink);
        assert!(!hub.sequenced(room, Epoch(0xabc), 41, origin(9), f("old"), &mut sink));
        assert!(hub.sequenced(room, Epoch(0xabc), 42, origin(1), f("early"), &mut sink));
        assert!(!hub.sequenced(room, Epoch(0xabc), 42, origin(1), f("again"), &mut sink));
        assert!(hub.sequenced(room, Epoch(0xabc), 43, origin(9), f("next"), &mut sink));
        // Echo off: member 1 does not get its own message back.
        assert_eq!(
            sink.delivered,
            vec![
                (42, "early".into(), vec![2]),
                (43, "next".into(), vec![1, 2])
            ]
        );
        assert_eq!(hub.owned_state(room), Some((Epoch(0xabc), 43)));
        // The link came back with the room lost: a new epoch, numbers from 1.
        hub.attached(room, Epoch(0xdef), 0, &mut sink);
        assert!(hub.sequenced(room, Epoch(0xdef), 1, origin(9), f("new"), &mut sink));
        assert_eq!(hub.owned_state(room), Some((Epoch(0xdef), 1)));
        assert!(hub.crosses_threads(room));
    }

    #[test]
    fn leaves_and_fetches_wait_in_order() {
        let mut hub: Hub<F, u32> = Hub::new(WorkerId(0), 1, 7);
        hub.set_cluster();
        let mut sink = Rec::default();
        let room = RoomId(3);
        let key = hub.join(room, 1, Joining::live(true), &mut sink);
        hub.leave(room, key, &mut sink);
        hub.attached(room, Epoch(5), 0, &mut sink);
        // The join then the leave: the room has no workers and reports idle.
        assert_eq!(hub.take_idle(), vec![room]);
        hub.close(room);
        assert_eq!(hub.owned_rooms(), 0);
    }
}
