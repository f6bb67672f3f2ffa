//! permessage-deflate on the loader's side (RFC 7692): the offer, reading the server's answer,
//! and inflating what arrives with RSV1 set. The loader never compresses what it sends (RSV1 is
//! per message, so plain frames stay valid): it measures the server's compression.

use flate2::{Decompress, FlushDecompress, Status};

/// What a browser offers (Chromium's exact header).
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// What the server agreed to, from its `Sec-WebSocket-Extensions` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// `server_no_context_takeover`: every message inflates on its own, so one inflater per
    /// loader thread serves all connections; otherwise each connection keeps its own.
    pub no_context: bool,
}

/// The `permessage-deflate` element of a response header value, if there is one.
pub fn agreed(value: &str) -> Option<Agreed> {
    value.split(',').find_map(|ext| {
        let mut params = ext.split(';').map(str::trim);
        (params.next() == Some("permessage-deflate")).then(|| Agreed {
            no_context: params.any(|p| p == "server_no_context_takeover"),
        })
    })
}

/// A raw inflater with a 15-bit window.
pub struct Inflate {
    z: Decompress,
}

impl Inflate {
    pub fn new() -> Inflate {
        Inflate {
            z: Decompress::new(false),
        }
    }

    /// Inflate one message's payload (the 4-byte tail appended, §7.2.2) into `out`; `fresh`:
    /// without the previous messages' window.
    pub fn message(
        &mut self,
        payload: &[u8],
        fresh: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if fresh {
            self.z.reset(false);
        }
        out.clear();
        for input in [payload, &[0x00, 0x00, 0xff, 0xff][..]] {
            let mut at = 0;
            loop {
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().max(4096));
                }
                let before = self.z.total_in();
                let status = self
                    .z
                    .decompress_vec(&input[at..], out, FlushDecompress::Sync)
                    .map_err(|e| format!("inflate: {e}"))?;
                at += (self.z.total_in() - before) as usize;
                let room = out.len() < out.capacity();
                if status == Status::StreamEnd || (at == input.len() && room) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_answer() {
        let a = |v| agreed(v);
        assert_eq!(a("permessage-deflate"), Some(Agreed { no_context: false }));
        assert_eq!(
            a("x, permessage-deflate; client_no_context_takeover; server_no_context_takeover"),
            Some(Agreed { no_context: true })
        );
        assert_eq!(a("x-webkit-deflate-frame"), None);
    }

    #[test]
    fn inflates_rfc_7692_hello_with_and_without_context() {
        let mut i = Inflate::new();
        let mut out = Vec::new();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        i.message(&hello, true, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // §7.2.3.2: the same message again, referring to the first one's window.
        i.message(&[0xf2, 0x00, 0x11, 0x00, 0x00], false, &mut out)
            .unwrap();
        assert_eq!(out, b"Hello");
        assert!(i.message(&[0xff, 0xff], true, &mut out).is_err());
    }
}
