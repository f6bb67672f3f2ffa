//! The compressed-message path of a session that negotiated permessage-deflate (`intake`).

use super::*;
use crate::deflate::{Compressor, WindowBits};

const TIMEOUT: Duration = Duration::from_secs(5);
const LIMIT: usize = 64 * 1024;

/// A masked client frame with first byte `first`.
fn client(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn deflate(message: &[u8]) -> Vec<u8> {
    Compressor::new()
        .compress(message, WindowBits::MAX)
        .bytes()
        .to_vec()
}

fn session() -> Session {
    Session::with_deflate(LIMIT, 0, true, Vec::new(), Instant::now())
}

type Got = Vec<(Opcode, Vec<u8>)>;

/// Feed `input` in `chunk`-byte pieces: the messages published, the bytes out (pong last).
fn run(s: &mut Session, input: &[u8], chunk: usize) -> (Got, Vec<u8>) {
    let now = Instant::now();
    let (mut got, mut out, mut pongs) = (Vec::new(), Vec::new(), Vec::new());
    let mut inflater = Inflater::new();
    for piece in input.chunks(chunk.max(1)) {
        s.feed(
            piece,
            now,
            TIMEOUT,
            &mut out,
            &mut pongs,
            &mut inflater,
            &mut |op, p| got.push((op, p.to_vec())),
        );
    }
    out.extend(pongs.concat());
    (got, out)
}

fn closed_with(out: &[u8], code: u16) -> bool {
    out.len() >= 4 && out[0] == 0x88 && out[2..4] == code.to_be_bytes()
}

#[test]
fn compressed_and_plain_messages_come_out_in_order_however_split() {
    let text = "héllo wörld ".repeat(40);
    let z = deflate(text.as_bytes());
    let bin: Vec<u8> = (0..3000u32).map(|i| (i % 7) as u8).collect();
    let zb = deflate(&bin);
    let (a, b) = zb.split_at(zb.len() / 2);
    let mut input = client(0x81, b"plain first");
    input.extend(client(0xC1, &z)); // one compressed frame
    input.extend(client(0x42, a)); // compressed, fragmented...
    input.extend(client(0x89, b"ping")); // ...with a ping between fragments...
    input.extend(client(0x00, &[])); // ...and an empty one
    input.extend(client(0x80, b)); // ...last fragment
    input.extend(client(0x01, b"plain ")); // a plain fragmented message
    input.extend(client(0x80, b"last"));
    input.extend(client(0xC1, &[0x00])); // an empty compressed message (RFC 7692 §7.2.3.6)
    for chunk in [1, 2, 5, 13, input.len()] {
        let mut s = session();
        let (got, out) = run(&mut s, &input, chunk);
        assert_eq!(
            got,
            [
                (Opcode::Text, b"plain first".to_vec()),
                (Opcode::Text, text.as_bytes().to_vec()),
                (Opcode::Binary, bin.clone()),
                (Opcode::Text, b"plain last".to_vec()),
                (Opcode::Text, Vec::new()),
            ],
            "chunk {chunk}"
        );
        assert_eq!(out, wire::frame_with_opcode(0xA, b"ping"), "the pong");
        assert!(s.is_open());
    }
}

#[test]
fn early_bytes_go_through_the_compressed_path() {
    let z = deflate(&b"early bird ".repeat(30));
    let mut early = client(0xC2, &z);
    early.extend(client(0x82, b"plain"));
    let mut s = Session::with_deflate(LIMIT, 0, true, early, Instant::now());
    let (got, _) = run(&mut s, &[], 1);
    assert!(got.is_empty(), "nothing until fed");
    let mut got = Vec::new();
    s.feed(
        &client(0xC2, &deflate(b"after")),
        Instant::now(),
        TIMEOUT,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut Inflater::new(),
        &mut |op, p| got.push((op, p.to_vec())),
    );
    assert_eq!(
        got,
        [
            (Opcode::Binary, b"early bird ".repeat(30)),
            (Opcode::Binary, b"plain".to_vec()),
            (Opcode::Binary, b"after".to_vec()),
        ]
    );
}

#[test]
fn misplaced_rsv1_and_broken_frames_close_with_1002() {
    let z = deflate(b"some data some data");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("RSV1 on a ping", client(0xC9, b"x")),
        ("RSV1 on a close", client(0xC8, &1000u16.to_be_bytes())),
        ("RSV1 on a pong", client(0xCA, b"")),
        (
            "RSV1 on a continuation",
            [client(0x41, &z[..3]), client(0xC0, &z[3..])].concat(),
        ),
        (
            "RSV1 in a plain fragmented message",
            [client(0x01, b"a"), client(0xC1, &z)].concat(),
        ),
        (
            "a new message inside a compressed one",
            [client(0x41, &z[..3]), client(0x81, b"x")].concat(),
        ),
        ("RSV1 on a reserved opcode", client(0xC3, &z)),
        ("RSV1 with RSV2", client(0xE1, &z)),
        ("RSV1 unmasked", [&[0xC1, z.len() as u8][..], &z].concat()),
        (
            "a 64-bit length with its top bit",
            vec![0xC2, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        ),
        (
            "a plain continuation with nothing to continue",
            client(0x80, b"x"),
        ),
        ("RSV2 on a plain frame", client(0xA1, b"x")),
    ];
    for (what, input) in cases {
        for chunk in [1, input.len()] {
            let mut s = session();
            let (got, out) = run(&mut s, &input, chunk);
            assert!(got.is_empty(), "{what}");
            assert!(closed_with(&out, 1002), "{what}: {out:?}");
            assert_eq!(s.reason(), Some(CloseReason::Protocol), "{what}");
            assert!(!s.is_open());
        }
    }
}

#[test]
fn without_the_extension_rsv1_is_1002() {
    let mut s = Session::new(LIMIT, 0, true, Vec::new(), Instant::now());
    let (got, out) = run(&mut s, &client(0xC1, &deflate(b"hello hello")), 100);
    assert!(got.is_empty());
    assert!(closed_with(&out, 1002));
}

#[test]
fn invalid_deflate_is_1007_and_bad_utf8_inside_is_1007() {
    let mut s = session();
    let (got, out) = run(&mut s, &client(0xC2, &[0xff; 10]), 3);
    assert!(got.is_empty());
    assert!(closed_with(&out, 1007));
    assert_eq!(s.reason(), Some(CloseReason::BadDeflate));

    let mut s = session();
    let (got, out) = run(&mut s, &client(0xC1, &deflate(&[b'a', 0xff, 0xfe])), 3);
    assert!(got.is_empty());
    assert!(closed_with(&out, 1007));
    assert_eq!(s.reason(), Some(CloseReason::BadUtf8));
}

#[test]
fn a_bomb_stops_at_the_limit_with_1009() {
    let zeros = vec![0u8; 1 << 20];
    let z = deflate(&zeros);
    assert!(
        z.len() < 2048,
        "1 MiB of zeros deflates to {} bytes",
        z.len()
    );
    let mut s = session();
    let (got, out) = run(&mut s, &client(0xC2, &z), 4096);
    assert!(got.is_empty());
    assert!(closed_with(&out, 1009));
    assert_eq!(s.reason(), Some(CloseReason::TooBig));
    // Exactly the limit passes.
    let mut s = session();
    let (got, _) = run(&mut s, &client(0xC2, &deflate(&zeros[..LIMIT])), 4096);
    assert_eq!(got, [(Opcode::Binary, zeros[..LIMIT].to_vec())]);
}

#[test]
fn compressed_bytes_past_their_bound_are_1009_before_they_are_kept() {
    let bound = crate::deflate::max_compressed_size(LIMIT);
    // A header announcing more than the bound: refused on the header alone.
    let mut header = vec![0xC2, 0xFF];
    header.extend_from_slice(&(bound as u64 + 1).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let mut s = session();
    let (_, out) = run(&mut s, &header, 1);
    assert!(closed_with(&out, 1009));
    // Fragments that add up past it.
    let half = vec![0u8; bound / 2 + 1];
    let input = [client(0x42, &half), client(0x80, &half)].concat();
    let mut s = session();
    let (_, out) = run(&mut s, &input, 8192);
    assert!(closed_with(&out, 1009));
}

#[test]
fn publish_rights_rate_and_closing_apply_to_compressed_messages() {
    let z = client(0xC1, &deflate(b"compressed hello"));
    let mut s = Session::with_deflate(LIMIT, 0, false, Vec::new(), Instant::now());
    let (got, out) = run(&mut s, &z, 100);
    assert!(got.is_empty() && closed_with(&out, 1008));

    let mut s = Session::with_deflate(LIMIT, 1, true, Vec::new(), Instant::now());
    let (got, out) = run(&mut s, &[z.clone(), z.clone()].concat(), 100);
    assert_eq!(got.len(), 1);
    assert!(closed_with(&out, 1008));

    // During our close, compressed data is read and dropped, and the peer's close completes it.
    let mut s = session();
    let mut out = Vec::new();
    s.close(
        1001,
        "bye",
        CloseReason::Shutdown,
        Instant::now(),
        TIMEOUT,
        &mut out,
    );
    let input = [z.clone(), client(0x88, &1001u16.to_be_bytes()), z].concat();
    let (got, out) = run(&mut s, &input, 7);
    assert!(got.is_empty() && out.is_empty());
    assert!(matches!(s.phase(), Phase::Closed { .. }));
}

#[test]
fn a_reload_changes_the_inflate_limit() {
    let message = vec![b'x'; 2000];
    let z = client(0xC2, &deflate(&message));
    let mut s = session();
    s.set_max_message_size(1000);
    let (_, out) = run(&mut s, &z, 100);
    assert!(closed_with(&out, 1009));
}
