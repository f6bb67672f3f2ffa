//! The publishing side of the `api-publish` scenario: one thread driving P keep-alive HTTP/1.1
//! connections to wsrelay's API port, each with at most W requests in flight (W > 1 pipelines
//! them; wsrelay answers a connection's requests in order, one at a time). Answers are parsed
//! and checked here; what subscribers receive is `apipub`'s.
//!
//! A request leaves its connection's window when it is answered (`Gate::Answered`), or when it is
//! answered and every subscriber has its message (`Gate::Delivered`, the default): wsrelay
//! answers once the room's owner has queued the message, before the members have it, so
//! without that gate publishers outrun the fan-out and the members' send queues overflow.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::stamp;
use crate::hist::Hist;
use crate::http::{self, Publish};

/// Run phases, shared with the subscriber threads.
pub const SETUP: u8 = 0;
pub const WARMUP: u8 = 1;
pub const MEASURE: u8 = 2;
pub const DRAIN: u8 = 3;
pub const STOP: u8 = 4;

pub const WAKER: Token = Token(usize::MAX);

/// Bytes asked of a socket per read; a publish answer is about 180 bytes.
const READ_CHUNK: usize = 16 * 1024;

/// When a request stops counting against its connection's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Once answered: the API front's own pace (subscribers may fall behind).
    Answered,
    /// Once answered and received by every subscriber: the pace the whole relay sustains.
    Delivered,
}

