//! The frame/message path of a connection: arbitrary client bytes, cut at arbitrary points, fed
//! to the server's own socket-free connection state, `wsrelay::server::session::Session` — the
//! `tungstenite::protocol::WebSocketContext` configured as every connection is
//! (`wsrelay::server::ws_config`: 256-byte read buffer, write-through, 64 KiB messages and
//! frames, server role) plus what the relay decides on top (close codes, the message rate,
//! subscribe-only clients, the phases of a close). Checked on the way: no panic; nothing
//! published over the size limit, as invalid UTF-8, past the rate, from a subscribe-only client
//! or after the WebSocket is over; and the bytes written back are whole server frames.
//!
//! With bit 7 of byte 0 the client negotiated permessage-deflate (`Session::with_deflate`): its
//! frames with RSV1 go through the compressed path (the split in front of tungstenite, the
//! bounded inflate), checked the same way; a compressed message's inflated size is held to the
//! same limit. The seed corpus should hold compressed frames (`fuzz/run` seeds it).
//!
//! Input: byte 0 holds the number of cuts (low 4 bits), whether the first chunk arrives with the
//! request head (bit 4), whether the client may publish (bit 5), whether the room has a rate
//! (bit 6) and whether permessage-deflate was negotiated (bit 7); byte 1 is the time in ms that passes between chunks; then two bytes per cut (its
//! offset); the rest is what the client sends.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wsrelay::deflate::Inflater;
use wsrelay::metrics::CloseReason;
use wsrelay::server::Opcode;
use wsrelay::server::session::{Phase, Session};

/// The server's default `max_message_size`.
const MAX_MESSAGE: usize = 64 * 1024;
/// Messages per second when the room has a rate.
const RATE: u32 = 5;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let [flags, step, rest @ ..] = data else {
        return;
    };
    let cuts = usize::from(flags & 0x0f).min(rest.len() / 2);
    let (offsets, stream) = rest.split_at(cuts * 2);
    let mut points: Vec<usize> = offsets
        .chunks(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    points.sort_unstable();
    points.push(stream.len());
    let mut chunks = Vec::with_capacity(points.len());
    let mut from = 0;
    for to in points {
        chunks.push(&stream[from..to]);
        from = to;
    }
    let mut chunks = chunks.into_iter();

    let may_publish = flags & 0x20 != 0;
    let rate = if flags & 0x40 != 0 { RATE } else { 0 };
    let step = Duration::from_millis(u64::from(*step));
    let start = Instant::now();
    let early = if flags & 0x10 != 0 {
        chunks.next().unwrap_or_default().to_vec()
    } else {
        Vec::new()
    };
    let mut session = if flags & 0x80 != 0 {
        Session::with_deflate(MAX_MESSAGE, rate, may_publish, early, start)
    } else {
        Session::new(MAX_MESSAGE, rate, may_publish, early, start)
    };
    let mut inflater = Inflater::new();

    let mut out = Vec::new();
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let mut published = 0u64;
    let mut now = start;
    // The early bytes are processed with an empty feed first, as the worker does.
    for chunk in std::iter::once(&[][..]).chain(chunks) {
        let over = !session.is_open();
        let inflater = &mut inflater;
        session.feed(chunk, now, CLOSE_TIMEOUT, &mut out, &mut pongs, inflater, &mut |op, payload| {
            assert!(!over, "published after the WebSocket was over");
            assert!(may_publish, "a subscribe-only client published");
            assert!(
                payload.len() <= MAX_MESSAGE,
                "{} bytes published",
                payload.len()
            );
            match op {
                Opcode::Text => assert!(std::str::from_utf8(payload).is_ok(), "bad UTF-8"),
                Opcode::Binary => {}
                op => panic!("published a {op:?} frame"),
            }
            published += 1;
        });
        if rate > 0 {
            // A full bucket, then `rate` tokens a second.
            let allowed =
                u64::from(rate) + (now - start).as_millis() as u64 * u64::from(rate) / 1000;
            assert!(
                published <= allowed + 1,
                "{published} messages past a rate of {rate}/s"
            );
        }
        // Pongs are bounded, each a whole pong frame of at most 125 bytes of payload.
        assert!(pongs.iter().map(Vec::len).sum::<usize>() <= 1024);
        for p in pongs.drain(..) {
            assert!(p.len() <= 127 && p[0] == 0x8A && usize::from(p[1]) == p.len() - 2);
        }
        if !session.is_open() {
            assert!(session.reason().is_some(), "over without a reason");
        }
        now += step;
    }
    if session.is_open() {
        // Our side closes (idle, shutdown) and reads what is left: the closing state.
        session.close(
            1001,
            "going away",
            CloseReason::Shutdown,
            now,
            CLOSE_TIMEOUT,
            &mut out,
        );
        assert!(!session.is_open());
        let inflater = &mut inflater;
        session.feed(stream, now, CLOSE_TIMEOUT, &mut out, &mut pongs, inflater, &mut |_, _| {
            panic!("published while closing")
        });
    }
    if let Phase::Lingering { .. } = session.phase() {
        session.shut();
        assert!(!session.shut(), "shut twice");
    }
    assert!(session.expired(now + CLOSE_TIMEOUT));
    server_frames(&out);
});

/// What the server wrote: a run of complete, unmasked pongs and close frames.
fn server_frames(mut out: &[u8]) {
    while !out.is_empty() {
        assert!(out.len() >= 2, "truncated frame header");
        assert_eq!(out[1] & 0x80, 0, "a server frame is never masked");
        let (len, header) = match out[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([out[2], out[3]])), 4),
            127 => panic!("a control frame with a 64-bit length"),
            n => (usize::from(n), 2),
        };
        assert!(matches!(out[0], 0x88 | 0x8A), "opcode {:#x}", out[0]);
        assert!(len <= 125, "control frame of {len} bytes");
        assert!(out.len() >= header + len, "truncated frame");
        out = &out[header + len..];
    }
}
