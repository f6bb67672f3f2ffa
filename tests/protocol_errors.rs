//! After the upgrade, bad frames end the connection with the right close code: invalid UTF-8
//! 1007, too big 1009, protocol violations 1002. Frames are written by hand because tungstenite's
//! client will not send bad ones.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::frames::{
    FIN, OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RSV1, client_frame, expect_close_raw, read_frame,
};
use common::{Daemon, Ws};

const CONFIG: &str = r#"
[server]
max_message_size = "64KiB"

[[room]]
path = "/small"
max_message_size = 1024

[[room]]
path = "/big"
"#;

/// Upgrade on `path`, write `bytes`, return the close code the server answers with.
fn close_code_after(d: &Daemon, path: &str, bytes: &[u8]) -> u16 {
    let mut s = d.raw_upgrade(path, "");
    s.write_all(bytes).expect("write frames");
    expect_close_raw(&mut s).0
}

/// A lone member of `path`, known to be active; its socket is used raw afterwards.
fn lone(d: &Daemon, path: &str) -> Ws {
    let ws = [d.raw_ws(path)];
    let [ws] = ws;
    ws
}

/// Send `payload` as one binary message and read it back (echo is on).
fn echoed(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(&client_frame(FIN | OP_BINARY, payload, true))
        .unwrap();
    let f = read_frame(s).unwrap().expect("echo, not EOF");
    assert_eq!((f.opcode(), f.payload.len()), (OP_BINARY, payload.len()));
}

#[test]
fn invalid_utf8_text_is_1007() {
    let d = Daemon::start(CONFIG);
    let bad = client_frame(FIN | OP_TEXT, b"ok \xff\xfe", true);
    assert_eq!(close_code_after(&d, "/big", &bad), 1007);
}

#[test]
fn invalid_utf8_split_across_fragments_is_1007() {
    let d = Daemon::start(CONFIG);
    // "é" is C3 A9; a lone C3 at the end of the message is invalid.
    let mut bytes = client_frame(OP_TEXT, b"caf", true);
    bytes.extend(client_frame(FIN | OP_CONT, b"\xc3", true));
    assert_eq!(close_code_after(&d, "/big", &bytes), 1007);
}

#[test]
fn message_over_room_limit_is_1009() {
    let d = Daemon::start(CONFIG);
    let big = client_frame(FIN | OP_BINARY, &[7u8; 2000], true);
    assert_eq!(close_code_after(&d, "/small", &big), 1009);
}

#[test]
fn fragmented_message_over_room_limit_is_1009() {
    let d = Daemon::start(CONFIG);
    let mut bytes = client_frame(OP_BINARY, &[1u8; 700], true);
    bytes.extend(client_frame(FIN | OP_CONT, &[2u8; 700], true));
    assert_eq!(close_code_after(&d, "/small", &bytes), 1009);
}

#[test]
fn message_over_server_limit_is_1009() {
    let d = Daemon::start(CONFIG);
    let big = client_frame(FIN | OP_BINARY, &vec![7u8; 65 * 1024], true);
    assert_eq!(close_code_after(&d, "/big", &big), 1009);
}

#[test]
fn room_limit_applies_only_to_its_room() {
    let d = Daemon::start(CONFIG);
    echoed(lone(&d, "/big").get_mut(), &[7u8; 2000]);
    echoed(lone(&d, "/small").get_mut(), &[7u8; 1000]);
}

#[test]
fn unmasked_client_frame_is_1002() {
    let d = Daemon::start(CONFIG);
    let bare = client_frame(FIN | OP_TEXT, b"hello", false);
    assert_eq!(close_code_after(&d, "/big", &bare), 1002);
}

#[test]
fn reserved_bit_is_1002() {
    let d = Daemon::start(CONFIG);
    let rsv = client_frame(FIN | RSV1 | OP_TEXT, b"hello", true);
    assert_eq!(close_code_after(&d, "/big", &rsv), 1002);
}

#[test]
fn reserved_opcode_is_1002() {
    let d = Daemon::start(CONFIG);
    let op3 = client_frame(FIN | 0x3, b"hello", true);
    assert_eq!(close_code_after(&d, "/big", &op3), 1002);
}

#[test]
fn fragmented_control_frame_is_1002() {
    let d = Daemon::start(CONFIG);
    let ping = client_frame(OP_PING, b"no fin", true);
    assert_eq!(close_code_after(&d, "/big", &ping), 1002);
}

#[test]
fn continuation_without_start_is_1002() {
    let d = Daemon::start(CONFIG);
    let cont = client_frame(FIN | OP_CONT, b"orphan", true);
    assert_eq!(close_code_after(&d, "/big", &cont), 1002);
}

#[test]
fn ping_between_fragments_is_answered_and_message_delivered() {
    let d = Daemon::start(CONFIG);
    let mut ws = lone(&d, "/big");
    let s = ws.get_mut();
    let mut bytes = client_frame(OP_TEXT, b"hel", true);
    bytes.extend(client_frame(FIN | OP_PING, b"p", true));
    bytes.extend(client_frame(FIN | OP_CONT, b"lo", true));
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = read_frame(s).unwrap().expect("frame, not EOF");
        got.push((f.opcode(), f.payload));
    }
    got.sort();
    assert_eq!(
        got,
        vec![(OP_TEXT, b"hello".to_vec()), (0xA, b"p".to_vec())]
    );
}
