//! A seeded simulation of several hubs exchanging envelopes over FIFO links in random interleavings,
//! with the invariants the relay promises checked at the end: one order per room, every message
//! sequenced after a member's admission reaches it while it stays, nothing before its admission,
//! and — with publishers gated by credit as the server gates its readers — bounded links.

use std::collections::{HashMap, VecDeque};

use super::*;
use crate::relay::history::{Keep, Want};
use crate::relay::hub::Kept;

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
    admitted: Vec<(Member, RoomId, Welcome<Msg>)>,
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
    fn admitted(&mut self, room: RoomId, member: Member, welcome: Welcome<Msg>) {
        self.admitted.push((member, room, welcome));
    }
}

/// Messages a worker may have in flight (published, and not yet taken by every worker) before
/// its publishers must wait, as the server stops reading a worker's publishers.
const CREDIT: usize = 4;

struct Sim {
    hubs: Vec<Hub<Msg, Member>>,
    links: HashMap<(u32, u32), VecDeque<Envelope<Msg, Member>>>,
    /// Member → (room, key, session number).
    joined: HashMap<Member, (RoomId, MemberKey, u32)>,
    sessions: u32,
    /// (member, session) → what it received, in order.
    received: HashMap<(Member, u32), Vec<Received>>,
    /// (member, session) → its room, and the epoch and last sequence number at its admission.
    admitted: HashMap<(Member, u32), (RoomId, Epoch, u64)>,
    /// (member, session) → what it asked for, whether it recovered, the sequence numbers replayed.
    replays: HashMap<(Member, u32), (Want, bool, Vec<u64>)>,
    /// session → what it asked for when it joined.
    wants: HashMap<u32, Want>,
    /// Envelopes on links that carry each message: it is in flight while this is above 0.
    carriers: HashMap<Msg, usize>,
    /// The most envelopes seen on all links at once.
    peak_links: usize,
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

/// Messages rooms 0 and 1 keep; rooms 2 and 3 keep none.
const KEPT: usize = 8;

fn keep_of(room: RoomId) -> Keep {
    Keep {
        size: if room.0 < 2 { KEPT } else { 0 },
        ttl: std::time::Duration::from_secs(3600),
    }
}

fn live(echo: bool) -> Joining<'static, Msg> {
    Joining::live(echo)
}

impl Sim {
    fn new() -> Self {
        Sim {
            hubs: (0..WORKERS)
                .map(|w| Hub::new(WorkerId(w as u32), WORKERS, w as u64))
                .collect(),
            links: HashMap::new(),
            joined: HashMap::new(),
            sessions: 0,
            received: HashMap::new(),
            admitted: HashMap::new(),
            replays: HashMap::new(),
            wants: HashMap::new(),
            carriers: HashMap::new(),
            peak_links: 0,
            published: HashMap::new(),
            next_msg: 0,
        }
    }

    fn absorb(&mut self, from: usize, out: Out) {
        for (to, env) in out.sent {
            assert_ne!(to.0 as usize, from, "a hub sent an envelope to itself");
            if let Envelope::Publish { frame, .. } | Envelope::Deliver { frame, .. } = &env {
                *self.carriers.entry(*frame).or_default() += 1;
            }
            self.links
                .entry((from as u32, to.0))
                .or_default()
                .push_back(env);
        }
        let on_links: usize = self.links.values().map(VecDeque::len).sum();
        self.peak_links = self.peak_links.max(on_links);
        for (m, room, welcome) in out.admitted {
            let (epoch, seq) = (welcome.epoch, welcome.seq);
            assert_eq!(
                worker_of(m),
                from,
                "member {m} admitted on a foreign worker"
            );
            let &(r, _, session) = self
                .joined
                .get(&m)
                .unwrap_or_else(|| panic!("member {m} admitted while not joining"));
            assert_eq!(r, room, "member {m} admitted to another room");
            let prev = self.admitted.insert((m, session), (room, epoch, seq));
            assert!(prev.is_none(), "member {m} admitted twice");
            let seqs: Vec<u64> = welcome.replay.iter().map(|r| r.0).collect();
            let want = self.wants[&session];
            self.replays
                .insert((m, session), (want, welcome.recovered, seqs));
            let got = self.received.entry((m, session)).or_default();
            got.extend(welcome.replay.iter().map(|&(seq, msg)| (room, seq, msg)));
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
            assert!(
                self.admitted.contains_key(&(m, session)),
                "member {m} got a message before its admission"
            );
            self.received
                .entry((m, session))
                .or_default()
                .push((room, seq, msg));
        }
    }

