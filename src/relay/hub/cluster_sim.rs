//! A seeded simulation of the hub in cluster mode: several nodes' owners of one room, a model of
//! Redis (one counter, one trimmed stream, a subscription queue per node that can be cut), and
//! random joins, leaves, resumes, publishes, cuts, fill answers and failed reads. Every member's
//! view must stay exact: numbers only grow, each number is the message Redis gave it, and a member
//! skips numbers only across a reset that names them; once everything is delivered, every member
//! has reached Redis's last number.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::{Ask, Envelope, Epoch, Hub, Joining, Origin, Recipients, Sink, Stamp, Welcome};
use crate::relay::history::{Keep, Want};
use crate::relay::{RoomId, WorkerId};

type F = Arc<[u8]>;

const ROOM: RoomId = RoomId(0);
const EPOCH: Epoch = Epoch(0xe);

/// What a member saw, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Welcome { seq: u64, replay: Vec<u64> },
    Message(u64),
    Reset(u64),
}

#[derive(Default)]
struct Node {
    forwarded: Vec<F>,
    ranges: Vec<(u64, Ask)>,
    seen: HashMap<u32, Vec<Seen>>,
}

impl Sink<F, u32> for Node {
    fn send(&mut self, _: WorkerId, _: Envelope<F, u32>) {
        unreachable!("one worker per node");
    }
    fn deliver(&mut self, _: RoomId, seq: u64, f: &F, to: Recipients<'_, u32>) {
        assert_eq!(
            &f[..],
            seq.to_string().as_bytes(),
            "number {seq} is another message"
        );
        for m in to {
            self.seen.entry(m).or_default().push(Seen::Message(seq));
        }
    }
    fn admitted(&mut self, _: RoomId, m: u32, w: Welcome<F>) {
        let replay = w.replay.iter().map(|(s, _)| *s).collect();
        self.seen
            .entry(m)
            .or_default()
            .push(Seen::Welcome { seq: w.seq, replay });
    }
    fn forward(&mut self, _: RoomId, _: &Arc<str>, _: Keep, _: Origin<u32>, f: F) {
        self.forwarded.push(f);
    }
    fn attach(&mut self, _: RoomId, _: &Arc<str>, _: Keep) {}
    fn range(&mut self, _: RoomId, _: &Arc<str>, req: u64, ask: Ask, _: Option<Duration>) {
        self.ranges.push((req, ask));
    }
    fn notice(&mut self, _: RoomId, f: &F, to: Recipients<'_, u32>) {
        let seq = String::from_utf8_lossy(f).parse().expect("a reset");
        for m in to {
            self.seen.entry(m).or_default().push(Seen::Reset(seq));
        }
    }
    fn stamp(&mut self, _: RoomId, event: Stamp<'_, F>, seq: u64) -> F {
        assert!(matches!(event, Stamp::Reset(EPOCH)), "one epoch here");
        Arc::from(seq.to_string().as_bytes())
    }
}

struct Sim {
    rng: u64,
    hubs: Vec<Hub<F, u32>>,
    nodes: Vec<Node>,
    /// Redis: the last number, the stream (number, payload), and each node's subscription.
    last: u64,
    stream: VecDeque<(u64, F)>,
    subs: Vec<VecDeque<u64>>,
    keep: Keep,
    next_member: u32,
    members: Vec<(usize, u32, super::MemberKey)>,
}

impl Sim {
    fn roll(&mut self, n: u64) -> u64 {
        super::splitmix64(&mut self.rng) % n
    }

    fn step(&mut self) {
        let node = self.roll(self.hubs.len() as u64) as usize;
        match self.roll(20) {
            0..=1 => {
                // A member joins: live, or resuming from a number it may have seen.
                let m = self.next_member;
                self.next_member += 1;
                let want = match self.roll(3) {
                    0 => Want::Live,
                    1 => Want::Last(1 + self.roll(5) as u32),
                    _ => Want::Since {
                        seq: self.roll(self.last + 1),
                        epoch: EPOCH.0,
                    },
                };
                let joining = Joining {
                    path: "/r",
                    keep: self.keep,
                    want,
                    ..Joining::live(true)
                };
                let key = self.hubs[node].join(ROOM, m, joining, &mut self.nodes[node]);
                self.members.push((node, m, key));
            }
            2 if !self.members.is_empty() => {
                let i = self.roll(self.members.len() as u64) as usize;
                let (node, _, key) = self.members.swap_remove(i);
                self.hubs[node].leave(ROOM, key, &mut self.nodes[node]);
            }
            3..=7 => {
                let m: F = Arc::from(&b"m"[..]);
                self.hubs[node].publish(ROOM, 0, m, &mut self.nodes[node]);
            }
            8 => {
                // The node's subscription is cut: what it had not read is lost; it comes back
                // with Redis's last number.
                self.subs[node].clear();
                let last = self.last;
                self.hubs[node].attached(ROOM, EPOCH, last, &mut self.nodes[node]);
            }
            9..=11 => {
                let fail = self.roll(8) == 0;
                self.answer(node, fail);
            }
            _ => self.redis(node),
        }
    }

