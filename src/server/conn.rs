//! One WebSocket connection on its worker: its phases, its send queue, its timers.
//!
//! tungstenite's `WebSocketContext` does the frame-level work (framing, fragmentation, UTF-8,
//! control frames, the close handshake). It reads through [`Adapter`] from bytes the worker has
//! already read off the socket, and what it writes (pongs, close frames) lands in the connection's
//! [`Outbox`], the same queue as the shared fan-out frames, so everything goes out in one order.
//! The worker owns the poll, the room membership and the slab; this module owns one socket.
//!
//! Life of a connection (see also `LIFECYCLE.md`):
//! `Open` → (we close: idle, slow, shutdown) `Closing` → `Lingering` → gone
//! `Open` → (peer closes, or breaks the protocol) `Lingering` → gone

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use super::bus::{MemberId, RoomSettings};
use super::outbox::{Outbox, Push};
use super::wire::{self, Opcode};
use crate::metrics::CloseReason;
use crate::relay::RoomId;
use crate::relay::admission::Ticket;
use crate::relay::hub::MemberKey;

/// tungstenite's read buffer per connection. Bytes arrive through [`Adapter`] from the worker's
/// shared read buffer, so this only has to hold an unfinished frame: a small start keeps 100k
/// idle clients cheap; it grows to the frame being read when it must.
const READ_BUFFER_SIZE: usize = 256;

/// Socket reads per readiness event before the worker serves others and comes back.
const READS_PER_EVENT: usize = 8;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Relaying.
    Open,
    /// We sent a close frame and wait for the peer's, until the deadline.
    Closing { deadline: Instant },
    /// The WebSocket is over: send what is queued, shut our side, wait for the peer's EOF.
    Lingering { deadline: Instant, shut: bool },
}

/// Reads from bytes the worker already took off the socket; writes into a buffer the connection
/// moves into its outbox. Never touches the socket: tungstenite cannot block or reorder frames.
struct Adapter<'a> {
    input: &'a [u8],
    out: &'a mut Vec<u8>,
}

impl Read for Adapter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Adapter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a readable event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readable {
    /// Read until the socket would block.
    Drained,
    /// Stopped after [`READS_PER_EVENT`] reads: more may be waiting; come back next pass.
    More,
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
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub ticket: Ticket,
    pub room: RoomId,
    pub path: Box<str>,
    /// Its place in the worker's local room while it is a member.
    pub member: Option<MemberKey>,
    /// Already on the worker's list of connections to write this pass.
    pub dirty: bool,
    pub out: Outbox,
    /// Tokens for the room's message rate; unused when `rate` is 0.
    bucket: Bucket,
    may_publish: bool,
    phase: Phase,
    ctx: WebSocketContext,
    last_rx: Instant,
    next_ping: Instant,
    /// Bytes read since the worker last asked.
    rx: u64,
    eof: bool,
    failed: bool,
    reason: Option<CloseReason>,
}

