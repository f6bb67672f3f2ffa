//! Hundreds of connections send random bytes, seeded so a failure can be replayed: half of them
//! instead of a request head, half after a valid handshake (raw random bytes, and random frame
//! headers with random payloads). A normal client keeps exchanging messages with itself through
//! it all and gets every one back; no daemon thread panics; every garbage connection is ended by
//! the daemon or by its own EOF; the daemon's memory comes back near where it started.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Daemon, close, recv_text, send_text, upgrade_request};

/// Change it to explore; a failure names the seed it ran with.
const SEED: u64 = 0x5eed_f00d_9a7b_a9e1;
const CONNECTIONS: usize = 1000;
/// Connections at a time (threads).
const PARALLEL: usize = 8;
/// Most garbage one connection sends.
const MAX_GARBAGE: usize = 16 * 1024;

const CONFIG: &str = r#"
[server]
workers = 2
handshake_timeout = "1s"
close_timeout = "1s"
max_message_size = "16KiB"

[[room]]
path = "/g/*"
"#;

/// How far above its starting point the daemon may stay once the garbage has stopped, in KiB.
/// Each connection holds at most a request head (8 KiB) or a message (16 KiB) and a handful of
/// them run at once: a leak of a few hundred bytes per connection (1,000 of them) would show, and
/// the allocator's reuse pool for those few buffers fits well within it.
const RETURN_MARGIN_KIB: u64 = 4 * 1024;

/// splitmix64: a seeded generator, good enough to make garbage, and replayable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Between 0 and `max - 1` random bytes.
    fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
}

/// What one connection sends. Even `k`: garbage instead of a request (sometimes after a
/// plausible start); odd `k`: a valid handshake, then garbage as WebSocket frames.
fn garbage(rng: &mut Rng, k: usize) -> (bool, Vec<u8>) {
    let len = 1 + rng.below(MAX_GARBAGE);
    if k.is_multiple_of(2) {
        let mut out = match rng.below(3) {
            0 => b"GET /g/x HTTP/1.1\r\n".to_vec(),
            1 => upgrade_request("/g/x", "").into_bytes()[..40].to_vec(),
            _ => Vec::new(),
        };
        out.extend(rng.bytes(len));
        return (false, out);
    }
    let mut out = Vec::new();
    while out.len() < len {
        match rng.below(4) {
            // Raw bytes.
            0 => out.extend(rng.some_bytes(512)),
            // A frame header with random flags, opcode, mask bit and length, then random bytes.
            1 => {
                out.push(rng.next() as u8);
                match rng.below(3) {
                    0 => out.push(rng.next() as u8),
                    1 => {
                        out.push(0x80 | 126);
                        out.extend((rng.next() as u16).to_be_bytes());
                    }
                    _ => {
                        out.push(0x80 | 127);
                        out.extend(rng.next().to_be_bytes());
                    }
                }
                out.extend(rng.some_bytes(1024));
            }
            // A well-formed masked frame with a random opcode and payload (bad UTF-8, bad close
            // codes, unknown opcodes, control frames too long or fragmented).
            _ => {
                let payload = rng.some_bytes(300);
                let first = (rng.next() as u8 & 0x8f) | if rng.below(2) == 0 { 0x80 } else { 0 };
                out.extend(common::frames::client_frame(first, &payload, true));
            }
        }
    }
    (true, out)
}