    fn join(&mut self, m: Member, room: RoomId, want: Want) {
        let w = worker_of(m);
        let mut out = Out::default();
        self.sessions += 1;
        self.wants.insert(self.sessions, want);
        let joining = Joining {
            echo: echo_of(room),
            path: "/sim",
            keep: keep_of(room),
            want,
            presence: None,
        };
        let key = self.hubs[w].join(room, m, joining, &mut out);
        self.joined.insert(m, (room, key, self.sessions));
        self.absorb(w, out);
    }

    /// A random request: live, the last few, or a resume from a little way back, with the
    /// room's epoch or a wrong one.
    fn want(&self, room: RoomId, rng: &mut Rng) -> Want {
        let state = self.hubs[room.owner(WORKERS).0 as usize].owned_state(room);
        let (epoch, last) = state.map_or((1, 0), |(e, s)| (e.0, s));
        match rng.below(4) {
            0 => Want::Live,
            1 => Want::Last(rng.below(12) as u32),
            _ => Want::Since {
                seq: last.saturating_sub(rng.below(12) as u64),
                epoch: if rng.below(4) == 0 { epoch ^ 1 } else { epoch },
            },
        }
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

    /// Messages published on worker `w` still carried by some link.
    fn in_flight(&self, w: usize) -> usize {
        self.carriers
            .iter()
            .filter(|&(msg, &n)| n > 0 && worker_of(self.published[msg].1) == w)
            .count()
    }

    /// Publish unless the member's worker is out of credit (then nothing happens, as a reader
    /// that is not read).
    fn publish(&mut self, m: Member) {
        if self.in_flight(worker_of(m)) >= CREDIT {
            return;
        }
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
        if let Envelope::Publish { frame, .. } | Envelope::Deliver { frame, .. } = &env {
            *self.carriers.get_mut(frame).expect("carried") -= 1;
        }
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
        sim.join(m, RoomId(m as u64 % ROOMS), Want::Live);
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
                    let room = RoomId(rng.below(ROOMS as usize) as u64);
                    let want = sim.want(room, &mut rng);
                    sim.join(m, room, want);
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
    // Every publisher waited for credit: no more messages in flight than the credits allow, each
    // carried by at most one envelope per worker, plus the joins and leaves of the churn.
    let bound = WORKERS * CREDIT * WORKERS + MEMBERS as usize * 2;
    assert!(
        sim.peak_links <= bound,
        "seed {seed}: {} envelopes on the links at once, bound {bound}",
        sim.peak_links
    );

    // Everyone leaves; then the rooms are over: no room may linger anywhere.
    let mut all: Vec<Member> = sim.joined.keys().copied().collect();
    all.sort();
    for m in all {
        sim.leave(m);
    }
    sim.drain(&mut rng);
    for room in 0..ROOMS {
        let room = RoomId(room);
        sim.hubs[room.owner(WORKERS).0 as usize].close(room);
    }
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
    // The last sequence number of each room, from the owners.
    let last = |room: RoomId| {
        sim.hubs[room.owner(WORKERS).0 as usize]
            .owned_state(room)
            .map_or(0, |(_, seq)| seq)
    };
    let session_room: HashMap<u32, (Member, RoomId)> = sim
        .joined
        .iter()
        .map(|(&m, &(room, _, session))| (session, (m, room)))
        .collect();
    // Each room has one epoch while it lives, and every admission names it.
    let mut epochs: HashMap<RoomId, Epoch> = HashMap::new();
    for (&(m, session), &(room, epoch, from)) in &sim.admitted {
        let got = sim.received.get(&(m, session)).cloned().unwrap_or_default();
        let prev = *epochs.entry(room).or_insert(epoch);
        assert_eq!(
            prev, epoch,
            "seed {seed}: {room} changed epoch while it lived"
        );
        // From its admission on, a member sees every message of its room, one after the other,
        // except its own where echo is off, until it leaves; one still in the room has them all.
        let still = session_room.get(&session).map(|&(_, r)| r);
        let end = if still == Some(room) {
            last(room)
        } else {
            got.last().map_or(from, |g| g.1).max(from)
        };
        // First what it asked to be replayed: all of it or nothing (resume), the latest kept
        // (last), numbered up to its admission.
        let (asked, recovered, replayed) = &sim.replays[&(m, session)];
        let kept = keep_of(room).size as u64;
        let expect_replay: Vec<u64> = match *asked {
            Want::Live => vec![],
            Want::Last(n) => (from + 1 - (n as u64).min(kept).min(from)..=from).collect(),
            Want::Since { seq, epoch: e } => {
                let ok = e == epoch.0 && seq <= from && (seq == from || from - seq <= kept);
                assert_eq!(
                    *recovered, ok,
                    "seed {seed}: member {m} resume from {seq} to {from} in {room} replayed {replayed:?}"
                );
                if ok {
                    (seq + 1..=from).collect()
                } else {
                    vec![]
                }
            }
        };
        assert_eq!(
            replayed, &expect_replay,
            "seed {seed}: member {m} session {session} replay of {asked:?}"
        );
        let want: Vec<u64> = expect_replay
            .iter()
            .copied()
            .chain((from + 1..=end).filter(|s| {
                echo_of(room)
                    || by_seq
                        .get(&(room, *s))
                        .is_none_or(|msg| sim.published[msg].1 != m)
            }))
            .collect();
        let seqs: Vec<u64> = got.iter().map(|g| g.1).collect();
        assert_eq!(seqs, want, "seed {seed}: member {m} session {session}");
    }
    // Echo off: no live message of its own. (A replay is the room's history: its own earlier
    // messages are part of it.)
    for ((m, session), got) in &sim.received {
        let replayed = sim.replays.get(&(*m, *session)).map_or(0, |r| r.2.len());
        for &(room, _, msg) in &got[replayed..] {
            if !echo_of(room) {
                assert_ne!(
                    sim.published[&msg].1, *m,
                    "seed {seed}: echo off, sender got it (session {session})"
                );
            }
        }
    }
    // Stable members were admitted before the first publish and never left: they get every
    // message of their room (minus their own where echo is off).
    for &m in stable {
        let (room, _, session) = sim.joined[&m];
        assert_eq!(
            sim.admitted.get(&(m, session)).map(|a| a.2),
            Some(0),
            "seed {seed}: stable member {m} admitted late"
        );
        let got = sim.received.get(&(m, session)).cloned().unwrap_or_default();
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
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1, 0);
    hub.join(RoomId(0), 1, live(false), &mut out);
    hub.join(RoomId(0), 2, live(false), &mut out);
    hub.join(RoomId(1), 3, live(true), &mut out);
    hub.publish(RoomId(0), 1, 7, &mut out);
    hub.publish(RoomId(1), 3, 8, &mut out);
    assert!(out.sent.is_empty(), "a single worker sends nothing");
    assert_eq!(
        out.delivered,
        vec![(2, RoomId(0), 1, 7), (3, RoomId(1), 1, 8)]
    );
}

#[test]
fn publish_to_an_emptied_room_reaches_nobody_and_close_forgets_it() {
    let mut out = Out::default();
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1, 0);
    let k = hub.join(RoomId(0), 1, live(true), &mut out);
    hub.leave(RoomId(0), k, &mut out);
    hub.publish(RoomId(0), 1, 7, &mut out);
    assert!(out.delivered.is_empty());
    assert_eq!(hub.owned_rooms(), 1, "the room lives until it is closed");
    hub.close(RoomId(0));
    hub.publish(RoomId(0), 1, 8, &mut out);
    assert_eq!(hub.owned_rooms(), 0);
}

/// Two hubs: room 1 is owned by worker 1; worker 0 has members. Carries envelopes both ways
/// until none is left.
fn settle(hubs: &mut [Hub<Msg, Member>; 2], outs: &mut [Out; 2]) {
    loop {
        let mut moved = false;
        for from in 0..2 {
            for (to, env) in std::mem::take(&mut outs[from].sent) {
                hubs[to.0 as usize].handle(env, &mut outs[to.0 as usize]);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn members_wait_for_the_owners_acknowledgement_and_then_miss_nothing() {
    let mut hubs: [Hub<Msg, Member>; 2] =
        [Hub::new(WorkerId(0), 2, 1), Hub::new(WorkerId(1), 2, 2)];
    let mut outs = [Out::default(), Out::default()];
    let room = RoomId(1);
    hubs[0].join(room, 10, live(true), &mut outs[0]);
    hubs[0].join(room, 11, live(true), &mut outs[0]);
    assert!(
        outs[0].admitted.is_empty(),
        "nobody is in before the owner answers"
    );
    // A member on the owner publishes before the Join has arrived: not for worker 0's members.
    hubs[1].join(room, 20, live(true), &mut outs[1]);
    assert_eq!(
        outs[1].admitted.len(),
        1,
        "the owner's own member is in at once"
    );
    hubs[1].publish(room, 20, 100, &mut outs[1]);
    settle(&mut hubs, &mut outs);
    let admitted: Vec<_> = outs[0].admitted.iter().map(|a| (a.0, a.2.seq)).collect();
    assert_eq!(admitted, [(10, 1), (11, 1)], "admitted after seq 1");
    assert!(outs[0].delivered.is_empty());
    hubs[1].publish(room, 20, 101, &mut outs[1]);
    settle(&mut hubs, &mut outs);
    let got: Vec<_> = outs[0].delivered.iter().map(|d| (d.0, d.2)).collect();
    assert_eq!(got, [(10, 2), (11, 2)]);
    // A member joining a registered worker is in at once, after the last sequence seen there.
    hubs[0].join(room, 12, live(true), &mut outs[0]);
    assert_eq!(
        outs[0].admitted.last().map(|a| (a.0, a.2.seq)),
        Some((12, 2))
    );
}

#[test]
fn the_sequence_never_restarts_while_the_room_lives_and_a_new_room_gets_a_new_epoch() {
    let mut hubs: [Hub<Msg, Member>; 2] =
        [Hub::new(WorkerId(0), 2, 7), Hub::new(WorkerId(1), 2, 8)];
    let mut outs = [Out::default(), Out::default()];
    let room = RoomId(1);
    let mut seqs = Vec::new();
    let mut epochs = Vec::new();
    // Worker 0's only member comes and goes three times; the owner has no member of its own, so
    // each time the room has no worker at all for a while.
    for round in 0..3u64 {
        let k = hubs[0].join(room, 10, live(true), &mut outs[0]);
        settle(&mut hubs, &mut outs);
        for i in 0..2 {
            hubs[0].publish(room, 10, round * 10 + i, &mut outs[0]);
        }
        settle(&mut hubs, &mut outs);
        hubs[0].leave(room, k, &mut outs[0]);
        settle(&mut hubs, &mut outs);
    }
    for d in &outs[0].delivered {
        seqs.push(d.2);
    }
    for a in &outs[0].admitted {
        epochs.push(a.2.epoch);
    }
    assert_eq!(
        seqs,
        [1, 2, 3, 4, 5, 6],
        "one sequence for the room's whole life"
    );
    assert!(
        epochs.windows(2).all(|w| w[0] == w[1]),
        "one epoch: {epochs:?}"
    );
    let (epoch, last) = hubs[1].owned_state(room).unwrap();
    assert_eq!((epoch, last), (epochs[0], 6));
    // The room is over; the next room (ids are never reused) is a new incarnation.
    hubs[1].close(room);
    let next = RoomId(3);
    hubs[0].join(next, 10, live(true), &mut outs[0]);
    settle(&mut hubs, &mut outs);
    let (epoch2, seq2) = hubs[1].owned_state(next).unwrap();
    assert_ne!(epoch2, epoch, "a new incarnation gets a new epoch");
    assert_eq!(seq2, 0);
    assert_eq!(format!("{epoch2}").len(), 16, "16 hex digits");
}

#[test]
fn remote_worker_gets_one_envelope_per_message_not_per_member() {
    let mut out = Out::default();
    // Room 1 is owned by worker 1 of 2; members on worker 0.
    let mut w0: Hub<Msg, Member> = Hub::new(WorkerId(0), 2, 0);
    let mut w1: Hub<Msg, Member> = Hub::new(WorkerId(1), 2, 1);
    for m in 0..100 {
        w0.join(RoomId(1), m, live(true), &mut out);
    }
    assert_eq!(
        out.sent.len(),
        1,
        "only the first local member registers the worker"
    );
    let (_, join) = out.sent.pop().unwrap();
    let mut out1 = Out::default();
    w1.handle(join, &mut out1);
    assert!(matches!(
        out1.sent.pop(),
        Some((WorkerId(0), Envelope::Joined { .. }))
    ));
    w1.publish(RoomId(1), 500, 9, &mut out1);
    assert_eq!(out1.sent.len(), 1);
    assert!(matches!(
        out1.sent[0].1,
        Envelope::Deliver {
            seq: 1,
            frame: 9,
            ..
        }
    ));
}

#[test]
fn a_room_with_history_is_idle_only_when_its_last_message_expires() {
    let mut out = Out::default();
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1, 0);
    let t0 = std::time::Instant::now();
    hub.set_clock(t0);
    let keep = Keep {
        size: 3,
        ttl: std::time::Duration::from_secs(10),
    };
    let joining = Joining {
        echo: true,
        path: "/h",
        keep,
        want: Want::Live,
        presence: None,
    };
    let k = hub.join(RoomId(0), 1, joining, &mut out);
    for msg in 0..5 {
        hub.publish(RoomId(0), 1, msg, &mut out);
    }
    assert_eq!(hub.kept().messages, 3, "history_size holds");
    hub.leave(RoomId(0), k, &mut out);
    assert!(hub.take_idle().is_empty(), "it keeps messages: not idle");
    hub.set_clock(t0 + std::time::Duration::from_secs(9));
    hub.expire();
    assert!(hub.take_idle().is_empty());
    hub.set_clock(t0 + std::time::Duration::from_secs(10));
    hub.expire();
    assert_eq!(hub.kept(), Kept::default());
    assert_eq!(hub.take_idle(), vec![RoomId(0)]);
    assert!(hub.take_idle().is_empty(), "reported once");
    hub.close(RoomId(0));
    assert_eq!(hub.owned_rooms(), 0);
}

#[test]
fn memory_is_taken_from_the_largest_room_first() {
    let mut out = Out::default();
    let mut hub: Hub<Msg, Member> = Hub::new(WorkerId(0), 1, 0);
    let keep = Keep {
        size: 100,
        ttl: std::time::Duration::from_secs(60),
    };
    let each = 8 + crate::relay::history::ENTRY_OVERHEAD;
    hub.set_memory(30 * each);
    for (room, n) in [(0, 5), (1, 20)] {
        let joining = Joining {
            echo: true,
            path: "/m",
            keep,
            want: Want::Live,
            presence: None,
        };
        hub.join(RoomId(room), 1, joining, &mut out);
        for msg in 0..n {
            hub.publish(RoomId(room), 1, msg, &mut out);
        }
    }
    // 25 kept; 10 more into the large room pass 30: it loses its oldest down to 15/16 of the cap.
    for msg in 0..10 {
        hub.publish(RoomId(1), 1, 100 + msg, &mut out);
    }
    let kept = hub.kept();
    assert!(kept.bytes <= 30 * each, "{kept:?}");
    let small = Joining {
        echo: true,
        path: "/m",
        keep,
        want: Want::Last(100),
        presence: None,
    };
    hub.join(RoomId(0), 2, small, &mut out);
    let (_, _, w) = out.admitted.last().unwrap();
    assert_eq!(
        w.replay.len(),
        5,
        "the small room keeps all of its messages"
    );
}
