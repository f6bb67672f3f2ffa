//! One WebSocket connection on its worker: its socket, its send queue, its timers. The
//! WebSocket protocol itself is its [`Session`]'s; the worker owns the poll, the room membership
//! and the slab.
//!
//! Life of a connection (see also `LIFECYCLE.md`):
//! `Open` → (we close: idle, slow, shutdown) `Closing` → `Closed` → gone
//! `Open` → (peer closes) `Closed` → gone; `Open` → (peer breaks the protocol) `Lingering` → gone

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::bus::{MemberId, RoomSettings, SharedFrame};
use super::flow::{ConnFlow, Credit, WorkerFlow};
use super::outbox::{CHUNK_OVERHEAD, Outbox, Sender};
use super::session::{Phase, Session};
use super::wire::{self, Opcode};
use crate::deflate::{Agreed, Inflater};
use crate::metrics::CloseReason;
use crate::relay::RoomId;
use crate::relay::admission::Ticket;
use crate::relay::hub::MemberKey;

/// Socket reads per readiness event before the worker serves others and comes back.
const READS_PER_EVENT: usize = 8;

/// What a readable event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// Read until the socket would block.
    Drained,
    /// Stopped after [`READS_PER_EVENT`] reads or at the pass's read budget: more may be
    /// waiting; come back next pass.
    More,
}

/// What waits to join the send queue while a replay goes out: the kept messages not queued yet
/// (with their numbers), then the live frames that arrived meanwhile, in order.
pub enum Behind {
    Kept(u64, SharedFrame),
    Live(Rc<[u8]>),
}

/// The frames behind a replay, and the bytes of the live ones among them (slots included: they
/// count towards the connection's limit; the kept ones are history's, shared).
pub struct BehindQueue {
    frames: VecDeque<Behind>,
    live: usize,
}

/// The timeouts a connection follows.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub close_timeout: Duration,
}

