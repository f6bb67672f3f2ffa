//! Rooms with `auth = "jwt"`: a missing, malformed, forged, expired or not-yet-valid token gets
//! 401, a valid token for other rooms 403, a valid one 101 (from the query or an
//! `Authorization: Bearer` header); `publish: false` makes a listen-only member, closed with 1008
//! when it sends. The token never shows up in the daemon's log. Tokens are minted here.

mod common;

use common::jwt::{self, b64, now, sign};
use common::{
    Daemon, TempFile, close, header, read_close, recv_text, send_text, status, upgrade_request,
};

const SECRET: &str = "test-secret-test-secret-test-secret!";

/// The key comes from a file, as with systemd credentials; the trailing newline is not part of it.
fn config(secret_file: &TempFile) -> String {
    format!(
        r#"
[auth]
jwt_secret_file = {:?}

[[room]]
path = "/vip"
auth = "jwt"

[[room]]
path = "/team/*"
auth = "jwt"

[[room]]
path = "/guarded"
auth = "jwt"
allowed_origins = ["https://example.com"]
max_members = 1

[[room]]
path = "/open"
"#,
        secret_file.path().to_str().unwrap()
    )
}

fn start() -> (Daemon, TempFile) {
    let secret = TempFile::new(&format!("{SECRET}\n"));
    (Daemon::start(&config(&secret)), secret)
}

/// A good token valid for an hour, with `extra` claims (JSON members after a comma).
fn token(extra: &str) -> String {
    jwt::token(SECRET, extra)
}

/// The status of an upgrade request for `target` (path and query) with `extra` header lines.
fn upgrade_status(d: &Daemon, target: &str, extra: &str) -> (u16, String) {
    let head = d.raw_request(upgrade_request(target, extra).as_bytes());
    (status(&head), head)
}

fn assert_status(d: &Daemon, target: &str, extra: &str, want: u16, what: &str) {
    let (got, head) = upgrade_status(d, target, extra);
    assert_eq!(got, want, "{what}:\n{head}");
    if want == 401 {
        assert_eq!(header(&head, "www-authenticate").as_deref(), Some("Bearer"));
    }
}