impl Gate {
    pub fn parse(s: &str) -> Result<Gate, String> {
        match s {
            "answered" => Ok(Gate::Answered),
            "delivered" => Ok(Gate::Delivered),
            _ => Err(format!("--gate: {s:?} is not answered or delivered")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Gate::Answered => "answered",
            Gate::Delivered => "delivered",
        }
    }
}

/// What the publishing thread and the subscriber threads share.
pub struct Shared {
    pub phase: AtomicU8,
    pub epoch: Instant,
    /// Requests in flight per connection.
    pub window: u32,
    pub gate: Gate,
    /// Subscribers: receipts that complete a message.
    pub target: u32,
    /// `Gate::Delivered`: per (connection, seq % window), subscribers that have the message.
    pub slots: Vec<AtomicU32>,
    /// Connections some of whose messages subscribers completed.
    pub mailbox: Mutex<Vec<u32>>,
    pub waker: Waker,
    /// Messages per connection, 0 for no limit.
    pub messages: u64,
    pub sent: AtomicU64,
    /// Answered 200 with this room's `seq`.
    pub published: AtomicU64,
    /// Requests that will have no more news: answered (whatever the answer), or sent on a
    /// connection that ended first.
    pub settled: AtomicU64,
    /// The publishing thread has seen the sending phases end: `sent` is final.
    pub quiet: AtomicBool,
}

impl Shared {
    /// The slot counting subscribers of message `seq` of connection `id`.
    pub fn slot(&self, id: u32, seq: u64) -> usize {
        id as usize * self.window as usize + (seq % u64::from(self.window)) as usize
    }
}

/// One keep-alive connection to the API.
struct Client {
    stream: TcpStream,
    id: u32,
    open: bool,
    out: Vec<u8>,
    written: usize,
    inbuf: Vec<u8>,
    /// When each request not answered yet was sent, oldest first.
    asked: VecDeque<Instant>,
    sent: u64,
    answered: u64,
    /// Out of the window (see `Gate`).
    done: u64,
}

/// What the publishing thread found.
#[derive(Default)]
pub struct Report {
    /// Request to answer, for answers received in the measured interval.
    pub answers: Hist,
    /// Answers other than 200, and 200s that were not this room's publish answer.
    pub refused: u64,
    pub bad_answers: u64,
    /// Connections that ended before the run did.
    pub closed: u64,
    /// Requests sent and never answered.
    pub unanswered: u64,
    /// Every `seq` answered.
    pub seqs: Vec<u64>,
    pub first_error: Option<String>,
}

/// Open `n` connections to the API (blocking connects, before the run), non-blocking after.
pub fn connect(api: SocketAddrV4, n: usize) -> Result<Vec<TcpStream>, String> {
    (0..n)
        .map(|i| {
            let s = std::net::TcpStream::connect_timeout(&api.into(), Duration::from_secs(5))
                .map_err(|e| format!("API connection {i} to {api}: {e}"))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(TcpStream::from_std(s))
        })
        .collect()
}

/// The publishing thread: `streams` publish `size`-byte bodies into `room` until `STOP`.
pub fn thread_main(
    mut poll: Poll,
    streams: Vec<TcpStream>,
    request: Publish,
    room: String,
    size: usize,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
) -> Report {
    let mut r = Report::default();
    let mut clients: Vec<Client> = Vec::with_capacity(streams.len());
    for (i, mut stream) in streams.into_iter().enumerate() {
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        clients.push(Client {
            stream,
            id: i as u32,
            open: true,
            out: Vec::with_capacity(4096),
            written: 0,
            inbuf: Vec::with_capacity(READ_CHUNK),
            asked: VecDeque::new(),
            sent: 0,
            answered: 0,
            done: 0,
        });
    }
    let mut body = vec![0u8; size];
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut events = Events::with_capacity(256);
    let mut completed: Vec<u32> = Vec::new();
    let window = u64::from(shared.window);
    let (mut sent_total, mut published, mut settled) = (0u64, 0u64, 0u64);
    barrier.wait();
    loop {
        let phase = shared.phase.load(Acquire);
        if phase == STOP {
            break;
        }
        let sending = phase == WARMUP || phase == MEASURE;
        let measuring = phase == MEASURE;
        completed.append(&mut shared.mailbox.lock().unwrap());
        for k in completed.drain(..) {
            advance(&mut clients[k as usize], &shared);
        }
        for c in clients.iter_mut().filter(|c| c.open) {
            if sending {
                while c.sent - c.done < window && (shared.messages == 0 || c.sent < shared.messages)
                {
                    let now = Instant::now();
                    let ts = now.duration_since(shared.epoch).as_nanos() as u64;
                    stamp(&mut body, c.id, c.sent, ts);
                    request.encode(&mut c.out, &body);
                    c.asked.push_back(now);
                    c.sent += 1;
                    sent_total += 1;
                }
            }
            if let Err(e) = flush(c) {
                settled += end(c, &mut poll, &mut r, e);
            }
        }
        shared.sent.store(sent_total, Release);
        if phase >= DRAIN {
            shared.quiet.store(true, Release);
        }

        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            r.first_error.get_or_insert(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let c = &mut clients[ev.token().0];
            if !c.open {
                continue;
            }
            let before = c.answered;
            let res = read(c, &mut chunk).and_then(|eof| {
                let n = answers(c, &room, measuring, &mut r, &mut published)?;
                if eof && (sending || !c.asked.is_empty()) {
                    return Err(format!("the API closed the connection ({n} answers read)"));
                }
                if !c.out.is_empty() {
                    flush(c)?;
                }
                Ok(eof)
            });
            settled += c.answered - before;
            match res {
                Ok(false) => advance(c, &shared),
                // Idle at the end of the run: the server may close a quiet keep-alive connection.
                Ok(true) => {
                    c.open = false;
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                Err(e) => settled += end(c, &mut poll, &mut r, e),
            }
        }
        shared.published.store(published, Relaxed);
        shared.settled.store(settled, Relaxed);
    }
    for c in &clients {
        r.unanswered += c.asked.len() as u64;
    }
    r
}

/// Read what the socket has; Ok(true) at EOF.
fn read(c: &mut Client, chunk: &mut [u8]) -> Result<bool, String> {
    loop {
        match c.stream.read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("API read: {e}")),
        }
    }
}

/// Take every whole answer off the front of `c.inbuf`; returns how many. Err: the connection
/// cannot go on (a refusal, an answer we cannot read, the server closing it).
fn answers(
    c: &mut Client,
    room: &str,
    measuring: bool,
    r: &mut Report,
    published: &mut u64,
) -> Result<u64, String> {
    let mut at = 0;
    let mut n = 0;
    let now = Instant::now();
    let result = loop {
        let resp = match http::response(&c.inbuf[at..]) {
            Ok(Some(resp)) => resp,
            Ok(None) => break Ok(n),
            Err(e) => break Err(format!("API answer: {e}")),
        };
        at += resp.len;
        n += 1;
        let Some(asked) = c.asked.pop_front() else {
            break Err("an API answer to no request".into());
        };
        c.answered += 1;
        if measuring {
            r.answers
                .record(now.duration_since(asked).as_nanos() as u64);
        }
        let text = || String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned();
        if resp.status != 200 {
            r.refused += 1;
            break Err(format!("API answered {}: {}", resp.status, text().trim()));
        }
        match http::published_seq(resp.body, room) {
            Some(seq) => {
                r.seqs.push(seq);
                *published += 1;
            }
            None => {
                r.bad_answers += 1;
                break Err(format!(
                    "not a publish answer for {room}: {}",
                    text().trim()
                ));
            }
        }
        if resp.close {
            break Err("the API answered with Connection: close".into());
        }
    };
    c.inbuf.drain(..at);
    result
}

