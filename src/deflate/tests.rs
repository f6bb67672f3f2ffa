//! The module against real zlib (C zlib through `libz-sys`, as Chromium, Python and Node use it):
//! our frames inflate at exactly the window they claim to need, what real clients send inflates,
//! the RFC's examples, bombs and broken data.

use std::ffi::c_int;

use flate2::{Compress, Compression, FlushCompress};
use libz_sys as z;

use super::compress::TAIL;
use super::*;

/// C zlib's allocator hooks (`z_stream` wants non-null function pointers).
unsafe extern "C" fn zalloc(_: z::voidpf, items: z::uInt, size: z::uInt) -> z::voidpf {
    // SAFETY: plain calloc; zlib frees it through `zfree`.
    unsafe { libc::calloc(items as usize, size as usize) }
}

unsafe extern "C" fn zfree(_: z::voidpf, p: z::voidpf) {
    // SAFETY: `p` came from `zalloc`.
    unsafe { libc::free(p) }
}

fn stream() -> z::z_stream {
    z::z_stream {
        next_in: std::ptr::null_mut(),
        avail_in: 0,
        total_in: 0,
        next_out: std::ptr::null_mut(),
        avail_out: 0,
        total_out: 0,
        msg: std::ptr::null_mut(),
        state: std::ptr::null_mut(),
        zalloc,
        zfree,
        opaque: std::ptr::null_mut(),
        data_type: 0,
        adler: 0,
        reserved: 0,
    }
}

const STREAM_SIZE: c_int = std::mem::size_of::<z::z_stream>() as c_int;

/// Inflate a message payload (tail appended here) with C zlib's raw inflate and a window of
/// `bits`, handing it `step` bytes of output at a time. With `step` 1 zlib can only copy from
/// its window, so a back-reference further than 2^bits fails ("invalid distance too far back");
/// with a large output buffer zlib also reaches into the output itself and would not notice.
fn c_inflate(payload: &[u8], bits: u8, step: usize) -> Result<Vec<u8>, String> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut s = stream();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; step];
    // SAFETY: a zeroed stream with allocator hooks, buffers that outlive every call, and
    // inflateEnd on every path.
    unsafe {
        let v = z::zlibVersion();
        assert_eq!(
            z::inflateInit2_(&mut s, -c_int::from(bits), v, STREAM_SIZE),
            z::Z_OK
        );
        s.next_in = input.as_mut_ptr();
        s.avail_in = input.len() as z::uInt;
        let result = loop {
            s.next_out = chunk.as_mut_ptr();
            s.avail_out = step as z::uInt;
            let r = z::inflate(&mut s, z::Z_SYNC_FLUSH);
            out.extend_from_slice(&chunk[..step - s.avail_out as usize]);
            match r {
                z::Z_OK if s.avail_in == 0 && s.avail_out > 0 => break Ok(out),
                z::Z_OK => {}
                // A final block ends the stream: what follows is the tail added above.
                z::Z_STREAM_END => break Ok(out),
                z::Z_BUF_ERROR if s.avail_in == 0 => break Ok(out),
                _ => break Err(format!("zlib {r} at input byte {}", s.total_in)),
            }
        };
        z::inflateEnd(&mut s);
        result
    }
}

/// Deflate `data` with C zlib, raw, `bits` window, as a client does for one message without
/// context takeover: sync flush and tail removed, or (`last`) a final block.
fn c_deflate(data: &[u8], bits: c_int, level: c_int, last: bool) -> Result<Vec<u8>, c_int> {
    let mut s = stream();
    let mut input = data.to_vec();
    let mut out = vec![0u8; data.len() * 2 + 64];
    // SAFETY: as in `c_inflate`; `out` is large enough for any deflate of `data` and a flush.
    unsafe {
        let r = z::deflateInit2_(
            &mut s,
            level,
            z::Z_DEFLATED,
            -bits,
            8,
            z::Z_DEFAULT_STRATEGY,
            z::zlibVersion(),
            STREAM_SIZE,
        );
        if r != z::Z_OK {
            return Err(r);
        }
        s.next_in = input.as_mut_ptr();
        s.avail_in = input.len() as z::uInt;
        s.next_out = out.as_mut_ptr();
        s.avail_out = out.len() as z::uInt;
        let r = z::deflate(&mut s, if last { z::Z_FINISH } else { z::Z_SYNC_FLUSH });
        assert!(r == z::Z_OK || r == z::Z_STREAM_END, "deflate {r}");
        out.truncate(s.total_out as usize);
        z::deflateEnd(&mut s);
    }
    if !last {
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
    }
    Ok(out)
}

