//! SIGTERM and SIGINT: stop accepting, close every client with 1001, exit 0 once they are gone or
//! after `shutdown_grace`; a second signal exits at once.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{Daemon, Ws, read_close};

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut d =
        Daemon::start("[server]\nworkers = 2\ncolocate_members = 0\n[[room]]\npath = \"/chat\"\n");
    let mut members: Vec<Ws> = (0..4).map(|_| d.connect("/chat", &[])).collect();
    d.signal(libc::SIGTERM);
    for m in &mut members {
        assert_eq!(read_close(m), (1001, "server shutting down".to_string()));
        // Answer the close (tungstenite replies on the next read) and see the server hang up.
        assert!(m.read().is_err());
    }
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn sigint_drains_too_and_refuses_new_connections() {
    let mut d = Daemon::start("[[room]]\npath = \"/chat\"\n");
    let mut m = d.connect("/chat", &[]);
    let addr = d.addr();
    d.signal(libc::SIGINT);
    assert_eq!(read_close(&mut m).0, 1001);
    assert!(m.read().is_err());
    assert_eq!(d.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting"
    );
}

#[test]
fn a_client_that_never_answers_holds_the_exit_only_until_the_grace_period() {
    let mut d = Daemon::start(
        "[server]\nshutdown_grace = \"1s\"\nclose_timeout = \"30s\"\n[[room]]\npath = \"/chat\"\n",
    );
    // Upgraded, then silent: it never reads our close frame nor answers it.
    let _silent = d.raw_upgrade("/chat", "");
    let started = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut d = Daemon::start("[server]\nshutdown_grace = \"60s\"\n[[room]]\npath = \"/chat\"\n");
    let mut silent = d.raw_upgrade("/chat", "");
    d.signal(libc::SIGTERM);
    // The close frame proves the drain has begun: 0x88, length, code 1001.
    let mut head = [0u8; 4];
    silent.read_exact(&mut head).expect("close frame");
    assert_eq!(head[0], 0x88);
    assert_eq!(u16::from_be_bytes([head[2], head[3]]), 1001);
    let started = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(1),
        "a forced exit is not a clean one: {status}"
    );
}
