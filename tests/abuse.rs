//! Under attack: 1,000 half-open handshakes (heads sent in part, never finished) and a few stalled
//! readers (joined, never reading) while normal clients exchange messages as fast as they can
//! read them. The normal clients get every message in order; the half-open handshakes are
//! answered 408 at `handshake_timeout` and the stalled readers closed once their queue passes
//! `send_queue_limit`; the daemon's memory stays within a bound worked out from those limits and
//! comes back near where it started once the attackers are gone.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::frames::{FIN, OP_BINARY, client_frame, read_frame};
use common::{Daemon, IO_TIMEOUT, Ws};

const HALF_OPEN: usize = 1000;
/// Bytes of request head each half-open connection sends (of the 8 KiB allowed).
const HALF_HEAD: usize = 6 * 1024;
const STALLED: usize = 4;
const NORMAL: usize = 3;
/// Messages each normal client publishes per round; every client reads all of them (echo on).
const MESSAGES: usize = 1500;
const SIZE: usize = 4096;
/// Messages a publisher may have in flight ahead of the slowest reader. At most NORMAL × WINDOW ×
/// SIZE = 96 KiB is then on its way to any client, well within `send_queue_limit`, so a normal
/// client is never the slow one.
const WINDOW: usize = 8;

const CONFIG: &str = r#"
[server]
workers = 2
handshake_timeout = "3s"
send_queue_limit = "256KiB"
max_header_size = "8KiB"
close_timeout = "1s"

[[room]]
path = "/busy"
"#;

/// What the attack may add to the daemon's resident memory, in KiB. Worked out from the limits:
/// a handshake in progress holds at most its head, here 6 KiB in a buffer that grows by doubling
/// (8 KiB): 1,000 × 8 KiB = 8 MiB; a stalled reader holds at most `send_queue_limit` plus one
/// message: 4 × 260 KiB ≈ 1 MiB; the normal clients' windows are a few hundred KiB. About
/// 10 MiB, so 32 MiB leaves room for allocator overhead and still catches a stalled reader's
/// queue left unbounded (18 MiB each per exchange here) or a handshake buffer allocated at a
/// fixed 64 KiB (1,000 × 64 KiB).
const ATTACK_BOUND_KIB: u64 = 32 * 1024;
/// How far above the starting point the daemon may stay once the attackers are gone, in KiB.
/// The handshake buffers are freed, but glibc's allocator keeps freed heap below a live block
/// for reuse instead of returning it (`malloc_trim(0)` run on the daemon by hand gives it all
/// back: 8.4 → 4.0 MiB), so up to the buffers' 8 MiB may stay resident. What must not happen is
/// growth with every attack: the second attack below must cost no more than the first.
const RETURN_MARGIN_KIB: u64 = 10 * 1024;
/// What a second attack may add over the first attack's peak, in KiB: noise, not another 8 MiB.
const REPEAT_MARGIN_KIB: u64 = 1024;
/// Half-open connections opened before waiting for the acceptor to take them: fewer than the
/// listen backlog (128), so no SYN is dropped and retried a second later.
const BATCH: usize = 100;