/// A token bucket: `rate` messages per second with a burst of `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u32,
    tokens: f32,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate as f32,
            at: now,
        }
    }

    /// Take a token for one message; false when the client is over the rate.
    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = self.rate as f32;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f32();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// tungstenite's settings for one connection.
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        // Write through at once: what tungstenite writes goes to the outbox, which batches.
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
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
        early: Vec<u8>,
        now: Instant,
        timers: &Timers,
    ) -> Self {
        let config = Some(ws_config(settings.max_message_size));
        let ctx = if early.is_empty() {
            WebSocketContext::new(Role::Server, config)
        } else {
            WebSocketContext::from_partially_read(early, Role::Server, config)
        };
        Conn {
            id,
            stream,
            peer,
            ticket,
            room,
            path,
            member: None,
            dirty: false,
            out: Outbox::default(),
            bucket: Bucket::new(settings.max_messages_per_second, now),
            may_publish: settings.may_publish,
            phase: Phase::Open,
            ctx,
            last_rx: now,
            next_ping: now + timers.ping_interval,
            rx: 0,
            eof: false,
            failed: false,
            reason: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Why it ended (once it has).
    pub fn reason(&self) -> CloseReason {
        self.reason.unwrap_or(CloseReason::Normal)
    }

    /// Read what the socket has, using `scratch` as the read buffer, and hand every complete
    /// message to `publish` while the connection is open.
    pub fn on_readable(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
        timers: &Timers,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Readable {
        for _ in 0..READS_PER_EVENT {
            if self.eof || self.failed {
                return Readable::Drained;
            }
            match self.stream.read(scratch) {
                Ok(0) => {
                    self.eof = true;
                    self.reason.get_or_insert(CloseReason::Normal);
                }
                Ok(n) => {
                    self.last_rx = now;
                    self.rx += n as u64;
                    self.feed(n, scratch, now, timers, publish);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Readable::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken(),
            }
        }
        Readable::More
    }

    /// A reload changed the room's message rate.
    pub fn set_rate(&mut self, rate: u32, now: Instant) {
        if rate != self.bucket.rate {
            self.bucket = Bucket::new(rate, now);
        }
    }

    /// A reload changed the room's message size limit.
    pub fn set_max_message_size(&mut self, max: usize) {
        self.ctx.set_config(|c| {
            c.max_message_size = Some(max);
            c.max_frame_size = Some(max);
        });
    }

    /// Bytes read since the last call.
    pub fn take_rx_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.rx)
    }

    /// Give tungstenite bytes the client sent with its request head, if any.
    pub fn process_early(
        &mut self,
        now: Instant,
        timers: &Timers,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        self.feed(0, &[], now, timers, publish);
    }

    fn feed(
        &mut self,
        n: usize,
        scratch: &[u8],
        now: Instant,
        timers: &Timers,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        if let Phase::Lingering { .. } = self.phase {
            return; // The WebSocket is over; what arrives now is discarded.
        }
        let mut control = Vec::new();
        let mut a = Adapter {
            input: &scratch[..n],
            out: &mut control,
        };
        let failure = loop {
            match self.ctx.read(&mut a) {
                Ok(Message::Text(_) | Message::Binary(_))
                    if self.phase == Phase::Open && !self.may_publish =>
                {
                    break Some((
                        1008,
                        "subscribe only: publishing not allowed",
                        CloseReason::Policy,
                    ));
                }
                Ok(Message::Text(_) | Message::Binary(_))
                    if self.phase == Phase::Open && !self.bucket.take(now) =>
                {
                    break Some((1008, "rate limit", CloseReason::Policy));
                }
                Ok(Message::Text(t)) if self.phase == Phase::Open => {
                    publish(Opcode::Text, t.as_bytes())
                }
                Ok(Message::Binary(b)) if self.phase == Phase::Open => publish(Opcode::Binary, &b),
                Ok(Message::Close(_)) => {
                    self.reason.get_or_insert(CloseReason::Normal);
                }
                // Pings are answered by tungstenite (the pong is in `control`); pongs and data
                // during our close only prove the peer is alive.
                Ok(_) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break None,
                // The close handshake is complete.
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {
                    self.linger(now, timers);
                    break None;
                }
                Err(WsError::Utf8(_)) => break Some((1007, "invalid UTF-8", CloseReason::BadUtf8)),
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    break Some((1009, "message too big", CloseReason::TooBig));
                }
                Err(WsError::Capacity(_)) | Err(WsError::Protocol(_)) => {
                    break Some((1002, "protocol error", CloseReason::Protocol));
                }
                Err(_) => break Some((1011, "internal error", CloseReason::Error)),
            }
        };
        self.out.push_owned(control);
        if let Some((code, text, reason)) = failure {
            if self.phase == Phase::Open {
                // tungstenite's state is not to be trusted after an error: the close frame is
                // ours, and nothing more is read as WebSocket.
                self.out.push_owned(wire::close(code, text));
                self.reason = Some(reason);
            }
            self.linger(now, timers);
        }
    }

    fn linger(&mut self, now: Instant, timers: &Timers) {
        if !matches!(self.phase, Phase::Lingering { .. }) {
            self.phase = Phase::Lingering {
                deadline: now + timers.close_timeout,
                shut: false,
            };
        }
    }

    fn broken(&mut self) {
        self.failed = true;
        self.reason.get_or_insert(CloseReason::Error);
    }

    /// Queue a fan-out frame. `Full` means the connection is too slow; the caller closes it.
    pub fn deliver(&mut self, frame: &Rc<[u8]>, limit: usize) -> Push {
        if self.phase != Phase::Open {
            return Push::Queued; // Past its close frame: nothing more goes out, nothing to report.
        }
        self.out.push_shared(frame, limit)
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
        if self.phase != Phase::Open {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            self.out.drop_unstarted();
        }
        let mut control = Vec::new();
        let mut a = Adapter {
            input: &[],
            out: &mut control,
        };
        let frame = CloseFrame {
            code: code.into(),
            reason: text.into(),
        };
        let ok = self.ctx.close(&mut a, Some(frame)).is_ok();
        self.out.push_owned(control);
        self.reason = Some(reason);
        if ok {
            self.phase = Phase::Closing {
                deadline: now + timers.close_timeout,
            };
        } else {
            self.linger(now, timers);
        }
    }

    /// Time passes: send a ping when due, close when silent too long. Returns true when the
    /// connection has something new to write.
    pub fn on_tick(&mut self, now: Instant, timers: &Timers) -> bool {
        match self.phase {
            Phase::Open if now.duration_since(self.last_rx) >= timers.idle_timeout => {
                self.close(1001, "idle timeout", CloseReason::Idle, now, timers);
                true
            }
            Phase::Open if now >= self.next_ping => {
                self.out.push_owned(wire::frame(Opcode::Ping, b""));
                self.next_ping = now + timers.ping_interval;
                true
            }
            Phase::Open => false,
            Phase::Closing { deadline } | Phase::Lingering { deadline, .. } => {
                if now >= deadline {
                    self.failed = true;
                }
                false
            }
        }
    }

    /// Write what is queued. Once lingering and empty, shut our side so the peer sees EOF.
    pub fn flush(&mut self) -> usize {
        if self.failed {
            return 0;
        }
        let written = match self.out.write_to(&mut self.stream) {
            Ok(n) => n,
            Err(_) => {
                self.broken();
                return 0;
            }
        };
        if let Phase::Lingering {
            deadline,
            shut: false,
        } = self.phase
            && self.out.is_empty()
        {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.phase = Phase::Lingering {
                deadline,
                shut: true,
            };
        }
        written
    }

    /// Nothing more to do: the socket can be dropped.
    pub fn finished(&self) -> bool {
        self.failed || self.eof
    }
}
