//! `handshake_timeout`: a connection whose request head is not complete in time is closed (a 408
//! may be written first); a slow but timely request still gets its 101.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Daemon, read_head, status, upgrade_request};

const TIMEOUT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_millis(1500);

const CONFIG: &str = r#"
[server]
handshake_timeout = "1s"

[[room]]
path = "/chat"
"#;

/// Read until the server closes; what it wrote, and how long that took from `start`.
fn until_closed(s: &mut TcpStream, start: Instant) -> (String, Duration) {
    s.set_read_timeout(Some(TIMEOUT + SLACK + Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open {:?} after connecting", start.elapsed())
            }
            Err(_) => break, // reset
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

fn assert_cut_in_time(got: &str, after: Duration) {
    assert!(
        after + Duration::from_millis(200) >= TIMEOUT,
        "cut too early: {after:?}"
    );
    assert!(after <= TIMEOUT + SLACK, "cut only after {after:?}");
    assert!(
        got.is_empty() || got.starts_with("HTTP/1.1 408"),
        "unexpected answer {got:?}"
    );
}

#[test]
fn half_a_request_head_is_cut_off() {
    let d = Daemon::start(CONFIG);
    let start = Instant::now();
    let mut s = d.tcp();
    let req = upgrade_request("/chat", "");
    s.write_all(&req.as_bytes()[..req.len() / 2]).unwrap();
    let (got, after) = until_closed(&mut s, start);
    assert_cut_in_time(&got, after);
}

#[test]
fn silent_connection_is_cut_off() {
    let d = Daemon::start(CONFIG);
    let start = Instant::now();
    let mut s = d.tcp();
    let (got, after) = until_closed(&mut s, start);
    assert_cut_in_time(&got, after);
}

#[test]
fn trickling_client_does_not_reset_the_deadline() {
    let d = Daemon::start(CONFIG);
    let start = Instant::now();
    let mut s = d.tcp();
    let req = upgrade_request("/chat", "");
    // One byte every 100 ms never finishes in time; the deadline runs from the connect.
    let mut writer = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in req.as_bytes() {
            if writer.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100)); // the slow client under test
        }
    });
    let (got, after) = until_closed(&mut s, start);
    let _ = s.shutdown(std::net::Shutdown::Both); // stops the writer
    trickle.join().unwrap();
    assert_cut_in_time(&got, after);
}

#[test]
fn slow_start_within_the_deadline_still_upgrades() {
    let d = Daemon::start(CONFIG);
    let mut s = d.tcp();
    let req = upgrade_request("/chat", "");
    let (first, rest) = req.as_bytes().split_at(req.len() / 2);
    s.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the slow client under test
    s.write_all(rest).unwrap();
    let head = read_head(&mut s);
    assert_eq!(status(&head), 101, "{head}");
}
