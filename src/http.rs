//! The HTTP side of the listener: parsing an upgrade request head, and every plain answer the
//! server gives (`/healthz`, `/metrics`, refusals, the 101 itself). Pure bytes in, bytes out; the
//! acceptor owns the sockets and the admission counts.

use std::fmt::Write as _;

/// Headers parsed per request. A browser sends about 15; past this the head is refused with 431.
pub const MAX_HEADERS: usize = 64;

/// An HTTP status the server answers with, and its reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok = 200,
    BadRequest = 400,
    Unauthorized = 401,
    Forbidden = 403,
    NotFound = 404,
    MethodNotAllowed = 405,
    RequestTimeout = 408,
    UpgradeRequired = 426,
    TooManyRequests = 429,
    HeadersTooLarge = 431,
    ServiceUnavailable = 503,
}

impl Status {
    pub fn code(self) -> u16 {
        self as u16
    }

    fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::Unauthorized => "Unauthorized",
            Status::Forbidden => "Forbidden",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::RequestTimeout => "Request Timeout",
            Status::UpgradeRequired => "Upgrade Required",
            Status::TooManyRequests => "Too Many Requests",
            Status::HeadersTooLarge => "Request Header Fields Too Large",
            Status::ServiceUnavailable => "Service Unavailable",
        }
    }
}

/// The parts of a request head the server looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query, e.g. `/chat`.
    pub path: String,
    /// What followed `?`, if anything.
    pub query: Option<String>,
    pub http11: bool,
    /// `Upgrade` names `websocket`.
    pub upgrade_websocket: bool,
    /// `Connection` names `upgrade`.
    pub connection_upgrade: bool,
    pub version: Option<String>,
    pub key: Option<String>,
    /// Every subprotocol offered, in the client's order, across all `Sec-WebSocket-Protocol` lines.
    pub protocols: Vec<String>,
    pub origin: Option<String>,
    /// `X-Forwarded-For` lines joined with commas, in order.
    pub forwarded_for: Option<String>,
    pub authorization: Option<String>,
    /// Every `Sec-WebSocket-Extensions` line, in order (`deflate::negotiate` reads them).
    pub extensions: Vec<String>,
    /// A header the handshake needs once came twice, or a header value was not text.
    pub malformed: bool,
}

/// What a buffer holds so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not the whole head yet; read more.
    Partial,
    /// The head (and `len` bytes of the buffer it took).
    Complete { request: Box<Request>, len: usize },
    /// Over `max_header_size` or [`MAX_HEADERS`]: 431.
    TooLarge,
    /// Not HTTP: 400.
    Invalid,
}

/// Parse a request head from the start of `buf`, allowing at most `max_len` bytes for it.
pub fn parse(buf: &[u8], max_len: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_len => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::TooLarge;
        }
        Ok(httparse::Status::Partial) if buf.len() >= max_len => return Parsed::TooLarge,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let target = req.path.unwrap_or("/");
    // Absolute form (`GET http://host/path`) is legal HTTP/1.1; keep only the path.
    let target = match target.find("://") {
        Some(i) => target[i + 3..]
            .find('/')
            .map_or("/", |j| &target[i + 3 + j..]),
        None => target,
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let mut r = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query,
        http11: req.version == Some(1),
        ..Request::default()
    };
    for h in req.headers.iter() {
        let Ok(value) = std::str::from_utf8(h.value) else {
            r.malformed = true;
            continue;
        };
        let value = value.trim();
        let name = h.name;
        let once = |slot: &mut Option<String>, malformed: &mut bool| {
            if slot.replace(value.to_string()).is_some() {
                *malformed = true;
            }
        };
        if name.eq_ignore_ascii_case("upgrade") {
            r.upgrade_websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            r.connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            once(&mut r.version, &mut r.malformed);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            once(&mut r.key, &mut r.malformed);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            r.protocols.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(String::from),
            );
        } else if name.eq_ignore_ascii_case("origin") {
            once(&mut r.origin, &mut r.malformed);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            match &mut r.forwarded_for {
                Some(v) => {
                    v.push(',');
                    v.push_str(value);
                }
                None => r.forwarded_for = Some(value.to_string()),
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            r.extensions.push(value.to_string());
        } else if name.eq_ignore_ascii_case("authorization") {
            once(&mut r.authorization, &mut r.malformed);
        }
    }
    Parsed::Complete {
        request: Box::new(r),
        len,
    }
}

/// Whether a comma-separated header value names `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A `Sec-WebSocket-Key` must be the base64 form of 16 bytes: 22 characters and `==`.
pub fn is_valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        // The last character carries 2 bits of data and 4 of padding, which must be zero.
        && b"AQgw".contains(&b[21])
}

