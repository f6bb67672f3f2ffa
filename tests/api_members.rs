//! Members through the server-side API: presence lists exactly the members (with the token's
//! `sub`), disconnect by member id and by user closes them with 4001, and a ban refuses the
//! user's older tokens with 403 while a token issued after it works.

mod common;

use common::jwt::{now, token};
use common::v1;
use common::{Daemon, close, describe, read_close};

const SECRET: &str = "api-members-secret-0123456789abcdef-0123";

fn config() -> String {
    format!(
        r#"
[server]
workers = 2
colocate_members = 0

[auth]
jwt_secret = "{SECRET}"

[[room]]
path = "/p/*"
presence = true

[[room]]
path = "/vip/*"
auth = "jwt"
presence = true

[[room]]
path = "/plain/*"
"#
    )
}

#[test]
fn presence_lists_exactly_the_members() {
    let d = Daemon::start_api(&config(), "");
    let (a, wa) = v1::join(&d, "/p/x");
    let (b, wb) = v1::join(&d, "/p/x");
    let r = d.api("GET", "/api/v1/presence/p/x", "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["room"], "/p/x");
    let mut members: Vec<String> = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m["user"].is_null(), "{m}");
            assert!(m["joined"].as_u64().unwrap() > 1_700_000_000_000, "{m}");
            m["member"].as_str().unwrap().to_owned()
        })
        .collect();
    members.sort();
    let mut want = vec![wa.member.clone(), wb.member.clone()];
    want.sort();
    assert_eq!(members, want);
    close(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = d.api("GET", "/api/v1/presence/p/x", "", b"").json();
        if v["members"].as_array().unwrap().len() == 1 {
            assert_eq!(v["members"][0]["member"], wa.member.as_str());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b is still listed: {v}"
        );
    }
    let r = d.api("GET", "/api/v1/presence/plain/x", "", b"");
    assert_eq!(r.status, 404, "a room without presence: {}", r.text());
    close(a);
}

#[test]
fn disconnect_by_member_closes_it_with_4001() {
    let d = Daemon::start_api(&config(), "");
    let (mut a, wa) = v1::join(&d, "/p/d");
    let (b, _) = v1::join(&d, "/p/d");
    let path = format!("/api/v1/disconnect/p/d?member={}", wa.member);
    let r = d.api("POST", &path, "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["disconnected"], 1);
    assert_eq!(
        read_close(&mut a),
        (4001, "disconnected by server".to_owned())
    );
    close(b);
}

#[test]
fn disconnect_by_user_with_a_ban_refuses_older_tokens() {
    let d = Daemon::start_api(&config(), "");
    let old = token(SECRET, &format!(r#","sub":"alice","iat":{}"#, now() - 10));
    let bob = token(SECRET, r#","sub":"bob""#);
    let mut alice1 = d.connect(&format!("/vip/x?token={old}"), &[]);
    let mut alice2 = d.connect(&format!("/vip/x?token={old}"), &[]);
    let bob_ws = d.connect(&format!("/vip/x?token={bob}"), &[]);

    let r = d.api("GET", "/api/v1/presence/vip/x", "", b"");
    let mut users: Vec<String> = r.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    users.sort();
    assert_eq!(users, ["alice", "alice", "bob"]);

    let r = d.api(
        "POST",
        "/api/v1/disconnect/vip/x?user=alice&ban=60",
        "",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["disconnected"], 2);
    assert_eq!(read_close(&mut alice1).0, 4001);
    assert_eq!(read_close(&mut alice2).0, 4001);
    match d.try_connect(&format!("/vip/x?token={old}"), &[], &[]) {
        Err(e) => assert_eq!(describe(&e), "HTTP 403 Forbidden"),
        Ok(_) => panic!("a token issued before the ban still opens the room"),
    }
    let fresh = token(SECRET, &format!(r#","sub":"alice","iat":{}"#, now()));
    let ws = d.connect(&format!("/vip/x?token={fresh}"), &[]);
    close(ws);
    close(bob_ws);
}
