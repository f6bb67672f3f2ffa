//! Compressed client messages: `wsrelay::deflate::Inflater` on arbitrary deflate data, whole and
//! cut into fragments, under a small and a large limit. Checked on the way: no panic; never more
//! than the limit appended, never more than one byte past it produced, never more allocated than
//! that; the same answer whole or in fragments, and from a fresh inflater or one that has just
//! inflated (or refused) the previous input; and what inflates compresses back with
//! `wsrelay::deflate::Compressor` and inflates to the same bytes.
//!
//! Input: byte 0 picks the limit (bit 0: 64 KiB or the low 7 bits × 16 bytes) and the number of
//! cuts (bits 4–7); then two bytes per cut (its offset); the rest is the message's payload.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use wsrelay::deflate::{Compressor, InflateError, Inflater, WindowBits};

thread_local! {
    /// Used for every input, as a worker uses its inflater for every connection's messages.
    static REUSED: RefCell<Inflater> = RefCell::new(Inflater::new());
    static COMPRESSOR: RefCell<Compressor> = RefCell::new(Compressor::new());
}

fn run(inflater: &mut Inflater, parts: &[&[u8]], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    let r = inflater.inflate_parts(parts.iter().copied(), &mut out, limit);
    assert!(
        out.len() <= limit + 1,
        "{} bytes for a limit of {limit}",
        out.len()
    );
    assert!(out.capacity() <= limit + 1, "allocated {}", out.capacity());
    match r {
        Ok(()) => assert!(out.len() <= limit),
        Err(InflateError::TooBig) => assert_eq!(out.len(), limit + 1),
        Err(InflateError::Invalid) => {}
    }
    r.map(|()| out)
}

fuzz_target!(|data: &[u8]| {
    let [head, rest @ ..] = data else {
        return;
    };
    let limit = if head & 1 != 0 {
        64 * 1024
    } else {
        usize::from(head >> 1 & 0x07) * 16
    };
    let cuts = usize::from(head >> 4).min(rest.len() / 2);
    let (offsets, payload) = rest.split_at(cuts * 2);
    let mut points: Vec<usize> = offsets
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    points.sort_unstable();
    let mut parts = Vec::with_capacity(points.len() + 1);
    let mut from = 0;
    for to in points.into_iter().chain([payload.len()]) {
        parts.push(&payload[from..to]);
        from = to;
    }

    let fresh = run(&mut Inflater::new(), &[payload], limit);
    let reused = REUSED.with(|i| run(&mut i.borrow_mut(), &[payload], limit));
    assert_eq!(fresh, reused, "a reused inflater answers differently");
    let fragmented = run(&mut Inflater::new(), &parts, limit);
    assert_eq!(fresh, fragmented, "fragments change the answer");

    if let Ok(message) = fresh {
        let again = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            let d = c.compress(&message, WindowBits::MAX);
            run(&mut Inflater::new(), &[d.bytes()], limit)
        });
        assert_eq!(again.as_deref(), Ok(&message[..]), "no round trip");
    }
});
