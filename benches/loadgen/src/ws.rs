//! The client side of WebSocket, hand-rolled for speed: the upgrade request, the 101 check,
//! masked client frames, unmasked server frames. Nothing here allocates per message.

use crate::{inflate, v1};

/// RFC 6455's sample key and its accept value: every connection may use the same key.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// What a client offers in its upgrade request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// permessage-deflate, as Chromium offers it.
    pub deflate: bool,
    /// The subprotocol `wsrelay.v1`.
    pub v1: bool,
}

/// The upgrade request for `path` on `host` (e.g. "127.0.0.1:8080"), with what it `offer`s.
pub fn request(host: &str, path: &str, offer: Offer) -> Vec<u8> {
    let mut extra = String::new();
    if offer.deflate {
        extra += &format!("Sec-WebSocket-Extensions: {}\r\n", inflate::OFFER);
    }
    if offer.v1 {
        extra += &format!("Sec-WebSocket-Protocol: {}\r\n", v1::PROTOCOL);
    }
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// What the bytes read so far say about the server's answer to the upgrade.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// No blank line yet.
    Incomplete,
    /// A 101 with the right accept key; the head is `len` bytes (frames may follow), what it
    /// says of permessage-deflate, and whether it chose `wsrelay.v1`.
    Upgraded {
        len: usize,
        deflate: Option<inflate::Agreed>,
        v1: bool,
    },
    /// Anything else; the status line, for the report.
    Refused(String),
}

pub fn parse_head(buf: &[u8]) -> Head {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 16 * 1024 {
            return Head::Refused("response head over 16 KiB".into());
        }
        return Head::Incomplete;
    };
    let head = &buf[..end + 4];
    let line_end = find(head, b"\r\n").unwrap_or(end);
    let line = &head[..line_end];
    if !line.starts_with(b"HTTP/1.1 101") {
        return Head::Refused(String::from_utf8_lossy(line).into_owned());
    }
    if find(head, ACCEPT).is_none() {
        return Head::Refused("101 without the expected Sec-WebSocket-Accept".into());
    }
    let head = String::from_utf8_lossy(head);
    let headers = || {
        head.split("\r\n")
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim(), value.trim()))
    };
    let deflate = headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .find_map(|(_, value)| inflate::agreed(value));
    let v1 = headers().any(|(name, value)| {
        name.eq_ignore_ascii_case("sec-websocket-protocol") && value == v1::PROTOCOL
    });
    Head::Upgraded {
        len: end + 4,
        deflate,
        v1,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Append a final, masked client frame.
pub fn encode(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    let len = payload.len();
    out.push(0x80 | op);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A server frame, borrowed from the read buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub rsv1: bool,
    pub op: u8,
    pub payload: &'a [u8],
}

/// Decode one server frame from the front of `buf`: `Ok(None)` when it is not all there yet,
/// else the frame and the bytes it took. Server frames must not be masked.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err("masked server frame");
    }
    let (len, at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if buf.len() - at < len {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            fin: b0 & 0x80 != 0,
            rsv1: b0 & 0x40 != 0,
            op: b0 & 0x0f,
            payload: &buf[at..at + len],
        },
        at + len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_frame_round_trips_through_unmasking() {
        let mut out = Vec::new();
        encode(&mut out, OP_BINARY, b"hello", [1, 2, 3, 4]);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x85);
        let unmasked: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ [1, 2, 3, 4][i & 3])
            .collect();
        assert_eq!(unmasked, b"hello");
    }

    #[test]
    fn decode_waits_for_whole_frames() {
        let mut f = vec![0x82, 126, 0, 200];
        f.extend(std::iter::repeat_n(7u8, 200));
        assert!(decode(&f[..100]).unwrap().is_none());
        let (fr, used) = decode(&f).unwrap().unwrap();
        assert_eq!((fr.op, fr.payload.len(), used), (OP_BINARY, 200, 204));
    }

    #[test]
    fn head_needs_101_and_accept() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x00";
        assert_eq!(
            parse_head(ok),
            Head::Upgraded {
                len: ok.len() - 2,
                deflate: None,
                v1: false
            }
        );
        let chosen = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: wsrelay.v1\r\n\r\n";
        assert!(matches!(
            parse_head(chosen),
            Head::Upgraded { v1: true, .. }
        ));
        let deflated = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nsec-websocket-extensions: permessage-deflate; server_no_context_takeover\r\n\r\n";
        assert!(matches!(
            parse_head(deflated),
            Head::Upgraded {
                deflate: Some(inflate::Agreed { no_context: true }),
                ..
            }
        ));
        assert_eq!(parse_head(&ok[..20]), Head::Incomplete);
        assert!(matches!(
            parse_head(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Head::Refused(_)
        ));
    }
}
