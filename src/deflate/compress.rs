//! Compress once: a message deflated on its own (no context takeover), so that its compressed
//! payload is the same bytes for every recipient whose agreed window is large enough.
//!
//! A compressed payload "needs" the smallest window that can inflate it: no back-reference in it
//! reaches further than 2^needs bytes. Two facts bound the distances:
//!
//! - zlib never refers further back than its window minus its 262-byte lookahead
//!   (`MAX_DIST(s) = w_size - MIN_LOOKAHEAD` in zlib's `deflate.h`, the same in zlib-rs'
//!   `max_dist`). So its 9-bit compressor (512 bytes) refers at most 250 bytes back and its
//!   output inflates with an 8-bit window (256 bytes), which zlib cannot deflate with (zlib.h:
//!   "windowBits value of 8 ... is not supported"; zlib-rs and flate2 refuse it too).
//! - Nothing refers back before the start of the message, so an n-byte message never refers more
//!   than n bytes back: any message up to 256 bytes needs only 8 bits, up to 2 KiB 11 bits.
//!
//! `tests` prove both with C zlib inflating at exactly the window `needs` names.

use flate2::{Compress, Compression, FlushCompress};

use super::WindowBits;

/// zlib's own default level. On 1–2 KiB JSON (the `trades` payload of the load generator) level
/// 1 gives 3.4× and levels 2 to 9 give 4.2× to 4.5×, at about 2.5× level 1's CPU; 6 is where the
/// ratio stops improving. A relay compresses a message once and sends it to many, so bytes saved
/// per delivery are worth more than the one deflate.
const LEVEL: u32 = 6;

/// The 4 bytes a sync flush ends with, which RFC 7692 §7.2.1 has the sender remove (and the
/// receiver put back).
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One message's compressed payload and the window a recipient needs to inflate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflated<'a> {
    bytes: &'a [u8],
    needs: WindowBits,
}

impl<'a> Deflated<'a> {
    /// The payload of the compressed frame (RSV1 set), tail removed.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The smallest `server_max_window_bits` a recipient must have agreed to take these bytes
    /// ([`super::Agreed::takes`]).
    pub fn needs(&self) -> WindowBits {
        self.needs
    }

    /// Whether the compressed payload is smaller than the plain one of `plain_len` bytes. When
    /// it is not (data that was compressed already), sending the plain frame to everyone costs
    /// fewer bytes and spares the recipients an inflate.
    pub fn saves(&self, plain_len: usize) -> bool {
        self.bytes.len() < plain_len
    }
}

/// A thread's deflater. Compressing a message costs one `compress` call whatever the number of
/// recipients: the caller shares the framed result (see the module doc of [`super`]).
pub struct Compressor {
    /// One zlib stream per zlib window size (9 to 15), made when first used: 15 nearly always.
    /// At level 6 a 15-bit stream holds about 330 KiB.
    streams: [Option<Box<Compress>>; 7],
    out: Vec<u8>,
    calls: u64,
}

impl Default for Compressor {
    fn default() -> Self {
        Self::new()
    }
}

impl Compressor {
    pub fn new() -> Compressor {
        Compressor {
            streams: Default::default(),
            out: Vec::new(),
            calls: 0,
        }
    }

    /// Deflate `payload` as one whole message for recipients that allow a window of `window`
    /// bits (use [`WindowBits::MAX`] first: every client that did not ask for less allows it).
    /// The result borrows the compressor until the next call.
    pub fn compress(&mut self, payload: &[u8], window: WindowBits) -> Deflated<'_> {
        self.calls += 1;
        // zlib cannot deflate with 8 bits; 9 bits refers at most 250 bytes back (module doc).
        let zlib_bits = window.get().max(9);
        let z = self.streams[usize::from(zlib_bits - 9)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(
                Compression::new(LEVEL),
                false,
                zlib_bits,
            ))
        });
        if !deflate(z, payload, &mut self.out) {
            stored(payload, &mut self.out);
        }
        if self.out.ends_with(&TAIL) {
            self.out.truncate(self.out.len() - TAIL.len());
        }
        // How far back zlib may refer with this window (module doc).
        let reach = WindowBits(if zlib_bits == 9 { 8 } else { zlib_bits });
        Deflated {
            bytes: &self.out,
            needs: WindowBits::for_length(payload.len()).min(reach),
        }
    }

    /// How many messages this compressor has deflated.
    pub fn calls(&self) -> u64 {
        self.calls
    }
}

