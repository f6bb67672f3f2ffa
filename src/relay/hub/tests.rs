//! A seeded simulation of several hubs exchanging envelopes over FIFO links in random interleavings,
//! with the invariants the relay promises checked at the end.

use std::collections::{HashMap, VecDeque};

use super::*;

/// splitmix64: enough randomness for a simulation, reproducible from the seed in a failure message.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type Msg = u64;
/// What a member got: room, sequence number, message.
type Received = (RoomId, u64, Msg);
type Member = u32;

#[derive(Default)]
struct Out {
    sent: Vec<(WorkerId, Envelope<Msg, Member>)>,
    delivered: Vec<(Member, RoomId, u64, Msg)>,
}

impl Sink<Msg, Member> for Out {
    fn send(&mut self, to: WorkerId, envelope: Envelope<Msg, Member>) {
        self.sent.push((to, envelope));
    }
    fn deliver(&mut self, room: RoomId, seq: u64, frame: &Msg, to: Recipients<'_, Member>) {
        for m in to {
            self.delivered.push((m, room, seq, *frame));
        }
    }
}

struct Sim {
    hubs: Vec<Hub<Msg, Member>>,
    links: HashMap<(u32, u32), VecDeque<Envelope<Msg, Member>>>,
    /// Member → (room, key, session number).
    joined: HashMap<Member, (RoomId, MemberKey, u32)>,
    sessions: u32,
    /// (member, session) → what it received, in order.
    received: HashMap<(Member, u32), Vec<Received>>,
    /// msg → (room, publisher).
    published: HashMap<Msg, (RoomId, Member)>,
    next_msg: Msg,
}

const WORKERS: usize = 3;
const ROOMS: u64 = 4;
const MEMBERS: u32 = 24;

fn worker_of(m: Member) -> usize {
    m as usize % WORKERS
}

fn echo_of(room: RoomId) -> bool {
    room.0.is_multiple_of(2)
}

impl Sim {
    fn new() -> Self {
        Sim {
            hubs: (0..WORKERS)
                .map(|w| Hub::new(WorkerId(w as u32), WORKERS))
                .collect(),
            links: HashMap::new(),
            joined: HashMap::new(),
            sessions: 0,
            received: HashMap::new(),
            published: HashMap::new(),
            next_msg: 0,
        }
    }

    fn absorb(&mut self, from: usize, out: Out) {
        for (to, env) in out.sent {
            assert_ne!(to.0 as usize, from, "a hub sent an envelope to itself");
            self.links
                .entry((from as u32, to.0))
                .or_default()
                .push_back(env);
        }
        for (m, room, seq, msg) in out.delivered {
            assert_eq!(
                worker_of(m),
                from,
                "member {m} got a message on a foreign worker"
            );
            let &(r, _, session) = self
                .joined
                .get(&m)
                .unwrap_or_else(|| panic!("message delivered to member {m} who is not in a room"));
            assert_eq!(r, room, "member {m} got a message of another room");
            self.received
                .entry((m, session))
                .or_default()
                .push((room, seq, msg));
        }
    }

    fn join(&mut self, m: Member, room: RoomId) {
        let w = worker_of(m);
        let mut out = Out::default();
        let key = self.hubs[w].join(room, m, echo_of(room), &mut out);
        self.sessions += 1;
        self.joined.insert(m, (room, key, self.sessions));
        self.absorb(w, out);
    }

    fn leave(&mut self, m: Member) {
        let (room, key, _) = self.joined.remove(&m).expect("leave of a non-member");
        let w = worker_of(m);
        let mut out = Out::default();
        self.hubs[w].leave(room, key, &mut out);
        // A second leave with the same key must change nothing.
        self.hubs[w].leave(room, key, &mut out);
        self.absorb(w, out);
    }

    fn publish(&mut self, m: Member) {
        let (room, _, _) = self.joined[&m];
        let msg = self.next_msg;
        self.next_msg += 1;
        self.published.insert(msg, (room, m));
        let w = worker_of(m);
        let mut out = Out::default();
        self.hubs[w].publish(room, m, msg, &mut out);
        self.absorb(w, out);
    }

