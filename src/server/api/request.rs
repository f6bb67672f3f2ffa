//! One API request from bytes: its head (within `max_header_size`), the body's framing, the
//! bearer key, the body's content type and the query string. Pure functions over bytes and
//! strings, no sockets: the fuzz target `api_request` drives them with anything.

use sha2::{Digest, Sha256};

/// Headers parsed per request; past this the head is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// Bytes of an `Idempotency-Key`: a UUID needs 36; past this the request is refused with 400.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The parts of a request head the API looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// The path as sent, without the query.
    pub path: String,
    pub query: Option<String>,
    /// HTTP/1.1 without `Connection: close`: the connection stays open after the answer.
    pub keep_alive: bool,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// A `Transfer-Encoding` header came (we read bodies by `Content-Length` only: 501).
    pub transfer_encoding: bool,
    pub idempotency_key: Option<String>,
    /// `Expect: 100-continue` (curl sends it with bodies over 1 KiB, then waits a second).
    pub expect_continue: bool,
    /// Bytes of the buffer the head took.
    pub len: usize,
}

/// Why a head is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Over `max_header_size` or [`MAX_HEADERS`]: 431.
    TooLarge,
    /// Not HTTP, or a header the API needs is malformed: 400 with the reason.
    Invalid(&'static str),
}

/// Parse the head at the start of `buf` with at most `max_len` bytes for it; `Ok(None)`: not
/// complete yet.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_len => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_len => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Invalid("malformed request")),
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    let mut h = Head {
        method: req.method.unwrap_or("").to_owned(),
        path: path.to_owned(),
        query,
        keep_alive: req.version == Some(1),
        len,
        ..Head::default()
    };
    for header in req.headers.iter() {
        let name = header.name;
        let Ok(value) = std::str::from_utf8(header.value) else {
            return Err(HeadError::Invalid("a header value is not text"));
        };
        let value = value.trim();
        let once = |slot: &mut Option<String>, what| match slot.replace(value.to_owned()) {
            Some(_) => Err(HeadError::Invalid(what)),
            None => Ok(()),
        };
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(HeadError::Invalid("Content-Length is not a number"))?;
            if h.content_length.replace(n).is_some_and(|m| m != n) {
                return Err(HeadError::Invalid("Content-Length given twice"));
            }
        } else if name.eq_ignore_ascii_case("expect") {
            h.expect_continue |= value.eq_ignore_ascii_case("100-continue");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                h.keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            once(&mut h.authorization, "Authorization given twice")?;
        } else if name.eq_ignore_ascii_case("content-type") {
            once(&mut h.content_type, "Content-Type given twice")?;
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            once(&mut h.idempotency_key, "Idempotency-Key given twice")?;
            if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY {
                return Err(HeadError::Invalid("Idempotency-Key must be 1 to 255 bytes"));
            }
        }
    }
    Ok(Some(h))
}

/// Whether `authorization` is `Bearer <key>`. Both sides are hashed first and the digests
/// compared without an early exit, so the time taken tells nothing about the key, its length
/// included.
pub fn authorized(authorization: Option<&str>, key: &[u8]) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let given = Sha256::digest(token.trim().as_bytes());
    let wanted = Sha256::digest(key);
    let diff = given
        .iter()
        .zip(wanted.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// What a published body becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A text frame (the body must be UTF-8).
    Text,
    /// A binary frame.
    Binary,
}

/// The frame a `Content-Type` asks for; `Err` (415) with the reason for anything else.
/// `text/plain` and `application/json` are text (a `charset` must be utf-8);
/// `application/octet-stream` is binary.
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, &'static str> {
    const WANTED: &str = "Content-Type must be text/plain, application/json or \
                          application/octet-stream";
    let Some(value) = content_type else {
        return Err(WANTED);
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or("").trim();
    let kind = if media.eq_ignore_ascii_case("text/plain")
        || media.eq_ignore_ascii_case("application/json")
    {
        BodyKind::Text
    } else if media.eq_ignore_ascii_case("application/octet-stream") {
        BodyKind::Binary
    } else {
        return Err(WANTED);
    };
    for param in parts {
        let Some((name, v)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") && kind == BodyKind::Text {
            let v = v.trim().trim_matches('"');
            if !v.eq_ignore_ascii_case("utf-8") && !v.eq_ignore_ascii_case("utf8") {
                return Err("the charset must be utf-8");
            }
        }
    }
    Ok(kind)
}

