//! The upgrade request head as it comes off the socket: `wsrelay::http::parse` on arbitrary
//! bytes under two head-size limits, then everything the acceptor builds from what it parsed —
//! the 101, every refusal, the subprotocol choice, the client address from `X-Forwarded-For`,
//! the token lookup, the history query (`last`, `since`, `epoch`) — with the answers checked to be
//! well-formed HTTP.

#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use wsrelay::http::{self, Parsed, Status};

const LIMITS: [usize; 2] = [512, 8192];
const ROOM_PROTOCOLS: [&str; 2] = ["chat", "superchat"];
const STATUSES: [Status; 11] = [
    Status::Ok,
    Status::BadRequest,
    Status::Unauthorized,
    Status::Forbidden,
    Status::NotFound,
    Status::MethodNotAllowed,
    Status::RequestTimeout,
    Status::UpgradeRequired,
    Status::TooManyRequests,
    Status::HeadersTooLarge,
    Status::ServiceUnavailable,
];

fuzz_target!(|data: &[u8]| {
    for max in LIMITS {
        let (request, len) = match http::parse(data, max) {
            Parsed::Complete { request, len } => (request, len),
            Parsed::Partial => {
                assert!(data.len() < max, "Partial past the limit");
                continue;
            }
            Parsed::TooLarge | Parsed::Invalid => continue,
        };
        assert!(len <= data.len() && len <= max, "head of {len} bytes");
        assert!(!request.path.contains('?'), "query left in the path");

        let listed: Vec<String> = ROOM_PROTOCOLS.iter().map(|p| p.to_string()).collect();
        let protocol = http::choose_protocol(&request.protocols, &listed);
        assert!(protocol.is_none_or(|p| ROOM_PROTOCOLS.contains(&p)));
        if let Some(key) = request.key.as_deref().filter(|k| http::is_valid_key(k)) {
            let agreed = wsrelay::deflate::negotiate(request.extensions.iter().map(String::as_str));
            let answer = http::switching_protocols(key, protocol, agreed.as_ref());
            well_formed(&answer, 101);
            if let Some(agreed) = agreed {
                let line = format!("\r\nSec-WebSocket-Extensions: {agreed}\r\n");
                assert!(String::from_utf8_lossy(&answer).contains(&line));
                // Our answer is itself a header the negotiation reads back to the same terms.
                assert!(wsrelay::deflate::negotiate([agreed.to_string().as_str()]).is_some());
            }
        }
        for status in STATUSES {
            well_formed(&http::refusal(status, "why\n"), status.code());
        }

        let trusted = ["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let peer: IpAddr = [127, 0, 0, 1].into();
        let ip = wsrelay::server::client_ip(peer, request.forwarded_for.as_deref(), &trusted);
        if request.forwarded_for.is_none() {
            assert_eq!(ip, peer);
        }
        let untrusted: IpAddr = [192, 0, 2, 1].into();
        let forwarded = request.forwarded_for.as_deref();
        assert_eq!(
            wsrelay::server::client_ip(untrusted, forwarded, &trusted),
            untrusted,
            "X-Forwarded-For believed from an untrusted peer"
        );

        // The history query: a request, or a one-line reason for the 400.
        match wsrelay::relay::history::parse_want(request.query.as_deref(), 100) {
            Ok(wsrelay::relay::history::Want::Last(n)) => assert!(n <= 100),
            Ok(_) => {}
            Err(why) => assert!(!why.is_empty() && !why.contains('\n')),
        }

        if let Ok(token) =
            wsrelay::auth::token_in(request.query.as_deref(), request.authorization.as_deref())
        {
            assert!(!token.is_empty());
        }
    }
});

/// A complete HTTP/1.1 response with status `code` whose head httparse reads back.
fn well_formed(response: &[u8], code: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(response) {
        Ok(httparse::Status::Complete(_)) => assert_eq!(parsed.code, Some(code)),
        other => panic!("response does not parse ({other:?}): {response:?}"),
    }
}
