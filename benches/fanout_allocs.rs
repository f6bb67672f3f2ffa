//! Proof that the relay core's fan-out allocates nothing per delivery: a counting global
//! allocator around `relay::hub::Hub::publish` for rooms of 1k and 10k members, on one worker and
//! across two. Exits non-zero on any allocation once warm.
//!
//! `cargo bench --bench fanout_allocs` (a bench target so that it runs optimized; it is quick).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use wsrelay::relay::hub::{Envelope, Hub, Joining, Recipients, Sink};
use wsrelay::relay::{RoomId, WorkerId};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(l.size() as u64, Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new as u64, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

type Frame = Arc<[u8]>;

#[derive(Default)]
struct Sink0 {
    deliveries: u64,
    outgoing: Vec<(WorkerId, Envelope<Frame, u64>)>,
}

impl Sink<Frame, u64> for Sink0 {
    fn send(&mut self, to: WorkerId, envelope: Envelope<Frame, u64>) {
        self.outgoing.push((to, envelope));
    }
    fn deliver(&mut self, _room: RoomId, _seq: u64, frame: &Frame, to: Recipients<'_, u64>) {
        black_box(frame);
        for m in to {
            black_box(m);
            self.deliveries += 1;
        }
    }
}

const ROOM: RoomId = RoomId(0);
const MESSAGES: u64 = 1_000;

/// Publish `MESSAGES` messages after a warm-up; returns (deliveries, allocations, bytes).
fn measure(workers: usize, n: u64) -> (u64, u64, u64) {
    let mut hubs: Vec<Hub<Frame, u64>> = (0..workers)
        .map(|w| Hub::new(WorkerId(w as u32), workers, w as u64))
        .collect();
    let mut sinks: Vec<Sink0> = (0..workers).map(|_| Sink0::default()).collect();
    for m in 0..n {
        let w = (m % workers as u64) as usize;
        hubs[w].join(ROOM, m, Joining::live(true), &mut sinks[w]);
    }
    let frame: Frame = Arc::from(&[0x82u8, 3, 1, 2, 3][..]);
    let publisher = workers - 1; // not the owner when there are two
    let run = |count: u64, hubs: &mut Vec<Hub<Frame, u64>>, sinks: &mut Vec<Sink0>| {
        route(hubs, sinks);
        for _ in 0..count {
            hubs[publisher].publish(ROOM, publisher as u64, frame.clone(), &mut sinks[publisher]);
            route(hubs, sinks);
        }
    };
    run(10, &mut hubs, &mut sinks); // warm: the envelope Vecs reach their working size
    let before: u64 = sinks.iter().map(|s| s.deliveries).sum();
    let (a0, b0) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    run(MESSAGES, &mut hubs, &mut sinks);
    let (a1, b1) = (ALLOCS.load(Relaxed), BYTES.load(Relaxed));
    let after: u64 = sinks.iter().map(|s| s.deliveries).sum();
    (after - before, a1 - a0, b1 - b0)
}

fn route(hubs: &mut [Hub<Frame, u64>], sinks: &mut [Sink0]) {
    loop {
        let mut moved = false;
        for from in 0..hubs.len() {
            while let Some((to, env)) = sinks[from].outgoing.pop() {
                let to = to.0 as usize;
                hubs[to].handle(env, &mut sinks[to]);
                moved = true;
            }
        }
        if !moved {
            return;
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing special. Either way: run.
    let mut failed = 0;
    let mut passed = 0;
    // The counter must see allocations at all, or a zero below would prove nothing.
    let a = ALLOCS.load(Relaxed);
    black_box(Vec::<u8>::with_capacity(black_box(16)));
    if ALLOCS.load(Relaxed) == a {
        println!("the counting allocator is not in use");
        return ExitCode::FAILURE;
    }
    for workers in [1usize, 2] {
        for n in [1_000u64, 10_000] {
            let (deliveries, allocs, bytes) = measure(workers, n);
            let ok = allocs == 0 && deliveries == MESSAGES * n;
            println!(
                "hub fan-out, {workers} worker(s), {n} members: {deliveries} deliveries, \
                 {allocs} allocations ({bytes} bytes) -> {}",
                if ok { "ok" } else { "FAILED" }
            );
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
