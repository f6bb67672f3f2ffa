//! The hub in cluster mode (`[cluster]`): rooms are numbered by Redis, not by their owner.
//!
//! The owner still holds each room's record, its workers and its history, but a message it would
//! number goes out through [`Sink::forward`] instead, and comes back (from this node and from
//! every other) through [`Hub::sequenced`] with the cluster's epoch and number: every node hands
//! out a room's messages in that one order. A room record made here waits for the cluster's
//! epoch and last number ([`Sink::attach`], answered by [`Hub::attached`]) before it answers any
//! `Join` or `Fetch`, so a member's welcome names the cluster's epoch and sequence.

use super::{Envelope, Epoch, Hub, Message, OwnedRoom, Sink};
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
                    sink.attach(room, path, *keep);
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
        if self.parked.contains_key(&room) {
            owned.epoch = epoch;
            owned.next_seq = seq + 1;
        } else if owned.epoch != epoch {
            // The link came back and the cluster lost the room (or it ended there meanwhile).
            self.reset(room, epoch, seq, 0, sink);
        } else if seq >= owned.next_seq {
            // Same incarnation: the numbers past ours were missed while the link was down.
            self.fill(room, seq, sink);
        }
        for envelope in self.parked.remove(&room).unwrap_or_default() {
            self.handle(envelope, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{Ask, Joining, Origin, Recipients, Stamp, Welcome};
    use super::*;
    use crate::relay::WorkerId;
    use crate::relay::history::{Keep, Want};

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
        ranges: Vec<(u64, Ask)>,
        notices: Vec<(String, Vec<u32>)>,
        replays: Vec<(bool, Vec<u64>)>,
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
            let seqs = w.replay.iter().map(|(s, _)| *s).collect();
            self.replays.push((w.recovered, seqs));
        }
        fn forward(&mut self, room: RoomId, path: &Arc<str>, _: Keep, _: Origin<u32>, f: F) {
            self.forwarded.push((room, path.to_string(), text(&f)));
        }
        fn attach(&mut self, room: RoomId, _: &Arc<str>, _: Keep) {
            self.attached.push(room);
        }
        fn range(&mut self, _: RoomId, _: &Arc<str>, req: u64, ask: Ask, _: Option<Duration>) {
            self.ranges.push((req, ask));
        }
        fn notice(&mut self, _: RoomId, f: &F, to: Recipients<'_, u32>) {
            self.notices.push((text(f), to.collect()));
        }
        fn stamp(&mut self, _: RoomId, event: Stamp<'_, F>, seq: u64) -> F {
            match event {
                Stamp::Reset(epoch) => f(&format!("reset {epoch} {seq}")),
                _ => unreachable!("no presence here"),
            }
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

    const KEEP: Keep = Keep {
        size: 100,
        ttl: Duration::from_secs(60),
    };

    /// A hub with one member (1) of a room that keeps `keep`, attached at number 10.
    fn attached_room(keep: Keep) -> (Hub<F, u32>, Rec, RoomId) {
        let mut hub: Hub<F, u32> = Hub::new(WorkerId(0), 1, 7);
        hub.set_cluster();
        let mut sink = Rec::default();
        let room = RoomId(0);
        let joining = Joining {
            path: "/chat",
            keep,
            ..Joining::live(true)
        };
        hub.join(room, 1, joining, &mut sink);
        hub.attached(room, Epoch(0xe), 10, &mut sink);
        (hub, sink, room)
    }

    fn delivered(sink: &Rec) -> Vec<u64> {
        sink.delivered.iter().map(|d| d.0).collect()
    }

    fn read(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Origin<u32>, F)> {
        seqs.map(|s| (s, origin(9), f(&s.to_string()))).collect()
    }

    #[test]
    fn a_gap_is_filled_from_the_stream_before_later_messages() {
        let (mut hub, mut sink, room) = attached_room(KEEP);
        let e = Epoch(0xe);
        assert!(hub.sequenced(room, e, 11, origin(9), f("11"), &mut sink));
        assert!(hub.sequenced(room, e, 14, origin(9), f("14"), &mut sink));
        assert_eq!(sink.ranges, vec![(1, Ask::After(11))]);
        assert!(hub.sequenced(room, e, 15, origin(9), f("15"), &mut sink));
        assert!(!hub.sequenced(room, e, 11, origin(9), f("11"), &mut sink));
        assert_eq!(delivered(&sink), vec![11], "later ones wait for the fill");
        hub.ranged(1, Some((e, read(12..=14))), &mut sink);
        assert_eq!(delivered(&sink), vec![11, 12, 13, 14, 15]);
        assert!(sink.notices.is_empty());
        let gaps = hub.take_gap_counts();
        assert_eq!((gaps.filled, gaps.missed, gaps.resets), (2, 0, 0));
    }

    #[test]
    fn a_gap_the_stream_cannot_fill_resets_the_room() {
        let (mut hub, mut sink, room) = attached_room(KEEP);
        let e = Epoch(0xe);
        assert!(hub.sequenced(room, e, 14, origin(9), f("14"), &mut sink));
        // Trimmed: 11 is gone, 12 and 13 are no use without it.
        hub.ranged(1, Some((e, read(12..=13))), &mut sink);
        assert_eq!(
            sink.notices,
            vec![("reset 000000000000000e 13".into(), vec![1])]
        );
        assert_eq!(delivered(&sink), vec![14]);
        let gaps = hub.take_gap_counts();
        assert_eq!((gaps.filled, gaps.missed, gaps.resets), (0, 3, 1));
        // Redis unavailable: the same.
        assert!(hub.sequenced(room, e, 20, origin(9), f("20"), &mut sink));
        hub.ranged(2, None, &mut sink);
        assert_eq!(delivered(&sink), vec![14, 20]);
        assert_eq!(hub.take_gap_counts().missed, 5);
    }

    #[test]
    fn without_history_a_gap_resets_at_once_and_a_new_epoch_too() {
        let (mut hub, mut sink, room) = attached_room(Keep::NONE);
        assert!(hub.sequenced(room, Epoch(0xe), 12, origin(9), f("12"), &mut sink));
        assert!(sink.ranges.is_empty());
        assert_eq!(
            sink.notices,
            vec![("reset 000000000000000e 11".into(), vec![1])]
        );
        assert!(hub.sequenced(room, Epoch(0xf), 1, origin(9), f("1"), &mut sink));
        assert_eq!(sink.notices[1].0, "reset 000000000000000f 0");
        assert_eq!(delivered(&sink), vec![12, 1]);
        // The link came back: Redis is further along, the gap is reset again.
        hub.attached(room, Epoch(0xf), 4, &mut sink);
        assert_eq!(sink.notices[2].0, "reset 000000000000000f 4");
        assert_eq!(hub.take_gap_counts().resets, 3);
    }

    #[test]
    fn a_resume_the_owner_cannot_give_reads_the_stream_and_meets_live_messages() {
        let (mut hub, mut sink, room) = attached_room(KEEP);
        let e = Epoch(0xe);
        assert!(hub.sequenced(room, e, 11, origin(9), f("11"), &mut sink));
        let joining = Joining {
            path: "/chat",
            keep: KEEP,
            want: Want::Since { seq: 5, epoch: e.0 },
            ..Joining::live(true)
        };
        hub.join(room, 2, joining, &mut sink);
        assert_eq!(sink.ranges, vec![(1, Ask::After(5))]);
        // Live messages go on meanwhile; the member is not in yet.
        assert!(hub.sequenced(room, e, 12, origin(9), f("12"), &mut sink));
        hub.ranged(1, Some((e, read(6..=11))), &mut sink);
        assert_eq!(sink.admitted.last(), Some(&(2, e, 12)));
        assert_eq!(sink.replays.last(), Some(&(true, (6..=12).collect())));
        // A resume from a number the stream no longer has is not recovered.
        let joining = Joining {
            path: "/chat",
            keep: KEEP,
            want: Want::Since { seq: 1, epoch: e.0 },
            ..Joining::live(true)
        };
        hub.join(room, 3, joining, &mut sink);
        hub.ranged(2, Some((e, read(4..=12))), &mut sink);
        assert_eq!(sink.replays.last(), Some(&(false, vec![])));
    }

    #[test]
    fn the_link_coming_back_during_a_fill_extends_it() {
        let (mut hub, mut sink, room) = attached_room(KEEP);
        let e = Epoch(0xe);
        assert!(hub.sequenced(room, e, 13, origin(9), f("13"), &mut sink));
        hub.attached(room, e, 20, &mut sink);
        assert_eq!(sink.ranges.len(), 1, "one fill");
        hub.ranged(1, Some((e, read(11..=20))), &mut sink);
        assert_eq!(delivered(&sink), (11..=20).collect::<Vec<_>>());
        assert!(sink.notices.is_empty());
        hub.close(room);
        assert_eq!(hub.owned_rooms(), 0);
    }
}
