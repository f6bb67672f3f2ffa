//! Bounded inflate: a compressed message back to its bytes, never more than the limit.
//!
//! The inflated size counts against the limit as it is produced: zlib is only ever given room
//! for one byte past the limit, so a decompression bomb (a 1 MiB message of zeros is about 1 KiB
//! compressed) stops there and costs no more memory than an honest message of the limit's size.
//!
//! One [`Inflater`] serves every connection of a worker, one message at a time: the client
//! agreed to `client_no_context_takeover`, so no message refers to an earlier one and the
//! inflater is reset before each. A fragmented compressed message is inflated once its last
//! fragment is in, from the compressed payloads the connection kept meanwhile (bounded by
//! [`max_compressed_size`]): that costs a connection the bytes its client actually sent, where
//! an inflater of its own would cost ~40 KiB (zlib state and its 32 KiB window) as soon as a
//! client sends a first fragment of a few bytes.

use std::mem::MaybeUninit;

use flate2::{Decompress, FlushDecompress, Status};

use super::compress::TAIL;

/// Why a compressed message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the limit. Close with 1009, "message too big" (RFC 6455
    /// §7.4.1), as for a plain message over `max_message_size`.
    TooBig,
    /// It is not valid deflate data, or ends inside a block. RFC 7692 §6.2 says how to
    /// decompress and names no close code for data that does not; its sender promised deflate
    /// data by setting RSV1, so the payload does not match its message's type: close with 1007
    /// (RFC 6455 §7.4.1: "data within a message that was not consistent with the type of the
    /// message"), as Node's `ws` does.
    Invalid,
}

impl InflateError {
    /// The close code to fail the connection with.
    pub fn close_code(self) -> u16 {
        match self {
            InflateError::TooBig => 1009,
            InflateError::Invalid => 1007,
        }
    }
}

/// The most compressed bytes a message of at most `limit` inflated bytes can take: deflate never
/// needs more than 9 bits for a byte (fixed-Huffman literals, RFC 1951 §3.2.6) and stored blocks
/// add 5 bytes per 65,535. A compressed frame, or the fragments of one message, past this is over
/// the limit whatever it inflates to (close 1009).
pub fn max_compressed_size(limit: usize) -> usize {
    limit.saturating_add(limit / 8).saturating_add(64)
}

/// The end of a deflate stream: a final block (BFINAL 1, fixed Huffman) holding only its
/// end-of-block code. Fed after a message, it ends the stream at once if and only if the message
/// ended on a block boundary, as every complete message does.
const END: [u8; 2] = [0x03, 0x00];

/// A worker's inflater: raw deflate, 15-bit window (which takes data made with any smaller one).
pub struct Inflater {
    z: Decompress,
    /// A final block ended the deflate stream; what follows in the message starts a new one.
    ended: bool,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater {
            z: Decompress::new_with_window_bits(false, 15),
            ended: false,
        }
    }

    /// Inflate one compressed message sent in one frame, appending it to `out`; at most `limit`
    /// bytes are appended, and `out` grows by at most `limit + 1`.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.inflate_parts([payload], out, limit)
    }

    /// Inflate one compressed message from the payloads of its frames, in order (RFC 7692 §6.2:
    /// the message's payload with `00 00 ff ff` appended), appending it to `out`; as
    /// [`Inflater::inflate`]. On an error `out` holds part of the message.
    pub fn inflate_parts<'p>(
        &mut self,
        parts: impl IntoIterator<Item = &'p [u8]>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        self.z.reset(false);
        self.ended = false;
        let max_len = out.len().saturating_add(limit).saturating_add(1);
        let mut sent = 0;
        for part in parts {
            sent += part.len();
            self.feed(part, out, max_len)?;
        }
        if sent == 0 {
            // No deflate data at all (RFC 7692 §7.2.3.6 writes an empty message as 0x00, but
            // zlib-based receivers take this as empty too, and it can mean nothing else).
            return Ok(());
        }
        if self.ended {
            // The message ended with a final block: the tail its sender removed is not needed.
            return Ok(());
        }
        self.feed(&TAIL, out, max_len)?;
        if self.ended {
            return Ok(());
        }
        let before = out.len();
        self.feed(&END, out, max_len)?;
        if !self.ended || out.len() != before {
            return Err(InflateError::Invalid);
        }
        Ok(())
    }

    /// Inflate all of `input` into `out`, never past `max_len` bytes in all.
    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), InflateError> {
        loop {
            if self.ended && !input.is_empty() {
                // RFC 7692 §7.2.3.4: a final block may be followed by more blocks, which
                // inflate as a new stream.
                self.z.reset(false);
                self.ended = false;
            }
            let room = max_len.saturating_sub(out.len());
            if room == 0 {
                return Err(InflateError::TooBig);
            }
            if out.capacity() == out.len() {
                // Grow geometrically, guessing from the input, but never past the limit.
                let guess = out.len().max(input.len().saturating_mul(4)).max(1024);
                out.reserve_exact(guess.min(room));
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let len = out.len();
            let spare = out.spare_capacity_mut();
            let space = spare.len().min(room);
            let status = self.inflate_into(input, &mut spare[..space]);
            let written = ((self.z.total_out() - out0) as usize).min(space);
            // SAFETY: zlib initialised the first `written` bytes of the spare capacity (flate2's
            // `total_out` counts the bytes it wrote), and `written` is within it.
            unsafe { out.set_len(len + written) };
            let consumed = ((self.z.total_in() - in0) as usize).min(input.len());
            input = &input[consumed..];
            // Past the limit is past the limit, even if zlib found an error in the same call
            // after the output it wrote: the answer must not depend on where fragments end.
            if out.len() >= max_len {
                return Err(InflateError::TooBig);
            }
            match status? {
                Status::StreamEnd => self.ended = true,
                // Everything is in and zlib stopped with room to spare: all of it is out.
                _ if input.is_empty() && written < space => return Ok(()),
                // No progress with input and room left: zlib is stuck; never loop on it.
                _ if consumed == 0 && written == 0 => {
                    return Err(InflateError::Invalid);
                }
                _ => {}
            }
            if self.ended && input.is_empty() {
                return Ok(());
            }
        }
    }

    fn inflate_into(
        &mut self,
        input: &[u8],
        output: &mut [MaybeUninit<u8>],
    ) -> Result<Status, InflateError> {
        self.z
            .decompress_uninit(input, output, FlushDecompress::Sync)
            .map_err(|_| InflateError::Invalid)
    }
}
