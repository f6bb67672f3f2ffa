//! The compressed-message path of a connection that negotiated permessage-deflate (RFC 7692).
//!
//! tungstenite 0.30 implements no extension and fails any frame with RSV1 set, so for these
//! connections (and only these) the session reads frame headers before tungstenite does, and
//! splits the byte stream at frame boundaries: a frame with RSV1 (the first of a compressed
//! message) and the continuation frames of that message are taken here; every other frame is
//! handed to tungstenite whole, in order, and tungstenite keeps every rule it checks for them
//! (masking, reserved bits and opcodes, control frames, fragmentation, UTF-8, sizes, the close
//! handshake). For the frames taken here this module checks what tungstenite would have checked
//! of a frame (mask, RSV2/RSV3, the length), what RFC 7692 §6.1 adds (RSV1 only on the first
//! frame of a data message) and the fragmentation rules between the two paths: a new data
//! message while another is unfinished is a protocol error whichever path holds it.
//!
//! A compressed message's payload is kept, unmasked, until its last frame, within
//! `deflate::max_compressed_size(max_message_size)`; it is then inflated by the worker's one
//! inflater (`client_no_context_takeover`: no message refers to an earlier one). An idle
//! connection holds only this small state (~60 bytes); the buffer is freed after each message.

use crate::deflate::max_compressed_size;
use crate::metrics::CloseReason;

/// A failure: the close code, its text and the reason we record.
pub type Failure = (u16, &'static str, CloseReason);

const PROTOCOL: Failure = (1002, "protocol error", CloseReason::Protocol);
const TOO_BIG: Failure = (1009, "message too big", CloseReason::TooBig);

/// What the next bytes of the input are.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Bytes of frames for tungstenite, in stream order.
    Pass(&'a [u8]),
    /// A frame header for tungstenite (it was kept here until whole).
    PassHead([u8; 14], usize),
    /// The last frame of a compressed message is in: its opcode (1 text, 2 binary); the
    /// compressed payload is [`Intake::take_message`].
    Message(u8),
    /// The client broke a rule.
    Fail(Failure),
    /// All input is used.
    Done,
}

/// Where the bytes of the current frame's payload go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Between frames: the next byte starts a header.
    Header,
    /// To tungstenite.
    Pass,
    /// Into the compressed message (unmasked with `mask`); `fin`: the message ends with it.
    Ours { mask: [u8; 4], fin: bool },
}

/// The state of the compressed path of one connection.
#[derive(Debug)]
pub struct Intake {
    head: [u8; 14],
    head_len: u8,
    route: Route,
    /// Payload bytes of the current frame not yet seen.
    left: u64,
    /// Payload bytes of the current frame already seen (for the mask's phase).
    seen: u64,
    /// The opcode of the compressed message in flight, if one is.
    compressed: Option<u8>,
    /// A plain fragmented message is in flight (tungstenite holds it).
    plain_open: bool,
    /// The compressed payload so far of the message in flight.
    buf: Vec<u8>,
    max_message_size: usize,
}

