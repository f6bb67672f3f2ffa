//! The WebSocket side of one connection, without its socket: bytes in, messages and bytes out.
//!
//! tungstenite's `WebSocketContext` does the frame-level work (framing, fragmentation, UTF-8,
//! control frames, the close handshake). It reads through [`Adapter`] from bytes the worker has
//! already read off the socket, and what it writes (pongs, close frames) goes into a buffer the
//! connection moves into its send queue, the same queue as the shared fan-out frames, so
//! everything goes out in one order. This module adds what the relay decides: the close codes for
//! each failure, the message rate, subscribe-only clients, and the phases of a close. One
//! shortcut: a small, whole, unfragmented data frame arriving while tungstenite holds nothing is
//! decoded here (unmasked, UTF-8 checked), as tungstenite would; everything else still goes
//! through tungstenite, whole frames at a time, and a test holds the two paths to the same
//! answers (`the_quick_path_decides_as_tungstenite_does`). It never
//! touches a socket or a clock (time is passed in), so tests and fuzz targets drive it with bytes.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use super::outbox::PONG_BUDGET;
use super::wire::{self, Opcode};
use crate::deflate::{InflateError, Inflater};
use crate::metrics::CloseReason;

mod intake;

use intake::{Failure, Intake, Step};

/// tungstenite's read buffer per connection. Bytes arrive through [`Adapter`] from the worker's
/// shared read buffer, so this only has to hold an unfinished frame: a small start keeps 100k
/// idle clients cheap; it grows to the frame being read when it must.
const READ_BUFFER_SIZE: usize = 256;

/// The largest payload [`Session::feed`] unmasks itself (on the stack) instead of passing the
/// frame to tungstenite: chat-sized messages, where tungstenite's per-frame work (a zero-filled
/// chunk, a copy, a shared buffer split and reallocated, a `Bytes` per message) costs more than
/// the message. Longer frames go to tungstenite, whose costs they amortize.
const QUICK_MAX: usize = 512;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Relaying.
    Open,
    /// We sent a close frame and wait for the peer's, until the deadline.
    Closing { deadline: Instant },
    /// The WebSocket failed (our close frame is queued): send what is queued, shut our side, and
    /// read until the peer's EOF, since it may still be sending.
    Lingering { deadline: Instant, shut: bool },
    /// The close handshake is complete: send what is queued (our reply) and close the socket.
    /// The server closes the TCP connection first, as RFC 6455 wants.
    Closed { deadline: Instant },
}

/// Reads from bytes the worker already took off the socket; writes into a buffer the connection
/// moves into its outbox. Never touches the socket: tungstenite cannot block or reorder frames.
/// Pongs (tungstenite answers every ping, one frame per write) go to `pongs` instead, each one up
/// to [`PONG_BUDGET`] bytes of them, then the newest replacing the last ones: a flood of pings in one
/// read costs that much at most.
struct Adapter<'a> {
    input: &'a [u8],
    out: &'a mut Vec<u8>,
    pongs: &'a mut Vec<Vec<u8>>,
}

