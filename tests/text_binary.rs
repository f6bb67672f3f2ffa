//! Message types survive the relay: text stays text (non-ASCII intact), binary stays binary
//! (every byte value intact), and a fragmented message arrives whole.

mod common;

use std::io::Write;

use common::frames::{FIN, OP_CONT, OP_TEXT, client_frame};
use common::{Daemon, Ws, recv};
use tungstenite::Message;

const CONFIG: &str = r#"
[[room]]
path = "/mixed"
"#;

fn pair(d: &Daemon) -> [Ws; 2] {
    [d.connect("/mixed", &[]), d.connect("/mixed", &[])]
}

#[test]
fn text_and_binary_keep_type_and_content() {
    let d = Daemon::start(CONFIG);
    let mut m = pair(&d);
    let text = "héllo wörld ✓ 你好 🦀 \u{0}";
    let bytes: Vec<u8> = (0..=255u8).chain([0xff, 0xfe, 0xc3]).collect();
    m[0].send(Message::text(text)).unwrap();
    m[0].send(Message::binary(bytes.clone())).unwrap();
    m[0].send(Message::text("")).unwrap();
    m[0].send(Message::binary(Vec::new())).unwrap();
    for ws in m.iter_mut() {
        assert_eq!(recv(ws), Message::text(text));
        assert_eq!(recv(ws), Message::binary(bytes.clone()));
        assert_eq!(recv(ws), Message::text(""));
        assert_eq!(recv(ws), Message::binary(Vec::new()));
    }
}

#[test]
fn fragmented_text_arrives_whole() {
    let d = Daemon::start(CONFIG);
    let mut m = pair(&d);
    // "é" (C3 A9) split between two fragments.
    let mut bytes = client_frame(OP_TEXT, b"caf\xc3", true);
    bytes.extend(client_frame(OP_CONT, b"\xa9 ", true));
    bytes.extend(client_frame(FIN | OP_CONT, "🦀".as_bytes(), true));
    m[0].get_mut().write_all(&bytes).unwrap();
    for ws in m.iter_mut() {
        assert_eq!(recv(ws), Message::text("café 🦀"));
    }
}