/// Move the window on past the requests that are out of it (see `Gate`).
fn advance(c: &mut Client, shared: &Shared) {
    match shared.gate {
        Gate::Answered => c.done = c.answered,
        Gate::Delivered => {
            while c.done < c.answered {
                let slot = &shared.slots[shared.slot(c.id, c.done)];
                if slot.load(Acquire) < shared.target {
                    break;
                }
                slot.store(0, Relaxed);
                c.done += 1;
            }
        }
    }
}

fn flush(c: &mut Client) -> Result<(), String> {
    while c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("API write: {e}")),
        }
    }
    c.out.clear();
    c.written = 0;
    Ok(())
}

/// Give up connection `c` (and say why); returns how many of its requests go unanswered.
fn end(c: &mut Client, poll: &mut Poll, r: &mut Report, why: String) -> u64 {
    c.open = false;
    let _ = poll.registry().deregister(&mut c.stream);
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
    r.closed += 1;
    r.first_error.get_or_insert(why);
    let stranded = c.asked.len() as u64;
    r.unanswered += stranded;
    c.asked.clear();
    stranded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const ROOM: &str = "/t/room";
    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// A stand-in for wsrelay's API on port 0: answers each publish with the room's next `seq`
    /// (401 for a wrong key), and hands `deliver(id, seq)` the message's header.
    fn fake_api(
        conns: usize,
        deliver: impl Fn(u32, u64) + Send + Sync + 'static,
    ) -> (SocketAddrV4, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!()
        };
        let deliver = Arc::new(deliver);
        let seq = Arc::new(AtomicU64::new(100));
        let h = std::thread::spawn(move || {
            let mut served = Vec::new();
            for _ in 0..conns {
                let (mut s, _) = l.accept().unwrap();
                let (deliver, seq) = (deliver.clone(), seq.clone());
                served.push(std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // Every whole request in the buffer, answered in one write.
                        let mut out = Vec::new();
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                            let len: usize = head
                                .split("\r\n")
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .unwrap()
                                .parse()
                                .unwrap();
                            if buf.len() < end + 4 + len {
                                break;
                            }
                            let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
                            assert!(head.starts_with("POST /api/v1/publish/t/room HTTP/1.1\r\n"));
                            let authorized = head.contains(&format!(
                                "Authorization: Bearer {}\r\n",
                                std::str::from_utf8(KEY).unwrap()
                            ));
                            let answer = if authorized {
                                let n = seq.fetch_add(1, SeqCst);
                                format!("{{\"epoch\":\"e1\",\"room\":\"{ROOM}\",\"seq\":{n}}}\n")
                            } else {
                                "{\"error\":\"wrong key\"}\n".to_string()
                            };
                            let status = if authorized {
                                "200 OK"
                            } else {
                                "401 Unauthorized"
                            };
                            out.extend_from_slice(
                                format!(
                                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                                     Content-Length: {}\r\n\r\n{answer}",
                                    answer.len()
                                )
                                .as_bytes(),
                            );
                            if authorized {
                                let id = u32::from_le_bytes(body[0..4].try_into().unwrap());
                                let n = u64::from_le_bytes(body[4..12].try_into().unwrap());
                                deliver(id, n);
                            }
                        }
                        if !out.is_empty() {
                            s.write_all(&out).unwrap();
                        }
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                }));
            }
            for t in served {
                t.join().unwrap();
            }
        });
        (addr, h)
    }

    fn shared(poll: &Poll, conns: usize, window: u32, gate: Gate, messages: u64) -> Arc<Shared> {
        Arc::new(Shared {
            phase: AtomicU8::new(SETUP),
            epoch: Instant::now(),
            window,
            gate,
            target: 1,
            slots: (0..conns * window as usize)
                .map(|_| AtomicU32::new(0))
                .collect(),
            mailbox: Mutex::new(Vec::new()),
            waker: Waker::new(poll.registry(), WAKER).unwrap(),
            messages,
            sent: AtomicU64::new(0),
            published: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            quiet: AtomicBool::new(false),
        })
    }

    /// Run the publishing thread over two connections to `addr` until `until(shared)` (or 10 s),
    /// then stop it.
    fn publish(
        addr: SocketAddrV4,
        poll: Poll,
        shared: &Arc<Shared>,
        key: &[u8],
        until: impl Fn(&Shared) -> bool,
    ) -> Report {
        let conns = 2;
        let streams = connect(addr, conns).unwrap();
        let request = Publish::new(&addr.to_string(), ROOM, key, 64);
        let barrier = Arc::new(Barrier::new(2));
        let t = {
            let (shared, barrier) = (shared.clone(), barrier.clone());
            std::thread::spawn(move || {
                thread_main(poll, streams, request, ROOM.into(), 64, shared, barrier)
            })
        };
        barrier.wait();
        shared.phase.store(MEASURE, Release);
        shared.waker.wake().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !until(shared) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        shared.phase.store(STOP, Release);
        shared.waker.wake().unwrap();
        t.join().unwrap()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_with_dense_numbers() {
        let (addr, server) = fake_api(2, |_, _| {});
        let poll = Poll::new().unwrap();
        // Gate::Answered needs no slots; two connections, three requests in flight on each.
        let shared = shared(&poll, 0, 3, Gate::Answered, 50);
        let mut r = publish(addr, poll, &shared, KEY, |s| s.settled.load(Relaxed) == 100);
        assert_eq!(shared.sent.load(Relaxed), 100);
        assert_eq!(shared.published.load(Relaxed), 100);
        assert_eq!(
            (r.refused, r.bad_answers, r.closed, r.unanswered),
            (0, 0, 0, 0)
        );
        assert_eq!(r.answers.count(), 100);
        assert_eq!(r.seqs.len(), 100);
        assert_eq!(http::check_seqs(&mut r.seqs), http::SeqCheck::default());
        assert_eq!(r.seqs[0], 100);
        assert!(r.first_error.is_none(), "{:?}", r.first_error);
        server.join().unwrap();
    }

    #[test]
    fn the_delivered_gate_holds_a_connection_until_its_message_is_received() {
        // The "subscriber" receives every message but connection 1's third (seq 2).
        let holder: Arc<Mutex<Option<Arc<Shared>>>> = Arc::default();
        let h = holder.clone();
        let (addr, server) = fake_api(2, move |id, seq| {
            if (id, seq) == (1, 2) {
                return;
            }
            let s = h.lock().unwrap().clone().unwrap();
            s.slots[s.slot(id, seq)].fetch_add(1, AcqRel);
            s.mailbox.lock().unwrap().push(id);
            s.waker.wake().unwrap();
        });
        let poll = Poll::new().unwrap();
        let shared = shared(&poll, 2, 1, Gate::Delivered, 10);
        *holder.lock().unwrap() = Some(shared.clone());
        let r = publish(addr, poll, &shared, KEY, |s| s.settled.load(Relaxed) == 13);
        // Connection 0 sent all 10; connection 1 stopped after its unreceived third.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(shared.sent.load(Relaxed), 13);
        assert_eq!(shared.published.load(Relaxed), 13);
        assert_eq!((r.refused, r.closed, r.unanswered), (0, 0, 0));
        drop(holder.lock().unwrap().take());
        server.join().unwrap();
    }

    #[test]
    fn a_refused_request_ends_its_connection_and_says_why() {
        let (addr, server) = fake_api(2, |_, _| {});
        let poll = Poll::new().unwrap();
        let shared = shared(&poll, 0, 1, Gate::Answered, 5);
        let r = publish(
            addr,
            poll,
            &shared,
            b"wrong-key-wrong-key-wrong-key-xx",
            |s| s.settled.load(Relaxed) == 2,
        );
        assert_eq!((r.refused, r.closed, r.unanswered), (2, 2, 0));
        assert_eq!(shared.published.load(Relaxed), 0);
        let e = r.first_error.unwrap();
        assert!(e.contains("401") && e.contains("wrong key"), "{e}");
        server.join().unwrap();
    }
}
