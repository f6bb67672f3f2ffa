//! Opening client connections: non-blocking connects from many 127.0.0.x source addresses (one
//! address pair has ~28k ephemeral ports), and the upgrade handshake as a state machine driven by
//! readiness events.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

use crate::inflate;
use crate::ws::{self, Head, Offer};

/// Source addresses 127.0.0.2 .. 127.0.0.(2 + count), used round robin.
pub struct Sources {
    count: u32,
    next: u32,
}

impl Sources {
    pub fn new(count: u32) -> Self {
        Sources {
            count: count.clamp(1, 250),
            next: 0,
        }
    }

    pub fn next(&mut self) -> Ipv4Addr {
        let a = Ipv4Addr::new(127, 0, 0, 2 + (self.next % self.count) as u8);
        self.next = self.next.wrapping_add(1);
        a
    }
}

/// Start a non-blocking connect to `server` from `source` (port picked at connect time, so the
/// whole 4-tuple space of that address is usable).
pub fn connect(server: SocketAddrV4, source: Ipv4Addr) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(source, 0)).into())?;
    match s.connect(&SocketAddr::V4(server).into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(s)))
}

enum HsState {
    Connecting,
    Sending,
    Reading,
}

/// One connection on its way to an open WebSocket.
pub struct Hs {
    pub stream: TcpStream,
    pub started: Instant,
    /// Which connection this is, for the caller.
    pub index: usize,
    state: HsState,
    req: Vec<u8>,
    sent: usize,
    buf: Vec<u8>,
}

/// What an event did to a handshake.
pub enum Step {
    Wait,
    /// Upgraded; bytes read past the response head (frames already sent to us), what the
    /// server agreed of permessage-deflate, and whether it chose `wsrelay.v1`.
    Done {
        early: Vec<u8>,
        deflate: Option<inflate::Agreed>,
        v1: bool,
    },
    Fail(String),
}

impl Hs {
    /// Connect and ask for an upgrade to `path`, with what it `offer`s.
    pub fn start(
        server: SocketAddrV4,
        source: Ipv4Addr,
        path: &str,
        index: usize,
        offer: Offer,
    ) -> io::Result<Hs> {
        let started = Instant::now();
        let stream = connect(server, source)?;
        Ok(Hs {
            stream,
            started,
            index,
            state: HsState::Connecting,
            req: ws::request(&server.to_string(), path, offer),
            sent: 0,
            buf: Vec::new(),
        })
    }

    /// Advance as far as the socket allows.
    pub fn step(&mut self) -> Step {
        loop {
            match self.state {
                HsState::Connecting => {
                    if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
                        return Step::Fail(format!("connect: {e}"));
                    }
                    match self.stream.peer_addr() {
                        Ok(_) => self.state = HsState::Sending,
                        Err(e)
                            if e.kind() == io::ErrorKind::NotConnected
                                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
                        {
                            return Step::Wait;
                        }
                        Err(e) => return Step::Fail(format!("connect: {e}")),
                    }
                }
                HsState::Sending => match self.stream.write(&self.req[self.sent..]) {
                    Ok(n) => {
                        self.sent += n;
                        if self.sent == self.req.len() {
                            self.state = HsState::Reading;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Step::Fail(format!("send request: {e}")),
                },
                HsState::Reading => {
                    let mut chunk = [0u8; 4096];
                    match self.stream.read(&mut chunk) {
                        Ok(0) => return Step::Fail("closed during handshake".into()),
                        Ok(n) => {
                            self.buf.extend_from_slice(&chunk[..n]);
                            match ws::parse_head(&self.buf) {
                                Head::Incomplete => {}
                                Head::Upgraded { len, deflate, v1 } => {
                                    let early = self.buf.split_off(len);
                                    return Step::Done { early, deflate, v1 };
                                }
                                Head::Refused(line) => return Step::Fail(line),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::Fail(format!("read response: {e}")),
                    }
                }
            }
        }
    }
}

/// An open WebSocket connection, not registered with any poll.
pub struct Open {
    pub stream: TcpStream,
    /// Bytes read past the 101 response.
    pub early: Vec<u8>,
    pub index: usize,
    /// What the server agreed of permessage-deflate.
    pub deflate: Option<inflate::Agreed>,
    /// It speaks `wsrelay.v1`.
    pub v1: bool,
}

/// Open `n` WebSocket connections, `path(i)` for the i-th, at most `concurrency` handshakes at a
/// time, each with what it `offer`s (failing if the server declines permessage-deflate or
/// `wsrelay.v1` when offered). The i-th goes to `servers[i % servers.len()]` (several nodes
/// of one cluster share the connections round robin).
/// Fails on the first refused connection or at `deadline`. The result is in index order.
#[allow(clippy::too_many_arguments)]
pub fn establish(
    servers: &[SocketAddrV4],
    sources: &mut Sources,
    n: usize,
    path: impl Fn(usize) -> String,
    concurrency: usize,
    deadline: Instant,
    offer: Offer,
) -> Result<Vec<Open>, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut pending: slab::Slab<Hs> = slab::Slab::new();
    let mut done: Vec<Option<Open>> = (0..n).map(|_| None).collect();
    let mut next = 0;
    let mut finished = 0;
    while finished < n {
        while next < n && pending.len() < concurrency {
            let server = servers[next % servers.len()];
            let hs = Hs::start(server, sources.next(), &path(next), next, offer)
                .map_err(|e| format!("connection {next}: {e}"))?;
            let entry = pending.vacant_entry();
            let key = entry.key();
            let hs = entry.insert(hs);
            poll.registry()
                .register(
                    &mut hs.stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| e.to_string())?;
            next += 1;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "setup deadline: {finished} of {n} connections open, {} pending",
                pending.len()
            ));
        }
        poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(100))),
        )
        .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(hs) = pending.get_mut(key) else {
                continue;
            };
            match hs.step() {
                Step::Wait => {}
                Step::Done {
                    early,
                    deflate: agreed,
                    v1,
                } => {
                    if offer.deflate && agreed.is_none() {
                        return Err(format!(
                            "connection {}: the server did not agree to permessage-deflate",
                            hs.index
                        ));
                    }
                    if offer.v1 && !v1 {
                        return Err(format!(
                            "connection {}: the server did not choose {}",
                            hs.index,
                            crate::v1::PROTOCOL
                        ));
                    }
                    let mut hs = pending.remove(key);
                    poll.registry()
                        .deregister(&mut hs.stream)
                        .map_err(|e| e.to_string())?;
                    done[hs.index] = Some(Open {
                        stream: hs.stream,
                        early,
                        index: hs.index,
                        deflate: agreed,
                        v1,
                    });
                    finished += 1;
                }
                Step::Fail(why) => return Err(format!("connection {}: {why}", hs.index)),
            }
        }
    }
    Ok(done
        .into_iter()
        .map(|o| o.expect("every connection finished"))
        .collect())
}
