//! Memory stays bounded between threads: 8 publishers on one worker flood a room whose 1,000
//! readers sit on the other worker for 10 s. The readers' worker is the bottleneck (1,000 writes
//! per message); the publishers' worker stops reading them once its messages in flight reach
//! `send_queue_limit`, so TCP pushes back on them instead of envelopes piling up. Every reader
//! gets each publisher's messages in order without a gap until the end (or, if it fell behind,
//! until its close 1008), and the daemon's memory stays under a bound derived from the limits.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::Daemon;

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0
max_message_size = "4KiB"

[[room]]
path = "/flood"
echo = false
"#;

/// `send_queue_limit`, the default: a reader may fall this far behind (besides what the kernel's
/// socket buffers hold) before it is cut as too slow.
const LIMIT: u64 = 1024 * 1024;
const READERS: usize = 1000;
/// Readers with a thread of their own.
const DEDICATED: usize = 16;
/// Threads the other readers share.
const SHARING: usize = 8;
const PUBLISHERS: usize = 8;
const PAYLOAD: usize = 1024;
const FLOOD_FOR: Duration = Duration::from_secs(10);
/// Each queued frame's slot, as the daemon counts it (`outbox::CHUNK_OVERHEAD`, at most this).
const SLOT: u64 = 32;

/// What the daemon may hold above its memory before the flood, derived from the limits:
/// - every reader's queue is at most the limit after a write and grows by at most half of it in
///   a pass (the pass budgets), so it holds at most 1.5 × LIMIT counted bytes; the frame bytes
///   are shared by all readers, but each reader has its own queue slots (doubled: a queue's
///   capacity grows by doubling);
/// - the frames those queues share span at most the longest queue, 1.5 × LIMIT, plus each
///   worker's own copy;
/// - the publishers' worker has at most LIMIT in flight to the other, plus one read (8 × 64 KiB);
/// - 16 MiB of allocator slack (freed memory glibc keeps, thread arenas).
fn bound_kib() -> u64 {
    let frame = PAYLOAD as u64 + 4;
    let per_reader_slots = 3 * LIMIT / 2 / (frame + SLOT) * SLOT * 2;
    let shared = 2 * (3 * LIMIT / 2);
    let in_flight = LIMIT + 8 * 64 * 1024;
    (READERS as u64 * per_reader_slots + shared + in_flight) / 1024 + 16 * 1024
}