    /// Carry the head envelope of one link. Returns false when every link is empty.
    fn step_link(&mut self, rng: &mut Rng) -> bool {
        let busy: Vec<(u32, u32)> = {
            let mut v: Vec<_> = self
                .links
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(k, _)| *k)
                .collect();
            v.sort();
            v
        };
        if busy.is_empty() {
            return false;
        }
        let (from, to) = busy[rng.below(busy.len())];
        let env = self
            .links
            .get_mut(&(from, to))
            .and_then(|q| q.pop_front())
            .expect("busy link");
        let mut out = Out::default();
        self.hubs[to as usize].handle(env, &mut out);
        self.absorb(to as usize, out);
        true
    }

    fn drain(&mut self, rng: &mut Rng) {
        while self.step_link(rng) {}
    }
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let mut sim = Sim::new();
    // Phase 1: one stable member per (room, worker) that never leaves; settle.
    let stable: Vec<Member> = (0..(ROOMS as u32 * WORKERS as u32)).collect();
    for &m in &stable {
        sim.join(m, RoomId(m as u64 % ROOMS));
    }
    sim.drain(&mut rng);
    // Phase 2: churn, publishes and deliveries in random order.
    let churners: Vec<Member> = (stable.len() as u32..MEMBERS).collect();
    for _ in 0..steps {
        match rng.below(10) {
            0..=1 => {
                let m = churners[rng.below(churners.len())];
                if sim.joined.contains_key(&m) {
                    sim.leave(m);
                } else {
                    sim.join(m, RoomId(rng.below(ROOMS as usize) as u64));
                }
            }
            2..=4 => {
                let members: Vec<Member> = {
                    let mut v: Vec<_> = sim.joined.keys().copied().collect();
                    v.sort();
                    v
                };
                let m = members[rng.below(members.len())];
                sim.publish(m);
            }
            _ => {
                sim.step_link(&mut rng);
            }
        }
    }
    sim.drain(&mut rng);
    check(&sim, &stable, seed);

    // Everyone leaves: no room may linger anywhere.
    let mut all: Vec<Member> = sim.joined.keys().copied().collect();
    all.sort();
    for m in all {
        sim.leave(m);
    }
    sim.drain(&mut rng);
    for (w, hub) in sim.hubs.iter().enumerate() {
        assert_eq!(
            hub.local_rooms(),
            0,
            "seed {seed}: worker {w} keeps a local room"
        );
        assert_eq!(
            hub.owned_rooms(),
            0,
            "seed {seed}: worker {w} keeps an owned room"
        );
    }
}

