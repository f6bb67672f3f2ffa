//! A published message's frames, encoded once by the thread that publishes it: the plain frame,
//! and in a room with compression on the compressed frame that every recipient with
//! permessage-deflate shares (`bus::Frame`). The small-window frame, needed only by a recipient
//! that asked for a window smaller than a message needs, is made at most once, by the first
//! worker that has such a recipient.

use std::sync::OnceLock;

use super::super::bus::{Compressed, Frame, V1};
use super::super::wire::{self, Opcode};
use crate::deflate::{Compressor, WindowBits};
use crate::metrics::Tally;

/// The frames of a message of `op` with `payload`, without credit yet. `compress_from`: the
/// room's `compression_min_size` if the room compresses. The payload is deflated once, and the
/// compressed frame kept only if it is smaller.
pub(in crate::server) fn encode(
    op: Opcode,
    payload: &[u8],
    compress_from: Option<u32>,
    compressor: &mut Compressor,
    tally: &mut Tally,
) -> Frame {
    let bytes = wire::shared(op, payload);
    let deflated = match compress_from {
        Some(min) if payload.len() >= min as usize => {
            let d = compressor.compress(payload, WindowBits::MAX);
            tally.deflate_calls += 1;
            tally.deflate_bytes_in += payload.len() as u64;
            tally.deflate_bytes_out += d.bytes().len() as u64;
            d.saves(payload.len()).then(|| Compressed {
                frame: wire::shared_compressed(op, d.bytes()),
                needs: d.needs(),
                small: OnceLock::new(),
            })
        }
        _ => None,
    };
    Frame::new(bytes, deflated)
}

/// The message as `wsrelay.v1` members get it, made once for every worker: a text message as
/// `{"type":"message","seq":N,"data":"<text>"}`, a binary one as its number (8 bytes, big-endian)
/// then its bytes. Compressed when the plain message was (it compresses, and its room compresses).
pub(super) fn v1<'f>(
    frame: &'f Frame,
    seq: u64,
    compressor: &mut Compressor,
    tally: &mut Tally,
) -> &'f V1 {
    frame.v1.get_or_init(|| {
        let (op, payload) = wire::parts(&frame.bytes);
        let body = v1_payload(op, seq, payload);
        let deflated = frame.deflated.as_ref().and_then(|_| {
            let d = compressor.compress(&body, WindowBits::MAX);
            tally.deflate_calls += 1;
            tally.deflate_bytes_in += body.len() as u64;
            tally.deflate_bytes_out += d.bytes().len() as u64;
            d.saves(body.len())
                .then(|| (wire::shared_compressed(op, d.bytes()), d.needs()))
        });
        V1 {
            frame: wire::shared(op, &body),
            deflated,
        }
    })
}

fn v1_payload(op: Opcode, seq: u64, payload: &[u8]) -> Vec<u8> {
    match op {
        Opcode::Binary => {
            let mut body = Vec::with_capacity(8 + payload.len());
            body.extend_from_slice(&seq.to_be_bytes());
            body.extend_from_slice(payload);
            body
        }
        _ => {
            // Text frames were checked to be UTF-8 when they were read.
            let text = String::from_utf8_lossy(payload);
            let mut body = Vec::with_capacity(payload.len() + 48);
            body.extend_from_slice(b"{\"type\":\"message\",\"seq\":");
            body.extend_from_slice(seq.to_string().as_bytes());
            body.extend_from_slice(b",\"data\":");
            serde_json::to_writer(&mut body, &*text).expect("a string serializes");
            body.push(b'}');
            body
        }
    }
}