fn message(publisher: u8, k: u32) -> Vec<u8> {
    // A masked client frame (zero mask: the payload goes as is).
    let mut f = vec![0x82, 0x80 | 126];
    f.extend_from_slice(&(PAYLOAD as u16).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    let mut p = vec![publisher; PAYLOAD];
    p[1..5].copy_from_slice(&k.to_be_bytes());
    f.extend_from_slice(&p);
    f
}

/// One reader's view: per publisher the next number expected; how it ended.
struct Reader {
    stream: mio::net::TcpStream,
    buf: Vec<u8>,
    next: [u32; PUBLISHERS],
    closed: Option<u16>,
}

impl Reader {
    /// Take the complete frames out of `buf`, checking order and gaps.
    fn parse(&mut self) {
        let mut at = 0;
        loop {
            let b = &self.buf[at..];
            if b.len() < 2 {
                break;
            }
            let (len, head) = match b[1] {
                n @ 0..=125 => (usize::from(n), 2),
                126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
                126 => break,
                n => panic!("unexpected length byte {n}"),
            };
            if b.len() < head + len {
                break;
            }
            let payload = &b[head..head + len];
            match b[0] {
                0x82 => {
                    let p = usize::from(payload[0]);
                    let k = u32::from_be_bytes(payload[1..5].try_into().unwrap());
                    assert_eq!(k, self.next[p], "publisher {p}: gap or reorder");
                    self.next[p] += 1;
                }
                0x88 => self.closed = Some(u16::from_be_bytes([payload[0], payload[1]])),
                0x89 => {}
                op => panic!("unexpected frame {op:#x}"),
            }
            at += head + len;
        }
        self.buf.drain(..at);
    }
}

/// Read `readers` until `stop`, then until each has `want` (or is closed), within a deadline.
fn read_loop(
    mut readers: Vec<Reader>,
    stop: Arc<AtomicBool>,
    want: Arc<[AtomicU64]>,
) -> Vec<Reader> {
    let mut poll = mio::Poll::new().unwrap();
    for (i, r) in readers.iter_mut().enumerate() {
        poll.registry()
            .register(&mut r.stream, mio::Token(i), mio::Interest::READABLE)
            .unwrap();
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut chunk = vec![0u8; 1 << 16];
    let mut deadline = None;
    loop {
        if stop.load(Ordering::Acquire) {
            let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            let done = readers.iter().all(|r| {
                r.closed.is_some()
                    || r.next
                        .iter()
                        .zip(want.iter())
                        .all(|(n, w)| u64::from(*n) == w.load(Ordering::Acquire))
            });
            if done {
                return readers;
            }
            assert!(Instant::now() < d, "readers did not drain within 60 s");
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            let r = &mut readers[ev.token().0];
            loop {
                match r.stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => r.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("reader: {e}"),
                }
            }
            r.parse();
        }
    }
}

#[test]
fn eight_publishers_flooding_1000_readers_on_another_worker_stay_within_the_memory_bound() {
    let d = Daemon::start_logged(CONFIG);
    // The acceptor spreads connections over the two workers in turn: w1, w0, w1, w0 ... (checked
    // below against the log). Readers take the w1 turns, publishers (and 992 short-lived
    // clients, to keep the turns) the w0 ones.
    let mut readers = Vec::new();
    let mut publishers: Vec<TcpStream> = Vec::new();
    let mut ports: HashMap<u16, &str> = HashMap::new();
    for i in 0..2 * READERS {
        let s = d.raw_upgrade("/flood", "");
        let port = s.local_addr().unwrap().port();
        if i % 2 == 0 {
            ports.insert(port, "w1");
            s.set_nonblocking(true).unwrap();
            readers.push(Reader {
                stream: mio::net::TcpStream::from_std(s),
                buf: Vec::new(),
                next: [0; PUBLISHERS],
                closed: None,
            });
        } else if publishers.len() < PUBLISHERS {
            ports.insert(port, "w0");
            common::drain_in_background(&s);
            // Held back by the flow control, a publisher's write may wait for long.
            s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            publishers.push(s);
        } else {
            drop(s);
        }
    }
    let watch = d.watch_rss();
    let before = watch.start;
    let stop = Arc::new(AtomicBool::new(false));
    let want: Arc<[AtomicU64]> = (0..PUBLISHERS).map(|_| AtomicU64::new(0)).collect();
    // The first DEDICATED readers have a thread each, and so keep up whatever else the machine
    // is doing; the others share SHARING threads (enough of them that the scheduler gives the
    // readers' side its share of the two cores next to the daemon's and the publishers' threads).
    let mut shared = readers.split_off(DEDICATED);
    let mut groups: Vec<Vec<Reader>> = readers.into_iter().map(|r| vec![r]).collect();
    let per = shared.len().div_ceil(SHARING);
    while !shared.is_empty() {
        let rest = shared.split_off(per.min(shared.len()));
        groups.push(std::mem::replace(&mut shared, rest));
    }
    let pools: Vec<_> = groups
        .into_iter()
        .map(|rs| {
            let (stop, want) = (Arc::clone(&stop), Arc::clone(&want));
            thread::spawn(move || read_loop(rs, stop, want))
        })
        .collect();
    let until = Instant::now() + FLOOD_FOR;
    let senders: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut s)| {
            thread::spawn(move || {
                let mut k = 0u32;
                let mut batch = Vec::new();
                while Instant::now() < until {
                    batch.clear();
                    for _ in 0..64 {
                        batch.extend(message(p as u8, k));
                        k += 1;
                    }
                    s.write_all(&batch).expect("publisher write");
                }
                (k, s)
            })
        })
        .collect();
    let mut sent = Vec::new();
    let mut keep = Vec::new();
    for (p, t) in senders.into_iter().enumerate() {
        let (k, s) = t.join().unwrap();
        want[p].store(u64::from(k), Ordering::Release);
        sent.push(k);
        keep.push(s);
    }
    stop.store(true, Ordering::Release);
    let readers: Vec<Reader> = pools.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let peak = watch.peak();

    let total: u64 = sent.iter().map(|&k| u64::from(k)).sum();
    let cut = readers.iter().filter(|r| r.closed.is_some()).count();
    for r in &readers {
        match r.closed {
            Some(code) => assert_eq!(code, 1008, "a reader closed with {code}"),
            None => assert!(r.next.iter().zip(&sent).all(|(n, s)| n == s)),
        }
    }
    let bound = bound_kib();
    eprintln!(
        "thread flood: {total} messages ({} MiB) from {PUBLISHERS} publishers to {READERS} \
         readers; {cut} readers cut as too slow; RSS {before} KiB before, {peak} KiB at peak \
         (bound {bound} KiB above before)",
        (total * PAYLOAD as u64) >> 20
    );
    assert!(total > 0);
    assert!(
        cut < READERS / 10,
        "{cut} of {READERS} readers could not keep up"
    );
    assert!(
        peak <= before + bound,
        "RSS {peak} KiB over {before} KiB + the bound {bound} KiB"
    );
    // The placement was as intended.
    let log = d.stop();
    for line in log.lines().filter(|l| l.contains(" joined /flood ")) {
        let Some(port) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("127.0.0.1:")?.parse::<u16>().ok())
        else {
            continue;
        };
        if let Some(w) = ports.get(&port) {
            assert!(
                line.ends_with(&format!("on {w})")),
                "placed elsewhere: {line}"
            );
        }
    }
}