#[test]
fn missing_malformed_forged_expired_or_early_tokens_get_401() {
    let (d, _secret) = start();
    let t = now();
    let good_header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let key = SECRET.as_bytes();
    let claims = format!(r#"{{"exp":{}}}"#, t + 3600);
    let cases = [
        ("no token", "/vip".to_string()),
        ("empty token", "/vip?token=".to_string()),
        ("not a JWT", "/vip?token=hello".to_string()),
        ("three junk parts", "/vip?token=a.b.c".to_string()),
        (
            "signed with another key",
            format!(
                "/vip?token={}",
                sign(good_header, &claims, b"another-secret-another-secret-12")
            ),
        ),
        (
            "signed with the key plus its newline",
            format!(
                "/vip?token={}",
                sign(good_header, &claims, format!("{SECRET}\n").as_bytes())
            ),
        ),
        (
            "expired an hour ago",
            format!(
                "/vip?token={}",
                sign(good_header, &format!(r#"{{"exp":{}}}"#, t - 3600), key)
            ),
        ),
        (
            "not valid for another hour",
            format!("/vip?token={}", token(&format!(r#","nbf":{}"#, t + 3600))),
        ),
        (
            "no exp",
            format!("/vip?token={}", sign(good_header, "{}", key)),
        ),
        (
            "alg none, unsigned",
            format!(
                "/vip?token={}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims.as_bytes())
            ),
        ),
        (
            "alg none, signed all the same",
            format!("/vip?token={}", sign(r#"{"alg":"none"}"#, &claims, key)),
        ),
        (
            "alg HS512",
            format!("/vip?token={}", sign(r#"{"alg":"HS512"}"#, &claims, key)),
        ),
    ];
    for (what, target) in &cases {
        assert_status(&d, target, "", 401, what);
    }
    // The same through the header.
    let forged = sign(good_header, &claims, b"another-secret-another-secret-12");
    assert_status(
        &d,
        "/vip",
        &format!("Authorization: Bearer {forged}\r\n"),
        401,
        "forged, in the header",
    );
    assert_status(
        &d,
        "/vip",
        "Authorization: Basic dXNlcjpwYXNz\r\n",
        401,
        "not a bearer token",
    );
    // Pattern rooms too.
    assert_status(&d, "/team/a", "", 401, "no token, pattern room");
}

#[test]
fn a_token_for_other_rooms_gets_403() {
    let (d, _secret) = start();
    let other = token(r#","rooms":["/other","/team/*"]"#);
    assert_status(&d, &format!("/vip?token={other}"), "", 403, "not in rooms");
    let none = token(r#","rooms":[]"#);
    assert_status(&d, &format!("/team/a?token={none}"), "", 403, "rooms empty");
    let exact = token(r#","rooms":["/team/a"]"#);
    assert_status(
        &d,
        &format!("/team/b?token={exact}"),
        "",
        403,
        "another room of the pattern",
    );
    assert_status(
        &d,
        &format!("/team/a?token={exact}"),
        "",
        101,
        "its own room",
    );
}

#[test]
fn a_valid_token_opens_the_room_from_the_query_or_the_header() {
    let (d, _secret) = start();
    let t = token("");
    let (mut by_query, _) = d
        .try_connect(&format!("/vip?x=1&token={t}&y=2"), &[], &[])
        .expect("token in the query");
    let bearer = format!("Bearer {t}");
    let (mut by_header, _) = d
        .try_connect("/vip", &[], &[("Authorization", &bearer)])
        .expect("token in the header");
    let mut members = vec![by_query, by_header];
    by_header = members.pop().unwrap();
    by_query = members.pop().unwrap();
    send_text(&mut by_query, "from the query");
    assert_eq!(recv_text(&mut by_header), "from the query");
    assert_eq!(recv_text(&mut by_query), "from the query");
    // A room without auth ignores tokens, good or bad.
    let _open = d.connect("/open", &[]);
    let _also = d.connect("/open?token=garbage", &[]);
}

#[test]
fn a_pattern_in_rooms_opens_the_rooms_under_it() {
    let (d, _secret) = start();
    let team = token(r#","rooms":["/team/*"]"#);
    for path in ["/team/a", "/team/a/b", "/team/"] {
        assert_status(&d, &format!("{path}?token={team}"), "", 101, path);
    }
    assert_status(&d, &format!("/vip?token={team}"), "", 403, "/vip");
    // No room at /team itself: the route decides first.
    assert_status(&d, &format!("/team?token={team}"), "", 404, "/team");
    let everything = token(r#","rooms":["/*"]"#);
    assert_status(
        &d,
        &format!("/vip?token={everything}"),
        "",
        101,
        "/* opens all",
    );
}

#[test]
fn checks_come_in_order_route_request_origin_auth_admission() {
    let (d, _secret) = start();
    let good = token("");
    assert_status(&d, "/nowhere", "", 404, "no room, no token");
    let plain = d.raw_request(b"GET /vip HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&plain), 426, "plain GET, no token:\n{plain}");
    let origin = "Origin: https://evil.example\r\n";
    assert_status(
        &d,
        "/guarded",
        origin,
        403,
        "bad origin before a missing token",
    );
    let ok_origin = "Origin: https://example.com\r\n";
    let _member = d.raw_upgrade(&format!("/guarded?token={good}"), ok_origin);
    // The room is full (max_members = 1), but a client without a token learns only that.
    assert_status(
        &d,
        "/guarded",
        ok_origin,
        401,
        "no token before a full room",
    );
    assert_status(
        &d,
        &format!("/guarded?token={good}"),
        ok_origin,
        503,
        "full",
    );
}

#[test]
fn a_listen_only_member_receives_and_is_closed_with_1008_when_it_sends() {
    let (d, _secret) = start();
    let mut speaker = d.connect(&format!("/vip?token={}", token("")), &[]);
    let listen_only = token(r#","publish":false"#);
    let mut listener = d.connect(&format!("/vip?token={listen_only}"), &[]);

    send_text(&mut speaker, "hello");
    assert_eq!(recv_text(&mut listener), "hello");
    send_text(&mut listener, "may I?");
    let (code, reason) = read_close(&mut listener);
    assert_eq!(code, 1008, "{reason}");
    // The speaker never sees the listener's message: its own next one comes next.
    send_text(&mut speaker, "after");
    loop {
        match recv_text(&mut speaker).as_str() {
            "after" => break,
            "may I?" => panic!("a listen-only member's message was relayed"),
            _ => {} // "hello", echoed
        }
    }
    close(speaker);
}

#[test]
fn the_token_never_appears_in_the_log() {
    let secret = TempFile::new(SECRET);
    let d = Daemon::start_logged(&config(&secret));
    let good = token(r#","rooms":["/vip"]"#);
    let expired = sign(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"exp":{}}}"#, now() - 3600),
        SECRET.as_bytes(),
    );
    let member = d.raw_upgrade(&format!("/vip?token={good}"), "");
    assert_status(&d, &format!("/vip?token={expired}"), "", 401, "expired");
    assert_status(&d, &format!("/team/x?token={good}"), "", 403, "other room");
    assert_status(
        &d,
        "/vip",
        &format!("Authorization: Bearer {expired}\r\n"),
        401,
        "expired, in the header",
    );
    drop(member);
    let log = d.stop();
    assert!(
        log.contains("401") && log.contains("403"),
        "the refusals are logged:\n{log}"
    );
    for t in [&good, &expired] {
        let signature = t.rsplit('.').next().unwrap();
        let payload = t.split('.').nth(1).unwrap();
        assert!(
            !log.contains(signature) && !log.contains(payload),
            "a token is in the log:\n{log}"
        );
    }
    assert!(!log.contains(SECRET), "the secret is in the log");
}