/// The message's frame compressed with the smallest window (inflates with any), made once for
/// all workers; `None` when it saves nothing (those recipients get the plain frame).
pub(super) fn small<'f>(
    frame: &'f Frame,
    compressed: &'f Compressed,
    compressor: &mut Compressor,
    tally: &mut Tally,
) -> Option<&'f [u8]> {
    compressed
        .small
        .get_or_init(|| {
            let (op, payload) = wire::parts(&frame.bytes);
            let d = compressor.compress(payload, WindowBits::MIN);
            tally.deflate_calls += 1;
            tally.deflate_bytes_in += payload.len() as u64;
            tally.deflate_bytes_out += d.bytes().len() as u64;
            d.saves(payload.len())
                .then(|| wire::shared_compressed(op, d.bytes()))
        })
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    fn inflate(frame: &[u8]) -> Vec<u8> {
        let (_, payload) = wire::parts(frame);
        let mut out = Vec::new();
        Inflater::new().inflate(payload, &mut out, 1 << 20).unwrap();
        out
    }

    #[test]
    fn long_messages_are_deflated_once_short_ones_never() {
        let (mut c, mut t) = (Compressor::new(), Tally::default());
        let json = br#"{"user":"ada","text":"hello hello hello hello","seq":1}"#.repeat(20);
        let f = encode(Opcode::Text, &json, Some(128), &mut c, &mut t);
        assert_eq!(&f.bytes[..], &wire::shared(Opcode::Text, &json)[..]);
        let d = f.deflated.as_ref().expect("compressed");
        assert_eq!(d.frame[0], 0xC1);
        assert_eq!(inflate(&d.frame), json);
        assert_eq!((c.calls(), t.deflate_calls), (1, 1));
        assert_eq!(t.deflate_bytes_in, json.len() as u64);

        // Under the threshold, or a room without compression: no deflate.
        assert!(
            encode(Opcode::Text, &json[..127], Some(128), &mut c, &mut t)
                .deflated
                .is_none()
        );
        assert!(
            encode(Opcode::Text, &json, None, &mut c, &mut t)
                .deflated
                .is_none()
        );
        assert_eq!(c.calls(), 1);
    }

    #[test]
    fn v1_frames_carry_the_sequence_number() {
        let (mut c, mut t) = (Compressor::new(), Tally::default());
        let f = encode(
            Opcode::Text,
            "say \"hé\"\n".as_bytes(),
            None,
            &mut c,
            &mut t,
        );
        let v = v1(&f, 42, &mut c, &mut t);
        let (op, payload) = wire::parts(&v.frame);
        assert_eq!(op, Opcode::Text);
        let json: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "message", "seq": 42, "data": "say \"hé\"\n"})
        );
        assert!(v.deflated.is_none());

        let f = encode(Opcode::Binary, &[1, 2, 3], None, &mut c, &mut t);
        let (op, payload) = wire::parts(&v1(&f, 258, &mut c, &mut t).frame);
        assert_eq!(op, Opcode::Binary);
        assert_eq!(payload, [0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3]);

        // Compressed when the plain message was.
        let json = br#"{"user":"ada","text":"hello hello hello hello"}"#.repeat(20);
        let f = encode(Opcode::Text, &json, Some(128), &mut c, &mut t);
        let v = v1(&f, 7, &mut c, &mut t);
        let (d, _) = v.deflated.as_ref().expect("compressed");
        let inflated: serde_json::Value = serde_json::from_slice(&inflate(d)).unwrap();
        assert_eq!(inflated["seq"], 7);
    }

    #[test]
    fn incompressible_messages_go_plain() {
        let (mut c, mut t) = (Compressor::new(), Tally::default());
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let f = encode(Opcode::Binary, &noise, Some(0), &mut c, &mut t);
        assert!(f.deflated.is_none());
        assert_eq!(c.calls(), 1);
    }

    #[test]
    fn the_small_window_frame_is_made_once_and_inflates_to_the_message() {
        let (mut c, mut t) = (Compressor::new(), Tally::default());
        let json = br#"{"k":"abcdefghij","n":12345}"#.repeat(100);
        let f = encode(Opcode::Binary, &json, Some(0), &mut c, &mut t);
        let d = f.deflated.as_ref().unwrap();
        assert!(d.needs > WindowBits::MIN, "needs {:?}", d.needs);
        let s1 = small(&f, d, &mut c, &mut t).unwrap().to_vec();
        let s2 = small(&f, d, &mut c, &mut t).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1[0], 0xC2);
        assert_eq!(inflate(&s1), json);
        assert_eq!(
            c.calls(),
            2,
            "once for the large window, once for the small"
        );
    }
}
