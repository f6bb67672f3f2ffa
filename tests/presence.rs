//! Presence: v1 members of a room with `presence = true` are told who joins and leaves, in the
//! room's order, across workers; the welcome carries the member count; `user` is the token's
//! `sub`; past `presence_max_events_per_second` a count replaces the dropped events.

mod common;

use serde_json::Value;

use common::jwt;
use common::v1;
use common::{Daemon, TempFile, Ws, send_text};

const SECRET: &str = "presence-secret-presence-secret-0123";

fn config(secret: &TempFile) -> String {
    format!(
        r#"
[server]
workers = 2
colocate_members = 0

[auth]
jwt_secret_file = "{}"

[[room]]
path = "/p/*"
presence = true

[[room]]
path = "/slow/*"
presence = true
presence_max_events_per_second = 2

[[room]]
path = "/team/*"
presence = true
auth = "jwt"

[[room]]
path = "/quiet/*"
"#,
        secret.path().display()
    )
}

#[test]
fn members_see_joins_and_leaves_in_the_room_order() {
    let secret = TempFile::new(SECRET);
    let d = Daemon::start(&config(&secret));
    let (mut a, wa) = v1::join(&d, "/p/x");
    let (mut b, wb) = v1::join(&d, "/p/x");
    assert_ne!(wa.member, wb.member, "member ids are unique in the room");
    let join = v1::next_json(&mut a);
    assert_eq!(join["type"], "join");
    assert_eq!(join["member"], wb.member.as_str());
    assert_eq!(
        (join["user"].clone(), join["seq"].as_u64()),
        (Value::Null, Some(0))
    );

    // A message, then a third member: the join event carries the message's number.
    send_text(&mut a, "hello");
    assert_eq!(v1::next(&mut a).seq, 1);
    assert_eq!(v1::next(&mut b).seq, 1);
    let (c, wc) = v1::join(&d, "/p/x");
    for ws in [&mut a, &mut b] {
        let j = v1::next_json(ws);
        assert_eq!(
            (j["type"].as_str(), j["seq"].as_u64()),
            (Some("join"), Some(1))
        );
        assert_eq!(j["member"], wc.member.as_str());
    }
    common::close(c);
    for ws in [&mut a, &mut b] {
        let l = v1::next_json(ws);
        assert_eq!(
            (l["type"].as_str(), l["member"].as_str()),
            (Some("leave"), Some(wc.member.as_str()))
        );
    }
    // A raw member gets no presence events, and counts as a member.
    let mut raw = d.connect("/p/x", &[]);
    let j = v1::next_json(&mut a);
    assert_eq!(j["type"], "join");
    send_text(&mut b, "after");
    assert_eq!(common::recv_text(&mut raw), "after");
}

#[test]
fn the_welcome_counts_the_members_and_user_is_the_token_sub() {
    let secret = TempFile::new(SECRET);
    let d = Daemon::start(&config(&secret));
    let t = |sub: &str| jwt::token(SECRET, &format!(r#","sub":"{sub}""#));
    let mut ws = Vec::new();
    for (i, who) in ["ada", "bob", "cy"].iter().enumerate() {
        let (w, welcome) = v1::join(&d, &format!("/team/a?token={}", t(who)));
        assert_eq!(welcome.members, Some(i as u64 + 1), "itself included");
        ws.push(w);
    }
    let first = &mut ws[0];
    let j = v1::next_json(first);
    assert_eq!(
        (j["type"].as_str(), j["user"].as_str()),
        (Some("join"), Some("bob"))
    );
    let j = v1::next_json(first);
    assert_eq!(j["user"], "cy");
    let mut s = d.connect(&format!("/team/a?token={}", t("dee")), &["wsrelay.v1"]);
    let w = v1::next_json(&mut s);
    assert_eq!(
        (w["type"].as_str(), w["members"].as_u64()),
        (Some("welcome"), Some(4))
    );
    // A room without presence says nothing of members.
    let mut q = d.connect("/quiet/a", &["wsrelay.v1"]);
    let w = v1::next_json(&mut q);
    assert!(w.get("members").is_none(), "{w}");
}

#[test]
fn past_the_rate_members_get_a_count_instead() {
    let secret = TempFile::new(SECRET);
    let d = Daemon::start(&config(&secret));
    let (mut watcher, _) = v1::join(&d, "/slow/r");
    let others: Vec<(Ws, v1::Welcome)> = (0..10).map(|_| v1::join(&d, "/slow/r")).collect();
    // At most 2 join events in this burst (the bucket holds 2), then a count of all 11.
    let mut joins = 0;
    loop {
        let e = v1::next_json(&mut watcher);
        match e["type"].as_str() {
            Some("join") => joins += 1,
            Some("members") => {
                assert_eq!(e["count"].as_u64(), Some(11), "{e}");
                break;
            }
            t => panic!("unexpected {t:?}: {e}"),
        }
    }
    assert!(joins <= 3, "{joins} join events past a rate of 2");
    let coalesced = d.wait_metric("wsrelay_presence_events_coalesced_total", |v| v >= 7.0);
    let sent = d.wait_metric("wsrelay_presence_events_total", |v| v >= 1.0);
    assert!(
        sent + coalesced >= 11.0,
        "{sent} sent, {coalesced} coalesced"
    );
    drop(others);
}
