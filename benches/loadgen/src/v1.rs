//! `wsrelay.v1` on the loader's side: a v1 connection's first frame is a welcome, then every
//! message carries its room sequence number — a text message inside the envelope
//! `{"type":"message","seq":N,"data":"<text>"}`, a binary one behind 8 big-endian bytes. This
//! module takes the number off and hands back the publisher's bytes, so the plain checks (once,
//! in order, latency) run on them unchanged; and it checks the numbers are dense.
//!
//! The JSON reader knows flat objects only (string, number, literal values), which is all v1
//! sends; the welcome's keys come in any order. Nothing here allocates per message: an escaped
//! text is unescaped into a buffer the caller keeps.

use crate::ws;

/// The subprotocol offered in the upgrade request.
pub const PROTOCOL: &str = "wsrelay.v1";

/// Where a v1 connection is in its stream of frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing received yet: the next data frame must be the welcome.
    Welcome,
    /// The number the next message should carry (the welcome's `seq` + 1, then one more each).
    Next(u64),
}

/// What a data frame of a v1 connection turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Got<'a> {
    Welcome,
    /// A message: the publisher's bytes, and whether its number was the one expected.
    Message {
        body: &'a [u8],
        in_sequence: bool,
    },
}

impl Expect {
    /// Take one whole (inflated) data frame of opcode `op`. `text` holds an escaped text's
    /// unescaped bytes. Err: the frame breaks the protocol (the caller closes the connection).
    pub fn frame<'a>(
        &mut self,
        op: u8,
        payload: &'a [u8],
        text: &'a mut Vec<u8>,
    ) -> Result<Got<'a>, String> {
        match *self {
            Expect::Welcome => {
                if op != ws::OP_TEXT {
                    return Err("v1: the first frame is not the text welcome".into());
                }
                *self = Expect::Next(welcome(payload)? + 1);
                Ok(Got::Welcome)
            }
            Expect::Next(next) => {
                let (seq, body) = match op {
                    ws::OP_BINARY => binary(payload)?,
                    _ => message(payload, text)?,
                };
                *self = Expect::Next(seq + 1);
                Ok(Got::Message {
                    body,
                    in_sequence: seq == next,
                })
            }
        }
    }
}

/// The `seq` of a welcome: the room's last number when the connection joined.
pub fn welcome(payload: &[u8]) -> Result<u64, String> {
    let (mut kind, mut seq) = (false, None);
    object(payload, |k, v| match (k, v) {
        (b"type", Value::Str(b"welcome")) => kind = true,
        (b"seq", Value::Num(n)) => seq = Some(n),
        _ => {}
    })?;
    match (kind, seq) {
        (true, Some(seq)) => Ok(seq),
        _ => Err(format!(
            "v1: not a welcome with a seq: {}",
            String::from_utf8_lossy(&payload[..payload.len().min(120)])
        )),
    }
}

/// A binary message: its number and the publisher's bytes.
pub fn binary(payload: &[u8]) -> Result<(u64, &[u8]), String> {
    let Some((seq, body)) = payload.split_first_chunk::<8>() else {
        return Err("v1: a binary frame shorter than its 8-byte number".into());
    };
    Ok((u64::from_be_bytes(*seq), body))
}

/// A text message's envelope: its number and the publisher's text (unescaped into `text` when
/// it has escapes, borrowed from `payload` when not).
pub fn message<'a>(payload: &'a [u8], text: &'a mut Vec<u8>) -> Result<(u64, &'a [u8]), String> {
    let (mut kind, mut seq, mut data) = (false, None, None);
    object(payload, |k, v| match (k, v) {
        (b"type", Value::Str(b"message")) => kind = true,
        (b"seq", Value::Num(n)) => seq = Some(n),
        (b"data", Value::Str(raw)) => data = Some(raw),
        _ => {}
    })?;
    let (true, Some(seq), Some(raw)) = (kind, seq, data) else {
        return Err(format!(
            "v1: not a message envelope: {}",
            String::from_utf8_lossy(&payload[..payload.len().min(120)])
        ));
    };
    if !raw.contains(&b'\\') {
        return Ok((seq, raw));
    }
    unescape(raw, text)?;
    Ok((seq, text))
}