/// Deterministic test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// JSON-like text of `n` bytes: repeats near and far, what relays carry.
fn json(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut s = String::from("{\"trades\":[");
    while s.len() < n {
        let r = rng.next();
        s += &format!(
            "{{\"id\":{},\"price\":\"{}.{:02}\",\"side\":\"{}\"}},",
            600_000 + r % 1000,
            43_000 + r % 97,
            r % 100,
            if r.is_multiple_of(2) { "buy" } else { "sell" }
        );
    }
    s.truncate(n);
    s.into_bytes()
}

/// A block of noise repeated after `gap` more bytes of noise: the only way to compress it is a
/// back-reference of `gap + 300` bytes.
fn far_repeat(rng: &mut Rng, gap: usize) -> Vec<u8> {
    let block = rng.bytes(300);
    let mut v = block.clone();
    v.extend(rng.bytes(gap));
    v.extend(&block);
    v
}

fn corpus() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x5eed);
    let mut c = vec![b"Hello".to_vec(), vec![0; 5000], b"ab".repeat(3000)];
    for n in [100, 256, 257, 600, 1500, 2048, 2049, 5000, 20_000, 40_000] {
        c.push(json(&mut rng, n));
    }
    for gap in [0, 100, 200, 212, 213, 250, 500, 1000, 3000, 9000, 33_000] {
        c.push(far_repeat(&mut rng, gap));
    }
    c
}

#[test]
fn our_frames_inflate_in_real_zlib_at_exactly_the_window_they_need() {
    let mut c = Compressor::new();
    for payload in corpus() {
        for bits in 8..=15 {
            let limit = WindowBits::new(bits).unwrap();
            let d = c.compress(&payload, limit);
            assert!(d.needs() <= limit);
            let got = c_inflate(d.bytes(), d.needs().get(), 1);
            assert_eq!(
                got.as_deref(),
                Ok(&payload[..]),
                "{} bytes compressed for {bits} bits, needs {}",
                payload.len(),
                d.needs().get()
            );
        }
    }
}

#[test]
fn zlib_9_bit_output_inflates_with_8_bits_and_15_bit_output_does_not() {
    let mut rng = Rng(7);
    for gap in [0, 150, 212, 400] {
        let payload = far_repeat(&mut rng, gap);
        // C zlib and zlib-rs alike: with a 9-bit window, nothing refers more than 250 back.
        let c9 = c_deflate(&payload, 9, 6, false).unwrap();
        assert_eq!(
            c_inflate(&c9, 8, 1).as_deref(),
            Ok(&payload[..]),
            "C, gap {gap}"
        );
        let mut rs9 = Compress::new_with_window_bits(Compression::new(6), false, 9);
        let mut out = Vec::with_capacity(2 * payload.len() + 64);
        rs9.compress_vec(&payload, &mut out, FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - TAIL.len());
        assert_eq!(
            c_inflate(&out, 8, 1).as_deref(),
            Ok(&payload[..]),
            "rs, gap {gap}"
        );
    }
    // The check can fail: 15-bit output with a 300-byte reference does not inflate with 8 bits
    // (the 300-byte block at distance 300 + 0 is one back-reference)...
    let payload = far_repeat(&mut rng, 0);
    let mut rs15 = Compress::new_with_window_bits(Compression::new(6), false, 15);
    let mut out = Vec::with_capacity(2 * payload.len() + 64);
    rs15.compress_vec(&payload, &mut out, FlushCompress::Sync)
        .unwrap();
    out.truncate(out.len() - TAIL.len());
    assert!(out.len() < 400, "the repeat was found");
    assert!(c_inflate(&out, 8, 1).is_err());
    assert_eq!(c_inflate(&out, 10, 1).as_deref(), Ok(&payload[..]));
    // ...and `needs` is not loose: a 2 KiB message with a 1,500-byte reference needs 11 bits.
    let payload = far_repeat(&mut rng, 1200);
    let mut c = Compressor::new();
    let d = c.compress(&payload, WindowBits::MAX);
    assert_eq!(d.needs().get(), 11);
    assert!(c_inflate(d.bytes(), 10, 1).is_err());
    assert!(c_inflate(d.bytes(), 11, 1).is_ok());
}

