//! Keepalive: the server pings every `ping_interval`; a client that answers stays; a connection
//! from which nothing arrives (not even a pong) for `idle_timeout` is closed.

mod common;

use std::time::{Duration, Instant};

use common::frames::{Ending, await_ending};
use common::{Daemon, send_text};
use tungstenite::Message;

const PING: Duration = Duration::from_millis(500);
const IDLE: Duration = Duration::from_millis(2000);
/// Scheduling slack allowed on top of each timer.
const SLACK: Duration = Duration::from_millis(1500);

const CONFIG: &str = r#"
[server]
ping_interval = "500ms"
idle_timeout = "2s"
close_timeout = "500ms"

[[room]]
path = "/k"
"#;

#[test]
fn ping_arrives_within_the_interval_and_pongs_keep_the_client() {
    let d = Daemon::start(CONFIG);
    let mut ws = d.connect("/k", &[]);
    let start = Instant::now();
    let mut pings = Vec::new();
    // Stay connected well past idle_timeout, sending nothing but the automatic pongs.
    while start.elapsed() < IDLE * 2 {
        match ws.read() {
            Ok(Message::Ping(_)) => pings.push(start.elapsed()),
            Ok(m) => panic!("unexpected {m:?}"),
            Err(e) => panic!("answering pongs should keep the connection open: {e}"),
        }
    }
    assert!(pings[0] <= PING + SLACK, "first ping after {:?}", pings[0]);
    let max_gap = pings.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(max_gap <= PING + SLACK, "pings {max_gap:?} apart");
    send_text(&mut ws, "still here");
    assert_eq!(common::recv_text(&mut ws), "still here");
}

#[test]
fn silent_client_is_closed_after_idle_timeout() {
    let d = Daemon::start(CONFIG);
    // Completes the handshake, then never writes: it reads only to see the end.
    let mut s = d.raw_upgrade("/k", "");
    let start = Instant::now();
    let ending = await_ending(&mut s, IDLE + SLACK + Duration::from_secs(5));
    let after = start.elapsed();
    assert!(
        after + Duration::from_millis(250) >= IDLE,
        "closed too early: {after:?}"
    );
    assert!(after <= IDLE + SLACK, "closed only after {after:?}");
    if let Ending::Close(code, _) = ending {
        assert!(matches!(code, 1000 | 1001), "close code {code}");
    }
}

#[test]
fn client_that_never_reads_nor_writes_is_gone_after_idle_timeout() {
    let d = Daemon::start(CONFIG);
    let mut s = d.raw_upgrade("/k", "");
    // Being silent is the behaviour under test, not a stand-in for synchronisation.
    std::thread::sleep(IDLE + Duration::from_millis(500) + SLACK);
    // By now the server has given up: whatever is buffered (pings, maybe a close) ends at once.
    await_ending(&mut s, Duration::from_secs(1));
}
