//! A subscriber that cannot keep up is cut off with close 1008 once its send queue passes
//! `send_queue_limit`, while a fast reader in the same room gets every message, in order.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Daemon, Ws, recv};
use tungstenite::Message;

/// 32 MiB in all: far more than the kernel buffers between the server and the slow reader can
/// hold (here the server's send buffer grows to `tcp_wmem`'s 4 MiB), so its queue must overflow.
/// (A small SO_RCVBUF on the slow reader changes little, and makes reading the backlog take
/// minutes through the tiny window.)
const MESSAGES: usize = 8000;
const SIZE: usize = 4096;
/// Messages the publisher may be ahead of the fast reader: 32 KiB, half the queue limit.
const WINDOW: usize = 8;

const CONFIG: &str = r#"
[server]
workers = 2
send_queue_limit = "64KiB"
max_message_size = "16KiB"
close_timeout = "30s"

[[room]]
path = "/feed"
echo = false
"#;

fn numbered(k: usize) -> Vec<u8> {
    let mut m = vec![(k % 251) as u8; SIZE];
    m[..8].copy_from_slice(&(k as u64).to_be_bytes());
    m
}

fn number(m: &Message) -> usize {
    match m {
        Message::Binary(b) if b.len() == SIZE => {
            u64::from_be_bytes(b[..8].try_into().unwrap()) as usize
        }
        m => panic!("unexpected {m:?}"),
    }
}

#[test]
fn slow_reader_is_cut_with_1008_and_fast_reader_gets_everything() {
    let d = Daemon::start(CONFIG);
    let mut m: Vec<Ws> = (0..3).map(|_| d.connect("/feed", &[])).collect();
    let mut slow = m.pop().unwrap();
    let mut fast = m.pop().unwrap();
    let mut publisher = m.pop().unwrap();

    // The publisher keeps at most WINDOW messages ahead of the fast reader, so the fast reader
    // is never the one that falls behind; the slow one falls behind by the whole feed.
    let (acks, acked) = mpsc::channel::<usize>();
    let sender = thread::spawn(move || {
        let mut done = 0;
        for k in 0..MESSAGES {
            while k - done >= WINDOW {
                done = acked
                    .recv_timeout(Duration::from_secs(10))
                    .expect("fast reader stalled");
            }
            publisher.send(Message::binary(numbered(k))).unwrap();
        }
        publisher
    });
    let started = Instant::now();
    for k in 0..MESSAGES {
        let msg = recv(&mut fast);
        assert_eq!(
            number(&msg),
            k,
            "fast reader: message out of order or missing"
        );
        assert_eq!(msg, Message::binary(numbered(k)));
        let _ = acks.send(k + 1);
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let _publisher = sender.join().unwrap();

    // Only now does the slow one read: some prefix of the messages, then the close.
    let mut next = 0;
    loop {
        match slow.read() {
            Ok(Message::Binary(b)) => {
                let k = number(&Message::Binary(b));
                assert_eq!(k, next, "slow reader: gap or reorder before the cut");
                next += 1;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1008, "close {f:?}");
                break;
            }
            Ok(m) => panic!("slow reader: unexpected {m:?}"),
            Err(e) => panic!("slow reader: no close 1008 after {next} messages: {e}"),
        }
    }
    assert!(next < MESSAGES, "the slow reader was never cut off");
}