#[test]
fn zlib_refuses_to_deflate_with_8_bits() {
    // zlib.h: "windowBits value of 8 (a window size of 256 bytes) is not supported"; for raw
    // deflate it is an error, which is why the 9-bit compressor stands in for it.
    assert_eq!(c_deflate(b"x", 8, 6, false), Err(z::Z_STREAM_ERROR));
    assert!(c_deflate(b"x", 9, 6, false).is_ok());
}

#[test]
fn what_real_zlib_clients_send_inflates_whole_or_in_fragments() {
    let mut inflater = Inflater::new();
    let mut rng = Rng(99);
    for payload in corpus() {
        for (bits, level) in [(9, 1), (9, 6), (12, 6), (15, 1), (15, 6), (15, 9)] {
            for last in [false, true] {
                let sent = c_deflate(&payload, bits, level, last).unwrap();
                let mut out = Vec::new();
                inflater.inflate(&sent, &mut out, 1 << 20).unwrap();
                assert_eq!(out, payload, "{bits} bits, level {level}, final {last}");
                // The same message in fragments cut anywhere.
                let mut cuts: Vec<usize> = (0..3)
                    .map(|_| rng.next() as usize % (sent.len() + 1))
                    .collect();
                cuts.sort_unstable();
                let parts = [
                    &sent[..cuts[0]],
                    &sent[cuts[0]..cuts[1]],
                    &sent[cuts[1]..cuts[2]],
                    &sent[cuts[2]..],
                ];
                out.clear();
                inflater.inflate_parts(parts, &mut out, 1 << 20).unwrap();
                assert_eq!(out, payload, "in parts at {cuts:?}");
            }
        }
    }
}

#[test]
fn rfc_7692_examples() {
    let hello = b"Hello".to_vec();
    let cases: [(&str, &[&[u8]]); 6] = [
        // §7.2.3.1, in one frame and in two fragments.
        ("one block", &[&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]]),
        (
            "fragments",
            &[&[0xf2, 0x48, 0xcd], &[0xc9, 0xc9, 0x07, 0x00]],
        ),
        // §7.2.3.3: a block with no compression.
        (
            "stored",
            &[&[
                0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ]],
        ),
        // §7.2.3.4: a block with BFINAL set, then the 0x00 the RFC adds.
        (
            "bfinal",
            &[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00]],
        ),
        // ... and without it, as some senders do: the tail is then not needed.
        (
            "bfinal alone",
            &[&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]],
        ),
        // §7.2.3.5: two blocks in one message.
        (
            "two blocks",
            &[&[
                0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
            ]],
        ),
    ];
    let mut inflater = Inflater::new();
    for (name, parts) in cases {
        let mut out = Vec::new();
        inflater
            .inflate_parts(parts.iter().copied(), &mut out, 100)
            .unwrap();
        assert_eq!(out, hello, "{name}");
        if name != "bfinal alone" {
            // The examples are what C zlib makes of them too.
            assert_eq!(c_inflate(&parts.concat(), 15, 64).unwrap(), hello, "{name}");
        }
    }
    // §7.2.3.6: an empty message; and no data at all, which zlib-based peers take as empty.
    let mut out = Vec::new();
    inflater.inflate(&[0x00], &mut out, 0).unwrap();
    inflater.inflate(&[], &mut out, 0).unwrap();
    inflater.inflate_parts([&[][..], &[]], &mut out, 0).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_bomb_stops_at_the_limit() {
    const LIMIT: usize = 64 * 1024;
    let zeros = vec![0u8; 1 << 20];
    let ours = Compressor::new()
        .compress(&zeros, WindowBits::MAX)
        .bytes()
        .to_vec();
    let theirs = c_deflate(&zeros, 15, 9, false).unwrap();
    let mut inflater = Inflater::new();
    for bomb in [ours, theirs] {
        assert!(bomb.len() < 2048, "{} bytes", bomb.len());
        let mut out = Vec::new();
        let r = inflater.inflate(&bomb, &mut out, LIMIT);
        assert_eq!(r, Err(InflateError::TooBig));
        assert_eq!(r.unwrap_err().close_code(), 1009);
        assert_eq!(out.len(), LIMIT + 1, "stopped one byte past the limit");
        assert!(out.capacity() <= LIMIT + 1, "allocated {}", out.capacity());
        // In fragments: the same, at the fragment where it crosses.
        let mut out = Vec::new();
        let r = inflater.inflate_parts(bomb.chunks(10), &mut out, LIMIT);
        assert_eq!(r, Err(InflateError::TooBig));
        assert!(out.capacity() <= LIMIT + 1);
        // A buffer already larger than the limit (a worker's, reused) gets no further either.
        let mut out = Vec::with_capacity(1 << 20);
        out.extend_from_slice(b"kept");
        assert_eq!(
            inflater.inflate(&bomb, &mut out, LIMIT),
            Err(InflateError::TooBig)
        );
        assert_eq!(out.len(), 4 + LIMIT + 1);
    }
}