/// Raw deflate of `payload` into `out`, ended with a sync flush; false if zlib failed (it does
/// not with a valid stream, but the caller then has a way out that is still valid deflate).
fn deflate(z: &mut Compress, payload: &[u8], out: &mut Vec<u8>) -> bool {
    z.reset();
    out.clear();
    // Deflate adds at most a few bytes per 16 KiB of incompressible input, the flush a few more.
    out.reserve(payload.len() + payload.len() / 64 + 64);
    loop {
        let done = z.total_in() as usize;
        let Some(rest) = payload.get(done..) else {
            return false;
        };
        if z.compress_vec(rest, out, FlushCompress::Sync).is_err() {
            return false;
        }
        // The flush is complete once zlib returns with output space left over.
        if z.total_in() as usize == payload.len() && out.len() < out.capacity() {
            return true;
        }
        out.reserve(out.capacity().max(64));
    }
}

/// `payload` as deflate stored blocks (no compression, RFC 1951 §3.2.4), ending in the tail.
fn stored(payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for chunk in payload.chunks(usize::from(u16::MAX)) {
        let len = chunk.len() as u16;
        out.push(0x00); // BFINAL 0, BTYPE 00
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0x00);
    out.extend_from_slice(&TAIL[..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    fn inflate(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        Inflater::new().inflate(bytes, &mut out, 1 << 20).unwrap();
        out
    }

    #[test]
    fn rfc_7692_hello() {
        // §7.2.3.1: "Hello" compressed in one block.
        let mut c = Compressor::new();
        let d = c.compress(b"Hello", WindowBits::MAX);
        assert_eq!(d.bytes(), [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        assert_eq!(d.needs(), WindowBits::MIN);
        // §7.2.3.6: an empty message is one 0x00 byte.
        assert_eq!(c.compress(b"", WindowBits::MAX).bytes(), [0x00]);
        assert_eq!(c.calls(), 2);
    }

    #[test]
    fn the_stored_fallback_is_valid_deflate() {
        for len in [0, 1, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            stored(&payload, &mut out);
            out.truncate(out.len() - TAIL.len());
            assert_eq!(inflate(&out), payload, "{len}");
        }
    }

    #[test]
    fn needs_follows_the_length_then_the_window() {
        let mut c = Compressor::new();
        let w = |b| WindowBits::new(b).unwrap();
        for (len, needs) in [
            (1, 8),
            (256, 8),
            (257, 9),
            (2048, 11),
            (2049, 12),
            (40_000, 15),
        ] {
            let payload = vec![b'a'; len];
            assert_eq!(
                c.compress(&payload, WindowBits::MAX).needs(),
                w(needs),
                "{len}"
            );
            assert_eq!(c.compress(&payload, w(9)).needs(), w(8), "{len} at 9");
            assert_eq!(c.compress(&payload, w(8)).needs(), w(8), "{len} at 8");
            assert_eq!(c.compress(&payload, w(12)).needs(), w(needs.min(12)));
        }
    }

    #[test]
    fn incompressible_data_does_not_save() {
        let mut c = Compressor::new();
        let mut x = 0x1234_5678_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let d = c.compress(&noise, WindowBits::MAX);
        assert!(!d.saves(noise.len()));
        assert!(d.bytes().len() < noise.len() + 64);
        assert_eq!(inflate(d.bytes()), noise);
        let text = b"{\"a\":1,\"b\":2}".repeat(20);
        assert!(c.compress(&text, WindowBits::MAX).saves(text.len()));
    }
}