/// `buf` is exactly one unmasked pong frame (as tungstenite writes them).
fn is_pong(buf: &[u8]) -> bool {
    match buf {
        [0x8A, len @ 0..=125, payload @ ..] => payload.len() == usize::from(*len),
        _ => false,
    }
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
        if is_pong(buf) {
            let mut held: usize = self.pongs.iter().map(Vec::len).sum();
            // As many of the newest as the budget needs: one large pong may displace several.
            while held + buf.len() > PONG_BUDGET {
                let Some(dropped) = self.pongs.pop() else {
                    break;
                };
                held -= dropped.len();
            }
            self.pongs.push(buf.to_vec());
        } else {
            self.out.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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

/// The connection's tungstenite context, made (holding nothing, for the room's limit) if it has
/// none.
fn context(
    slot: &mut Option<Box<WebSocketContext>>,
    max_message_size: usize,
) -> &mut WebSocketContext {
    slot.get_or_insert_with(|| {
        let config = Some(ws_config(max_message_size));
        Box::new(WebSocketContext::new(Role::Server, config))
    })
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

const NOT_PUBLISHER: Failure = (
    1008,
    "subscribe only: publishing not allowed",
    CloseReason::Policy,
);
const RATE_LIMIT: Failure = (1008, "rate limit", CloseReason::Policy);
const BAD_UTF8: Failure = (1007, "invalid UTF-8", CloseReason::BadUtf8);

/// What a feed writes to and inflates with, passed down the compressed path.
struct Io<'a> {
    now: Instant,
    close_timeout: Duration,
    out: &'a mut Vec<u8>,
    pongs: &'a mut Vec<Vec<u8>>,
    inflater: &'a mut Inflater,
}

/// One connection's WebSocket state.
pub struct Session {
    /// tungstenite, only while it is needed: made for a frame the quick path does not decode,
    /// and let go once it holds nothing again with the WebSocket still open (an idle connection
    /// keeps none: some 530 bytes with its read buffer). Kept from the moment it may hold part of
    /// a frame or message, once the close handshake has begun, and on a compressed connection.
    ctx: Option<Box<WebSocketContext>>,
    /// The room's message size limit, for a context made later.
    max_message_size: usize,
    phase: Phase,
    /// Tokens for the room's message rate; unused when the rate is 0.
    bucket: Bucket,
    may_publish: bool,
    reason: Option<CloseReason>,
    /// The compressed-message path, for a connection that negotiated permessage-deflate.
    intake: Option<Box<Intake>>,
    /// Bytes the client sent after its request head, until the first feed (a connection with
    /// an intake only: they go through it; the others give them to tungstenite at once).
    early: Vec<u8>,
    /// tungstenite may hold part of a frame or of a fragmented message: every byte goes through
    /// it from now on. Until then, [`Session::feed`] decodes small whole data frames itself and
    /// hands tungstenite only whole frames, which leave nothing behind in it (see [`quick`]).
    tungstenite_holds: bool,
}

impl Session {
    /// A session for a room whose messages may be `max_message_size` bytes, `rate` per second
    /// (0: no limit), from a client that may publish or not. `early` holds bytes the client sent
    /// right after its request head.
    pub fn new(
        max_message_size: usize,
        rate: u32,
        may_publish: bool,
        early: Vec<u8>,
        now: Instant,
    ) -> Self {
        Self::build(max_message_size, rate, may_publish, early, now, false)
    }

    /// As [`Session::new`], for a client that negotiated permessage-deflate: its compressed
    /// messages are inflated (`intake`).
    pub fn with_deflate(
        max_message_size: usize,
        rate: u32,
        may_publish: bool,
        early: Vec<u8>,
        now: Instant,
    ) -> Self {
        Self::build(max_message_size, rate, may_publish, early, now, true)
    }

    fn build(
        max_message_size: usize,
        rate: u32,
        may_publish: bool,
        early: Vec<u8>,
        now: Instant,
        deflate: bool,
    ) -> Self {
        let tungstenite_holds = !early.is_empty() && !deflate;
        let mut ctx = None;
        let early = if deflate {
            context(&mut ctx, max_message_size);
            early
        } else if early.is_empty() {
            early
        } else {
            let config = Some(ws_config(max_message_size));
            let c = WebSocketContext::from_partially_read(early, Role::Server, config);
            ctx = Some(Box::new(c));
            Vec::new()
        };
        Session {
            ctx,
            max_message_size,
            phase: Phase::Open,
            bucket: Bucket::new(rate, now),
            may_publish,
            reason: None,
            intake: deflate.then(|| Box::new(Intake::new(max_message_size))),
            early,
            tungstenite_holds,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Why it ended, once it has.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason
    }

    /// The connection ended underneath (EOF, socket error): keep the first reason found.
    pub fn note_end(&mut self, reason: CloseReason) {
        self.reason.get_or_insert(reason);
    }

    /// A reload changed the room's message rate.
    pub fn set_rate(&mut self, rate: u32, now: Instant) {
        if rate != self.bucket.rate {
            self.bucket = Bucket::new(rate, now);
        }
    }

    /// A reload changed the room's message size limit.
    pub fn set_max_message_size(&mut self, max: usize) {
        if let Some(intake) = &mut self.intake {
            intake.set_max_message_size(max);
        }
        self.max_message_size = max;
        if let Some(ctx) = &mut self.ctx {
            ctx.set_config(|c| {
                c.max_message_size = Some(max);
                c.max_frame_size = Some(max);
            });
        }
    }

    /// Decode `input` (possibly empty, to process bytes given to [`Session::new`]): every complete
    /// message goes to `publish` while the session is open; what must be sent back (the close
    /// reply, our close frame on a failure) is appended to `out`, and the pongs to `pongs` (see
    /// [`Adapter`]). Pings count toward the message rate. Compressed messages (a
    /// session [`Session::with_deflate`]) are inflated with `inflater`.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        input: &[u8],
        now: Instant,
        close_timeout: Duration,
        out: &mut Vec<u8>,
        pongs: &mut Vec<Vec<u8>>,
        inflater: &mut Inflater,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        if let Phase::Lingering { .. } | Phase::Closed { .. } = self.phase {
            return; // The WebSocket is over; what arrives now is discarded.
        }
        let failure = match self.intake.take() {
            None => self.quick(input, now, close_timeout, out, pongs, publish),
            Some(mut intake) => {
                let early = std::mem::take(&mut self.early);
                let mut failure = None;
                for chunk in [&early[..], input] {
                    let mut io = Io {
                        now,
                        close_timeout,
                        out,
                        pongs,
                        inflater,
                    };
                    failure = self.split(&mut intake, chunk, &mut io, publish);
                    if failure.is_some() {
                        break;
                    }
                }
                self.intake = Some(intake);
                failure
            }
        };
        if let Some((code, text, reason)) = failure {
            pongs.clear(); // Nothing answers a ping once we fail the connection.
            if self.phase == Phase::Open {
                // tungstenite's state is not to be trusted after an error: the close frame is
                // ours, and nothing more is read as WebSocket.
                out.extend_from_slice(&wire::close(code, text));
                self.reason = Some(reason);
            }
            self.linger(now, close_timeout);
        }
    }

    /// A connection without an intake: while tungstenite holds nothing, small whole data frames
    /// are decoded here (what tungstenite would do for them: unmask, check UTF-8, then the
    /// relay's checks of [`Session::read_ws`] in its order) and every other whole frame is given
    /// to tungstenite alone, so it is left holding nothing again. A frame cut by the end of the
    /// input, or the first frame of a fragmented message, goes to tungstenite with the rest of
    /// the input, and from then on everything does.
    fn quick(
        &mut self,
        mut input: &[u8],
        now: Instant,
        close_timeout: Duration,
        out: &mut Vec<u8>,
        pongs: &mut Vec<Vec<u8>>,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Option<Failure> {
        if self.tungstenite_holds {
            return self.read_ws(input, now, close_timeout, out, pongs, publish);
        }
        while !self.tungstenite_holds && !input.is_empty() {
            if self.phase != Phase::Open {
                break; // Closing or closed: tungstenite decides what the rest means.
            }
            let Some(head) = wire::client_frame(input) else {
                break; // The frame is not whole.
            };
            let (frame, rest) = input.split_at(head.len);
            input = rest;
            let simple = head.fin && head.rsv == 0 && head.masked && matches!(head.opcode, 1 | 2);
            let payload = &frame[head.header..];
            let max = self.max_message_size;
            if !simple || payload.len() > QUICK_MAX.min(max) {
                // Control frames, oddities (tungstenite fails them) and long frames: whole, to
                // tungstenite. The first frame of a fragmented message leaves it holding that.
                if !head.fin && head.opcode != 0 && head.opcode < 8 {
                    self.tungstenite_holds = true;
                }
                if let Some(f) = self.read_ws(frame, now, close_timeout, out, pongs, publish) {
                    return Some(f);
                }
                continue;
            }
            let mut buf = [0u8; QUICK_MAX];
            let message = &mut buf[..payload.len()];
            wire::unmask(payload, head.mask, message);
            let op = if head.opcode == 1 {
                if std::str::from_utf8(message).is_err() {
                    return Some(BAD_UTF8);
                }
                Opcode::Text
            } else {
                Opcode::Binary
            };
            if !self.may_publish {
                return Some(NOT_PUBLISHER);
            }
            if !self.bucket.take(now) {
                return Some(RATE_LIMIT);
            }
            publish(op, message);
        }
        if input.is_empty() && !self.tungstenite_holds && self.phase == Phase::Open {
            // Whole frames only (control frames, long messages): nothing was left in tungstenite.
            self.ctx = None;
        }
        if input.is_empty() || matches!(self.phase, Phase::Lingering { .. } | Phase::Closed { .. })
        {
            return None; // All used, or the WebSocket is over and the rest is discarded.
        }
        self.tungstenite_holds = true;
        self.read_ws(input, now, close_timeout, out, pongs, publish)
    }

    /// A connection with an intake: its frames split between tungstenite and the compressed
    /// path, in stream order (`intake`).
    fn split(
        &mut self,
        intake: &mut Intake,
        mut input: &[u8],
        io: &mut Io<'_>,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Option<Failure> {
        loop {
            if !matches!(self.phase, Phase::Open | Phase::Closing { .. }) {
                return None; // The close handshake completed: the rest is discarded.
            }
            let failure = match intake.next(&mut input) {
                Step::Done => return None,
                Step::Pass(bytes) => {
                    self.read_ws(bytes, io.now, io.close_timeout, io.out, io.pongs, publish)
                }
                Step::PassHead(head, n) => self.read_ws(
                    &head[..n],
                    io.now,
                    io.close_timeout,
                    io.out,
                    io.pongs,
                    publish,
                ),
                Step::Message(op) => {
                    let payload = intake.take_message();
                    let limit = intake.max_message_size();
                    self.compressed(op, &payload, limit, io, publish)
                }
                Step::Fail(f) => Some(f),
            };
            if failure.is_some() {
                return failure;
            }
        }
    }

    /// A whole compressed message (opcode 1 or 2) from a client.
    fn compressed(
        &mut self,
        op: u8,
        payload: &[u8],
        limit: usize,
        io: &mut Io<'_>,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Option<Failure> {
        if self.phase != Phase::Open {
            return None; // Data during our close only proves the peer is alive.
        }
        if !self.may_publish {
            return Some(NOT_PUBLISHER);
        }
        if !self.bucket.take(io.now) {
            return Some(RATE_LIMIT);
        }
        let mut message = Vec::new();
        match io.inflater.inflate(payload, &mut message, limit) {
            Ok(()) => {}
            Err(e @ InflateError::TooBig) => {
                return Some((e.close_code(), "message too big", CloseReason::TooBig));
            }
            Err(e @ InflateError::Invalid) => {
                return Some((
                    e.close_code(),
                    "invalid deflate data",
                    CloseReason::BadDeflate,
                ));
            }
        }
        let op = if op == 1 {
            if std::str::from_utf8(&message).is_err() {
                return Some(BAD_UTF8);
            }
            Opcode::Text
        } else {
            Opcode::Binary
        };
        publish(op, &message);
        None
    }

    /// Give tungstenite `input` and read every message it completes.
    fn read_ws(
        &mut self,
        input: &[u8],
        now: Instant,
        close_timeout: Duration,
        out: &mut Vec<u8>,
        pongs: &mut Vec<Vec<u8>>,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) -> Option<Failure> {
        let mut a = Adapter { input, out, pongs };
        let ctx = context(&mut self.ctx, self.max_message_size);
        loop {
            match ctx.read(&mut a) {
                Ok(Message::Text(_) | Message::Binary(_))
                    if self.phase == Phase::Open && !self.may_publish =>
                {
                    break Some(NOT_PUBLISHER);
                }
                Ok(Message::Text(_) | Message::Binary(_))
                    if self.phase == Phase::Open && !self.bucket.take(now) =>
                {
                    break Some(RATE_LIMIT);
                }
                Ok(Message::Text(t)) if self.phase == Phase::Open => {
                    publish(Opcode::Text, t.as_bytes())
                }
                Ok(Message::Binary(b)) if self.phase == Phase::Open => publish(Opcode::Binary, &b),
                // A ping costs a pong: a flood of them is held to the room's rate too.
                Ok(Message::Ping(_)) if self.phase == Phase::Open && !self.bucket.take(now) => {
                    break Some(RATE_LIMIT);
                }
                Ok(Message::Close(_)) => {
                    self.reason.get_or_insert(CloseReason::Normal);
                }
                // Pings are answered by tungstenite (the pong is in `control`); pongs and data
                // during our close only prove the peer is alive.
                Ok(_) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break None,
                // The close handshake is complete.
                Err(WsError::ConnectionClosed) | Err(WsError::AlreadyClosed) => {
                    self.phase = Phase::Closed {
                        deadline: now + close_timeout,
                    };
                    break None;
                }
                Err(WsError::Utf8(_)) => break Some(BAD_UTF8),
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    break Some((1009, "message too big", CloseReason::TooBig));
                }
                Err(WsError::Capacity(_)) | Err(WsError::Protocol(_)) => {
                    break Some((1002, "protocol error", CloseReason::Protocol));
                }
                Err(_) => break Some((1011, "internal error", CloseReason::Error)),
            }
        }
    }

    fn linger(&mut self, now: Instant, close_timeout: Duration) {
        if !matches!(self.phase, Phase::Lingering { .. }) {
            self.phase = Phase::Lingering {
                deadline: now + close_timeout,
                shut: false,
            };
        }
    }

    /// Start the close handshake from our side: the close frame is appended to `out`.
    pub fn close(
        &mut self,
        code: u16,
        text: &str,
        reason: CloseReason,
        now: Instant,
        close_timeout: Duration,
        out: &mut Vec<u8>,
    ) {
        if self.phase != Phase::Open {
            return;
        }
        let mut pongs = Vec::new();
        let mut a = Adapter {
            input: &[],
            out,
            pongs: &mut pongs,
        };
        let frame = CloseFrame {
            code: code.into(),
            reason: text.into(),
        };
        let ok = context(&mut self.ctx, self.max_message_size)
            .close(&mut a, Some(frame))
            .is_ok();
        self.reason = Some(reason);
        if ok {
            self.phase = Phase::Closing {
                deadline: now + close_timeout,
            };
        } else {
            self.linger(now, close_timeout);
        }
    }

    /// Lingering with nothing left to send: our side may be shut now. True the first time.
    pub fn shut(&mut self) -> bool {
        if let Phase::Lingering {
            deadline,
            shut: false,
        } = self.phase
        {
            self.phase = Phase::Lingering {
                deadline,
                shut: true,
            };
            return true;
        }
        false
    }

    /// The close handshake has run out of time.
    pub fn expired(&self, now: Instant) -> bool {
        match self.phase {
            Phase::Open => false,
            Phase::Closing { deadline }
            | Phase::Lingering { deadline, .. }
            | Phase::Closed { deadline } => now >= deadline,
        }
    }
}

#[cfg(test)]
mod deflate_tests;

#[cfg(test)]
mod tests;
