//! An API request as it comes off the socket: the head (`request::parse_head` under two
//! head-size limits), the key check, the route and its query, the body's content type, and the
//! rest of the bytes as an NDJSON batch; every refusal and answer checked to be well-formed
//! HTTP with a one-line JSON error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wsrelay::config::Config;
use wsrelay::server::api::batch::{self, Line};
use wsrelay::server::api::reply::Reply;
use wsrelay::server::api::request::{authorized, body_kind, parse_head, query_pairs};
use wsrelay::server::api::routes::route;
use wsrelay::server::api::{Call, Outcome};

const LIMITS: [usize; 2] = [512, 8192];
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let config = Config::builtin_default();
    for max in LIMITS {
        let head = match parse_head(data, max) {
            Ok(Some(h)) => h,
            Ok(None) => {
                assert!(data.len() < max, "Partial past the limit");
                continue;
            }
            Err(_) => continue,
        };
        assert!(head.len <= data.len() && head.len <= max);
        assert!(!head.path.contains('?'));
        let _ = authorized(head.authorization.as_deref(), KEY);
        let _ = body_kind(head.content_type.as_deref());
        let _ = query_pairs(head.query.as_deref());
        match route(&head.method, &head.path, head.query.as_deref()) {
            Ok(_) => {}
            Err(r) => {
                let mut reply = Reply::error(r.status, &r.reason);
                reply.allow = r.allow;
                well_formed(&reply.encode(false), r.status);
            }
        }
        let body = &data[head.len..];
        if let Ok(lines) = batch::parse(body, &config) {
            for line in lines {
                match line {
                    Line::Publish { room, message } => {
                        assert!(room.starts_with('/'));
                        let _ = Call::Publish {
                            path: room,
                            message,
                        };
                    }
                    Line::Refused(o) => {
                        let text = batch::result_line(&o);
                        assert!(!text.contains('\n'), "a result is one line");
                        assert!(matches!(o, Outcome::Refused { .. }));
                    }
                }
            }
        }
    }
});

/// A complete HTTP/1.1 response with status `code` whose head httparse reads back.
fn well_formed(response: &[u8], code: u16) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(response) {
        Ok(httparse::Status::Complete(len)) => {
            assert_eq!(parsed.code, Some(code));
            let body: serde_json::Value = serde_json::from_slice(&response[len..]).unwrap();
            assert!(body["error"].is_string());
        }
        other => panic!("response does not parse ({other:?}): {response:?}"),
    }
}
