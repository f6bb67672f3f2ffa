//! Shared harness for the integration tests: a [`Daemon`] that runs the real `wsrelay` binary on
//! port 0 with a config written to a temp file, and clients that talk to it — tungstenite's client
//! for well-behaved traffic, raw sockets and hand-made frames where a test needs bad bytes.
//!
//! Every socket has read and write timeouts and every wait has a deadline, so no test can hang.
//! Synchronisation is by observed traffic (see [`barrier`]), never by sleeping.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Response;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

pub mod api;
pub mod frames;
pub mod jwt;
pub mod redis;
pub mod v1;

pub type Ws = WebSocket<TcpStream>;

/// Read and write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to print its `listening on` line.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// Most of the daemon's stderr kept for failure messages.
const STDERR_CAP: usize = 1 << 20;
/// A valid `Sec-WebSocket-Key` (the RFC 6455 sample).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wsrelay")
}

/// A file under the temp dir with a unique name, removed on drop.
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub fn new(contents: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "wsrelay-test-{}-{}-{nanos}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("write temp config");
        TempFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The running daemon. Dropping it kills the process it started and waits for it; a test fails if
/// the daemon died on its own or one of its threads panicked.
pub struct Daemon {
    child: Child,
    addr: SocketAddr,
    /// The API's address, when the config has an `[api]` table (see [`Daemon::start_api`]).
    api: Option<SocketAddr>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    config: Option<TempFile>,
    /// The test ended the daemon on purpose (see [`Daemon::wait_exit`]).
    exit_expected: bool,
}

impl Daemon {
    /// Start with `config` (TOML) on a free loopback port.
    pub fn start(config: &str) -> Daemon {
        let file = TempFile::new(config);
        let path = file.path().to_str().expect("utf-8 temp path").to_string();
        Daemon::spawn(&["--config", &path], Some(file), &[])
    }

    /// Start without `--config`: the built-in default, on a free loopback port.
    pub fn start_default() -> Daemon {
        Daemon::spawn(&[], None, &[])
    }

    /// Start with `config` and `RUST_LOG=debug`, for a test that reads the log ([`Daemon::stop`]).
    pub fn start_logged(config: &str) -> Daemon {
        Daemon::start_env(config, &[("RUST_LOG", "debug")])
    }

    /// Start with `config` and more environment variables (a test fault, the log level).
    pub fn start_env(config: &str, envs: &[(&str, &str)]) -> Daemon {
        let file = TempFile::new(config);
        let path = file.path().to_str().expect("utf-8 temp path").to_string();
        Daemon::spawn(&["--config", &path], Some(file), envs)
    }

    /// Start with `config` and at most `nofile` open file descriptors (RLIMIT_NOFILE).
    pub fn start_with_nofile(config: &str, nofile: u64) -> Daemon {
        let file = TempFile::new(config);
        let path = file.path().to_str().expect("utf-8 temp path").to_string();
        let mut cmd = Command::new(bin());
        // SAFETY: setrlimit(2) in the child before exec: async-signal-safe, touches no memory of
        // the parent.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let r = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.args(["--config", &path]);
        Daemon::spawn_command(cmd, Some(file), &[])
    }

    fn spawn(args: &[&str], config: Option<TempFile>, envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Daemon::spawn_command(cmd, config, envs)
    }

    fn spawn_command(mut cmd: Command, config: Option<TempFile>, envs: &[(&str, &str)]) -> Daemon {
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0"])
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsrelay");
        let stderr = drain(child.stderr.take().expect("stderr pipe"));
        let stdout = child.stdout.take().expect("stdout pipe");
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the daemon is up; keep draining anyway.
                let _ = lines_tx.send(line);
            }
        });
        let wants_api = config.as_ref().is_some_and(|f| {
            std::fs::read_to_string(f.path()).is_ok_and(|t| t.lines().any(|l| l.trim() == "[api]"))
        });
        let mut daemon = Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api: None,
            stderr: Some(stderr),
            config,
            exit_expected: false,
        };
        let deadline = Instant::now() + START_DEADLINE;
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                daemon.fail("no `listening on` line within the start deadline")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                daemon.fail("stdout closed before a `listening on` line")
            }
        };
        match line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse::<SocketAddr>().ok())
        {
            Some(addr) if addr.ip().is_loopback() && addr.port() != 0 => daemon.addr = addr,
            _ => daemon.fail(&format!(
                "first stdout line is not `listening on 127.0.0.1:PORT`: {line:?}"
            )),
        }
        if wants_api {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_default();
            match line
                .strip_prefix("api listening on ")
                .and_then(|a| a.parse::<SocketAddr>().ok())
            {
                Some(addr) if addr.ip().is_loopback() && addr.port() != 0 => {
                    daemon.api = Some(addr)
                }
                _ => daemon.fail(&format!(
                    "second stdout line is not `api listening on 127.0.0.1:PORT`: {line:?}"
                )),
            }
        }
        daemon
    }

    /// Kill the daemon and fail the test with its stderr.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let status = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        panic!(
            "wsrelay: {why} (exit: {status:?})\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stderr.unwrap_or_default())
        );
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's resident memory (`VmRSS` in `/proc/PID/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_of(self.child.id()).unwrap_or_else(|| panic!("no VmRSS for pid {}", self.child.id()))
    }

    /// Sample the daemon's resident memory every 20 ms until the returned watch is finished.
    pub fn watch_rss(&self) -> RssWatch {
        let pid = self.child.id();
        let start = self.rss_kib();
        let peak = Arc::new(AtomicU64::new(start));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(kib) = rss_of(pid) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(20)); // sampling, not synchronisation
                }
            })
        };
        RssWatch {
            start,
            peak,
            done,
            sampler,
        }
    }

    /// Kill the daemon now and return what it wrote to stderr (its log). Fails the test if a
    /// thread of it panicked.
    pub fn stop(mut self) -> String {
        self.exit_expected = true;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let stderr = String::from_utf8_lossy(stderr.as_deref().unwrap_or_default()).into_owned();
        assert!(
            !stderr.contains("panicked at"),
            "a wsrelay thread panicked\n--- stderr ---\n{stderr}"
        );
        stderr
    }

    /// Send `signal` (e.g. `libc::SIGHUP`) to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.child.id());
    }

    /// Replace the config file's contents (for a reload).
    pub fn rewrite_config(&self, toml: &str) {
        let file = self.config.as_ref().expect("started with a config file");
        std::fs::write(file.path(), toml).expect("rewrite config");
    }

    /// Wait for the daemon to die on its own (a test fault), at most `within`: its exit status
    /// and its log. A panic in the log is expected here.
    pub fn expect_death(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let status = self.wait_exit(within);
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let log = String::from_utf8_lossy(stderr.as_deref().unwrap_or_default()).into_owned();
        (status, log)
    }

    /// Poll `GET /metrics` until `sample` satisfies `want` (20 s at most); its value then.
    pub fn wait_metric(&self, sample: &str, want: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(sample);
            if let Some(v) = v.filter(|&v| want(v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "{sample} stuck at {v:?}");
            thread::sleep(Duration::from_millis(20)); // polling a counter; the deadline decides
        }
    }

    /// Wait for the daemon to exit on its own (after a signal), at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        self.exit_expected = true;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not exit within {within:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of one sample of `GET /metrics`, e.g. `wsrelay_connections_open` or
    /// `wsrelay_connections_closed_total{reason="normal"}`.
    pub fn metric(&self, sample: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API listener's address; the daemon must have been started with an `[api]` table.
    pub fn api_addr(&self) -> SocketAddr {
        self.api
            .expect("started with an [api] table (Daemon::start_api)")
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// A plain TCP connection to the daemon with the test timeouts set.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect to wsrelay");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// A WebSocket client joined to `path`, offering `protocols` (the server must pick one of
    /// them if any are offered: tungstenite's client insists).
    pub fn connect(&self, path: &str, protocols: &[&str]) -> Ws {
        match self.try_connect(path, protocols, &[]) {
            Ok((ws, _)) => ws,
            Err(e) => panic!("WebSocket handshake on {path} failed: {}", describe(&e)),
        }
    }

    /// A WebSocket handshake that may be refused; `headers` are added to the request.
    pub fn try_connect(
        &self,
        path: &str,
        protocols: &[&str],
        headers: &[(&'static str, &str)],
    ) -> Result<(Ws, Response), tungstenite::Error> {
        let mut req = self.url(path).into_client_request()?;
        if !protocols.is_empty() {
            let value = HeaderValue::from_str(&protocols.join(", ")).unwrap();
            req.headers_mut().insert("Sec-WebSocket-Protocol", value);
        }
        for (name, value) in headers {
            req.headers_mut()
                .insert(*name, HeaderValue::from_str(value).unwrap());
        }
        match tungstenite::client(req, self.tcp()) {
            Ok(pair) => Ok(pair),
            Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
            Err(tungstenite::HandshakeError::Interrupted(_)) => {
                panic!("handshake interrupted: the socket timed out")
            }
        }
    }

    /// Write `bytes` on a fresh connection and return the HTTP response head.
    pub fn raw_request(&self, bytes: &[u8]) -> String {
        let mut s = self.tcp();
        s.write_all(bytes).expect("write request");
        read_head(&mut s)
    }

    /// `GET path` as plain HTTP/1.1; the response head and body.
    pub fn http_get(&self, path: &str) -> (String, String) {
        let mut s = self.tcp();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).expect("write request");
        let head = read_head(&mut s);
        let mut body = Vec::new();
        match header(&head, "content-length") {
            Some(len) => {
                body.resize(len.parse().expect("numeric Content-Length"), 0);
                s.read_exact(&mut body).expect("read body");
            }
            None => {
                s.read_to_end(&mut body).expect("read body to EOF");
            }
        }
        (head, String::from_utf8(body).expect("utf-8 body"))
    }

    /// Complete a WebSocket handshake by hand on `path` (extra header lines in `extra`, each
    /// ending in CRLF), assert a 101, and return the socket positioned at the first frame.
    pub fn raw_upgrade(&self, path: &str, extra: &str) -> TcpStream {
        let mut s = self.tcp();
        s.write_all(upgrade_request(path, extra).as_bytes())
            .expect("write request");
        let head = read_head(&mut s);
        assert_eq!(status(&head), 101, "upgrade on {path} refused:\n{head}");
        s
    }

    /// Upgrade by hand, then hand the socket to tungstenite's client side.
    pub fn raw_ws(&self, path: &str) -> Ws {
        WebSocket::from_raw_socket(self.raw_upgrade(path, ""), Role::Client, None)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let stderr = String::from_utf8_lossy(stderr.as_deref().unwrap_or_default()).into_owned();
        if thread::panicking() {
            eprintln!("--- wsrelay stderr ---\n{stderr}");
        } else if let Some(status) = exited.filter(|_| !self.exit_expected) {
            panic!("wsrelay exited during the test ({status})\n--- stderr ---\n{stderr}");
        } else if stderr.contains("panicked at") {
            panic!("a wsrelay thread panicked\n--- stderr ---\n{stderr}");
        }
    }
}

/// A running sample of a daemon's memory ([`Daemon::watch_rss`]).
pub struct RssWatch {
    /// `VmRSS` in KiB when the watch began.
    pub start: u64,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

impl RssWatch {
    /// Stop sampling; the highest `VmRSS` seen, in KiB.
    pub fn peak(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the memory sampler");
        self.peak.load(Ordering::Relaxed)
    }
}

/// `VmRSS` of process `pid` in KiB, if it is still there.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Keep reading `pipe` so the child never blocks on a full pipe; return what was read (capped).
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) if kept.len() < STDERR_CAP => kept.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
        kept
    })
}

