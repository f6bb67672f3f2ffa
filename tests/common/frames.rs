//! WebSocket frames by hand, for the tests that need bytes tungstenite's client will not send,
//! and for reading what the server sends without ever answering it.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;

/// A client frame: `first` is FIN | RSV | opcode; `masked` false makes it a protocol violation.
pub fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// A frame as the server sent it.
#[derive(Debug)]
pub struct RawFrame {
    pub first: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
}

/// Read one frame; `Ok(None)` on a clean EOF before it.
pub fn read_frame(s: &mut impl Read) -> io::Result<Option<RawFrame>> {
    let mut h = [0u8; 2];
    match s.read(&mut h[..1])? {
        0 => return Ok(None),
        _ => s.read_exact(&mut h[1..])?,
    }
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut key = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    if h[1] & 0x80 != 0 {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= key[i % 4]);
    }
    Ok(Some(RawFrame {
        first: h[0],
        payload,
    }))
}

/// How a raw connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (1005 when it had none) and reason.
    Close(u16, String),
    /// EOF or a reset without a close frame.
    Dropped,
}

/// Read raw frames (ignoring data and pings, never answering) until a close frame or the end of
/// the connection, failing after `within`.
pub fn await_ending(s: &mut TcpStream, within: Duration) -> Ending {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection still open after {within:?}");
        s.set_read_timeout(Some(left)).unwrap();
        match read_frame(s) {
            Ok(Some(f)) if f.opcode() == OP_CLOSE => return close_of(&f.payload),
            Ok(Some(_)) => continue,
            Ok(None) => return Ending::Dropped,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {within:?}")
            }
            Err(_) => return Ending::Dropped, // reset, or EOF inside a frame
        }
    }
}

/// The close code and reason a raw connection is closed with; fails if it ends without one.
pub fn expect_close_raw(s: &mut TcpStream) -> (u16, String) {
    match await_ending(s, IO_TIMEOUT) {
        Ending::Close(code, reason) => (code, reason),
        Ending::Dropped => panic!("connection ended without a close frame"),
    }
}

fn close_of(payload: &[u8]) -> Ending {
    if payload.len() < 2 {
        return Ending::Close(1005, String::new());
    }
    let code = u16::from_be_bytes([payload[0], payload[1]]);
    Ending::Close(code, String::from_utf8_lossy(&payload[2..]).into_owned())
}

/// A compressed payload back to the message (tail put back, RFC 7692 §7.2.2).
#[allow(dead_code)]
pub fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut z = flate2::Decompress::new(false);
    let input = [payload, &[0, 0, 0xff, 0xff]].concat();
    let mut out = Vec::with_capacity(1 << 16);
    while (z.total_in() as usize) < input.len() {
        out.reserve(1 << 16);
        let at = z.total_in() as usize;
        z.decompress_vec(&input[at..], &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
    }
    out
}

/// The next data message on a raw socket, inflated if it came compressed: (opcode, compressed,
/// bytes). Skips pings.
#[allow(dead_code)]
pub fn next_message(s: &mut TcpStream) -> (u8, bool, Vec<u8>) {
    loop {
        let f = read_frame(s).unwrap().expect("a frame, not EOF");
        match f.opcode() {
            OP_PING => continue,
            op => {
                assert!(f.first & FIN != 0, "the server sends whole messages");
                let compressed = f.first & RSV1 != 0;
                let bytes = if compressed {
                    inflate(&f.payload)
                } else {
                    f.payload
                };
                return (op, compressed, bytes);
            }
        }
    }
}