    /// Redis takes what the node forwarded, and the node reads some of its subscription.
    fn redis(&mut self, node: usize) {
        for f in std::mem::take(&mut self.nodes[node].forwarded) {
            self.last += 1;
            assert_eq!(&f[..], b"m");
            let payload: F = Arc::from(self.last.to_string().as_bytes());
            self.stream.push_back((self.last, payload));
            while self.stream.len() > self.keep.size {
                self.stream.pop_front();
            }
            for sub in &mut self.subs {
                sub.push_back(self.last);
            }
        }
        let n = self.roll(4) as usize;
        for _ in 0..n {
            let Some(seq) = self.subs[node].pop_front() else {
                break;
            };
            let f: F = Arc::from(format!("{seq}").as_bytes());
            let origin = Origin {
                worker: WorkerId(0),
                member: 0,
            };
            self.hubs[node].sequenced(ROOM, EPOCH, seq, origin, f, &mut self.nodes[node]);
        }
    }

    /// The node's oldest read is answered from the stream (or fails).
    fn answer(&mut self, node: usize, fail: bool) {
        if self.nodes[node].ranges.is_empty() {
            return;
        }
        let (req, ask) = self.nodes[node].ranges.remove(0);
        let read = match ask {
            Ask::After(n) => self
                .stream
                .iter()
                .filter(|(s, _)| *s > n)
                .collect::<Vec<_>>(),
            Ask::Last(n) => {
                let skip = self.stream.len().saturating_sub(n);
                self.stream.iter().skip(skip).collect()
            }
        };
        let origin = Origin {
            worker: WorkerId(0),
            member: 0,
        };
        let read = read
            .into_iter()
            .map(|(s, f)| (*s, origin, f.clone()))
            .collect();
        let answer = (!fail).then_some((EPOCH, read));
        self.hubs[node].ranged(req, answer, &mut self.nodes[node]);
    }

    /// Deliver everything, answer every read.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let busy = (0..self.hubs.len()).any(|n| {
                !self.subs[n].is_empty()
                    || !self.nodes[n].ranges.is_empty()
                    || !self.nodes[n].forwarded.is_empty()
            });
            if !busy {
                return;
            }
            for n in 0..self.hubs.len() {
                self.redis(n);
                self.answer(n, false);
            }
        }
        panic!("the simulation does not settle");
    }
}

/// One member's view is exact: numbers grow by one except across a reset that names the skip,
/// and each number is one Redis gave out. Returns its last number.
fn check(seed: u64, m: u32, seen: &[Seen], last: u64) -> Option<u64> {
    let mut at = None;
    for s in seen {
        match (s, at) {
            (Seen::Welcome { seq, replay }, None) => {
                if let Some(first) = replay.first() {
                    let want: Vec<u64> = (*first..=*seq).collect();
                    assert_eq!(
                        replay, &want,
                        "seed {seed} member {m}: a replay with a hole"
                    );
                }
                at = Some(*seq);
            }
            (Seen::Message(seq), Some(prev)) => {
                assert_eq!(*seq, prev + 1, "seed {seed} member {m}: {seen:?}");
                assert!(
                    *seq <= last,
                    "seed {seed} member {m}: a number Redis never gave"
                );
                at = Some(*seq);
            }
            (Seen::Reset(seq), Some(prev)) => {
                assert!(
                    *seq >= prev,
                    "seed {seed} member {m}: a reset backwards: {seen:?}"
                );
                at = Some(*seq);
            }
            (s, at) => panic!("seed {seed} member {m}: {s:?} at {at:?}: {seen:?}"),
        }
    }
    at
}

fn run(seed: u64, steps: usize) {
    let nodes = 3;
    let mut sim = Sim {
        rng: seed,
        hubs: (0..nodes)
            .map(|n| Hub::new(WorkerId(0), 1, seed ^ n))
            .collect(),
        nodes: (0..nodes).map(|_| Node::default()).collect(),
        last: 0,
        stream: VecDeque::new(),
        subs: vec![VecDeque::new(); nodes as usize],
        keep: Keep {
            size: 1 + (seed % 50) as usize,
            ttl: Duration::from_secs(60),
        },
        next_member: 1,
        members: Vec::new(),
    };
    for (hub, node) in sim.hubs.iter_mut().zip(&mut sim.nodes) {
        hub.set_cluster();
        // The room's owner record: made by a first member that leaves at once.
        let joining = Joining {
            path: "/r",
            keep: sim.keep,
            ..Joining::live(true)
        };
        let key = hub.join(ROOM, 0, joining, node);
        hub.attached(ROOM, EPOCH, 0, node);
        hub.leave(ROOM, key, node);
        node.seen.clear();
    }
    for _ in 0..steps {
        sim.step();
    }
    sim.drain();
    for (node, m, _) in &sim.members {
        let seen = sim.nodes[*node].seen.get(m).cloned().unwrap_or_default();
        let at = check(seed, *m, &seen, sim.last);
        assert_eq!(
            at,
            Some(sim.last),
            "seed {seed} member {m}: behind at the end: {seen:?}"
        );
    }
}

#[test]
fn seeded_cluster_simulation_keeps_every_member_exact() {
    for seed in 0..300 {
        run(seed, 1_500);
    }
}
