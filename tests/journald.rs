//! Log lines as journald wants them: with `JOURNAL_STREAM` naming the daemon's stderr, every line
//! starts with its syslog priority (`<4>` for a refused reload, `<6>` for info), `--check-config`
//! errors carry `<3>`, and the listen address is written once even though stdout and stderr are
//! one stream (as they are under systemd). A `JOURNAL_STREAM` naming some other stream (inherited
//! by a process whose output was redirected since) changes nothing.
//!
//! Self-contained (no `tests/common`): the daemon's output goes to a file the test owns, so that
//! the file's device and inode can stand in for journald's stream socket. tests/systemd/run checks
//! the same under a real systemd and journald. Every wait has a deadline.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("wsrelay-journald-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `device:inode` of `path`, as systemd writes `JOURNAL_STREAM`.
fn stream_id(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// The daemon with stdout and stderr both on `log` (one open file, like journald's one stream).
fn spawn(dir: &Dir, journal_stream: &str) -> (Child, PathBuf, PathBuf) {
    let config = dir.0.join("wsrelay.toml");
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n").unwrap();
    let log = dir.0.join("out.log");
    let out = File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let stream = if journal_stream == "this" {
        stream_id(&log)
    } else {
        journal_stream.to_owned()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", stream)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    (child, config, log)
}

/// Poll `log` until a line satisfies `pred`; the whole log.
fn wait_for_line(log: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(&pred) {
            return text;
        }
        assert!(Instant::now() < deadline, "no such line in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

fn stop(mut child: Child) {
    signal(&child, libc::SIGTERM);
    let deadline = Instant::now() + DEADLINE;
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn under_journald_every_line_has_its_priority_and_none_is_repeated() {
    let dir = Dir::new("journal");
    let (child, config, log) = spawn(&dir, "this");
    wait_for_line(&log, |l| l.starts_with("listening on 127.0.0.1:"));
    // A refused reload is a warning, with the file's line and column.
    std::fs::write(&config, "[server]\nworkers = \"two\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    wait_for_line(&log, |l| l.contains("reload failed"));
    stop(child);
    let text = std::fs::read_to_string(&log).unwrap();

    let reload = text.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(reload.starts_with("<4>"), "{reload:?}");
    assert!(
        reload.contains("wsrelay.toml:2:"),
        "no file:line:col in {reload:?}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("<6>shutting down")),
        "{text}"
    );
    // The one line without a prefix is the address on stdout (the journal stores it at info).
    let addr_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("listening on"))
        .collect();
    assert_eq!(addr_lines.len(), 1, "the address twice:\n{text}");
    for line in text.lines().filter(|l| !l.starts_with("listening on")) {
        let p = line.as_bytes();
        assert!(
            p.len() >= 3 && p[0] == b'<' && (b'0'..=b'7').contains(&p[1]) && p[2] == b'>',
            "no priority prefix on {line:?} in:\n{text}"
        );
    }
}

#[test]
fn an_inherited_journal_stream_changes_nothing() {
    let dir = Dir::new("inherited");
    // A stream that is not our stderr: its device and inode do not match.
    let (child, _config, log) = spawn(&dir, "1:1");
    let text = wait_for_line(&log, |l| l.starts_with("listening on 127.0.0.1:"));
    stop(child);
    assert!(!text.contains("<6>"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("INFO") && l.contains("listening on 127.0.0.1:")),
        "the logger's own line is kept when stdout is not the journal:\n{text}"
    );
}

#[test]
fn check_config_errors_are_errors_in_the_journal() {
    let dir = Dir::new("check");
    let config = dir.0.join("broken.toml");
    std::fs::write(&config, "[server]\nlisten = 8080\n").unwrap();
    let log = dir.0.join("err.log");
    let err = File::create(&log).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_wsrelay"))
        .arg("--check-config")
        .arg(&config)
        .env("JOURNAL_STREAM", stream_id(&log))
        .stdout(Stdio::null())
        .stderr(err)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("<3>"), "{text:?}");
    assert!(text.contains("broken.toml:2:"), "{text:?}");
}
