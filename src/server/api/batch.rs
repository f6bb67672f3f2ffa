//! `POST /api/v1/batch`: an NDJSON body, one `{"room":"/x","data":"text"}` or
//! `{"room":"/x","base64":"…"}` per line, becomes one publish per line, issued in the body's
//! order (so each room's messages keep it); the answer is one NDJSON line per input line, in
//! the same order. Blank lines are skipped. Pure: parsing and the answer's lines.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::calls::{Body, Outcome};
use super::reply::outcome;
use crate::config::Config;

/// Lines in one batch; past it the whole batch is refused with 413.
pub const MAX_LINES: usize = 10_000;
/// Bytes of one batch body, checked from `Content-Length` before it is read (413): 10,000
/// messages of 400 bytes, or a few of the largest a room allows.
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    room: String,
    data: Option<String>,
    base64: Option<String>,
}

/// One line of a batch: a message to publish, or why not (its result is then this refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Publish { room: String, message: Body },
    Refused(Outcome),
}

fn refused(status: u16, reason: String) -> Line {
    Line::Refused(Outcome::Refused { status, reason })
}

/// The batch's lines; `Err` (413) when it has more than [`MAX_LINES`].
pub fn parse(body: &[u8], config: &Config) -> Result<Vec<Line>, String> {
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .collect();
    if lines.len() > MAX_LINES {
        return Err(format!("a batch holds at most {MAX_LINES} lines"));
    }
    Ok(lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| line(i + 1, l, config))
        .collect())
}

fn line(n: usize, text: &[u8], config: &Config) -> Line {
    let parsed: LineIn = match serde_json::from_slice(text) {
        Ok(p) => p,
        Err(e) => return refused(400, format!("line {n}: {e}")),
    };
    let message = match (parsed.data, parsed.base64) {
        (Some(text), None) => Body {
            binary: false,
            bytes: text.into_bytes(),
        },
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => Body {
                binary: true,
                bytes,
            },
            Err(e) => return refused(400, format!("line {n}: base64: {e}")),
        },
        _ => {
            return refused(
                400,
                format!("line {n}: give exactly one of data and base64"),
            );
        }
    };
    if !parsed.room.starts_with('/') {
        return refused(400, format!("line {n}: room must start with /"));
    }
    let Some(room) = config.route(&parsed.room) else {
        return refused(404, format!("line {n}: no room at {}", parsed.room));
    };
    if message.bytes.len() > room.max_message_size {
        let limit = room.max_message_size;
        return refused(
            413,
            format!("line {n}: the message is over the room's max_message_size ({limit} bytes)"),
        );
    }
    Line::Publish {
        room: parsed.room,
        message,
    }
}

/// The answer's line for one input line: `{"room","epoch","seq"}`, or `{"error","status"}`.
pub fn result_line(o: &Outcome) -> String {
    match outcome(o) {
        (200, text) => text,
        (status, _) => {
            let reason = match o {
                Outcome::Refused { reason, .. } => reason.as_str(),
                _ => "unexpected answer from the relay",
            };
            json!({ "error": reason, "status": status }).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            "[[room]]\npath = \"/rooms/*\"\nmax_message_size = 8\n[[room]]\npath = \"/big\"\n",
        )
        .unwrap()
    }

    #[test]
    fn lines_become_publishes_or_refusals_in_order() {
        let body = b"{\"room\":\"/rooms/a\",\"data\":\"hi\"}\n\n{\"room\":\"/big\",\"base64\":\"AP8=\"}\n\
                     {\"room\":\"/nowhere\",\"data\":\"x\"}\n{\"room\":\"/rooms/a\",\"data\":\"123456789\"}\n\
                     not json\n{\"room\":\"/big\",\"data\":\"a\",\"base64\":\"\"}\n";
        let lines = parse(body, &config()).unwrap();
        let status = |l: &Line| match l {
            Line::Publish { .. } => 200,
            Line::Refused(Outcome::Refused { status, .. }) => *status,
            Line::Refused(_) => 0,
        };
        assert_eq!(
            lines.iter().map(status).collect::<Vec<_>>(),
            [200, 200, 404, 413, 400, 400]
        );
        assert_eq!(
            lines[1],
            Line::Publish {
                room: "/big".into(),
                message: Body {
                    binary: true,
                    bytes: vec![0, 255]
                }
            }
        );
        assert_eq!(
            result_line(&Outcome::Refused {
                status: 404,
                reason: "no room".into()
            }),
            "{\"error\":\"no room\",\"status\":404}"
        );
    }

    #[test]
    fn too_many_lines_refuse_the_batch() {
        let body = "{}\n".repeat(MAX_LINES + 1);
        assert!(parse(body.as_bytes(), &config()).is_err());
        let body = "{}\n".repeat(MAX_LINES);
        assert_eq!(parse(body.as_bytes(), &config()).unwrap().len(), MAX_LINES);
    }
}
