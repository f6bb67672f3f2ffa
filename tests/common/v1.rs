//! A `wsrelay.v1` client for the tests: the welcome frame, then numbered messages.

use serde_json::Value;
use tungstenite::Message;

use super::{Daemon, Ws, recv};

/// The first frame a v1 member gets.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub room: String,
    pub epoch: String,
    pub seq: u64,
    pub member: String,
    pub recovered: bool,
    pub replayed: u64,
    /// The member count, in a room with presence.
    pub members: Option<u64>,
}

/// A room message as a v1 member gets it: its number and its text (or bytes, for binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub seq: u64,
    pub data: Vec<u8>,
    pub binary: bool,
}

impl Numbered {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.data).expect("utf-8")
    }
}

/// Join `path` (with its query) as a v1 client; returns the socket and its welcome.
pub fn join(d: &Daemon, path: &str) -> (Ws, Welcome) {
    let mut ws = d.connect(path, &["wsrelay.v1"]);
    let w = welcome(&mut ws);
    (ws, w)
}

/// Read the welcome frame.
pub fn welcome(ws: &mut Ws) -> Welcome {
    let text = match recv(ws) {
        Message::Text(t) => t.as_str().to_owned(),
        m => panic!("expected the welcome, got {m:?}"),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(v["type"], "welcome", "{text}");
    Welcome {
        room: v["room"].as_str().expect("room").to_owned(),
        epoch: v["epoch"].as_str().expect("epoch").to_owned(),
        seq: v["seq"].as_u64().expect("seq"),
        member: v["member"].as_str().expect("member").to_owned(),
        recovered: v["recovered"].as_bool().expect("recovered"),
        replayed: v["replayed"].as_u64().expect("replayed"),
        members: v["members"].as_u64(),
    }
}

/// The next room message.
pub fn next(ws: &mut Ws) -> Numbered {
    match recv(ws) {
        Message::Text(t) => {
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            assert_eq!(v["type"], "message", "{t}");
            Numbered {
                seq: v["seq"].as_u64().expect("seq"),
                data: v["data"].as_str().expect("data").as_bytes().to_vec(),
                binary: false,
            }
        }
        Message::Binary(b) => {
            assert!(b.len() >= 8, "binary v1 frame shorter than its number");
            Numbered {
                seq: u64::from_be_bytes(b[..8].try_into().unwrap()),
                data: b[8..].to_vec(),
                binary: true,
            }
        }
        m => panic!("expected a message, got {m:?}"),
    }
}

/// The next frame, a v1 text frame of any type, as JSON.
pub fn next_json(ws: &mut Ws) -> Value {
    match recv(ws) {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("json"),
        m => panic!("expected a v1 text frame, got {m:?}"),
    }
}
