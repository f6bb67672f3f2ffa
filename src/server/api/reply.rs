//! The API's answers: JSON bodies for each [`Outcome`], `{"error":"…"}` for refusals, and the
//! HTTP/1.1 response around them. Pure.

use std::fmt::Write as _;

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::calls::{Body, Outcome, RoomInfo};

/// A response before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// `Allow`, with a 405.
    pub allow: Option<&'static str>,
}

pub const JSON: &str = "application/json";
pub const NDJSON: &str = "application/x-ndjson";

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: JSON,
            body,
            allow: None,
        }
    }

    /// A JSON text made already (a newline is added).
    pub fn text_json(status: u16, text: String) -> Reply {
        let mut body = text.into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: JSON,
            body,
            allow: None,
        }
    }

    /// `{"error":"<reason>"}` with `status`.
    pub fn error(status: u16, reason: &str) -> Reply {
        Reply::json(status, &json!({ "error": one_line(reason) }))
    }

    /// The response bytes; `close` adds `Connection: close`.
    pub fn encode(&self, close: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            let _ = write!(head, "Allow: {allow}\r\n");
        }
        if self.status == 401 {
            head.push_str("WWW-Authenticate: Bearer\r\n");
        }
        if self.status == 503 {
            // Shutting down, or Redis unavailable: worth another try on the next node or soon.
            head.push_str("Retry-After: 1\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// A reason on one line (a relay reason never has a newline; a parser's might).
fn one_line(reason: &str) -> String {
    reason.lines().next().unwrap_or("").trim().to_owned()
}

/// The reason phrase of the statuses the API answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A room with members, as JSON (fields in the order the README shows).
#[derive(Serialize)]
struct RoomJson<'a> {
    room: &'a str,
    members: usize,
    epoch: &'a str,
    seq: u64,
}

impl<'a> From<&'a RoomInfo> for RoomJson<'a> {
    fn from(r: &'a RoomInfo) -> Self {
        RoomJson {
            room: &r.room,
            members: r.members,
            epoch: &r.epoch,
            seq: r.seq,
        }
    }
}

/// A message: `data` for text, `base64` for binary.
#[derive(Serialize)]
pub struct MessageJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl MessageJson {
    pub fn new(seq: Option<u64>, m: &Body) -> MessageJson {
        let (data, base64) = match m.binary {
            true => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(&m.bytes)),
            ),
            false => (Some(String::from_utf8_lossy(&m.bytes).into_owned()), None),
        };
        MessageJson { seq, data, base64 }
    }
}

#[derive(Serialize)]
struct PublishedJson<'a> {
    room: &'a str,
    epoch: &'a str,
    seq: u64,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    room: &'a str,
    epoch: &'a str,
    seq: u64,
    messages: Vec<MessageJson>,
}

#[derive(Serialize)]
struct MemberJson<'a> {
    member: &'a str,
    user: Option<&'a str>,
    joined: u64,
}

/// The status and JSON text (one line, no newline) of an outcome.
pub fn outcome(o: &Outcome) -> (u16, String) {
    match o {
        Outcome::Published { room, epoch, seq } => (
            200,
            text(&PublishedJson {
                room,
                epoch,
                seq: *seq,
            }),
        ),
        Outcome::Rooms(rooms) => {
            let rooms: Vec<RoomJson> = rooms.iter().map(RoomJson::from).collect();
            (200, json!({ "rooms": rooms }).to_string())
        }
        Outcome::Room(r) => (200, text(&RoomJson::from(r))),
        Outcome::History {
            room,
            epoch,
            seq,
            messages,
        } => {
            let messages = messages
                .iter()
                .map(|k| MessageJson::new(Some(k.seq), &k.message))
                .collect();
            let h = HistoryJson {
                room,
                epoch,
                seq: *seq,
                messages,
            };
            (200, text(&h))
        }
        Outcome::Presence { room, members } => {
            let members: Vec<MemberJson> = members
                .iter()
                .map(|m| MemberJson {
                    member: &m.member,
                    user: m.user.as_deref(),
                    joined: m.joined,
                })
                .collect();
            (200, json!({ "room": room, "members": members }).to_string())
        }
        Outcome::Disconnected(n) => (200, json!({ "disconnected": n }).to_string()),
        Outcome::Refused { status, reason } => {
            // A relay status outside 400..=599 would confuse a client: it is our bug, say 500.
            let status = if (400..=599).contains(status) {
                *status
            } else {
                500
            };
            (status, json!({ "error": one_line(reason) }).to_string())
        }
    }
}

/// One JSON line of a serializable value (fields in declaration order).
fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The reply for an outcome.
pub fn for_outcome(o: &Outcome) -> Reply {
    let (status, v) = outcome(o);
    Reply::text_json(status, v)
}

#[cfg(test)]
mod tests {
    use super::super::calls::{Kept, Member};
    use super::*;

    fn text(r: &Reply) -> String {
        String::from_utf8(r.encode(false)).unwrap()
    }

    fn value(o: &Outcome) -> (u16, Value) {
        let (s, t) = outcome(o);
        (s, serde_json::from_str(&t).unwrap())
    }

    #[test]
    fn outcomes_as_the_issue_shows_them() {
        let r = for_outcome(&Outcome::Published {
            room: "/rooms/lobby".into(),
            epoch: "9f3c0a1b2c3d4e5f".into(),
            seq: 43,
        });
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "{\"room\":\"/rooms/lobby\",\"epoch\":\"9f3c0a1b2c3d4e5f\",\"seq\":43}\n"
        );
        let (_, v) = value(&Outcome::History {
            room: "/c".into(),
            epoch: "e".into(),
            seq: 2,
            messages: vec![
                Kept {
                    seq: 1,
                    message: Body {
                        binary: false,
                        bytes: b"hi".to_vec(),
                    },
                },
                Kept {
                    seq: 2,
                    message: Body {
                        binary: true,
                        bytes: vec![0, 255],
                    },
                },
            ],
        });
        assert_eq!(
            v["messages"],
            json!([{"seq":1,"data":"hi"},{"seq":2,"base64":"AP8="}])
        );
        let (_, v) = value(&Outcome::Presence {
            room: "/c".into(),
            members: vec![Member {
                member: "1-2".into(),
                user: None,
                joined: 5,
            }],
        });
        assert_eq!(
            v,
            json!({"room":"/c","members":[{"member":"1-2","user":null,"joined":5}]})
        );
        let (s, v) = value(&Outcome::Refused {
            status: 416,
            reason: "since is older than what is kept".into(),
        });
        assert_eq!(
            (s, v),
            (416, json!({"error":"since is older than what is kept"}))
        );
    }

    #[test]
    fn heads_carry_what_the_status_needs() {
        let r = Reply::error(401, "missing key\nsecond line");
        let t = text(&r);
        assert!(t.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{t}");
        assert!(t.contains("WWW-Authenticate: Bearer\r\n"));
        assert!(t.ends_with("\r\n\r\n{\"error\":\"missing key\"}\n"), "{t}");
        let mut r = Reply::error(405, "no");
        r.allow = Some("POST");
        assert!(text(&r).contains("Allow: POST\r\n"));
        assert!(
            String::from_utf8(r.encode(true))
                .unwrap()
                .contains("Connection: close\r\n")
        );
    }
}