/// A complete response that ends the connection.
pub fn response(status: Status, extra_headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = String::with_capacity(128 + body.len());
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        status.code(),
        status.reason(),
        body.len()
    );
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A response with a body of another content type (metrics, the demo page).
pub fn response_typed(status: Status, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        status.code(),
        status.reason(),
        content_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A refusal: the status, the headers it needs, a one-line body.
pub fn refusal(status: Status, body: &str) -> Vec<u8> {
    match status {
        Status::UpgradeRequired => response(
            status,
            &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            body,
        ),
        // Clients may come back soon: a slot frees when anyone leaves.
        Status::ServiceUnavailable => response(status, &[("Retry-After", "5")], body),
        Status::MethodNotAllowed => response(status, &[("Allow", "GET")], body),
        // RFC 7235 §3.1: a 401 names the scheme that would work.
        Status::Unauthorized => response(status, &[("WWW-Authenticate", "Bearer")], body),
        _ => response(status, &[], body),
    }
}

/// The 101 that completes a WebSocket handshake, with the permessage-deflate parameters we
/// agreed to if we did.
pub fn switching_protocols(
    key: &str,
    protocol: Option<&str>,
    deflate: Option<&crate::deflate::Agreed>,
) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        let _ = write!(out, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    if let Some(agreed) = deflate {
        let _ = write!(out, "Sec-WebSocket-Extensions: {agreed}\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The first subprotocol the client offers that the room lists.
pub fn choose_protocol<'a>(offered: &[String], listed: &'a [String]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| listed.iter().find(|l| *l == o))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

    fn complete(buf: &[u8]) -> (Request, usize) {
        match parse(buf, 8192) {
            Parsed::Complete { request, len } => (*request, len),
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn parses_the_rfc_example_and_answers_with_its_accept_key() {
        let (r, len) = complete(SEED_REQUEST);
        assert_eq!(len, SEED_REQUEST.len());
        assert_eq!(r.path, "/chat");
        assert!(r.http11 && r.upgrade_websocket && r.connection_upgrade && !r.malformed);
        assert_eq!(r.version.as_deref(), Some("13"));
        assert_eq!(r.protocols, ["chat", "superchat"]);
        let key = r.key.unwrap();
        assert!(is_valid_key(&key));
        let resp = String::from_utf8(switching_protocols(&key, Some("chat"), None)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(!resp.contains("Extensions"));
        assert!(resp.ends_with("\r\n\r\n"));
    }

    #[test]
    fn extension_offers_are_collected_and_the_agreement_answered() {
        let req = b"GET /c HTTP/1.1\r\nSec-WebSocket-Extensions: x-foo\r\nsec-websocket-extensions:  permessage-deflate; client_max_window_bits \r\n\r\n";
        let (r, _) = complete(req);
        assert_eq!(
            r.extensions,
            ["x-foo", "permessage-deflate; client_max_window_bits"]
        );
        let agreed = crate::deflate::negotiate(r.extensions.iter().map(String::as_str)).unwrap();
        let resp = String::from_utf8(switching_protocols("k", None, Some(&agreed))).unwrap();
        assert!(resp.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"
        ));
    }

    #[test]
    fn partial_then_too_large() {
        assert_eq!(
            parse(b"GET /chat HTTP/1.1\r\nHost: x\r\n", 8192),
            Parsed::Partial
        );
        let mut big = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
        big.resize(600, b'a');
        assert_eq!(parse(&big, 512), Parsed::TooLarge);
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse(&many, 1 << 20), Parsed::TooLarge);
        assert_eq!(parse(b"\x16\x03\x01\x02\x00\x01", 8192), Parsed::Invalid);
    }

    #[test]
    fn query_and_absolute_form_are_split_off() {
        let (r, _) = complete(b"GET http://h:1/rooms/a?token=x HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.query.as_deref()),
            ("/rooms/a", Some("token=x"))
        );
    }

    #[test]
    fn duplicate_key_is_malformed() {
        let (r, _) = complete(
            b"GET / HTTP/1.1\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n",
        );
        assert!(r.malformed);
    }

    #[test]
    fn key_validation() {
        assert!(is_valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25jZQ="));
        assert!(
            !is_valid_key("dGhlIHNhbXBsZSBub25jZR=="),
            "non-zero padding bits"
        );
        assert!(!is_valid_key("dGhlIHNhbXBsZSBub25j!Q=="));
        assert!(!is_valid_key(""));
    }

    #[test]
    fn first_offered_protocol_that_the_room_lists_wins() {
        let room = vec!["chat".to_string(), "superchat".to_string()];
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_protocol(&offer(&["superchat", "chat"]), &room),
            Some("superchat")
        );
        assert_eq!(choose_protocol(&offer(&["x", "chat"]), &room), Some("chat"));
        assert_eq!(choose_protocol(&offer(&["x"]), &room), None);
        assert_eq!(choose_protocol(&[], &room), None);
    }

    #[test]
    fn refusals_carry_their_headers() {
        let r = String::from_utf8(refusal(Status::UpgradeRequired, "x")).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        let r = String::from_utf8(refusal(Status::ServiceUnavailable, "full")).unwrap();
        assert!(r.contains("Retry-After: "));
        assert!(r.ends_with("\r\n\r\nfull"));
    }
}