/// One garbage connection: send, maybe half-close, then read until the daemon ends it. Without
/// the half-close the daemon must end it on its own (an answer, or `handshake_timeout`); after
/// a handshake the client always half-closes, since a frame left unfinished is only cut at
/// `idle_timeout`. Returns how it ended: the HTTP status, or the close code after a 101.
fn attack(d_addr: std::net::SocketAddr, handshake: bool, half_close: bool, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(d_addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    if handshake {
        s.write_all(upgrade_request("/g/x", "").as_bytes()).unwrap();
        let head = common::read_head(&mut s);
        assert_eq!(common::status(&head), 101, "{head}");
    }
    // The daemon may close first (it answers 400, or closes 1002): writes may then fail.
    let _ = s.write_all(bytes);
    if handshake || half_close {
        let _ = s.shutdown(Shutdown::Write);
    }
    // The socket's read timeout bounds each read; the daemon must end the connection first.
    let stuck =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let ending = if handshake {
        // Our own valid messages may come back first; then the close frame, or just the end.
        loop {
            match common::frames::read_frame(&mut s) {
                Ok(Some(f)) if f.opcode() == common::frames::OP_CLOSE => {
                    let code = f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    break format!("close {}", code.unwrap_or(1005));
                }
                Ok(Some(_)) => continue,
                Ok(None) => break "dropped".to_string(),
                Err(e) if stuck(&e) => panic!("the daemon kept a garbage connection open"),
                Err(_) => break "reset".to_string(),
            }
        }
    } else {
        let mut got = Vec::new();
        match s.read_to_end(&mut got) {
            Err(e) if stuck(&e) => panic!("the daemon kept a garbage connection open"),
            _ if got.starts_with(b"HTTP/1.1 ") && got.len() >= 12 => {
                String::from_utf8_lossy(&got[9..12]).into_owned()
            }
            _ => "dropped".to_string(),
        }
    };
    format!(
        "{} {ending}",
        if handshake { "after 101:" } else { "before:" }
    )
}

#[test]
fn random_bytes_before_and_after_the_handshake_do_not_stop_the_daemon() {
    let d = Daemon::start(CONFIG);
    let mut normal = d.connect("/g/normal", &[]);
    // Warm up, then take the starting point.
    for k in 0..200 {
        send_text(&mut normal, &format!("warm {k}"));
        assert_eq!(recv_text(&mut normal), format!("warm {k}"));
    }
    let baseline = d.rss_kib();

    // Each thread makes its own connections from its own seed; all of them together are
    // CONNECTIONS connections.
    let addr = d.addr();
    let (done_tx, done) = mpsc::channel();
    let workers: Vec<_> = (0..PARALLEL)
        .map(|t| {
            let done_tx = done_tx.clone();
            thread::spawn(move || {
                let mut rng = Rng(SEED ^ (t as u64).wrapping_mul(0x1234_5678_9abc_def1));
                let mut endings = Vec::new();
                for k in (t..CONNECTIONS).step_by(PARALLEL) {
                    let (handshake, bytes) = garbage(&mut rng, k);
                    endings.push(attack(addr, handshake, k.is_multiple_of(4), &bytes));
                }
                let _ = done_tx.send(());
                endings
            })
        })
        .collect();
    drop(done_tx);

    // The normal client keeps going until the last garbage connection is done.
    let started = Instant::now();
    let mut rounds = 0u64;
    let mut finished = 0;
    while finished < PARALLEL {
        send_text(&mut normal, &format!("normal {rounds}"));
        assert_eq!(recv_text(&mut normal), format!("normal {rounds}"));
        rounds += 1;
        while done.try_recv().is_ok() {
            finished += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the garbage took over a minute"
        );
    }
    let mut endings = std::collections::BTreeMap::<String, usize>::new();
    for (t, w) in workers.into_iter().enumerate() {
        let list = w
            .join()
            .unwrap_or_else(|_| panic!("garbage thread {t} failed (seed {SEED:#x})"));
        for e in list {
            *endings.entry(e).or_default() += 1;
        }
    }
    eprintln!(
        "{CONNECTIONS} garbage connections in {:?}; {rounds} round trips meanwhile; \
         endings: {endings:?}",
        started.elapsed()
    );

    // Everything the garbage opened is gone; the memory is back near where it started.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.metric("wsrelay_connections_open") != Some(1.0)
        || d.metric("wsrelay_handshakes_pending") != Some(0.0)
    {
        assert!(Instant::now() < deadline, "garbage connections still open");
        thread::sleep(Duration::from_millis(50)); // polling gauges; the deadline decides
    }
    for k in 0..200 {
        send_text(&mut normal, &format!("after {k}"));
        assert_eq!(recv_text(&mut normal), format!("after {k}"));
    }
    let after = d.rss_kib();
    eprintln!("RSS KiB: baseline {baseline}, after the garbage {after}");
    assert!(
        after.saturating_sub(baseline) < RETURN_MARGIN_KIB,
        "RSS {after} KiB stays {} KiB over the baseline {baseline} KiB (seed {SEED:#x})",
        after - baseline
    );
    close(normal);
}
