//! Out of file descriptors, the daemon keeps the connections the kernel queued: it retries
//! `accept` on a timer (readiness is edge-triggered, so they are not announced again) and serves
//! them once descriptors are free, with one warning rather than one per attempt.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, read_head, status, upgrade_request};

const CONFIG: &str = r#"
[server]
workers = 1

[[room]]
path = "/room"
"#;

/// Open a connection and send its upgrade request; the status if an answer came in time.
fn try_join(d: &Daemon, wait: Duration) -> (TcpStream, Option<u16>) {
    let mut s = d.tcp();
    s.write_all(upgrade_request("/room", "").as_bytes())
        .unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut probe = [0u8; 1];
    let answered = matches!(s.peek(&mut probe), Ok(1));
    s.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    let code = answered.then(|| status(&read_head(&mut s)));
    (s, code)
}

#[test]
fn connections_queued_while_out_of_descriptors_are_served_once_some_are_free() {
    let d = Daemon::start_with_nofile(CONFIG, 48);
    let mut members = Vec::new();
    let waiting = loop {
        assert!(members.len() < 48, "never ran out of descriptors");
        match try_join(&d, Duration::from_millis(500)) {
            (s, Some(101)) => members.push(s),
            (_, Some(code)) => panic!("refused with {code} instead of queued"),
            (s, None) => break s,
        }
    };
    // A second one waits in the queue too.
    let (second, code) = try_join(&d, Duration::from_millis(300));
    assert_eq!(code, None);
    // Free some descriptors: close members (EOF is enough; the worker drops them).
    let freed = Instant::now();
    members.truncate(members.len() - 4);
    for (s, what) in [(waiting, "first"), (second, "second")] {
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = read_head(&mut s);
        assert_eq!(status(&head), 101, "{what} queued connection: {head}");
    }
    assert!(
        freed.elapsed() < Duration::from_secs(3),
        "took {:?}",
        freed.elapsed()
    );
    let log = d.stop();
    let warnings = log.matches("accept failed").count();
    assert!((1..=2).contains(&warnings), "{warnings} warnings:\n{log}");
}