fn check(sim: &Sim, stable: &[Member], seed: u64) {
    // One order per room: a sequence number names the same message for everyone, and a message
    // gets one sequence number.
    let mut by_seq: HashMap<(RoomId, u64), Msg> = HashMap::new();
    let mut by_msg: HashMap<Msg, (RoomId, u64)> = HashMap::new();
    for got in sim.received.values() {
        for &(room, seq, msg) in got {
            assert_eq!(
                sim.published[&msg].0, room,
                "seed {seed}: message in the wrong room"
            );
            let prev = by_seq.insert((room, seq), msg);
            assert!(
                prev.is_none() || prev == Some(msg),
                "seed {seed}: {room} seq {seq} is two messages"
            );
            let prev = by_msg.insert(msg, (room, seq));
            assert!(
                prev.is_none() || prev == Some((room, seq)),
                "seed {seed}: message {msg} has two sequence numbers"
            );
        }
    }
    // Within one membership, sequence numbers rise by one, except over the member's own messages
    // in a room with echo off.
    for ((m, session), got) in &sim.received {
        for w in got.windows(2) {
            let (room, a, b) = (w[0].0, w[0].1, w[1].1);
            assert!(
                b > a,
                "seed {seed}: member {m} session {session} saw seq {a} then {b}"
            );
            for skipped in a + 1..b {
                let own = by_seq
                    .get(&(room, skipped))
                    .is_some_and(|msg| sim.published[msg].1 == *m);
                assert!(
                    !echo_of(room) && own,
                    "seed {seed}: member {m} session {session} missed seq {skipped} of {room}"
                );
            }
        }
        for &(room, _, msg) in got {
            if !echo_of(room) {
                assert_ne!(
                    sim.published[&msg].1, *m,
                    "seed {seed}: echo off, sender got it"
                );
            }
        }
    }
    // Stable members were there before the first publish and never left: they get every message
    // of their room (minus their own where echo is off), in sequence from 0.
    for &m in stable {
        let (room, _, session) = sim.joined[&m];
        let got = sim.received.get(&(m, session)).cloned().unwrap_or_default();
        let expected: Vec<Msg> = {
            let mut v: Vec<(u64, Msg)> = by_msg
                .iter()
                .filter(|(msg, (r, _))| *r == room && (echo_of(room) || sim.published[msg].1 != m))
                .map(|(msg, (_, seq))| (*seq, *msg))
                .collect();
            v.sort();
            v.into_iter().map(|(_, msg)| msg).collect()
        };
        let got_msgs: Vec<Msg> = got.iter().map(|x| x.2).collect();
        assert_eq!(
            got_msgs, expected,
            "seed {seed}: stable member {m} missed messages"
        );
        let published_here = sim.published.values().filter(|(r, _)| *r == room).count();
        let own = sim.published.values().filter(|p| **p == (room, m)).count();
        let want = if echo_of(room) {
            published_here
        } else {
            published_here - own
        };
        assert_eq!(got.len(), want, "seed {seed}: stable member {m} count");
    }
}

#[test]
fn seeded_simulation_keeps_one_order_per_room_and_leaks_nothing() {
    for seed in 0..200 {
        run(seed, 2_000);
    }
}

#[test]
fn sender_is_skipped_only_when_echo_is_off() {
    let mut out = Out::default();
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1);
    hub.join(RoomId(0), 1, false, &mut out);
    hub.join(RoomId(0), 2, false, &mut out);
    hub.join(RoomId(1), 3, true, &mut out);
    hub.publish(RoomId(0), 1, 7, &mut out);
    hub.publish(RoomId(1), 3, 8, &mut out);
    assert!(out.sent.is_empty(), "a single worker sends nothing");
    assert_eq!(
        out.delivered,
        vec![(2, RoomId(0), 0, 7), (3, RoomId(1), 0, 8)]
    );
}

#[test]
fn publish_to_an_emptied_room_is_dropped() {
    let mut out = Out::default();
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1);
    let k = hub.join(RoomId(0), 1, true, &mut out);
    hub.leave(RoomId(0), k, &mut out);
    hub.publish(RoomId(0), 1, 7, &mut out);
    assert!(out.delivered.is_empty());
    assert_eq!(hub.owned_rooms(), 0);
}

#[test]
fn remote_worker_gets_one_envelope_per_message_not_per_member() {
    let mut out = Out::default();
    // Room 1 is owned by worker 1 of 2; members on worker 0.
    let mut w0: Hub<Msg, Member> = Hub::new(WorkerId(0), 2);
    let mut w1: Hub<Msg, Member> = Hub::new(WorkerId(1), 2);
    for m in 0..100 {
        w0.join(RoomId(1), m, true, &mut out);
    }
    assert_eq!(
        out.sent.len(),
        1,
        "only the first local member registers the worker"
    );
    let (_, join) = out.sent.pop().unwrap();
    let mut out1 = Out::default();
    w1.handle(join, &mut out1);
    w1.publish(RoomId(1), 500, 9, &mut out1);
    assert_eq!(out1.sent.len(), 1);
    assert!(matches!(
        out1.sent[0].1,
        Envelope::Deliver {
            seq: 0,
            frame: 9,
            ..
        }
    ));
}
