//! Pure: what the registry's scripts answer, read into the API's shapes, and the presence list
//! a node writes.

use std::io;

use log::warn;

use super::super::resp::Value;
use crate::server::api::Member;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// An epoch (16 hex digits, as kept by the link) and a last number from `GET`s.
pub(super) fn epoch_seq(pair: &[Value]) -> Option<(String, u64)> {
    let epoch = match pair.first()? {
        Value::Bulk(Some(e)) => String::from_utf8(e.clone()).ok()?,
        _ => return None,
    };
    let seq = match pair.get(1) {
        Some(Value::Bulk(Some(s))) => std::str::from_utf8(s).ok()?.parse().ok()?,
        _ => 0,
    };
    Some((epoch, seq))
}

/// The rooms script's chunks of (path, count) pairs.
pub(super) fn parse_rooms(v: Value) -> io::Result<Vec<(String, usize)>> {
    let Value::Array(Some(chunks)) = v else {
        return Err(bad(
            "the rooms script answered something else than an array",
        ));
    };
    let mut out = Vec::new();
    for chunk in chunks {
        let Value::Array(Some(items)) = chunk else {
            return Err(bad(
                "the rooms script answered a chunk that is not an array",
            ));
        };
        for pair in items.chunks(2) {
            match pair {
                [Value::Bulk(Some(p)), Value::Int(n)] => out.push((
                    String::from_utf8_lossy(p).into_owned(),
                    usize::try_from(*n).unwrap_or(0),
                )),
                _ => return Err(bad("the rooms script answered a bad pair")),
            }
        }
    }
    Ok(out)
}

/// Each node's presence JSON, as one list: member ids get `@<node>` (ids are per node), lists
/// that do not parse are skipped, the whole sorted by joining time then id (as on one node).
pub(super) fn merge_presence(lists: &[(String, &[u8])]) -> Vec<Member> {
    #[derive(serde::Deserialize)]
    struct Entry {
        member: String,
        user: Option<String>,
        joined: u64,
    }
    let mut out = Vec::new();
    for (node, json) in lists {
        let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(json) else {
            warn!("cluster registry: node {node}'s presence list is not ours; skipped");
            continue;
        };
        out.extend(entries.into_iter().map(|e| Member {
            // Ids name their node already (`<worker>-<n>@<node>`, as in the welcome).
            member: if e.member.contains('@') {
                e.member
            } else {
                format!("{}@{node}", e.member)
            },
            user: e.user,
            joined: e.joined,
        }));
    }
    out.sort_by(|a, b| (a.joined, &a.member).cmp(&(b.joined, &b.member)));
    out
}

/// A presence list as a node writes it: the fields the API shows.
pub(super) fn presence_json(members: &[Member]) -> String {
    let list: Vec<serde_json::Value> = members
        .iter()
        .map(|m| serde_json::json!({"member": m.member, "user": m.user, "joined": m.joined}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn presence_lists_merge_with_node_names() {
        let a = presence_json(&[Member {
            member: "0-1".into(),
            user: Some("alice".into()),
            joined: 20,
        }]);
        let b = r#"[{"member":"0-1","user":null,"joined":10}]"#;
        let merged = merge_presence(&[
            ("a".into(), a.as_bytes()),
            ("b".into(), b.as_bytes()),
            ("c".into(), b"not json"),
        ]);
        let names: Vec<&str> = merged.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["0-1@b", "0-1@a"]);
        assert_eq!(merged[1].user.as_deref(), Some("alice"));
        assert_eq!(merged[0].user, None);
    }

    #[test]
    fn rooms_chunks_and_epochs_parse() {
        let v = Value::Array(Some(vec![
            Value::Array(Some(vec![bulk("/a"), Value::Int(3)])),
            Value::Array(Some(vec![bulk("/b"), Value::Int(1)])),
        ]));
        assert_eq!(
            parse_rooms(v).unwrap(),
            [("/a".to_owned(), 3), ("/b".to_owned(), 1)]
        );
        assert!(parse_rooms(Value::Int(1)).is_err());
        assert!(parse_rooms(Value::Array(Some(vec![Value::Int(1)]))).is_err());
        assert_eq!(
            epoch_seq(&[bulk("00000000000000ff"), bulk("42")]),
            Some(("00000000000000ff".to_owned(), 42))
        );
        assert_eq!(
            epoch_seq(&[bulk("e"), Value::Bulk(None)]),
            Some(("e".into(), 0))
        );
        assert_eq!(epoch_seq(&[Value::Bulk(None), bulk("1")]), None);
    }
}
