//! permessage-deflate (RFC 7692) without sockets: the handshake's negotiation, compressing a
//! message once for all its recipients, and inflating a client's message within a bound. Bytes
//! in, bytes out; framing is `server::wire`'s job and the session's, which call in here. This
//! module never imports `server`.
//!
//! # What we agree to, and why
//!
//! - **Our direction: no context takeover** (`server_no_context_takeover`, always). Each message
//!   is deflated on its own, so its compressed payload is the same for every recipient: it is
//!   compressed once, by the thread that encodes the message, and shared like a plain frame. A
//!   shared context would make every connection's stream different and cost a compressor per
//!   connection (~300 KiB each).
//! - **The client's direction: no context takeover either** (`client_no_context_takeover`, which
//!   a server may ask of any client, RFC 7692 §7.1.1.2; Chromium, Firefox, `ws` and Python
//!   `websockets` all honour it). No client message refers to an earlier one, so one
//!   [`Inflater`] per worker takes every connection's messages, and an idle connection holds no
//!   inflate state at all: it keeps only its [`Agreed`] (two bytes). A fragmented compressed
//!   message keeps its compressed fragments until the last one (bounded by
//!   [`max_compressed_size`]; `inflate.rs` says why). We inflate with a 15-bit window, which
//!   takes any `client_max_window_bits`, so we never answer that parameter.
//! - **Window sizes: one frame for nearly everyone.** A compressed payload needs the window of
//!   its furthest back-reference, and that is never further than the message is long: a message
//!   compressed with our 15-bit window needs 8 bits up to 256 bytes, 11 bits up to 2 KiB
//!   ([`Deflated::needs`]). Clients that do not ask for a smaller window (every browser) allow
//!   15, so they all take the frame compressed with [`WindowBits::MAX`]. A client that asked for
//!   less than a message needs (Autobahn's 13.3.x–13.6.x cases, custom clients) takes a second
//!   frame compressed with [`WindowBits::MIN`], which needs 8 bits and so suits everyone. That
//!   is at most two deflates per message, one in practice. Compressing everything with the
//!   smallest window instead would be simpler but worse: on 1–2 KiB JSON, zlib's 9-bit window
//!   compresses 4.3× against 4.5× at 15 bits, and costs about 1.5× the CPU, since zlib slides
//!   a 512-byte window every 250 bytes.
//! - **8 bits.** zlib cannot deflate with an 8-bit window; its 9-bit compressor never refers
//!   more than 250 bytes back, so its output inflates with 8 bits (`compress.rs`; proven in
//!   `tests.rs` with C zlib inflating at exactly 8 bits, and shown to fail for output that
//!   refers further).
//! - **Close codes**: over the limit 1009, invalid deflate data 1007 ([`InflateError`]).
//!
//! # How the server uses it
//!
//! Handshake: [`negotiate`] the request's `Sec-WebSocket-Extensions` lines when the room has
//! compression on; answer with `Sec-WebSocket-Extensions: {agreed}` and keep the [`Agreed`].
//! Sending a message of at least the room's `compression_min_size` bytes: `let d =
//! compressor.compress(payload, WindowBits::MAX)`; frame `d.bytes()` once with RSV1 set and send
//! it to every recipient that [`Agreed::takes`] `d.needs()` (the plain frame to those without
//! the extension, and to everyone if `!d.saves(payload.len())`). Receiving a frame with RSV1:
//! [`Inflater::inflate`] (or [`Inflater::inflate_parts`] once the last fragment is in) into the
//! message buffer, with the room's `max_message_size` as the limit.

mod compress;
pub mod header;
mod inflate;
mod negotiate;

#[cfg(test)]
mod tests;

pub use compress::{Compressor, Deflated};
pub use inflate::{InflateError, Inflater, max_compressed_size};
pub use negotiate::{Agreed, NAME, negotiate};

/// The base-2 logarithm of an LZ77 window, as RFC 7692 §7.1.2 allows it: 8 to 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WindowBits(u8);

impl WindowBits {
    /// 256 bytes.
    pub const MIN: WindowBits = WindowBits(8);
    /// 32 KiB, the protocol's default.
    pub const MAX: WindowBits = WindowBits(15);

    pub fn new(bits: u8) -> Option<WindowBits> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&bits)
            .then_some(WindowBits(bits))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The smallest window that reaches back over a whole message of `len` bytes (at most
    /// [`WindowBits::MAX`]).
    pub fn for_length(len: usize) -> WindowBits {
        let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
        WindowBits(bits.clamp(8, 15) as u8)
    }
}