/// A value of a flat JSON object. Strings are raw: as written between the quotes.
#[derive(Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a [u8]),
    /// A non-negative integer that fits in a u64.
    Num(u64),
    /// Any other number, `true`, `false`, `null`.
    Other,
}

/// Call `each(key, value)` for the members of the flat JSON object `s` (raw keys). The API's
/// answers are such objects too (`http`).
pub fn object<'a>(s: &'a [u8], mut each: impl FnMut(&'a [u8], Value<'a>)) -> Result<(), String> {
    let bad = |what: &str, at: usize| Err(format!("v1: bad JSON ({what} at byte {at})"));
    let mut i = ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return bad("no object", i);
    }
    i = ws(s, i + 1);
    if s.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if s.get(i) != Some(&b'"') {
                return bad("expected a key", i);
            }
            let key = string(s, &mut i)?;
            i = ws(s, i);
            if s.get(i) != Some(&b':') {
                return bad("expected ':'", i);
            }
            i = ws(s, i + 1);
            let value = match s.get(i) {
                Some(b'"') => Value::Str(string(s, &mut i)?),
                Some(b'0'..=b'9' | b'-') => {
                    let start = i;
                    while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = s.get(i) {
                        i += 1;
                    }
                    let n = std::str::from_utf8(&s[start..i]).unwrap_or("");
                    match n.parse::<u64>() {
                        Ok(n) => Value::Num(n),
                        Err(_) if n.parse::<f64>().is_ok() => Value::Other,
                        Err(_) => return bad("bad number", start),
                    }
                }
                _ => {
                    let lit = [&b"true"[..], b"false", b"null"]
                        .into_iter()
                        .find(|l| s[i..].starts_with(l));
                    let Some(lit) = lit else {
                        return bad("unexpected value (v1 objects are flat)", i);
                    };
                    i += lit.len();
                    Value::Other
                }
            };
            each(key, value);
            i = ws(s, i);
            match s.get(i) {
                Some(b',') => i = ws(s, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return bad("expected ',' or '}'", i),
            }
        }
    }
    if ws(s, i) != s.len() {
        return bad("bytes after the object", i);
    }
    Ok(())
}

fn ws(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\r' | b'\n') = s.get(i) {
        i += 1;
    }
    i
}

/// The raw string starting at the quote at `*i`; leaves `*i` after the closing quote.
fn string<'a>(s: &'a [u8], i: &mut usize) -> Result<&'a [u8], String> {
    let start = *i + 1;
    let mut j = start;
    loop {
        match s.get(j) {
            None => return Err("v1: bad JSON (unterminated string)".into()),
            Some(b'"') => break,
            Some(b'\\') => j += 2,
            Some(_) => j += 1,
        }
    }
    *i = j + 1;
    Ok(&s[start..j])
}

