//! The systemd side of the process: `sd_notify` messages (ready, reloading, stopping, watchdog)
//! and the listening sockets of socket activation. No new crate: a notification is one datagram
//! on the Unix socket named by `NOTIFY_SOCKET`, and activated sockets are plain fds from 3 on.
//!
//! When and why the daemon sends each message is the server's business ([`crate::server`]); this
//! module only knows the protocol (`sd_notify(3)`, `sd_listen_fds(3)`). Sending never fails the
//! daemon: systemd may be restarting or absent, and the relay must keep serving either way.

use std::ffi::{OsStr, OsString};
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use log::{debug, warn};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`): 0–2 are stdin, stdout, stderr.
const LISTEN_FDS_START: RawFd = 3;

/// Sends `sd_notify` messages to the service manager. Build it with [`Notifier::from_env`]; it is
/// `Sync`, so one instance can be shared by the threads that report state.
#[derive(Debug)]
pub struct Notifier {
    /// Unbound: each message is a `sendto` the socket's address, as `sd_notify` does, so a
    /// manager that re-created its socket (daemon-reexec) still gets the next one.
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `WATCHDOG_USEC`: the manager kills us if it hears no `WATCHDOG=1` for this long.
    watchdog: Option<Duration>,
    /// A failed send is worth one warning, not one per watchdog tick.
    warned: AtomicBool,
}

impl Notifier {
    /// A notifier for the manager at `NOTIFY_SOCKET`, or `None` when the variable is unset or
    /// empty (not started by systemd, or not `Type=notify`) or names a socket we cannot use
    /// (logged at warn). The watchdog is on when `WATCHDOG_USEC` is set to a positive number and
    /// `WATCHDOG_PID` is unset or our pid: a watchdog meant for another process is not ours.
    ///
    /// The environment is left as it is; nothing here mutates it.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET").filter(|p| !p.is_empty())?;
        let watchdog = watchdog_from(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match Notifier::new(&path, watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(
                    "NOTIFY_SOCKET={}: {e}; not notifying systemd",
                    path.display()
                );
                None
            }
        }
    }

    /// A notifier for the datagram socket at `path` (a file path, or `@name` for an abstract
    /// socket), with `watchdog` the full `WATCHDOG_USEC` period. [`Notifier::from_env`] is the
    /// usual way in; this is for tests and for callers with their own configuration.
    pub fn new(path: impl AsRef<OsStr>, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let path = path.as_ref();
        let addr = match path.as_bytes() {
            [] => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "empty socket path",
                ));
            }
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
            [b'/', ..] => SocketAddr::from_pathname(path)?,
            // `vsock:` and other transports of newer systemd versions.
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "neither an absolute path nor an abstract socket (@name)",
                ));
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            addr,
            watchdog: watchdog.filter(|d| !d.is_zero()),
            warned: AtomicBool::new(false),
        })
    }

    /// The service is up: call once every listener is bound, and again after each reload.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload has begun (SIGHUP): follow it with [`Notifier::ready`] once the new config is in
    /// force, or was refused and the old one stays. `MONOTONIC_USEC` lets `Type=notify-reload`
    /// managers (systemd ≥ 253) match this message to the reload they asked for.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={}",
            monotonic_usec()
        ));
    }

    /// The drain has begun (SIGTERM/SIGINT): the manager shows the unit as deactivating.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining connections");
    }

    /// The main loop is alive. Call at [`Notifier::watchdog_interval`] from the loop itself, so
    /// a stuck loop stops the pings and the manager restarts us.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Free text shown by `systemctl status`. Newlines would start new assignments; they become
    /// spaces.
    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// How often to call [`Notifier::watchdog`]: half the manager's timeout, as `sd_watchdog_enabled(3)`
    /// advises, so one late tick does not kill us. `None` when no watchdog is asked for.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, msg: &str) {
        match self.socket.send_to_addr(msg.as_bytes(), &self.addr) {
            Ok(_) => {}
            Err(e) if self.warned.swap(true, Ordering::Relaxed) => {
                debug!("sd_notify to {:?} failed again: {e}", self.addr);
            }
            Err(e) => warn!(
                "sd_notify to {:?} failed: {e} (systemd may not see this state change; \
                 later failures are logged at debug)",
                self.addr
            ),
        }
    }
}

/// The watchdog period asked of this process, if any: `usec` parsed, and meant for `pid`.
fn watchdog_from(usec: Option<&OsStr>, watchdog_pid: Option<&OsStr>, pid: u32) -> Option<Duration> {
    let parse = |v: &OsStr| v.to_str()?.trim().parse::<u64>().ok();
    if let Some(p) = watchdog_pid.filter(|p| !p.is_empty())
        && parse(p) != Some(u64::from(pid))
    {
        return None;
    }
    let usec = parse(usec?).filter(|&u| u > 0);
    if usec.is_none() {
        warn!("WATCHDOG_USEC is not a positive number of microseconds; watchdog off");
    }
    usec.map(Duration::from_micros)
}

/// `CLOCK_MONOTONIC` in microseconds: the clock systemd compares `MONOTONIC_USEC` against.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// The listening TCP sockets systemd passed by socket activation (`LISTEN_FDS` fds from 3, when
/// `LISTEN_PID` is our pid), in the order of the `.socket` unit's `ListenStream=` lines, already
/// non-blocking and close-on-exec (ready for `mio::net::TcpListener::from_std`). Empty when not
/// socket-activated.
///
/// Removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment, so a second call
/// cannot claim the same fds twice and no child inherits them. Because it edits the environment,
/// call it once, from `main`, before any other thread exists.
///
/// # Errors
///
/// A malformed `LISTEN_FDS`, or a passed fd that is not a listening TCP socket (a `.socket` unit
/// with `ListenDatagram=` or a Unix path, say): serving on it could only fail later and obscurely.
pub fn listen_fds() -> io::Result<Vec<TcpListener>> {
    let pid = std::env::var_os("LISTEN_PID");
    let fds = std::env::var_os("LISTEN_FDS");
    if pid.is_none() && fds.is_none() {
        return Ok(Vec::new());
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the documented contract of this function: it runs before any other thread
        // exists, so nothing can read the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
    let Some(n) = passed_fd_count(pid, fds, std::process::id())? else {
        return Ok(Vec::new());
    };
    (LISTEN_FDS_START..LISTEN_FDS_START + n)
        .map(|fd| {
            check_listening_tcp(fd)?;
            // SAFETY: systemd handed this fd to this process (LISTEN_PID matched) and, the
            // variables being gone now, nothing else in the process claims it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let listener = TcpListener::from(owned);
            set_cloexec(fd)?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .collect()
}

/// How many fds `LISTEN_FDS` says were passed to `pid`: `None` when they are someone else's
/// (`LISTEN_PID` unset or another process: an inherited environment).
fn passed_fd_count(
    listen_pid: Option<OsString>,
    listen_fds: Option<OsString>,
    pid: u32,
) -> io::Result<Option<RawFd>> {
    let bad = |what: &str, v: &OsStr| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what}={} is not a number", v.display()),
        )
    };
    let Some(listen_pid) = listen_pid else {
        return Ok(None);
    };
    let target: u32 = listen_pid
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("LISTEN_PID", &listen_pid))?;
    if target != pid {
        return Ok(None);
    }
    let Some(listen_fds) = listen_fds else {
        return Ok(None);
    };
    let n: RawFd = listen_fds
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &RawFd| (0..=RawFd::MAX - LISTEN_FDS_START).contains(&n))
        .ok_or_else(|| bad("LISTEN_FDS", &listen_fds))?;
    Ok(Some(n).filter(|&n| n > 0))
}

/// Fails unless `fd` is an open, listening IPv4 or IPv6 stream socket.
fn check_listening_tcp(fd: RawFd) -> io::Result<()> {
    let opt = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let not_tcp = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket-activation fd {fd} is not a listening TCP socket: {why}"),
        )
    };
    let domain = opt(libc::SO_DOMAIN).map_err(|e| not_tcp(e.to_string()))?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(not_tcp(format!("address family {domain}")));
    }
    if opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(not_tcp("not a stream socket".to_owned()));
    }
    if opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(not_tcp("not listening".to_owned()));
    }
    Ok(())
}

/// systemd passes the fds without close-on-exec; set it, as `sd_listen_fds(3)` does.
fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    /// A manager's end: a datagram socket bound in a fresh temp dir, removed on drop.
    struct Manager {
        dir: PathBuf,
        socket: UnixDatagram,
    }

    impl Manager {
        fn bind() -> Manager {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "wsrelay-notify-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Manager { dir, socket }
        }

        fn path(&self) -> PathBuf {
            self.dir.join("notify")
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 4096];
            let n = self.socket.recv(&mut buf).expect("a notification");
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn each_state_is_one_datagram() {
        let m = Manager::bind();
        let n = Notifier::new(m.path(), None).unwrap();
        n.ready();
        assert_eq!(m.recv(), "READY=1\nSTATUS=serving");
        n.stopping();
        assert_eq!(m.recv(), "STOPPING=1\nSTATUS=draining connections");
        n.watchdog();
        assert_eq!(m.recv(), "WATCHDOG=1");
        n.status("2 rooms\n5 clients");
        assert_eq!(m.recv(), "STATUS=2 rooms 5 clients");
    }

    #[test]
    fn reloading_carries_the_monotonic_clock() {
        let m = Manager::bind();
        let n = Notifier::new(m.path(), None).unwrap();
        let before = monotonic_usec();
        n.reloading();
        let after = monotonic_usec();
        let msg = m.recv();
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = msg
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("MONOTONIC_USEC")
            .parse()
            .unwrap();
        assert!(
            (before..=after).contains(&usec),
            "{before} ≤ {usec} ≤ {after}"
        );
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        let name = format!("wsrelay-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        manager
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(format!("@{name}"), None).unwrap();
        n.ready();
        let mut buf = [0u8; 64];
        let len = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn a_vanished_manager_is_not_fatal() {
        let m = Manager::bind();
        let n = Notifier::new(m.path(), None).unwrap();
        drop(m);
        n.ready();
        assert!(n.warned.load(Ordering::Relaxed));
        n.watchdog(); // logged at debug this time; still no panic
    }

    #[test]
    fn unusable_socket_names_are_refused() {
        assert!(Notifier::new("", None).is_err());
        assert!(Notifier::new("vsock:2:1234", None).is_err());
        assert!(Notifier::new("relative/path", None).is_err());
    }

    #[test]
    fn watchdog_interval_is_half_the_period() {
        let n = Notifier::new("/run/nothing", Some(Duration::from_secs(30))).unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        let n = Notifier::new("/run/nothing", None).unwrap();
        assert_eq!(n.watchdog_interval(), None);
        let n = Notifier::new("/run/nothing", Some(Duration::ZERO)).unwrap();
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn watchdog_is_ours_only_for_our_pid() {
        let os = |s: &str| OsString::from(s);
        let two_s = Some(Duration::from_secs(2));
        assert_eq!(watchdog_from(Some(&os("2000000")), None, 42), two_s);
        assert_eq!(
            watchdog_from(Some(&os("2000000")), Some(&os("")), 42),
            two_s
        );
        assert_eq!(
            watchdog_from(Some(&os("2000000")), Some(&os("42")), 42),
            two_s
        );
        assert_eq!(
            watchdog_from(Some(&os("2000000")), Some(&os("7")), 42),
            None
        );
        assert_eq!(
            watchdog_from(Some(&os("2000000")), Some(&os("x")), 42),
            None
        );
        assert_eq!(watchdog_from(None, None, 42), None);
        assert_eq!(watchdog_from(Some(&os("0")), None, 42), None);
        assert_eq!(watchdog_from(Some(&os("soon")), None, 42), None);
    }

    #[test]
    fn listen_fds_are_ours_only_for_our_pid() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(passed_fd_count(os("42"), os("2"), 42).unwrap(), Some(2));
        assert_eq!(passed_fd_count(os("42"), os("0"), 42).unwrap(), None);
        assert_eq!(passed_fd_count(os("7"), os("2"), 42).unwrap(), None);
        assert_eq!(passed_fd_count(None, os("2"), 42).unwrap(), None);
        assert_eq!(passed_fd_count(os("42"), None, 42).unwrap(), None);
        assert!(passed_fd_count(os("x"), os("2"), 42).is_err());
        assert!(passed_fd_count(os("42"), os("-1"), 42).is_err());
        assert!(passed_fd_count(os("42"), os("two"), 42).is_err());
    }

    #[test]
    fn only_listening_tcp_sockets_pass_the_check() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        check_listening_tcp(listener.as_raw_fd()).unwrap();
        let connected = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(check_listening_tcp(connected.as_raw_fd()).is_err());
        let (unix, _peer) = UnixDatagram::pair().unwrap();
        assert!(check_listening_tcp(unix.as_raw_fd()).is_err());
    }
}
