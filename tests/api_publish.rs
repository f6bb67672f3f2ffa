//! Publishing through the server-side API into live rooms: text, JSON and binary reach raw and
//! `wsrelay.v1` members with the right frame type and `seq`; an `Idempotency-Key` delivers once;
//! a batch of 1,000 lines keeps its order; rooms, one room and history read back what is there.

mod common;

use common::api::Client;
use common::v1;
use common::{Daemon, close, recv, recv_text, send_text};
use tungstenite::Message;

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0

[[room]]
path = "/rooms/*"

[[room]]
path = "/kept/*"
history_size = 5
"#;

const TEXT: &str = "Content-Type: text/plain; charset=utf-8\r\n";
const JSON: &str = "Content-Type: application/json\r\n";
const BINARY: &str = "Content-Type: application/octet-stream\r\n";

#[test]
fn text_json_and_binary_reach_raw_and_v1_members_in_order() {
    let d = Daemon::start_api(CONFIG, "");
    let mut raw = d.connect("/rooms/lobby", &[]);
    let (mut v1ws, welcome) = v1::join(&d, "/rooms/lobby");
    let mut api = Client::new(&d);

    let r = api.send("POST", "/api/v1/publish/rooms/lobby", TEXT, b"hello");
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["room"], "/rooms/lobby");
    assert_eq!(answer["epoch"], welcome.epoch.as_str());
    let seq = answer["seq"].as_u64().unwrap();
    assert_eq!(seq, welcome.seq + 1);
    assert_eq!(recv_text(&mut raw), "hello");
    let m = v1::next(&mut v1ws);
    assert_eq!((m.seq, m.text(), m.binary), (seq, "hello", false));

    let r = api.send("POST", "/api/v1/publish/rooms/lobby", JSON, br#"{"a":1}"#);
    assert_eq!(r.json()["seq"].as_u64(), Some(seq + 1));
    assert_eq!(recv_text(&mut raw), r#"{"a":1}"#);
    let m = v1::next(&mut v1ws);
    assert_eq!((m.seq, m.text()), (seq + 1, r#"{"a":1}"#));

    let r = api.send(
        "POST",
        "/api/v1/publish/rooms/lobby",
        BINARY,
        b"\x00\xffbin",
    );
    assert_eq!(r.json()["seq"].as_u64(), Some(seq + 2));
    match recv(&mut raw) {
        Message::Binary(b) => assert_eq!(&b[..], b"\x00\xffbin"),
        m => panic!("expected binary, got {m:?}"),
    }
    let m = v1::next(&mut v1ws);
    assert_eq!(
        (m.seq, m.data.as_slice(), m.binary),
        (seq + 2, &b"\x00\xffbin"[..], true)
    );

    // A member publishing too: everyone sees one order, the API's messages among the member's.
    send_text(&mut raw, "from a member");
    api.send("POST", "/api/v1/publish/rooms/lobby", TEXT, b"from the API");
    let a: Vec<String> = (0..2).map(|_| recv_text(&mut raw)).collect();
    let b: Vec<String> = (0..2)
        .map(|_| v1::next(&mut v1ws).text().to_owned())
        .collect();
    assert_eq!(a, b);
    d.wait_metric("wsrelay_api_messages_published_total", |v| v == 4.0);
    close(raw);
    close(v1ws);
}

#[test]
fn an_idempotency_key_delivers_once() {
    let d = Daemon::start_api(CONFIG, "");
    let (mut ws, _) = v1::join(&d, "/rooms/idem");
    let key = "Idempotency-Key: order-1234\r\n";
    let headers = format!("{TEXT}{key}");
    let first = d.api("POST", "/api/v1/publish/rooms/idem", &headers, b"shipped");
    let again = d.api("POST", "/api/v1/publish/rooms/idem", &headers, b"shipped");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json(), again.json(), "the same answer, the same seq");
    let other = d.api(
        "POST",
        "/api/v1/publish/rooms/idem",
        &headers,
        b"something else",
    );
    assert_eq!(other.status, 422, "{}", other.text());
    d.api("POST", "/api/v1/publish/rooms/idem", TEXT, b"marker");
    let m = v1::next(&mut ws);
    assert_eq!(m.text(), "shipped");
    assert_eq!(v1::next(&mut ws).text(), "marker", "delivered once");
    close(ws);
}

#[test]
fn a_batch_of_1000_lines_keeps_its_order() {
    let d = Daemon::start_api(CONFIG, "");
    let (mut a, _) = v1::join(&d, "/rooms/a");
    let (mut b, _) = v1::join(&d, "/rooms/b");
    let mut body = String::new();
    for k in 0..1000 {
        let room = if k % 3 == 0 { "/rooms/b" } else { "/rooms/a" };
        body.push_str(&format!("{{\"room\":\"{room}\",\"data\":\"m{k}\"}}\n"));
    }
    body.push_str("{\"room\":\"/nowhere\",\"data\":\"x\"}\n");
    let r = d.api(
        "POST",
        "/api/v1/batch",
        "Content-Type: application/x-ndjson\r\n",
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let results: Vec<serde_json::Value> = r
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 1001);
    assert_eq!(results[1000]["status"], 404);
    let mut last = std::collections::HashMap::new();
    for (k, res) in results[..1000].iter().enumerate() {
        let room = res["room"]
            .as_str()
            .unwrap_or_else(|| panic!("line {k}: {res}"));
        let seq = res["seq"].as_u64().unwrap();
        if let Some(prev) = last.insert(room.to_owned(), seq) {
            assert_eq!(seq, prev + 1, "line {k}");
        }
    }
    for k in 0..1000 {
        let ws = if k % 3 == 0 { &mut b } else { &mut a };
        assert_eq!(v1::next(ws).text(), format!("m{k}"));
    }
    close(a);
    close(b);
}

#[test]
fn rooms_one_room_and_history() {
    let d = Daemon::start_api(CONFIG, "");
    let (ws, welcome) = v1::join(&d, "/kept/h");
    let mut api = Client::new(&d);
    for k in 1..=8 {
        let r = api.send(
            "POST",
            "/api/v1/publish/kept/h",
            TEXT,
            format!("m{k}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = api.send("GET", "/api/v1/rooms?prefix=/kept/", "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let rooms = r.json()["rooms"].as_array().unwrap().clone();
    assert_eq!(rooms.len(), 1, "{}", r.text());
    assert_eq!(rooms[0]["room"], "/kept/h");
    assert_eq!(rooms[0]["members"], 1);
    assert_eq!(rooms[0]["epoch"], welcome.epoch.as_str());
    let r = api.send("GET", "/api/v1/rooms/kept/h", "", b"");
    assert_eq!(r.json()["seq"].as_u64(), Some(welcome.seq + 8));
    assert_eq!(
        api.send("GET", "/api/v1/rooms/rooms/empty", "", b"").status,
        404
    );

    let r = api.send("GET", "/api/v1/history/kept/h", "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let texts: Vec<String> = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, ["m4", "m5", "m6", "m7", "m8"], "the 5 kept");
    let since = welcome.seq + 6;
    let r = api.send(
        "GET",
        &format!("/api/v1/history/kept/h?since={since}&limit=1"),
        "",
        b"",
    );
    let messages = r.json()["messages"].clone();
    assert_eq!(messages.as_array().unwrap().len(), 1, "{}", r.text());
    assert_eq!(messages[0]["seq"].as_u64(), Some(since + 1));
    let r = api.send("GET", "/api/v1/history/kept/h?since=1", "", b"");
    assert_eq!(r.status, 416, "{}", r.text());
    close(ws);
}