pub struct Conn {
    pub id: MemberId,
    /// The 101 response, until the room's owner has admitted the member.
    response: Option<Box<[u8]>>,
    /// Its messages' bytes in flight between threads, once it has published.
    flow: Option<Arc<ConnFlow>>,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub ticket: Ticket,
    pub room: RoomId,
    pub path: Box<str>,
    /// Its place in the worker's local room while it is a member.
    pub member: Option<MemberKey>,
    /// Already on the worker's list of connections to write this pass.
    pub dirty: bool,
    /// Bytes of frames queued since its last write (the pass's share, see the worker).
    pub pass_bytes: u32,
    pub out: Outbox,
    pub session: Session,
    /// Admitted with a valid token: a reload that puts the room behind auth keeps it.
    pub authenticated: bool,
    /// permessage-deflate as agreed in its handshake: it takes compressed frames.
    pub deflate: Option<Agreed>,
    /// Its room compresses messages of at least this many bytes (`None`: compression off).
    pub compress_from: Option<u32>,
    /// It speaks `wsrelay.v1`.
    pub v1: bool,
    /// It asked to resume (`since`/`epoch`).
    pub resuming: bool,
    /// Its token's `sub` (rooms with `auth = "jwt"`).
    pub user: Option<Box<str>>,
    /// Its room has presence: its coming and going are told.
    pub presence: bool,
    /// When it was handed to its worker, in milliseconds since the Unix epoch (presence).
    pub joined: u64,
    /// Frames behind its replay, queued a share at a time as the socket takes them (boxed: most
    /// connections never have a replay, and an idle connection should cost little).
    behind: Option<Box<BehindQueue>>,
    last_rx: Instant,
    next_ping: Instant,
    /// Bytes read since the worker last asked.
    rx: u64,
    eof: bool,
    failed: bool,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: MemberId,
        stream: TcpStream,
        peer: SocketAddr,
        ticket: Ticket,
        room: RoomId,
        path: Box<str>,
        settings: &RoomSettings,
        response: Vec<u8>,
        early: Vec<u8>,
        now: Instant,
        timers: &Timers,
    ) -> Self {
        let session = if settings.deflate.is_some() {
            Session::with_deflate
        } else {
            Session::new
        };
        let session = session(
            settings.max_message_size,
            settings.max_messages_per_second,
            settings.may_publish,
            early,
            now,
        );
        Conn {
            id,
            response: Some(response.into_boxed_slice()),
            flow: None,
            stream,
            peer,
            ticket,
            room,
            path,
            member: None,
            dirty: false,
            pass_bytes: 0,
            out: Outbox::default(),
            session,
            authenticated: settings.authenticated,
            deflate: settings.deflate,
            compress_from: settings.compress_from,
            v1: settings.v1,
            resuming: matches!(settings.want, crate::relay::history::Want::Since { .. }),
            behind: None,
            user: settings.user.clone(),
            presence: settings.presence.is_some(),
            joined: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            last_rx: now,
            next_ping: now + timers.ping_interval,
            rx: 0,
            eof: false,
            failed: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.session.is_open()
    }

    /// Why it ended (once it has).
    pub fn reason(&self) -> CloseReason {
        self.session.reason().unwrap_or(CloseReason::Normal)
    }

    /// The room's owner admitted the member: the 101 goes out first, ahead of any frame, then
    /// `welcome` (a v1 member's first frame), then the `replay`, then live frames.
    pub fn admitted(&mut self, welcome: Option<Vec<u8>>, replay: Vec<(u64, SharedFrame)>) {
        if !self.session.is_open() {
            return; // Closing already: `flush` puts the 101 ahead of the close frame.
        }
        if let Some(r) = self.response.take() {
            self.out.push_owned(r.into_vec());
        }
        if let Some(w) = welcome {
            self.out.push_owned(w);
        }
        if !replay.is_empty() {
            let frames = replay.into_iter().map(|(seq, f)| Behind::Kept(seq, f));
            self.behind = Some(Box::new(BehindQueue {
                frames: frames.collect(),
                live: 0,
            }));
        }
    }

    /// Frames wait behind a replay.
    pub fn has_behind(&self) -> bool {
        self.behind.is_some()
    }

    /// Take the next frame waiting behind the replay.
    pub fn next_behind(&mut self) -> Option<Behind> {
        let q = self.behind.as_mut()?;
        let b = q.frames.pop_front();
        if let Some(Behind::Live(f)) = &b {
            q.live -= f.len() + CHUNK_OVERHEAD;
        }
        if q.frames.is_empty() {
            self.behind = None;
        }
        b
    }

    /// Take credit for a message of `len` bytes it publishes (see `flow`).
    pub fn credit(&mut self, worker: &Arc<WorkerFlow>, len: usize) -> Credit {
        self.flow
            .get_or_insert_with(|| ConnFlow::new(Arc::clone(worker)))
            .take(len)
    }

    /// Its messages' bytes not yet taken by every worker.
    pub fn in_flight(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.in_flight())
    }

    /// Read what the socket has, at most `budget` bytes (at least one read), using `scratch` as
    /// the read buffer, and hand every complete message to `publish` while the connection is
    /// open. `budget` is reduced by what was read.
    #[allow(clippy::too_many_arguments)]
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        hangup: bool,
        budget: &mut usize,
        now: Instant,
        timers: &Timers,
        inflater: &mut Inflater,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Readable {
        for _ in 0..READS_PER_EVENT {
            if self.eof || self.failed {
                return Readable::Drained;
            }
            let want = scratch.len().min((*budget).max(1));
            match self.stream.read(&mut scratch[..want]) {
                Ok(0) => {
                    self.eof = true;
                    self.session.note_end(CloseReason::Normal);
                }
                Ok(n) => {
                    self.last_rx = now;
                    self.rx += n as u64;
                    *budget = budget.saturating_sub(n);
                    self.feed(&scratch[..n], now, timers, inflater, publish);
                    // A short read emptied the socket's receive queue, and whatever arrives
                    // later (data or the FIN) raises a new edge: the read that would only say
                    // WouldBlock is skipped. Unless the event already said the peer hung up:
                    // that FIN is queued and no new edge will come for it. Halves the reads
                    // of a connection that sends a message at a time.
                    if n < want && !hangup {
                        return Readable::Drained;
                    }
                    if *budget == 0 {
                        return Readable::More;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Readable::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken(),
            }
        }
        Readable::More
    }

    /// Bytes read since the last call.
    pub fn take_rx_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.rx)
    }

    /// Give the session bytes the client sent with its request head, if any.
    pub fn process_early(
        &mut self,
        now: Instant,
        timers: &Timers,
        inflater: &mut Inflater,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        self.feed(&[], now, timers, inflater, publish);
    }

    fn feed(
        &mut self,
        input: &[u8],
        now: Instant,
        timers: &Timers,
        inflater: &mut Inflater,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        let (mut control, mut pongs) = (Vec::new(), Vec::new());
        self.session.feed(
            input,
            now,
            timers.close_timeout,
            &mut control,
            &mut pongs,
            inflater,
            publish,
        );
        for p in pongs {
            self.out.push_pong(p);
        }
        self.out.push_owned(control);
    }

    fn broken(&mut self) {
        self.failed = true;
        self.session.note_end(CloseReason::Error);
    }

    /// Queue a fan-out frame. False when it is past its close frame (nothing more goes out).
    pub fn deliver(&mut self, frame: &Rc<[u8]>) -> bool {
        if !self.session.is_open() {
            return false;
        }
        match &mut self.behind {
            None => self.out.push_shared(frame),
            Some(q) => {
                q.live += frame.len() + CHUNK_OVERHEAD;
                q.frames.push_back(Behind::Live(Rc::clone(frame)));
            }
        }
        self.pass_bytes = self.pass_bytes.saturating_add(frame.len() as u32);
        true
    }

    /// Still open and holding more than `limit` bytes: too slow (asked after a write attempt).
    pub fn over(&self, limit: usize) -> bool {
        let behind = self.behind.as_ref().map_or(0, |q| q.live);
        self.session.is_open() && self.out.queued() + behind > limit
    }

    /// Start the close handshake from our side with `code` and `text`. A slow consumer's queued
    /// frames are dropped first so the close frame does not wait behind them.
    pub fn close(
        &mut self,
        code: u16,
        text: &str,
        reason: CloseReason,
        now: Instant,
        timers: &Timers,
    ) {
        if !self.session.is_open() {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            self.out.drop_unstarted();
        }
        // Nothing behind a replay goes out after our close frame.
        self.behind = None;
        let mut control = Vec::new();
        self.session
            .close(code, text, reason, now, timers.close_timeout, &mut control);
        self.out.push_owned(control);
    }

    /// Time passes: send a ping when due, close when silent too long. Returns true when the
    /// connection has something new to write.
    pub fn on_tick(&mut self, now: Instant, timers: &Timers) -> bool {
        if !self.session.is_open() {
            if self.session.expired(now) {
                self.failed = true;
            }
            return false;
        }
        if now.duration_since(self.last_rx) >= timers.idle_timeout {
            self.close(1001, "idle timeout", CloseReason::Idle, now, timers);
            true
        } else if now >= self.next_ping {
            self.out.push_owned(wire::frame(Opcode::Ping, b""));
            self.next_ping = now + timers.ping_interval;
            true
        } else {
            false
        }
    }

    /// Write what is queued (small frames gathered through `scratch`). Once lingering and
    /// empty, shut our side so the peer sees EOF.
    pub fn flush(&mut self, scratch: &mut [u8]) -> usize {
        self.pass_bytes = 0;
        if self.failed {
            return 0;
        }
        if let Some(response) = self.response.take() {
            if self.session.is_open() {
                // Not admitted yet: nothing goes out before the 101.
                self.response = Some(response);
                return 0;
            }
            // It ended before its admission: the client gets its handshake, then the close.
            self.out.push_front_owned(response.into_vec());
        }
        let written = match self.out.write_to(&mut Sender(&self.stream), scratch) {
            Ok(n) => n,
            Err(_) => {
                self.broken();
                return 0;
            }
        };
        if self.out.is_empty() && self.session.shut() {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        written
    }

    /// Nothing more to do: the socket can be dropped.
    pub fn finished(&self) -> bool {
        self.failed
            || self.eof
            || (matches!(self.session.phase(), Phase::Closed { .. }) && self.out.is_empty())
    }
}