impl Intake {
    pub fn new(max_message_size: usize) -> Intake {
        Intake {
            head: [0; 14],
            head_len: 0,
            route: Route::Header,
            left: 0,
            seen: 0,
            compressed: None,
            plain_open: false,
            buf: Vec::new(),
            max_message_size,
        }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    pub fn set_max_message_size(&mut self, max: usize) {
        self.max_message_size = max;
    }

    /// The compressed payload of the message [`Step::Message`] announced; the buffer is freed.
    pub fn take_message(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The next step over `input`, which is advanced past what it used.
    pub fn next<'a>(&mut self, input: &mut &'a [u8]) -> Step<'a> {
        loop {
            match self.route {
                Route::Header => {
                    if input.is_empty() {
                        return Step::Done;
                    }
                    let n = self.head_len as usize;
                    let need = header_len(&self.head[..n]);
                    let take = (need - n).min(input.len());
                    self.head[n..n + take].copy_from_slice(&input[..take]);
                    self.head_len += take as u8;
                    *input = &input[take..];
                    let n = self.head_len as usize;
                    if header_len(&self.head[..n]) > n {
                        continue; // The length byte told us more is needed.
                    }
                    self.head_len = 0;
                    match self.route_frame(n) {
                        Ok(Route::Pass) => {
                            self.route = Route::Pass;
                            if self.left == 0 {
                                self.route = Route::Header;
                            }
                            return Step::PassHead(self.head, n);
                        }
                        Ok(route) => {
                            self.route = route;
                            self.seen = 0;
                            if let Some(step) = self.frame_end() {
                                return step;
                            }
                        }
                        Err(f) => return Step::Fail(f),
                    }
                }
                Route::Pass => {
                    if input.is_empty() {
                        return Step::Done;
                    }
                    let take =
                        usize::try_from(self.left).map_or(input.len(), |l| l.min(input.len()));
                    let (now, rest) = input.split_at(take);
                    *input = rest;
                    self.left -= take as u64;
                    if self.left == 0 {
                        self.route = Route::Header;
                    }
                    return Step::Pass(now);
                }
                Route::Ours { mask, .. } => {
                    if input.is_empty() {
                        return Step::Done;
                    }
                    let take =
                        usize::try_from(self.left).map_or(input.len(), |l| l.min(input.len()));
                    let (now, rest) = input.split_at(take);
                    *input = rest;
                    let phase = self.seen as usize;
                    self.buf.extend(
                        now.iter()
                            .enumerate()
                            .map(|(i, b)| b ^ mask[(phase + i) % 4]),
                    );
                    self.seen += take as u64;
                    self.left -= take as u64;
                    if let Some(step) = self.frame_end() {
                        return step;
                    }
                }
            }
        }
    }

    /// At the end of one of our frames: the message, if it was its last frame.
    fn frame_end(&mut self) -> Option<Step<'static>> {
        let Route::Ours { fin, .. } = self.route else {
            return None;
        };
        if self.left > 0 {
            return None;
        }
        self.route = Route::Header;
        if fin {
            return self.compressed.take().map(Step::Message);
        }
        None
    }

    /// Decide where a frame with header `self.head[..n]` goes, and check what is ours to check.
    fn route_frame(&mut self, n: usize) -> Result<Route, Failure> {
        let (b0, b1) = (self.head[0], self.head[1]);
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = b0 & 0x0f;
        let len = match b1 & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
            127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            l => u64::from(l),
        };
        self.left = len;
        let data = matches!(opcode, 1 | 2);
        let ours = rsv1 || (opcode == 0 && self.compressed.is_some());
        if !ours {
            if data && self.compressed.is_some() {
                return Err(PROTOCOL); // A new message inside a compressed one.
            }
            // tungstenite checks the rest; we only follow its fragmentation.
            if data {
                self.plain_open = !fin;
            } else if opcode == 0 && fin {
                self.plain_open = false;
            }
            return Ok(Route::Pass);
        }
        // RFC 7692 §6.1: RSV1 only on the first frame of a data message. And what tungstenite
        // would have checked of the frame: reserved bits, masking, the 64-bit length's top bit.
        if rsv1 && (!data || self.compressed.is_some() || self.plain_open) {
            return Err(PROTOCOL);
        }
        let masked = b1 & 0x80 != 0;
        if b0 & 0x30 != 0 || !masked || len >> 63 != 0 {
            return Err(PROTOCOL);
        }
        let limit = max_compressed_size(self.max_message_size) as u64;
        if len.saturating_add(self.buf.len() as u64) > limit {
            return Err(TOO_BIG);
        }
        if rsv1 {
            self.compressed = Some(opcode);
        }
        let mask = self.head[n - 4..n].try_into().expect("4 bytes");
        Ok(Route::Ours { mask, fin })
    }
}

/// The length of a frame header that starts with `head` (as far as `head` tells: 2 until the
/// second byte is in).
fn header_len(head: &[u8]) -> usize {
    let Some(&b1) = head.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}
