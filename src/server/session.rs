//! The WebSocket side of one connection, without its socket: bytes in, messages and bytes out.
//!
//! tungstenite's `WebSocketContext` does the frame-level work (framing, fragmentation, UTF-8,
//! control frames, the close handshake). It reads through [`Adapter`] from bytes the worker has
//! already read off the socket, and what it writes (pongs, close frames) goes into a buffer the
//! connection moves into its send queue, the same queue as the shared fan-out frames, so
//! everything goes out in one order. This module adds what the relay decides: the close codes for
//! each failure, the message rate, subscribe-only clients, and the phases of a close. It never
//! touches a socket or a clock (time is passed in), so tests and fuzz targets drive it with bytes.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use super::outbox::PONG_BUDGET;
use super::wire::{self, Opcode};
use crate::metrics::CloseReason;

/// tungstenite's read buffer per connection. Bytes arrive through [`Adapter`] from the worker's
/// shared read buffer, so this only has to hold an unfinished frame: a small start keeps 100k
/// idle clients cheap; it grows to the frame being read when it must.
const READ_BUFFER_SIZE: usize = 256;

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
/// to [`PONG_BUDGET`] bytes of them, then the newest replacing the last: a flood of pings in one
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
            let held: usize = self.pongs.iter().map(Vec::len).sum();
            if held + buf.len() > PONG_BUDGET {
                self.pongs.pop();
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

/// tungstenite's settings for one connection.
pub fn ws_config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        // Write through at once: what tungstenite writes goes to the outbox, which batches.
        .write_buffer_size(0)
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// One connection's WebSocket state.
pub struct Session {
    ctx: WebSocketContext,
    phase: Phase,
    /// Tokens for the room's message rate; unused when the rate is 0.
    bucket: Bucket,
    may_publish: bool,
    reason: Option<CloseReason>,
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
        let config = Some(ws_config(max_message_size));
        let ctx = if early.is_empty() {
            WebSocketContext::new(Role::Server, config)
        } else {
            WebSocketContext::from_partially_read(early, Role::Server, config)
        };
        Session {
            ctx,
            phase: Phase::Open,
            bucket: Bucket::new(rate, now),
            may_publish,
            reason: None,
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
        self.ctx.set_config(|c| {
            c.max_message_size = Some(max);
            c.max_frame_size = Some(max);
        });
    }

    /// Decode `input` (possibly empty, to process bytes given to [`Session::new`]): every complete
    /// message goes to `publish` while the session is open; what must be sent back (the close
    /// reply, our close frame on a failure) is appended to `out`, and the pongs to `pongs` (see
    /// [`Adapter`]). Pings count toward the message rate.
    pub fn feed(
        &mut self,
        input: &[u8],
        now: Instant,
        close_timeout: Duration,
        out: &mut Vec<u8>,
        pongs: &mut Vec<Vec<u8>>,
        publish: &mut impl FnMut(Opcode, &[u8]),
    ) {
        if let Phase::Lingering { .. } | Phase::Closed { .. } = self.phase {
            return; // The WebSocket is over; what arrives now is discarded.
        }
        let mut a = Adapter { input, out, pongs };
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
                // A ping costs a pong: a flood of them is held to the room's rate too.
                Ok(Message::Ping(_)) if self.phase == Phase::Open && !self.bucket.take(now) => {
                    break Some((1008, "rate limit", CloseReason::Policy));
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
        if let Some((code, text, reason)) = failure {
            a.pongs.clear(); // Nothing answers a ping once we fail the connection.
            if self.phase == Phase::Open {
                // tungstenite's state is not to be trusted after an error: the close frame is
                // ours, and nothing more is read as WebSocket.
                a.out.extend_from_slice(&wire::close(code, text));
                self.reason = Some(reason);
            }
            self.linger(now, close_timeout);
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
        let ok = self.ctx.close(&mut a, Some(frame)).is_ok();
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
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A masked client frame.
    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Feed `input` split into `chunk`-byte pieces; the messages published and the bytes out,
    /// the pongs after them.
    fn run(s: &mut Session, input: &[u8], chunk: usize) -> (Vec<(Opcode, Vec<u8>)>, Vec<u8>) {
        let now = Instant::now();
        let (mut got, mut out, mut pongs) = (Vec::new(), Vec::new(), Vec::new());
        for piece in input.chunks(chunk.max(1)) {
            s.feed(piece, now, TIMEOUT, &mut out, &mut pongs, &mut |op, p| {
                got.push((op, p.to_vec()))
            });
        }
        out.extend(pongs.concat());
        (got, out)
    }

    fn session() -> Session {
        Session::new(1000, 0, true, Vec::new(), Instant::now())
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_split() {
        let mut input = client(0x81, "héllo".as_bytes());
        input.extend(client(0x02, b"bin"));
        input.extend(client(0x89, b"ping")); // a ping between fragments
        input.extend(client(0x80, b"ary"));
        for chunk in [1, 3, 7, input.len()] {
            let mut s = session();
            let (got, out) = run(&mut s, &input, chunk);
            assert_eq!(
                got,
                [
                    (Opcode::Text, "héllo".as_bytes().to_vec()),
                    (Opcode::Binary, b"binary".to_vec())
                ]
            );
            assert_eq!(out, wire::frame_with_opcode(0xA, b"ping"), "the pong");
            assert!(s.is_open());
        }
    }

    #[test]
    fn failures_get_their_close_codes() {
        let cases: [(Vec<u8>, u16, CloseReason); 4] = [
            (client(0x81, &[0xff, 0xfe]), 1007, CloseReason::BadUtf8),
            (client(0x82, &[0; 1001]), 1009, CloseReason::TooBig),
            (client(0xC1, b"x"), 1002, CloseReason::Protocol), // RSV1 without an extension
            (vec![0x81, 0x01, b'x'], 1002, CloseReason::Protocol), // unmasked
        ];
        for (input, code, reason) in cases {
            let mut s = session();
            let (got, out) = run(&mut s, &input, 2);
            assert!(got.is_empty());
            assert_eq!(&out[..4], &[0x88, out[1], (code >> 8) as u8, code as u8]);
            assert_eq!(s.reason(), Some(reason));
            assert!(matches!(s.phase(), Phase::Lingering { shut: false, .. }));
            // Nothing after a failure is read as WebSocket.
            let (got, out) = run(&mut s, &client(0x81, b"late"), 100);
            assert!(got.is_empty() && out.is_empty());
        }
    }

    #[test]
    fn a_peer_close_is_answered_and_ends_the_session() {
        let mut s = session();
        let (_, out) = run(&mut s, &client(0x88, &1000u16.to_be_bytes()), 100);
        assert_eq!(out, wire::close(1000, ""));
        assert!(matches!(s.phase(), Phase::Closed { .. }));
        assert_eq!(s.reason(), Some(CloseReason::Normal));
        assert!(
            !s.shut(),
            "a completed handshake closes, it does not linger"
        );
    }

    #[test]
    fn our_close_waits_for_the_peer_and_ignores_its_data_meanwhile() {
        let mut s = session();
        let mut out = Vec::new();
        let now = Instant::now();
        s.close(1001, "bye", CloseReason::Shutdown, now, TIMEOUT, &mut out);
        assert_eq!(out, wire::close(1001, "bye"));
        assert!(matches!(s.phase(), Phase::Closing { .. }));
        assert!(!s.expired(now) && s.expired(now + TIMEOUT));
        let mut input = client(0x81, b"ignored");
        input.extend(client(0x88, &1001u16.to_be_bytes()));
        let (got, out) = run(&mut s, &input, 100);
        assert!(got.is_empty() && out.is_empty(), "no second close frame");
        assert!(matches!(s.phase(), Phase::Closed { .. }));
        assert_eq!(s.reason(), Some(CloseReason::Shutdown));
    }

    #[test]
    fn rate_and_publish_rights_close_with_1008() {
        let mut s = Session::new(1000, 2, true, Vec::new(), Instant::now());
        let three: Vec<u8> = (0..3).flat_map(|_| client(0x81, b"m")).collect();
        let (got, out) = run(&mut s, &three, 100);
        assert_eq!(got.len(), 2, "a burst of the rate passes");
        assert_eq!(out, wire::close(1008, "rate limit"));

        let mut s = Session::new(1000, 0, false, Vec::new(), Instant::now());
        let (got, out) = run(&mut s, &client(0x81, b"m"), 100);
        assert!(got.is_empty());
        assert_eq!((out[0], &out[2..4]), (0x88, &1008u16.to_be_bytes()[..]));
        assert_eq!(s.reason(), Some(CloseReason::Policy));
    }

    #[test]
    fn a_ping_flood_leaves_a_budget_of_pongs_and_counts_toward_the_rate() {
        let mut flood = Vec::new();
        for k in 0..10_000u32 {
            flood.extend(client(0x89, &k.to_be_bytes()));
        }
        let mut s = session();
        let (got, out) = run(&mut s, &flood, 4096);
        assert!(got.is_empty());
        assert!(out.len() <= PONG_BUDGET, "{} bytes of pongs", out.len());
        assert!(
            out.ends_with(&wire::frame_with_opcode(0xA, &9_999u32.to_be_bytes())),
            "the latest last"
        );
        assert!(s.is_open());
        let ten: Vec<u8> = (0..10u32)
            .flat_map(|k| client(0x89, &k.to_be_bytes()))
            .collect();
        let (_, out) = run(&mut session(), &ten, ten.len());
        let want: Vec<u8> = (0..10u32)
            .flat_map(|k| wire::frame_with_opcode(0xA, &k.to_be_bytes()))
            .collect();
        assert_eq!(out, want, "ten pings in one read get ten pongs");

        let mut s = Session::new(1000, 5, true, Vec::new(), Instant::now());
        let (_, out) = run(&mut s, &flood, 4096);
        assert_eq!(out, wire::close(1008, "rate limit"), "no pong once failed");
        assert_eq!(s.reason(), Some(CloseReason::Policy));
    }

    #[test]
    fn early_bytes_are_decoded_by_an_empty_feed() {
        let mut s = Session::new(1000, 0, true, client(0x81, b"early"), Instant::now());
        let mut got = Vec::new();
        let now = Instant::now();
        s.feed(
            &[],
            now,
            TIMEOUT,
            &mut Vec::new(),
            &mut Vec::new(),
            &mut |op, p| got.push((op, p.to_vec())),
        );
        assert_eq!(got, [(Opcode::Text, b"early".to_vec())]);
    }
}
