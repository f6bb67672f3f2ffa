//! The client side of wsrelay's server-side API, hand-rolled like `ws`: the publish request
//! (keep-alive, a `Content-Length` body) and the responses, read by `Content-Length` from a
//! buffer that may hold several (pipelined) answers. Nothing here touches a socket.

use crate::v1::{self, Value};

/// The fixed part of every publish request for one room: everything but the body.
pub struct Publish {
    head: Vec<u8>,
}

impl Publish {
    /// `POST /api/v1/publish/<room without its leading slash>` to `host` with the bearer `key`;
    /// bodies of `size` bytes sent as `application/octet-stream` (binary frames).
    pub fn new(host: &str, room: &str, key: &[u8], size: usize) -> Publish {
        let mut head = format!(
            "POST /api/v1/publish/{} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer ",
            room.trim_start_matches('/')
        )
        .into_bytes();
        head.extend_from_slice(key);
        head.extend_from_slice(
            format!("\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n")
                .as_bytes(),
        );
        Publish { head }
    }

    /// Append one request carrying `body` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, body: &[u8]) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(body);
    }
}

/// One response at the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    /// The server says it closes the connection after this answer.
    pub close: bool,
    pub body: &'a [u8],
    /// Bytes the response took (head and body).
    pub len: usize,
}

/// The longest response head accepted; wsrelay's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// The longest body accepted; a publish answer is under 200 bytes.
const MAX_BODY: usize = 1024 * 1024;

/// Parse the response at the front of `buf`: `Ok(None)` until it is all there. Err: not an
/// HTTP/1.1 response we can read (the caller gives the connection up).
pub fn response(buf: &[u8]) -> Result<Option<Response<'_>>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response head over 16 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or("");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {line:?}"))?;
    let (mut length, mut close) = (None, false);
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {value:?}"))?;
            if n > MAX_BODY {
                return Err(format!("a {n}-byte answer body"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {value:?} (answers carry a length)"
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let length = length.ok_or("an answer without Content-Length")?;
    let at = end + 4;
    if buf.len() - at < length {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        close,
        body: &buf[at..at + length],
        len: at + length,
    }))
}

/// The `seq` of a publish answer `{"room":…,"epoch":…,"seq":N}` for `room`; None if the answer
/// is not one.
pub fn published_seq(body: &[u8], room: &str) -> Option<u64> {
    let (mut ours, mut seq) = (false, None);
    v1::object(body, |k, v| match (k, v) {
        (b"room", Value::Str(r)) => ours = r == room.as_bytes(),
        (b"seq", Value::Num(n)) => seq = Some(n),
        _ => {}
    })
    .ok()?;
    seq.filter(|_| ours)
}

/// What the `seq`s of every answer say: the room is fed by the API alone here, so they should be
/// one dense run, each once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeqCheck {
    /// Numbers missing between the lowest and the highest answered.
    pub gaps: u64,
    /// Numbers answered more than once (each extra answer counts).
    pub duplicates: u64,
}

pub fn check_seqs(seqs: &mut [u64]) -> SeqCheck {
    seqs.sort_unstable();
    let mut c = SeqCheck::default();
    for w in seqs.windows(2) {
        match w[1] - w[0] {
            0 => c.duplicates += 1,
            d => c.gaps += d - 1,
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_room_without_its_slash_and_carries_the_body() {
        let p = Publish::new("127.0.0.1:9001", "/bench/api", b"k3y", 4);
        let mut out = Vec::new();
        p.encode(&mut out, b"\x00\x01\x02\x03");
        p.encode(&mut out, b"abcd");
        let one = b"POST /api/v1/publish/bench/api HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\
                    Authorization: Bearer k3y\r\nContent-Type: application/octet-stream\r\n\
                    Content-Length: 4\r\n\r\n";
        assert_eq!(&out[..one.len()], one);
        assert_eq!(&out[one.len()..one.len() + 4], b"\x00\x01\x02\x03");
        assert_eq!(out.len(), 2 * (one.len() + 4));
        assert!(out.ends_with(b"\r\n\r\nabcd"));
    }

    #[test]
    fn pipelined_answers_are_read_one_by_one() {
        let a = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\
                  Cache-Control: no-store\r\n\r\n{\"epoch\":\"00ab\",\"room\":\"/bench/api\",\"seq\":42}\n";
        let b = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\nWWW-Authenticate: Bearer\r\n\
                  Connection: close\r\n\r\n{}";
        let buf = [&a[..], &b[..]].concat();
        let r = response(&buf).unwrap().unwrap();
        assert_eq!((r.status, r.close, r.len), (200, false, a.len()));
        assert_eq!(published_seq(r.body, "/bench/api"), Some(42));
        assert_eq!(published_seq(r.body, "/bench/other"), None);
        let r = response(&buf[a.len()..]).unwrap().unwrap();
        assert_eq!((r.status, r.close, r.body), (401, true, &b"{}"[..]));
        assert_eq!(published_seq(r.body, "/bench/api"), None);
        // Cut anywhere: not there yet.
        for cut in [0, 10, 60, a.len() - 1] {
            assert_eq!(response(&a[..cut]), Ok(None), "{cut}");
        }
    }

    #[test]
    fn answers_without_a_length_or_with_junk_are_refused() {
        assert!(response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(response(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn answered_numbers_are_checked_dense_and_once() {
        assert_eq!(check_seqs(&mut []), SeqCheck::default());
        assert_eq!(check_seqs(&mut [5, 3, 4, 6]), SeqCheck::default());
        assert_eq!(
            check_seqs(&mut [9, 3, 4, 4, 7]),
            SeqCheck {
                gaps: 3,
                duplicates: 1
            }
        );
    }
}
