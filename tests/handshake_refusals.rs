//! Every plain-HTTP answer of DESIGN's bad-input table that needs no load: the request is written
//! on a raw socket and the status line and required headers are checked.

mod common;

use common::{Daemon, KEY, header, status, upgrade_request};

const CONFIG: &str = r#"
[[room]]
path = "/chat"

[[room]]
path = "/private"
allowed_origins = ["https://example.com"]
"#;

fn answer(d: &Daemon, request: &str) -> u16 {
    status(&d.raw_request(request.as_bytes()))
}

#[test]
fn malformed_request_is_400() {
    let d = Daemon::start(CONFIG);
    assert_eq!(
        answer(&d, "GET /chat HTTP/1.1\r\nHost localhost\r\n\r\n"),
        400
    );
    let tls_hello = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n";
    assert_eq!(status(&d.raw_request(tls_hello)), 400);
}

#[test]
fn missing_key_is_400() {
    let d = Daemon::start(CONFIG);
    let req = "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
               Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(answer(&d, req), 400);
}

#[test]
fn invalid_key_is_400() {
    let d = Daemon::start(CONFIG);
    for key in ["abc", "not base64 at all!!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let req = upgrade_request("/chat", "").replace(KEY, key);
        assert_eq!(answer(&d, &req), 400, "key {key:?}");
    }
}

#[test]
fn wrong_version_is_426_with_version_13() {
    let d = Daemon::start(CONFIG);
    let req = upgrade_request("/chat", "").replace("Version: 13", "Version: 8");
    let head = d.raw_request(req.as_bytes());
    assert_eq!(status(&head), 426, "{head}");
    assert_eq!(
        header(&head, "Sec-WebSocket-Version").as_deref(),
        Some("13"),
        "{head}"
    );
}

#[test]
fn plain_get_on_a_room_is_426() {
    let d = Daemon::start(CONFIG);
    assert_eq!(
        answer(&d, "GET /chat HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        426
    );
}

#[test]
fn unknown_path_is_404() {
    let d = Daemon::start(CONFIG);
    assert_eq!(answer(&d, &upgrade_request("/nowhere", "")), 404);
    assert_eq!(
        answer(&d, "GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        404
    );
}

#[test]
fn origin_outside_allowed_origins_is_403() {
    let d = Daemon::start(CONFIG);
    let evil = upgrade_request("/private", "Origin: https://evil.example\r\n");
    assert_eq!(answer(&d, &evil), 403);
    // Exact match only: another scheme or port is another origin.
    let http = upgrade_request("/private", "Origin: http://example.com\r\n");
    assert_eq!(answer(&d, &http), 403);
    let good = upgrade_request("/private", "Origin: https://example.com\r\n");
    assert_eq!(answer(&d, &good), 101);
    // A room with no allowed_origins takes any origin.
    let any = upgrade_request("/chat", "Origin: https://evil.example\r\n");
    assert_eq!(answer(&d, &any), 101);
}

#[test]
fn head_over_max_header_size_is_431() {
    let d = Daemon::start(CONFIG); // default max_header_size: 8 KiB
    let big = format!("X-Padding: {}\r\n", "a".repeat(16 * 1024));
    assert_eq!(answer(&d, &upgrade_request("/chat", &big)), 431);
    // Under the limit the same request is fine.
    let small = format!("X-Padding: {}\r\n", "a".repeat(4 * 1024));
    assert_eq!(answer(&d, &upgrade_request("/chat", &small)), 101);
}

#[test]
fn max_header_size_is_configurable() {
    let d = Daemon::start(&format!("[server]\nmax_header_size = 1024\n{CONFIG}"));
    let pad = format!("X-Padding: {}\r\n", "a".repeat(2000));
    assert_eq!(answer(&d, &upgrade_request("/chat", &pad)), 431);
    assert_eq!(answer(&d, &upgrade_request("/chat", "")), 101);
}

#[test]
fn good_upgrade_is_101_with_accept_key() {
    let d = Daemon::start(CONFIG);
    let head = d.raw_request(upgrade_request("/chat", "").as_bytes());
    assert_eq!(status(&head), 101, "{head}");
    // RFC 6455's sample key and its accept value.
    let accept = header(&head, "Sec-WebSocket-Accept");
    assert_eq!(
        accept.as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(header(&head, "Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
}
