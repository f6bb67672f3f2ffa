//! SIGHUP: the file is read again and applied without dropping connections; a broken file keeps
//! the running config; a removed room's members are closed with 1001.
//! A reload is awaited through `wsrelay_config_reloads_total`, which moves once it is applied.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Ws, read_close, recv_text, send_text, status};

const BEFORE: &str = r#"
[[room]]
path = "/chat"

[[room]]
path = "/doomed"
"#;

const AFTER: &str = r#"
[[room]]
path = "/chat"

[[room]]
path = "/new"
"#;

/// Send SIGHUP and wait until the reload counter for `result` reaches `count`.
fn reload(d: &Daemon, result: &str, count: f64) {
    d.signal(libc::SIGHUP);
    let sample = format!("wsrelay_config_reloads_total{{result=\"{result}\"}}");
    d.wait_metric(&sample, |v| v == count);
}

fn upgrade_status(d: &Daemon, path: &str) -> u16 {
    status(&d.raw_request(common::upgrade_request(path, "").as_bytes()))
}

fn exchange(members: &mut [Ws], text: &str) {
    send_text(&mut members[0], text);
    for m in members.iter_mut() {
        assert_eq!(recv_text(m), text);
    }
}

#[test]
fn a_room_added_by_reload_opens_while_clients_stay_connected() {
    let d = Daemon::start(BEFORE);
    let mut chat: Vec<Ws> = (0..3).map(|_| d.connect("/chat", &[])).collect();
    assert_eq!(upgrade_status(&d, "/new"), 404);

    d.rewrite_config(AFTER);
    reload(&d, "ok", 1.0);

    assert_eq!(upgrade_status(&d, "/new"), 101);
    exchange(&mut chat, "still here");
    let mut new: Vec<Ws> = (0..2).map(|_| d.connect("/new", &[])).collect();
    exchange(&mut new, "in the new room");
    exchange(&mut chat, "and the old one");
}

#[test]
fn a_broken_file_keeps_the_running_config() {
    let d = Daemon::start(BEFORE);
    let mut chat: Vec<Ws> = (0..2).map(|_| d.connect("/chat", &[])).collect();

    d.rewrite_config("[[room]]\npath = \"/new\"\nmax_message_size = 0\n");
    reload(&d, "failed", 1.0);
    assert_eq!(
        d.metric("wsrelay_config_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );

    assert_eq!(
        upgrade_status(&d, "/new"),
        404,
        "the broken file was applied"
    );
    assert_eq!(
        upgrade_status(&d, "/doomed"),
        101,
        "the running config was dropped"
    );
    exchange(&mut chat, "unaffected");
}

#[test]
fn members_of_a_removed_room_are_closed_with_1001_and_the_others_stay() {
    let d = Daemon::start(BEFORE);
    let mut chat: Vec<Ws> = (0..2).map(|_| d.connect("/chat", &[])).collect();
    let mut doomed: Vec<Ws> = (0..2).map(|_| d.connect("/doomed", &[])).collect();

    d.rewrite_config(AFTER);
    reload(&d, "ok", 1.0);

    for m in &mut doomed {
        assert_eq!(read_close(m), (1001, "room removed".to_string()));
    }
    exchange(&mut chat, "we stay");
    assert_eq!(upgrade_status(&d, "/doomed"), 404);
}

#[test]
fn a_reload_changes_room_settings_for_members_already_in() {
    let d = Daemon::start("[[room]]\npath = \"/chat\"\n");
    let mut chat: Vec<Ws> = (0..2).map(|_| d.connect("/chat", &[])).collect();

    d.rewrite_config("[[room]]\npath = \"/chat\"\nmax_message_size = 100\n");
    reload(&d, "ok", 1.0);

    // The workers apply a reload after the acceptor counts it: a message under the old limit
    // and over the new one is refused once it applies; until then it is relayed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "the new limit never applied");
        send_text(&mut chat[0], &"x".repeat(200));
        match chat[0].read() {
            Ok(tungstenite::Message::Text(t)) => {
                assert_eq!(t.len(), 200);
                assert_eq!(recv_text(&mut chat[1]).len(), 200);
            }
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1009);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn members_without_a_token_are_closed_when_their_room_turns_to_jwt() {
    let d = Daemon::start("[[room]]\npath = \"/chat\"\n\n[[room]]\npath = \"/open\"\n");
    let mut chat: Vec<Ws> = (0..2).map(|_| d.connect("/chat", &[])).collect();
    let mut open: Vec<Ws> = (0..2).map(|_| d.connect("/open", &[])).collect();

    d.rewrite_config(
        "[auth]\njwt_secret = \"an example secret of at least 32 bytes\"\n\n\
         [[room]]\npath = \"/chat\"\nauth = \"jwt\"\n\n[[room]]\npath = \"/open\"\n",
    );
    reload(&d, "ok", 1.0);

    for m in &mut chat {
        assert_eq!(read_close(m), (1008, "authentication required".to_string()));
    }
    exchange(&mut open, "the open room is untouched");
    assert_eq!(upgrade_status(&d, "/chat"), 401);
}
