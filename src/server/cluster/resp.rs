//! RESP2, the Redis wire protocol, as much as the cluster link speaks: commands out (arrays of
//! bulk strings), replies and pub/sub pushes in. Pure bytes in, values out: the socket side is
//! `cluster::link`. Bounded: a reply longer than [`MAX_BULK`] or nested deeper than
//! [`MAX_DEPTH`] is a protocol error (the link is dropped and made again), never an allocation
//! the peer chose.

/// The longest bulk string taken: Redis's own limit is 512 MiB; our messages are under
/// `max_message_size` (at most a few MiB) plus a header.
pub const MAX_BULK: usize = 64 << 20;

/// Arrays in what we read nest two deep at most (a script's reply); a little room beyond.
pub const MAX_DEPTH: usize = 4;

/// Elements in one array, at most.
pub const MAX_ARRAY: usize = 1 << 16;

/// One RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Value>>),
}

/// What the peer sent is not RESP2 (or past our bounds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad RESP from redis: {}", self.0)
    }
}

/// Append a command: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The first complete value in `buf` and the bytes it took; `Ok(None)` when `buf` holds only
/// the start of one.
pub fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let i = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..i], at + i + 2))
}

fn int(bytes: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad integer"))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1) else {
        // A line longer than any header we expect is not RESP we speak.
        if buf.len() - at > 64 * 1024 && kind != b'$' {
            return Err(ProtocolError("line too long"));
        }
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok(Some((Value::Simple(text()), next - at))),
        b'-' => Ok(Some((Value::Error(text()), next - at))),
        b':' => Ok(Some((Value::Int(int(head)?), next - at))),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), next - at)));
            }
            let n = n as usize;
            if n > MAX_BULK {
                return Err(ProtocolError("bulk string too long"));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without CRLF"));
            }
            let bytes = buf[next..next + n].to_vec();
            Ok(Some((Value::Bulk(Some(bytes)), next + n + 2 - at)))
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some((Value::Array(None), next - at)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deep"));
            }
            let n = n as usize;
            if n > MAX_ARRAY {
                return Err(ProtocolError("array too long"));
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut pos = next;
            for _ in 0..n {
                match parse_at(buf, pos, depth + 1)? {
                    Some((v, used)) => {
                        items.push(v);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), pos - at)))
        }
        _ => Err(ProtocolError("unknown type byte")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn values_and_partial_input() {
        let all: &[u8] =
            b"+OK\r\n-ERR no\r\n:42\r\n$-1\r\n$5\r\nh\r\nlo\r\n*2\r\n$3\r\nabc\r\n:-7\r\n*-1\r\n";
        let want = [
            Value::Simple("OK".into()),
            Value::Error("ERR no".into()),
            Value::Int(42),
            Value::Bulk(None),
            Value::Bulk(Some(b"h\r\nlo".to_vec())),
            Value::Array(Some(vec![
                Value::Bulk(Some(b"abc".to_vec())),
                Value::Int(-7),
            ])),
            Value::Array(None),
        ];
        // Every prefix parses to the values it holds completely, never to a wrong one.
        for cut in 0..=all.len() {
            let buf = &all[..cut];
            let mut pos = 0;
            let mut got = Vec::new();
            while let Some((v, used)) = parse(&buf[pos..]).expect("valid") {
                got.push(v);
                pos += used;
            }
            assert_eq!(got[..], want[..got.len()], "cut at {cut}");
            if cut == all.len() {
                assert_eq!(got.len(), want.len());
            }
        }
    }

    #[test]
    fn garbage_and_bounds_are_errors() {
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$3\r\nabcd\r\n").is_err());
        assert!(parse(format!("${}\r\n", MAX_BULK + 1).as_bytes()).is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n").is_err());
        assert!(parse(&vec![b'+'; 70 * 1024]).is_err());
        assert_eq!(parse(b"$3\r\nab"), Ok(None));
    }
}
