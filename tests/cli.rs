//! The command line: `--check-config`, `--version`, `--help`, the built-in default, and the
//! `/healthz` answer on the listener.

mod common;

use common::{Daemon, TempFile, run_bin, status};

const GOOD: &str = r#"
[server]
workers = 2
max_connections = 1000
handshake_timeout = "5s"
ping_interval = "25s"
idle_timeout = "60s"
max_message_size = "64KiB"
send_queue_limit = "1MiB"

[[room]]
path = "/chat"
subprotocols = ["chat", "superchat"]
max_members = 100
echo = true
allowed_origins = []

[[room]]
path = "/rooms/*"
"#;

#[test]
fn check_config_accepts_a_good_file() {
    let file = TempFile::new(GOOD);
    let out = run_bin(&["--check-config", file.path().to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/wsrelay.toml");
    let out = run_bin(&["--check-config", path]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
}

#[test]
fn check_config_points_at_an_unknown_key() {
    // The unknown key sits on line 4, column 1.
    let file = TempFile::new("[server]\nworkers = 1\n\nwrokers = 2\n");
    let path = file.path().to_str().unwrap();
    let out = run_bin(&["--check-config", path]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rest = stderr
        .strip_prefix(&format!("{path}:"))
        .unwrap_or_else(|| panic!("stderr does not start with `{path}:`: {stderr}"));
    let mut parts = rest.splitn(3, ':');
    let line: u32 = parts.next().unwrap().parse().expect("line number");
    let col: u32 = parts.next().unwrap().parse().expect("column number");
    assert_eq!((line, col), (4, 1), "{stderr}");
    assert!(
        parts.next().is_some_and(|m| !m.trim().is_empty()),
        "no message: {stderr}"
    );
}

#[test]
fn check_config_rejects_idle_timeout_not_above_ping_interval() {
    let file = TempFile::new("[server]\nping_interval = \"30s\"\nidle_timeout = \"30s\"\n");
    let path = file.path().to_str().unwrap();
    let out = run_bin(&["--check-config", path]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with(&format!("{path}:")));
}

#[test]
fn daemon_refuses_to_start_on_a_bad_config() {
    let file = TempFile::new("[[room]]\npath = \"/chat\"\ncolour = \"blue\"\n");
    let out = run_bin(&[
        "--config",
        file.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "it must not say it is listening");
}

#[test]
fn version_and_help_exit_0() {
    let out = run_bin(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version printed {stdout:?}"
    );

    let out = run_bin(&["--help"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--check-config"] {
        assert!(
            stdout.contains(flag),
            "--help does not mention {flag}: {stdout}"
        );
    }
}

#[test]
fn healthz_is_200_ok() {
    let d = Daemon::start(GOOD);
    let (head, body) = d.http_get("/healthz");
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body.trim_end(), "ok");
}

#[test]
fn built_in_default_makes_every_path_a_room_with_echo() {
    let d = Daemon::start_default();
    for path in ["/chat", "/anything/at/all"] {
        let mut m = [d.connect(path, &[]), d.connect(path, &[])];
        common::send_text(&mut m[0], "hi");
        for ws in m.iter_mut() {
            assert_eq!(common::recv_text(ws), "hi");
        }
    }
}
