//! A real `redis-server` for the cluster tests: started on a free loopback port without
//! persistence, as a child process killed by its PID when the test ends.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Start a redis-server on a free loopback port and wait until it answers `PING`.
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Redis::start_on(port)
    }

    /// Start one on `port` (a restart on the same address).
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server; .ci/run installs it)");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.ping().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20)); // waiting for a process to listen
        }
        r
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `+PONG` when it answers within a second.
    fn ping(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned()).filter(|s| s.starts_with("+PONG"))
    }

    /// One command; its reply as text: a status, error or integer line without its type byte,
    /// or a bulk string's bytes.
    #[allow(dead_code)]
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(out.as_bytes()).expect("write to redis");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).expect("redis answers");
            assert!(n > 0, "redis closed");
            buf.extend_from_slice(&chunk[..n]);
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let line = String::from_utf8_lossy(&buf[1..eol]).into_owned();
            if buf[0] != b'$' {
                return line;
            }
            let len: i64 = line.parse().expect("bulk length");
            if len < 0 {
                return String::new();
            }
            let end = eol + 2 + len as usize;
            if buf.len() >= end + 2 {
                return String::from_utf8_lossy(&buf[eol + 2..end]).into_owned();
            }
        }
    }

    /// Send `signal` to the server (SIGSTOP, SIGCONT).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this struct started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A stopped server would not die of SIGKILL later than now, but make sure it runs.
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl super::Daemon {
    /// Wait until `/healthz` answers `want` (20 s at most, e.g. while the Redis link comes and
    /// goes); the body then.
    pub fn wait_health(&self, want: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (head, body) = self.http_get("/healthz");
            if super::status(&head) == want {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "/healthz stuck at {head}{body}, want {want}"
            );
            thread::sleep(Duration::from_millis(50)); // polling a status; the deadline decides
        }
    }
}
