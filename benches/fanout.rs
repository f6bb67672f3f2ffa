//! Cost per delivery of the relay core's fan-out (`relay::hub::Hub`), no sockets: one message
//! published to a room of N members (1k, 10k), delivered through a sink that only counts.
//! Criterion's throughput is in deliveries, so its time per element is the ns per delivery.
//!
//! `cargo bench --bench fanout`; zero allocations per delivery is checked by `--bench fanout_allocs`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wsrelay::relay::hub::{Envelope, Hub, Joining, Recipients, Sink};
use wsrelay::relay::{RoomId, WorkerId};

type Frame = Arc<[u8]>;
type Member = u64;

/// Counts deliveries; envelopes for other workers are kept in a reused Vec.
#[derive(Default)]
struct Counting {
    deliveries: u64,
    outgoing: Vec<(WorkerId, Envelope<Frame, Member>)>,
}

impl Sink<Frame, Member> for Counting {
    fn send(&mut self, to: WorkerId, envelope: Envelope<Frame, Member>) {
        self.outgoing.push((to, envelope));
    }

    fn deliver(&mut self, _room: RoomId, _seq: u64, frame: &Frame, to: Recipients<'_, Member>) {
        black_box(frame);
        for m in to {
            black_box(m);
            self.deliveries += 1;
        }
    }
}

const ROOM: RoomId = RoomId(0);

/// One worker owns the room and all its `n` members.
fn one_worker(n: u64, echo: bool) -> (Hub<Frame, Member>, Counting) {
    let mut hub = Hub::new(WorkerId(0), 1, 0);
    let mut sink = Counting::default();
    for m in 0..n {
        hub.join(ROOM, m, Joining::live(echo), &mut sink);
    }
    (hub, sink)
}

/// Two workers: room 0 is owned by worker 0; members are split evenly; worker 1 publishes, so a
/// message goes 1 → 0 (sequencing) → 1 (delivery), plus worker 0's local delivery.
struct Pair {
    hubs: [Hub<Frame, Member>; 2],
    sinks: [Counting; 2],
}

impl Pair {
    fn new(n: u64) -> Pair {
        let mut p = Pair {
            hubs: [Hub::new(WorkerId(0), 2, 0), Hub::new(WorkerId(1), 2, 1)],
            sinks: [Counting::default(), Counting::default()],
        };
        for m in 0..n {
            let w = (m % 2) as usize;
            p.hubs[w].join(ROOM, m, Joining::live(true), &mut p.sinks[w]);
        }
        p.route();
        p
    }

    /// Carry envelopes between the two hubs until none is left. The Vecs keep their capacity.
    fn route(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..2 {
                let to = 1 - from;
                while let Some((dest, env)) = self.sinks[from].outgoing.pop() {
                    debug_assert_eq!(dest.0 as usize, to);
                    self.hubs[to].handle(env, &mut self.sinks[to]);
                    moved = true;
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn deliveries(&self) -> u64 {
        self.sinks[0].deliveries + self.sinks[1].deliveries
    }
}

fn bench_fanout(c: &mut Criterion) {
    let frame: Frame = Arc::from(&[0x82u8, 64, 1, 2, 3][..]);
    let mut g = c.benchmark_group("hub_fanout");
    for n in [1_000u64, 10_000] {
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("one_worker_echo", n), &n, |b, &n| {
            let (mut hub, mut sink) = one_worker(n, true);
            b.iter(|| hub.publish(ROOM, 0, frame.clone(), &mut sink));
            assert!(sink.deliveries > 0 && sink.deliveries.is_multiple_of(n));
        });
        g.throughput(Throughput::Elements(n - 1));
        g.bench_with_input(BenchmarkId::new("one_worker_no_echo", n), &n, |b, &n| {
            let (mut hub, mut sink) = one_worker(n, false);
            b.iter(|| hub.publish(ROOM, 0, frame.clone(), &mut sink));
            assert!(sink.deliveries.is_multiple_of(n - 1));
        });
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::new("two_workers_echo", n), &n, |b, &n| {
            let mut p = Pair::new(n);
            b.iter(|| {
                p.hubs[1].publish(ROOM, 1, frame.clone(), &mut p.sinks[1]);
                p.route();
            });
            assert!(p.deliveries().is_multiple_of(n));
        });
    }
    g.finish();
}

criterion_group!(benches, bench_fanout);
criterion_main!(benches);
