//! A ping flood costs no memory beyond the limits: a client sends 100 MiB of pings and never
//! reads; the daemon holds one pong for it at most (the latest ping's, sent at the next write),
//! so its memory grows by less than a few MiB and comes back. The flooder, still a member, is then cut with 1008 like any reader that does
//! not read once the room's messages put its queue over `send_queue_limit`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::Daemon;
use tungstenite::Message;

const CONFIG: &str = r#"
[server]
workers = 2
send_queue_limit = "256KiB"
max_message_size = "16KiB"
close_timeout = "1s"

[[room]]
path = "/room"
echo = false
"#;

const FLOOD: usize = 100 << 20;

/// A masked client ping with a 125-byte payload.
fn ping() -> Vec<u8> {
    let mut f = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
    f.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][usize::from(i) % 4]));
    f
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_costs_no_memory() {
    let d = Daemon::start(CONFIG);
    let mut flooder = d.raw_upgrade("/room", "");
    let mut speaker = d.connect("/room", &[]);
    let mut listener = d.connect("/room", &[]);
    let watch = d.watch_rss();
    let before = watch.start;
    let chunk: Vec<u8> = ping().repeat((1 << 20) / 131);
    let mut sent = 0;
    while sent < FLOOD {
        flooder
            .write_all(&chunk)
            .expect("the daemon stopped reading the flood");
        sent += chunk.len();
    }
    // The daemon has read the whole flood once a message the flooder sends after it arrives.
    let mut text = vec![0x81, 0x80 | 15, 0, 0, 0, 0];
    text.extend_from_slice(b"after the flood");
    flooder.write_all(&text).unwrap();
    assert_eq!(common::recv_text(&mut listener), "after the flood");
    let peak = watch.peak();
    eprintln!("ping flood: RSS {before} KiB before, {peak} KiB at peak");
    assert!(
        peak - before < 4 * 1024,
        "RSS grew from {before} KiB to {peak} KiB for {} MiB of pings",
        FLOOD >> 20
    );

    // The flooder reads nothing; 8 MiB of messages for it (more than the kernel's socket buffers
    // hold) pile up past its limit: 1008.
    for k in 0..512 {
        speaker
            .send(Message::binary(vec![k as u8; 16 * 1024]))
            .unwrap();
        assert_eq!(
            common::recv(&mut listener),
            Message::binary(vec![k as u8; 16 * 1024])
        );
    }
    // Its socket holds pongs (and messages), then the close frame: 1008.
    let mut tail = Vec::new();
    flooder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match flooder.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(256);
                tail.drain(..keep);
            }
        }
    }
    let close = tail
        .windows(4)
        .rposition(|w| w[0] == 0x88 && w[2..4] == 1008u16.to_be_bytes());
    assert!(
        close.is_some(),
        "no close 1008 at the end of the flooder's stream"
    );
    d.wait_metric("wsrelay_slow_consumer_disconnects_total", |v| v == 1.0);
    assert!(d.rss_kib() < before + 4 * 1024, "memory did not come back");
}
