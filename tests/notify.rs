//! The daemon under a service manager: `sd_notify` messages on a datagram socket the test binds
//! and passes as `NOTIFY_SOCKET` (READY=1 once listening, WATCHDOG=1 while the loop turns,
//! RELOADING=1 + MONOTONIC_USEC then READY=1 around SIGHUP, STOPPING=1 on SIGTERM), nothing of
//! the kind without it, and socket activation (`LISTEN_FDS`).
//!
//! Self-contained on purpose (no `tests/common`): it needs its own environment handling, and a
//! datagram socket instead of WebSocket clients. Every wait has a deadline.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the daemon may take to start, reload or notice a signal.
const DEADLINE: Duration = Duration::from_secs(10);
/// Watchdog period handed to the daemon; it should ping at half of it.
const WATCHDOG_USEC: &str = "2000000";

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "2s"

[[room]]
path = "/chat"
"#;

/// Variables a service manager sets; cleared for every daemon so that a test run under systemd
/// does not leak its own into the one it starts.
const MANAGER_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsrelay-notify-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received, for failure messages.
    seen: Vec<String>,
}

impl Manager {
    fn bind(dir: &TempDir) -> Manager {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        Manager {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// The next message, or `None` once `deadline` passes.
    fn recv_before(&mut self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                Some(msg)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// Skip messages (watchdog pings, say) until one has the line `line`; return that message.
    fn expect(&mut self, line: &str, daemon: &mut Daemon) -> String {
        let deadline = Instant::now() + DEADLINE;
        while let Some(msg) = self.recv_before(deadline) {
            if has_line(&msg, line) {
                return msg;
            }
        }
        panic!(
            "no {line:?} within {DEADLINE:?}; received {:?}; daemon {}",
            self.seen,
            daemon.state()
        );
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

/// The real daemon. Dropping it kills it (by pid) if it still runs, and prints its stderr when
/// the test is failing.
struct Daemon {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr_path: PathBuf,
}

impl Daemon {
    /// Start `wsrelay` (or `program`, a command that execs it) with `args`, and the manager's
    /// variables cleared but for `env`.
    fn spawn(
        args: &[&str],
        env: &[(&str, &str)],
        dir: &TempDir,
        program: Option<&mut Command>,
    ) -> Daemon {
        let stderr_path = dir.join("stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
        let mut own = Command::new(env!("CARGO_BIN_EXE_wsrelay"));
        let cmd = program.unwrap_or(&mut own);
        for var in MANAGER_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn wsrelay");
        let out = child.stdout.take().unwrap();
        let (tx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Daemon {
            child,
            stdout,
            stderr_path,
        }
    }

    /// The address of the first `listening on ADDR` line.
    fn listening_on(&mut self) -> SocketAddr {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        return addr
                            .trim()
                            .parse()
                            .expect("an address after 'listening on'");
                    }
                }
                Err(_) => panic!("no 'listening on' line; daemon {}", self.state()),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with the pid of our own child, which we have not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not exit within {DEADLINE:?}");
    }

    fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => format!("exited ({status})"),
            Ok(None) => "still running".to_owned(),
            Err(e) => format!("unknown ({e})"),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
            eprintln!("--- wsrelay stderr ---\n{log}--- end ---");
        }
    }
}

fn write_config(dir: &TempDir) -> String {
    let path = dir.join("wsrelay.toml");
    std::fs::write(&path, CONFIG).expect("write config");
    path.to_str().expect("utf-8 temp path").to_owned()
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// `GET /healthz` answers 200 `ok`.
fn healthz(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, DEADLINE) else {
        return false;
    };
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.trim_end().ends_with("ok")
}

fn socket_path(m: &Manager) -> &str {
    m.path.to_str().expect("utf-8 socket path")
}

#[test]
fn ready_watchdog_reload_and_stopping_reach_the_manager() {
    let dir = TempDir::new();
    let config = write_config(&dir);
    let mut manager = Manager::bind(&dir);
    let mut daemon = Daemon::spawn(
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[
            ("NOTIFY_SOCKET", socket_path(&manager)),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
        ],
        &dir,
        None,
    );

    let ready = manager.expect("READY=1", &mut daemon);
    let addr = daemon.listening_on();
    assert!(
        healthz(addr),
        "READY=1 ({ready:?}) came before {addr} served"
    );

    // Half of WATCHDOG_USEC is 1 s; DEADLINE leaves room for a loaded machine.
    manager.expect("WATCHDOG=1", &mut daemon);

    let before = monotonic_usec();
    daemon.signal(libc::SIGHUP);
    let reloading = manager.expect("RELOADING=1", &mut daemon);
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("MONOTONIC_USEC in {reloading:?}: {e}"));
    let after = monotonic_usec();
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC between the SIGHUP ({before}) and now ({after})"
    );
    manager.expect("READY=1", &mut daemon);
    assert!(healthz(addr), "the daemon stopped serving after a reload");

    daemon.signal(libc::SIGTERM);
    manager.expect("STOPPING=1", &mut daemon);
    let status = daemon.wait_exit();
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        !manager
            .seen
            .iter()
            .any(|m| has_line(m, "READY=1") && has_line(m, "STOPPING=1")),
        "READY and STOPPING in one message: {:?}",
        manager.seen
    );
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged() {
    let dir = TempDir::new();
    let config = write_config(&dir);
    let mut manager = Manager::bind(&dir);
    let mut daemon = Daemon::spawn(
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[
            ("NOTIFY_SOCKET", socket_path(&manager)),
            ("WATCHDOG_USEC", WATCHDOG_USEC),
            // PID 1 is never the daemon: the watchdog belongs to someone else.
            ("WATCHDOG_PID", "1"),
        ],
        &dir,
        None,
    );
    manager.expect("READY=1", &mut daemon);
    // Three of the pings the daemon would send at half of WATCHDOG_USEC.
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Some(msg) = manager.recv_before(quiet_until) {
        assert!(!has_line(&msg, "WATCHDOG=1"), "pinged: {:?}", manager.seen);
    }
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
}

#[test]
fn without_notify_socket_the_daemon_serves_and_stops() {
    let dir = TempDir::new();
    let config = write_config(&dir);
    let mut daemon = Daemon::spawn(
        &["--config", &config, "--listen", "127.0.0.1:0"],
        &[],
        &dir,
        None,
    );
    let addr = daemon.listening_on();
    assert!(healthz(addr));
    daemon.signal(libc::SIGHUP);
    assert!(healthz(addr), "the daemon stopped serving after SIGHUP");
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn socket_activation_serves_on_the_passed_listener() {
    let dir = TempDir::new();
    let config = write_config(&dir);
    // What systemd does for a .socket unit: bind, then pass the fd as fd 3 with LISTEN_PID set
    // to the service's pid. The pid is known only in the child, so a shell sets it and execs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut sh = Command::new("/bin/sh");
    sh.args([
        "-c",
        r#"LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=wsrelay.socket exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_wsrelay"),
    ]);
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        sh.pre_exec(move || {
            let rc = if fd == 3 {
                // Already in place, but close-on-exec like every std socket: clear the flag.
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                // dup2 leaves the new fd without close-on-exec.
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Config says port 0 elsewhere: serving on `passed` proves the daemon used fd 3.
    let mut daemon = Daemon::spawn(&["--config", &config], &[], &dir, Some(&mut sh));
    // Only the daemon holds the socket now: a connection it does not serve would hang, not pass.
    drop(listener);
    let addr = daemon.listening_on();
    assert_eq!(
        addr, passed,
        "the daemon bound its own socket instead of fd 3"
    );
    assert!(healthz(passed));
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
