//! Server-to-client frame bytes. Server frames are never masked, so a message encodes to the same
//! bytes for every recipient: it is encoded here once and shared. Reading and validating client
//! frames is tungstenite's job, not this module's.

/// Frame opcodes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
}

/// The header of a final, unmasked frame of `len` payload bytes, and its length.
fn header(op: Opcode, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | op as u8;
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// One whole frame.
pub fn frame(op: Opcode, payload: &[u8]) -> Vec<u8> {
    let (h, n) = header(op, payload.len());
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
    out
}

/// A frame with a raw opcode (tests build pongs with it).
#[cfg(test)]
pub fn frame_with_opcode(op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(Opcode::Text, payload);
    f[0] = 0x80 | op;
    f
}

/// A data frame to be shared by all recipients: one allocation per message, written in place.
pub fn shared(op: Opcode, payload: &[u8]) -> Box<[u8]> {
    let (h, n) = header(op, payload.len());
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&h[..n]);
    frame.extend_from_slice(payload);
    frame.into_boxed_slice()
}

/// A shared data frame whose payload is compressed: RSV1 set, the "Per-Message Compressed" bit
/// of RFC 7692 §6 (`deflated` is what `deflate::Compressor` made of the message).
pub(crate) fn shared_compressed(op: Opcode, deflated: &[u8]) -> Box<[u8]> {
    let mut frame = shared(op, deflated);
    frame[0] |= 0x40;
    frame
}

/// The opcode and payload of a data frame made by [`shared`] or [`shared_compressed`].
pub(crate) fn parts(frame: &[u8]) -> (Opcode, &[u8]) {
    let op = if frame[0] & 0x0f == Opcode::Binary as u8 {
        Opcode::Binary
    } else {
        Opcode::Text
    };
    let start = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (op, &frame[start..])
}

/// The header of a whole client frame at the start of some input (as far as a frame's bytes
/// tell; whether it is allowed is the reader's business).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHead {
    pub fin: bool,
    /// The three reserved bits, shifted down (RSV1 is 4).
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub mask: [u8; 4],
    /// The header's length in bytes.
    pub header: usize,
    /// The whole frame's length in bytes: header and payload.
    pub len: usize,
}

/// The header of the frame `input` starts with, if the whole frame is in `input`.
pub fn client_frame(input: &[u8]) -> Option<ClientHead> {
    let (&b0, &b1) = (input.first()?, input.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (ext, payload) = match b1 & 0x7f {
        126 => (
            2,
            u64::from(u16::from_be_bytes(input.get(2..4)?.try_into().ok()?)),
        ),
        127 => (8, u64::from_be_bytes(input.get(2..10)?.try_into().ok()?)),
        n => (0, u64::from(n)),
    };
    let header = 2 + ext + if masked { 4 } else { 0 };
    let len = usize::try_from(payload).ok()?.checked_add(header)?;
    if input.len() < len {
        return None;
    }
    let mut mask = [0u8; 4];
    if masked {
        mask.copy_from_slice(&input[header - 4..header]);
    }
    Some(ClientHead {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x07,
        opcode: b0 & 0x0f,
        masked,
        mask,
        header,
        len,
    })
}

/// Unmask a client payload into `out` (of the same length), eight bytes at a time.
pub fn unmask(payload: &[u8], mask: [u8; 4], out: &mut [u8]) {
    debug_assert_eq!(payload.len(), out.len());
    let m = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut src = payload.chunks_exact(8);
    let mut dst = out.chunks_exact_mut(8);
    for (s, d) in (&mut src).zip(&mut dst) {
        let v = u64::from_ne_bytes(s.try_into().expect("8 bytes")) ^ m;
        d.copy_from_slice(&v.to_ne_bytes());
    }
    let done = payload.len() - src.remainder().len();
    for (i, (s, d)) in src.remainder().iter().zip(dst.into_remainder()).enumerate() {
        *d = s ^ mask[(done + i) % 4];
    }
}

/// A close frame with `code` and a reason cut to fit the 123 bytes a control frame allows,
/// on a character boundary.
pub fn close(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(Opcode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        assert_eq!(frame(Opcode::Text, b"hi"), b"\x81\x02hi");
        let f = frame(Opcode::Binary, &[0; 126]);
        assert_eq!(&f[..4], &[0x82, 126, 0, 126]);
        let f = frame(Opcode::Binary, &[0; 65_536]);
        assert_eq!(&f[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(f.len(), 65_546);
    }

    #[test]
    fn shared_frames_match_owned_ones() {
        for len in [0, 1, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(
                &shared(Opcode::Text, &payload)[..],
                &frame(Opcode::Text, &payload)[..]
            );
        }
    }

    #[test]
    fn compressed_frames_set_rsv1_and_carry_the_deflated_payload() {
        use crate::deflate::{Compressor, Inflater, WindowBits};
        let message = "héllo ".repeat(50);
        let mut c = Compressor::new();
        let deflated = c
            .compress(message.as_bytes(), WindowBits::MAX)
            .bytes()
            .to_vec();
        let f = shared_compressed(Opcode::Text, &deflated);
        assert_eq!(f[0], 0xC1, "FIN, RSV1, text");
        assert_eq!(
            &f[..],
            &[&[0xC1, deflated.len() as u8][..], &deflated].concat()[..]
        );
        let mut out = Vec::new();
        Inflater::new().inflate(&f[2..], &mut out, 1000).unwrap();
        assert_eq!(out, message.as_bytes());
    }

    #[test]
    fn parts_undo_shared() {
        for len in [0, 125, 126, 65_536] {
            let payload = vec![7u8; len];
            for op in [Opcode::Text, Opcode::Binary] {
                let f = shared(op, &payload);
                assert_eq!(parts(&f), (op, &payload[..]));
                assert_eq!(parts(&shared_compressed(op, &payload)), (op, &payload[..]));
            }
        }
    }

    #[test]
    fn unmask_matches_the_bytewise_xor() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [0, 1, 7, 8, 9, 16, 31, 512] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = vec![0; len];
            unmask(&payload, mask, &mut out);
            let want: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn client_frame_heads_need_the_whole_frame() {
        let f = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
        let h = client_frame(&f).unwrap();
        assert_eq!((h.fin, h.rsv, h.opcode, h.masked), (true, 0, 1, true));
        assert_eq!((h.mask, h.header, h.len), ([1, 2, 3, 4], 6, 8));
        for cut in 0..f.len() {
            assert_eq!(client_frame(&f[..cut]), None, "{cut}");
        }
        let mut long = vec![0x02, 126, 0, 200];
        long.extend([0; 200]);
        let h = client_frame(&long).unwrap();
        assert_eq!((h.fin, h.masked, h.header, h.len), (false, false, 4, 204));
        // A 64-bit length nobody can send whole.
        let huge = [0x82, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(client_frame(&huge), None);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let f = close(1008, &"é".repeat(100));
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert!(f.len() - 2 <= 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(&f[2..4], &1008u16.to_be_bytes());
    }
}