/// Unescape a raw JSON string into `out` (UTF-8).
fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    let bad = || "v1: bad escape in a JSON string".to_string();
    let hex = |at: usize| -> Result<u32, String> {
        let h = raw.get(at..at + 4).ok_or_else(bad)?;
        let h = std::str::from_utf8(h).map_err(|_| bad())?;
        u32::from_str_radix(h, 16).map_err(|_| bad())
    };
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *raw.get(i + 1).ok_or_else(bad)?;
        i += 2;
        let simple = match e {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex(i)?;
                i += 4;
                if (0xd800..0xdc00).contains(&cp) && raw[i..].starts_with(b"\\u") {
                    let lo = hex(i + 2)?;
                    if (0xdc00..0xe000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).ok_or_else(bad)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                continue;
            }
            _ => return Err(bad()),
        };
        out.push(simple);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_welcome_gives_the_last_number_whatever_the_key_order() {
        // As wsrelay writes it (serde_json sorts the keys).
        let w = br#"{"epoch":"00c0ffee00c0ffee","member":"1-7","recovered":false,"replayed":0,"room":"/bench/fanout","seq":41,"type":"welcome"}"#;
        assert_eq!(welcome(w), Ok(41));
        assert_eq!(welcome(br#" { "type" : "welcome", "seq" : 0 } "#), Ok(0));
        assert!(welcome(br#"{"type":"message","seq":1,"data":"x"}"#).is_err());
        assert!(welcome(br#"{"type":"welcome"}"#).is_err());
        assert!(welcome(br#"{"type":"welcome","seq":1,"x":{"nested":1}}"#).is_err());
        assert!(welcome(b"not json").is_err());
    }

    #[test]
    fn text_messages_give_back_the_publishers_text() {
        let mut buf = Vec::new();
        let (seq, data) = message(br#"{"type":"message","seq":7,"data":"hello"}"#, &mut buf)
            .map(|(s, d)| (s, d.to_vec()))
            .unwrap();
        assert_eq!((seq, &data[..]), (7, &b"hello"[..]));
        // serde_json's escapes: quotes, backslashes, control bytes; UTF-8 as is; and what other
        // writers do (\/, surrogate pairs).
        let env = [
            &br#"{"type":"message","seq":18446744073709551615,"data":"say \"h\u00e9\"\n\\\u0000\u0001\/ \ud83d\ude00 "#[..],
            "hé\"}".as_bytes(),
        ]
        .concat();
        let (seq, data) = message(&env, &mut buf).unwrap();
        assert_eq!(seq, u64::MAX);
        assert_eq!(data, "say \"hé\"\n\\\0\u{1}/ 😀 hé".as_bytes());
        assert!(message(br#"{"type":"message","seq":-1,"data":"x"}"#, &mut buf).is_err());
        assert!(message(br#"{"type":"message","seq":1,"data":"\q"}"#, &mut buf).is_err());
        assert!(message(br#"{"type":"message","seq":1,"data":"x"#, &mut buf).is_err());
        assert!(message(br#"{"type":"message","seq":1}"#, &mut buf).is_err());
    }

    #[test]
    fn binary_messages_lose_their_eight_byte_number() {
        assert_eq!(
            binary(&[0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3]),
            Ok((258, &[1, 2, 3][..]))
        );
        assert_eq!(binary(&[0; 8]), Ok((0, &[][..])));
        assert!(binary(&[0; 7]).is_err());
    }

    #[test]
    fn a_connection_wants_the_welcome_then_dense_numbers() {
        let mut buf = Vec::new();
        let mut e = Expect::Welcome;
        let msg = |seq: u64| [&seq.to_be_bytes()[..], b"body"].concat();
        assert!(
            Expect::Welcome
                .frame(ws::OP_BINARY, &msg(1), &mut buf)
                .is_err()
        );
        let w = br#"{"type":"welcome","seq":9}"#;
        assert_eq!(e.frame(ws::OP_TEXT, w, &mut buf), Ok(Got::Welcome));
        assert_eq!(e, Expect::Next(10));
        let m = msg(10);
        assert_eq!(
            e.frame(ws::OP_BINARY, &m, &mut buf),
            Ok(Got::Message {
                body: b"body",
                in_sequence: true
            })
        );
        let t = br#"{"type":"message","seq":11,"data":"hi"}"#;
        assert_eq!(
            e.frame(ws::OP_TEXT, t, &mut buf),
            Ok(Got::Message {
                body: b"hi",
                in_sequence: true
            })
        );
        // A gap is reported once; counting goes on from the number received.
        let (m13, m14) = (msg(13), msg(14));
        let got = |e: &mut Expect, m| match e.frame(ws::OP_BINARY, m, &mut Vec::new()) {
            Ok(Got::Message { in_sequence, .. }) => in_sequence,
            other => panic!("{other:?}"),
        };
        assert!(!got(&mut e, &m13));
        assert!(got(&mut e, &m14));
    }
}