#[test]
fn half_open_handshakes_and_stalled_readers_do_not_hurt_normal_clients() {
    let d = Daemon::start(CONFIG);
    let normal: Vec<Ws> = (0..NORMAL).map(|_| d.connect("/busy", &[])).collect();
    let mut normal: Vec<TcpStream> = normal.into_iter().map(Ws::into_inner).collect();

    // A round without attackers warms the allocator up and gives the starting point.
    let quiet = exchange(&mut normal, 0);
    let baseline = d.rss_kib();

    // The first attack ends by itself: the handshakes time out (408), the stalled readers are
    // cut as slow consumers.
    let (half_open, stalled, first) = attack(&d, &mut normal, 1);
    let mut timed_out = half_open;
    for s in &mut timed_out {
        let head = common::read_head(s);
        assert_eq!(common::status(&head), 408, "{head}");
    }
    drop((timed_out, stalled));
    d.wait_metric("wsrelay_handshakes_pending", |v| v == 0.0);
    d.wait_metric("wsrelay_connections_open", |v| v == NORMAL as f64);
    exchange(&mut normal, 2);
    let after_first = d.rss_kib();

    // The second attack is called off by the attackers; the daemon lets go at once.
    let (half_open, stalled, second) = attack(&d, &mut normal, 3);
    drop((half_open, stalled));
    d.wait_metric("wsrelay_handshakes_pending", |v| v == 0.0);
    d.wait_metric("wsrelay_connections_open", |v| v == NORMAL as f64);
    exchange(&mut normal, 4);
    let after_second = d.rss_kib();

    eprintln!(
        "RSS KiB: baseline {baseline}; first attack {first:?}, after it {after_first}; \
         second attack {second:?}, after it {after_second}; a quiet exchange took {quiet:?}"
    );
    // Timing is the benchmarks' business; this only bounds it (a quiet exchange takes ~0.1 s).
    assert!(
        first.exchange.max(second.exchange) < Duration::from_secs(30),
        "the normal clients crawled under attack"
    );
    let peak = first.held.max(first.peak);
    assert!(
        peak.saturating_sub(baseline) < ATTACK_BOUND_KIB,
        "RSS grew by {} KiB under attack (bound {ATTACK_BOUND_KIB} KiB)",
        peak - baseline
    );
    assert!(
        after_first.saturating_sub(baseline) < RETURN_MARGIN_KIB,
        "RSS {after_first} KiB stays {} KiB over the baseline {baseline} KiB",
        after_first - baseline
    );
    // A leak shows as a second attack that needs more than the first did (another 8 MiB of
    // head buffers). Where the freed memory sits afterwards is the allocator's business: glibc
    // returns it only when nothing live sits above it, and whether a long-lived block landed
    // there during the attack is a matter of timing (seen: after it 11.3 MiB in one run, 15.1 MiB,
    // the first attack's peak, in the next). So both are bounded by the first attack's peak.
    assert!(
        second.held.max(second.peak) < peak + REPEAT_MARGIN_KIB
            && after_second < peak + REPEAT_MARGIN_KIB,
        "a second attack grew the daemon again: {second:?}, after it {after_second} KiB \
         (first attack's peak {peak} KiB)"
    );
    for s in &normal {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// The daemon's memory during one attack, in KiB.
#[derive(Debug, Clone, Copy)]
struct Attack {
    /// With every attacker connected.
    held: u64,
    /// After the normal clients' exchange under attack.
    peak: u64,
    /// How long that exchange took.
    exchange: Duration,
}

/// Open the half-open handshakes and the stalled readers, then run an exchange of the normal
/// clients (`round`); the attackers' sockets are returned open.
fn attack(
    d: &Daemon,
    normal: &mut [TcpStream],
    round: u8,
) -> (Vec<TcpStream>, Vec<TcpStream>, Attack) {
    let slow_before = d
        .metric("wsrelay_slow_consumer_disconnects_total")
        .unwrap_or(0.0);
    let half_open = half_open_handshakes(d);
    let stalled: Vec<TcpStream> = (0..STALLED).map(|_| d.raw_upgrade("/busy", "")).collect();
    assert_eq!(
        d.metric("wsrelay_handshakes_pending"),
        Some(HALF_OPEN as f64),
        "every half-open handshake is pending during the exchange"
    );
    let held = d.rss_kib();
    let exchange = exchange(normal, round);
    let peak = d.rss_kib();
    // Every stalled reader fell behind by far more than its queue may hold.
    d.wait_metric("wsrelay_slow_consumer_disconnects_total", |v| {
        v == slow_before + STALLED as f64
    });
    (
        half_open,
        stalled,
        Attack {
            held,
            peak,
            exchange,
        },
    )
}

/// Open [`HALF_OPEN`] connections that send part of a request head and then nothing.
fn half_open_handshakes(d: &Daemon) -> Vec<TcpStream> {
    let mut head = "GET /busy HTTP/1.1\r\nHost: localhost\r\nX-Pad: "
        .to_string()
        .into_bytes();
    head.resize(HALF_HEAD, b'a');
    let mut conns = Vec::with_capacity(HALF_OPEN);
    while conns.len() < HALF_OPEN {
        for _ in 0..BATCH.min(HALF_OPEN - conns.len()) {
            let mut s = d.tcp();
            s.write_all(&head).expect("write a partial head");
            conns.push(s);
        }
        // The acceptor has read these once it reports them pending.
        d.wait_metric("wsrelay_handshakes_pending", |v| v == conns.len() as f64);
    }
    conns
}

/// Every normal client publishes [`MESSAGES`] binary messages tagged with `round` while reading
/// everything the room relays, and must see every client's messages in its order. A publisher
/// stays at most [`WINDOW`] messages ahead of the slowest reader of them: as fast as the clients
/// can read. Returns how long the round took.
fn exchange(clients: &mut [TcpStream], round: u8) -> Duration {
    let started = Instant::now();
    let n = clients.len();
    // seen[reader][publisher]: messages of `publisher` that `reader` has read.
    let seen = Arc::new((Mutex::new(vec![vec![0usize; n]; n]), Condvar::new()));
    let mut threads = Vec::new();
    for (me, s) in clients.iter().enumerate() {
        let mut writer = s.try_clone().unwrap();
        let progress = Arc::clone(&seen);
        threads.push(thread::spawn(move || {
            let (lock, cv) = &*progress;
            for k in 0..MESSAGES {
                let mut seen = lock.lock().unwrap();
                while seen.iter().any(|r| r[me] + WINDOW <= k) {
                    let (guard, timeout) = cv.wait_timeout(seen, IO_TIMEOUT).unwrap();
                    assert!(!timeout.timed_out(), "client {me}: a reader stalled");
                    seen = guard;
                }
                drop(seen);
                let frame = client_frame(FIN | OP_BINARY, &payload(round, me, k), true);
                writer.write_all(&frame).expect("publish");
            }
        }));
        let mut reader = s.try_clone().unwrap();
        let progress = Arc::clone(&seen);
        threads.push(thread::spawn(move || {
            let (lock, cv) = &*progress;
            let mut next = vec![0usize; n];
            while next.iter().any(|&k| k < MESSAGES) {
                let f = read_frame(&mut reader)
                    .expect("read")
                    .expect("the daemon closed a normal client");
                if f.opcode() != OP_BINARY {
                    continue; // a ping
                }
                assert_eq!(f.payload.len(), SIZE);
                let (r, from, k) = (f.payload[0], f.payload[1] as usize, tag(&f.payload));
                assert_eq!((r, k), (round, next[from]), "client {me}: from {from}");
                next[from] += 1;
                lock.lock().unwrap()[me][from] = next[from];
                cv.notify_all();
            }
        }));
    }
    for t in threads {
        t.join().expect("a normal client failed");
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "round {round} took {took:?}"
    );
    took
}

fn payload(round: u8, from: usize, k: usize) -> Vec<u8> {
    let mut p = vec![(k % 251) as u8; SIZE];
    p[0] = round;
    p[1] = from as u8;
    p[2..10].copy_from_slice(&(k as u64).to_be_bytes());
    p
}

fn tag(p: &[u8]) -> usize {
    u64::from_be_bytes(p[2..10].try_into().unwrap()) as usize
}
