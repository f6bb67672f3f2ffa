//! The path picks the room: an exact room matches only its path; each path under a `/prefix/*`
//! pattern is a room of its own; anything else is 404.

mod common;

use common::{Daemon, Ws, recv_text, send_text, status, upgrade_request};

const CONFIG: &str = r#"
[server]
workers = 1

[[room]]
path = "/chat"

[[room]]
path = "/rooms/*"
"#;

fn members(d: &Daemon, path: &str, n: usize) -> Vec<Ws> {
    (0..n).map(|_| d.connect(path, &[])).collect()
}

/// `secret` published in `from[0]` reached `from[1]`; a marker published afterwards in `other`
/// then reaches both members of `other` first, so `secret` was never delivered there.
fn isolated(from: &mut [Ws], other: &mut [Ws], secret: &str) {
    send_text(&mut from[0], secret);
    assert_eq!(recv_text(&mut from[1]), secret);
    send_text(&mut other[1], "marker");
    for ws in other.iter_mut() {
        assert_eq!(recv_text(ws), "marker", "a message leaked between rooms");
    }
}

#[test]
fn pattern_rooms_are_isolated() {
    let d = Daemon::start(CONFIG);
    let mut a = members(&d, "/rooms/a", 2);
    let mut b = members(&d, "/rooms/b", 2);
    isolated(&mut a, &mut b, "for a only");
    assert_eq!(recv_text(&mut a[0]), "for a only"); // echo
    isolated(&mut b, &mut a, "for b only");
}

#[test]
fn exact_room_is_separate_from_pattern_rooms() {
    let d = Daemon::start(CONFIG);
    let mut chat = members(&d, "/chat", 2);
    let mut room = members(&d, "/rooms/chat", 2);
    isolated(&mut chat, &mut room, "chat only");
}

#[test]
fn same_path_is_same_room() {
    let d = Daemon::start(CONFIG);
    let mut m = members(&d, "/rooms/shared", 3);
    send_text(&mut m[2], "to all");
    for ws in m.iter_mut() {
        assert_eq!(recv_text(ws), "to all");
    }
}

#[test]
fn query_string_does_not_change_the_room() {
    let d = Daemon::start(CONFIG);
    let mut m = [d.connect("/rooms/q", &[]), d.connect("/rooms/q?x=1", &[])];
    // Each hears the other: one room.
    send_text(&mut m[1], "from ?x=1");
    for ws in m.iter_mut() {
        assert_eq!(recv_text(ws), "from ?x=1");
    }
    send_text(&mut m[0], "from /rooms/q");
    for ws in m.iter_mut() {
        assert_eq!(recv_text(ws), "from /rooms/q");
    }
}

#[test]
fn paths_without_a_room_are_404() {
    let d = Daemon::start(CONFIG);
    for path in ["/", "/chat/x", "/chatx", "/rooms", "/other", "/room/a"] {
        let head = d.raw_request(upgrade_request(path, "").as_bytes());
        assert_eq!(status(&head), 404, "{path}: {head}");
    }
}