/// Run the binary with `args` to completion, bounded by a deadline.
pub fn run_bin(args: &[&str]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsrelay");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + START_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsrelay {args:?} did not exit within {START_DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(10)); // polling a child's exit; nothing to wait on
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Read and drop whatever arrives on `s` (a clone of it) in a thread of its own until EOF: a
/// publisher that is a member of its room reads what the room sends it, so it is never the slow
/// one.
pub fn drain_in_background(s: &TcpStream) {
    let mut drain = s.try_clone().expect("clone the socket");
    thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match drain.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// HTTP heads

/// A valid upgrade request for `path`; `extra` holds more header lines, each ending in CRLF.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Read an HTTP response head (through the blank line) without reading past it.
pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => head.push(byte[0]),
            Err(e) if head.is_empty() => panic!("no HTTP response: {e}"),
            Err(_) => break,
        }
    }
    assert!(
        !head.is_empty(),
        "connection closed without an HTTP response"
    );
    String::from_utf8_lossy(&head).into_owned()
}

/// The status code of a response head.
pub fn status(head: &str) -> u16 {
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "bad status line {line:?}");
    parts
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"))
}

/// The value of header `name` (case-insensitive) in a response head.
pub fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients

pub fn describe(e: &tungstenite::Error) -> String {
    match e {
        tungstenite::Error::Http(resp) => format!("HTTP {}", resp.status()),
        e => e.to_string(),
    }
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .unwrap_or_else(|e| panic!("send {text:?}: {e}"));
}

/// The next text or binary message, skipping pings and pongs; fails on close, error or timeout.
pub fn recv(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return m,
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(c)) => panic!("closed while waiting for a message: {c:?}"),
            Err(e) => panic!("no message: {e}"),
        }
    }
}

/// The next message, which must be text.
pub fn recv_text(ws: &mut Ws) -> String {
    match recv(ws) {
        Message::Text(t) => t.as_str().to_string(),
        m => panic!("expected text, got {m:?}"),
    }
}

/// Read until the server's close frame, skipping anything else; its code and reason.
pub fn read_close(ws: &mut Ws) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no close frame within 30s");
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (f.code.into(), f.reason.as_str().to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Close from the client side and wait for the server's answer, so the server has let go of
/// the connection when this returns (or soon after).
pub fn close(mut ws: Ws) {
    let _ = ws.close(None);
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => return,
        }
    }
}

fn set_timeout(ws: &Ws, t: Duration) {
    ws.get_ref().set_read_timeout(Some(t)).unwrap();
}

/// Raise this process's descriptor limit to its hard limit (the daemon inherits it).
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = r.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
    r.rlim_cur
}
