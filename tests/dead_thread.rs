//! A dead thread is loud: a worker that panics or whose poll fails takes the daemon down at once
//! with exit status 70 (so `Restart=on-failure` restarts it), and a wedged worker turns
//! `/healthz` to 503 (and stops the systemd watchdog: see `notify.rs`). The faults come from the
//! `test-faults` feature, set off by the message `wsrelay-test-fault`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{Daemon, send_text};

const CONFIG: &str = r#"
[server]
workers = 2

[[room]]
path = "/chat"
"#;

/// Start with `fault`, trigger it on a worker, and return how the daemon ended.
fn die_of(fault: &str) -> (std::process::ExitStatus, String, Duration) {
    let d = Daemon::start_env(CONFIG, &[("WSRELAY_TEST_FAULT", fault)]);
    let mut ws = d.connect("/chat", &[]);
    send_text(&mut ws, "an ordinary message");
    assert_eq!(
        common::recv_text(&mut ws),
        "an ordinary message",
        "not before the trigger"
    );
    let sent = Instant::now();
    send_text(&mut ws, "wsrelay-test-fault");
    let (status, log) = d.expect_death(Duration::from_secs(5));
    (status, log, sent.elapsed())
}

#[test]
fn a_worker_that_panics_ends_the_daemon_with_status_70() {
    let (status, log, took) = die_of("worker-panic");
    assert_eq!(status.code(), Some(70), "{status:?}\n{log}");
    assert!(log.contains("test fault: worker"), "{log}");
    assert!(log.contains("exiting with status 70"), "{log}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_worker_whose_poll_fails_ends_the_daemon_with_status_70() {
    let (status, log, took) = die_of("worker-poll-error");
    assert_eq!(
        status.code(),
        Some(70),
        "{status:?} (signal {:?})\n{log}",
        status.signal()
    );
    assert!(log.contains("poll failed"), "{log}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn a_wedged_worker_turns_healthz_to_503() {
    let d = Daemon::start_env(CONFIG, &[("WSRELAY_TEST_FAULT", "worker-wedge")]);
    assert_eq!(common::status(&d.http_get("/healthz").0), 200);
    let mut ws = d.connect("/chat", &[]);
    send_text(&mut ws, "wsrelay-test-fault");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (head, body) = d.http_get("/healthz");
        if common::status(&head) == 503 {
            assert!(
                body.starts_with("worker w") && body.contains("stalled"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "healthz still {head}");
        std::thread::sleep(Duration::from_millis(200)); // polling; the deadline decides
    }
}