/// The query's `name=value` pairs, percent-decoded (`+` stays `+`), in order. A pair whose
/// value is not UTF-8 once decoded, or a bad escape, is an error (400).
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name)?, percent_decode(value)?))
        })
        .collect()
}

/// `%XX` escapes decoded; the result must be UTF-8.
pub fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes(), 8192).unwrap().unwrap()
    }

    #[test]
    fn reads_what_the_api_needs() {
        let h = head(
            "POST /api/v1/publish/rooms/a?x=1 HTTP/1.1\r\nAuthorization: Bearer k\r\n\
             Content-Type: text/plain\r\nContent-Length: 5\r\nIdempotency-Key: abc\r\n\r\nhello",
        );
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/api/v1/publish/rooms/a");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        assert!(h.keep_alive && !h.transfer_encoding);
        assert_eq!(h.content_length, Some(5));
        assert_eq!(h.idempotency_key.as_deref(), Some("abc"));
        assert_eq!(h.len, "POST /api/v1/publish/rooms/a?x=1 HTTP/1.1\r\nAuthorization: Bearer k\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nIdempotency-Key: abc\r\n\r\n".len());
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").transfer_encoding);
    }

    #[test]
    fn framing_mistakes_are_refused() {
        let bad = |t: &str| parse_head(t.as_bytes(), 8192).unwrap_err();
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HeadError::Invalid("Content-Length given twice")
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            HeadError::Invalid("Content-Length is not a number")
        );
        assert_eq!(
            bad("POST / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n"),
            HeadError::Invalid("Authorization given twice")
        );
        assert_eq!(
            bad("\x16\x03\x01\x00"),
            HeadError::Invalid("malformed request")
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(600, b'a');
        assert_eq!(parse_head(&big, 512), Err(HeadError::TooLarge));
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\n", 512), Ok(None));
    }

    #[test]
    fn the_key_must_match_exactly() {
        let key = b"0123456789abcdef0123456789abcdef";
        let k = std::str::from_utf8(key).unwrap();
        assert!(authorized(Some(&format!("Bearer {k}")), key));
        assert!(authorized(Some(&format!("bearer {k}")), key));
        assert!(!authorized(Some(&format!("Bearer {k}x")), key));
        assert!(!authorized(Some(&format!("Basic {k}")), key));
        assert!(!authorized(Some(k), key));
        assert!(!authorized(None, key));
        assert!(!authorized(Some("Bearer "), key));
    }

    #[test]
    fn content_types() {
        use BodyKind::*;
        assert_eq!(body_kind(Some("text/plain")), Ok(Text));
        assert_eq!(body_kind(Some("Text/Plain; charset=\"UTF-8\"")), Ok(Text));
        assert_eq!(body_kind(Some("application/json; charset=utf-8")), Ok(Text));
        assert_eq!(body_kind(Some("application/octet-stream")), Ok(Binary));
        assert_eq!(
            body_kind(Some("text/plain; charset=latin1")),
            Err("the charset must be utf-8")
        );
        assert!(body_kind(Some("image/png")).is_err());
        assert!(body_kind(None).is_err());
    }

    #[test]
    fn queries_are_split_and_decoded() {
        assert_eq!(
            query_pairs(Some("prefix=%2Frooms%2F&limit=10&&flag")).unwrap(),
            [
                ("prefix".to_owned(), "/rooms/".to_owned()),
                ("limit".to_owned(), "10".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert_eq!(query_pairs(Some("a=b+c")).unwrap()[0].1, "b+c");
        assert!(query_pairs(Some("a=%zz")).is_err());
        assert!(query_pairs(Some("a=%ff")).is_err());
        assert!(query_pairs(Some("a=%f")).is_err());
    }
}
