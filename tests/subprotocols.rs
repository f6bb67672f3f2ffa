//! Subprotocol choice: the first protocol the client offers that the room lists wins; nothing
//! offered, or nothing in common, means no `Sec-WebSocket-Protocol` header in the 101.

mod common;

use common::{Daemon, header, status, upgrade_request};

const CONFIG: &str = r#"
[[room]]
path = "/chat"
subprotocols = ["chat", "superchat"]

[[room]]
path = "/plain"
"#;

/// The 101's `Sec-WebSocket-Protocol` for a request on `path` with `offer` lines.
fn chosen(d: &Daemon, path: &str, offer: &str) -> Option<String> {
    let head = d.raw_request(upgrade_request(path, offer).as_bytes());
    assert_eq!(status(&head), 101, "{head}");
    header(&head, "Sec-WebSocket-Protocol")
}

#[test]
fn first_offered_listed_protocol_wins() {
    let d = Daemon::start(CONFIG);
    let superchat = "Sec-WebSocket-Protocol: superchat, chat\r\n";
    assert_eq!(chosen(&d, "/chat", superchat).as_deref(), Some("superchat"));
    let chat = "Sec-WebSocket-Protocol: chat, superchat\r\n";
    assert_eq!(chosen(&d, "/chat", chat).as_deref(), Some("chat"));
    let skip_unknown = "Sec-WebSocket-Protocol: mqtt, superchat\r\n";
    assert_eq!(
        chosen(&d, "/chat", skip_unknown).as_deref(),
        Some("superchat")
    );
    // Offers may be split over several header lines; order is kept across them.
    let two_lines = "Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Protocol: chat\r\n";
    assert_eq!(chosen(&d, "/chat", two_lines).as_deref(), Some("chat"));
}

#[test]
fn real_client_gets_superchat() {
    let d = Daemon::start(CONFIG);
    let (_ws, resp) = d.try_connect("/chat", &["superchat", "chat"], &[]).unwrap();
    let got = resp.headers().get("Sec-WebSocket-Protocol").unwrap();
    assert_eq!(got, "superchat");
}

#[test]
fn unlisted_protocol_gets_no_header() {
    let d = Daemon::start(CONFIG);
    let offer = "Sec-WebSocket-Protocol: mqtt, graphql-ws\r\n";
    assert_eq!(chosen(&d, "/chat", offer), None);
    let on_plain = "Sec-WebSocket-Protocol: chat\r\n";
    assert_eq!(chosen(&d, "/plain", on_plain), None);
}

#[test]
fn nothing_offered_gets_no_header() {
    let d = Daemon::start(CONFIG);
    assert_eq!(chosen(&d, "/chat", ""), None);
    assert_eq!(chosen(&d, "/plain", ""), None);
}