#[test]
fn output_past_the_limit_is_too_big_even_if_an_error_follows() {
    // Found by the fuzzer: 97 bytes of valid output, then an invalid code. In one piece zlib
    // reports the error in the call that fills the output; in fragments the output fills first.
    let payload = [
        0x72, 0x95, 0x61, 0x16, 0x5d, 0x45, 0x11, 0x72, 0xf7, 0xa9, 0xaa, 0xc5, 0x05, 0xd2, 0x65,
        0xb8, 0x00, 0x00, 0x00, 0x01, 0x00, 0x05, 0x00, 0xfa, 0x00,
    ];
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    assert_eq!(
        inflater.inflate(&payload, &mut out, 96),
        Err(InflateError::TooBig)
    );
    let mut out = Vec::new();
    let parts = payload.chunks(1);
    assert_eq!(
        inflater.inflate_parts(parts, &mut out, 96),
        Err(InflateError::TooBig)
    );
    // With room for it all, the error is what it is.
    let mut out = Vec::new();
    assert_eq!(
        inflater.inflate(&payload, &mut out, 1000),
        Err(InflateError::Invalid)
    );
}

#[test]
fn the_limit_is_exact() {
    let mut inflater = Inflater::new();
    let mut c = Compressor::new();
    let msg = vec![b'x'; 1000];
    let d = c.compress(&msg, WindowBits::MAX).bytes().to_vec();
    let mut out = Vec::new();
    assert_eq!(inflater.inflate(&d, &mut out, 1000), Ok(()));
    assert_eq!(out, msg);
    out.clear();
    assert_eq!(
        inflater.inflate(&d, &mut out, 999),
        Err(InflateError::TooBig)
    );
    // What is already in `out` does not count.
    let mut out = b"prefix".to_vec();
    assert_eq!(inflater.inflate(&d, &mut out, 1000), Ok(()));
    assert_eq!(out.len(), 1006);
    assert!(
        max_compressed_size(1000) >= c_deflate(&Rng(3).bytes(1000), 15, 1, false).unwrap().len()
    );
}

#[test]
fn broken_data_is_invalid_and_the_inflater_recovers() {
    let cases: [(&str, &[u8]); 9] = [
        ("reserved block type", &[0xff, 0xff]),
        ("distance before the start", &[0x02, 0x02, 0x00]),
        (
            "stored block cut short",
            &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65],
        ),
        // These two inflate without an error, the tail included: only the end probe sees
        // that the message stops inside a block.
        (
            "long stored block cut short",
            &[0x00, 0x0a, 0x00, 0xf5, 0xff, 0x48, 0x65],
        ),
        ("last byte lost", &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07]),
        (
            "stored lengths disagree",
            &[0x00, 0x05, 0x00, 0x00, 0x00, 0x48],
        ),
        ("huffman block cut short", &[0xf2, 0x48, 0xcd]),
        (
            "junk after a final block",
            &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xff],
        ),
        ("a final block cut short", &[0xf3, 0x48]),
    ];
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    for (name, data) in cases {
        out.clear();
        let r = inflater.inflate(data, &mut out, 1 << 16);
        assert_eq!(r, Err(InflateError::Invalid), "{name}: {out:?}");
        assert_eq!(r.unwrap_err().close_code(), 1007);
        // The next message is fine.
        out.clear();
        inflater
            .inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], &mut out, 100)
            .unwrap();
        assert_eq!(out, b"Hello", "after {name}");
    }
}

#[test]
fn round_trips_through_our_own_inflater() {
    let mut rng = Rng(42);
    let mut c = Compressor::new();
    let mut inflater = Inflater::new();
    let mut out = Vec::new();
    for n in [0, 1, 100, 1000, 65_535, 65_536, 300_000] {
        for payload in [json(&mut rng, n), rng.bytes(n)] {
            for bits in [8, 9, 11, 15] {
                let d = c.compress(&payload, WindowBits::new(bits).unwrap());
                out.clear();
                inflater.inflate(d.bytes(), &mut out, n).unwrap();
                assert!(out == payload, "{n} bytes at {bits} bits");
            }
        }
    }
    assert_eq!(c.calls(), 7 * 2 * 4);
}
