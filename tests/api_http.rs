//! The server-side API's HTTP front against the real daemon: every refusal it makes from a
//! request's head or body before the relay is asked (401, 404, 405, 411, 413 before the body,
//! 415, 400, 408, 431, 501), keep-alive and pipelining, the connection cap, reloads of the key,
//! and the metrics.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::api::{API_KEY, Client, auth, request, with_api};
use common::{Daemon, read_head, status};

const CONFIG: &str = r#"
[server]
handshake_timeout = "1s"
max_header_size = "2KiB"

[[room]]
path = "/rooms/*"
max_message_size = "1KiB"

[[room]]
path = "/chat"
"#;

const TEXT: &str = "Content-Type: text/plain\r\n";

#[test]
fn no_key_or_a_wrong_key_gets_401_with_the_scheme() {
    let d = Daemon::start_api(CONFIG, "");
    for authorization in [
        String::new(),
        "Authorization: Bearer wrong-key-0123456789abcdef0123456789\r\n".to_owned(),
        format!("Authorization: Basic {API_KEY}\r\n"),
        format!("Authorization: Bearer {API_KEY}x\r\n"),
    ] {
        let mut c = Client::new(&d);
        c.write(&request("GET", "/api/v1/rooms", &authorization, b""));
        let r = c.read();
        assert_eq!(r.status, 401, "{authorization:?}: {}", r.head);
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
        assert!(r.error().contains("API key"), "{}", r.text());
        assert!(
            c.closed(),
            "a request without the key does not keep its connection"
        );
    }
    // Nothing about the rooms before the key: an unknown path is 401 too.
    let mut c = Client::new(&d);
    c.write(&request("GET", "/api/v1/nothing", "", b""));
    assert_eq!(c.read().status, 401);
}

#[test]
fn unknown_paths_rooms_and_methods() {
    let d = Daemon::start_api(CONFIG, "");
    let r = d.api("GET", "/api/v1/nothing", "", b"");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(d.api("GET", "/", "", b"").status, 404);
    let r = d.api("POST", "/api/v1/publish/nowhere", TEXT, b"hi");
    assert_eq!(
        (r.status, r.error().as_str()),
        (404, "no room at this path")
    );
    assert_eq!(d.api("GET", "/api/v1/history/nowhere", "", b"").status, 404);
    let r = d.api("GET", "/api/v1/publish/chat", "", b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST"));
    let r = d.api("POST", "/api/v1/rooms", "", b"");
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("GET")));
    let r = d.api("GET", "/api/v1/rooms?limit=0", "", b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = d.api("POST", "/api/v1/disconnect/chat", "", b"");
    assert_eq!(r.status, 400, "neither member nor user: {}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[test]
fn an_oversized_message_is_refused_from_its_head() {
    let d = Daemon::start_api(CONFIG, "");
    // A terabyte announced, nothing sent: the answer comes anyway, and the connection ends.
    let mut c = Client::new(&d);
    let head = format!(
        "POST /api/v1/publish/rooms/a HTTP/1.1\r\n{}{TEXT}Content-Length: 1000000000000\r\n\r\n",
        auth()
    );
    c.write(head.as_bytes());
    let r = c.read();
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("1024 bytes"), "{}", r.text());
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed());
    // One byte over the room's limit; the limit itself is fine as far as the front goes.
    let r = d.api("POST", "/api/v1/publish/rooms/a", TEXT, &[b'a'; 1025]);
    assert_eq!(r.status, 413);
    let r = d.api("POST", "/api/v1/publish/rooms/a", TEXT, &[b'a'; 1024]);
    assert_ne!(r.status, 413, "{}", r.text());
    // A batch bigger than a batch may be.
    let mut c = Client::new(&d);
    let head = format!(
        "POST /api/v1/batch HTTP/1.1\r\n{}Content-Length: 100000000\r\n\r\n",
        auth()
    );
    c.write(head.as_bytes());
    assert_eq!(c.read().status, 413);
}

#[test]
fn content_types_encodings_and_framing() {
    let d = Daemon::start_api(CONFIG, "");
    let publish =
        |headers: &str, body: &[u8]| d.api("POST", "/api/v1/publish/rooms/a", headers, body);
    assert_eq!(publish("Content-Type: image/png\r\n", b"x").status, 415);
    assert_eq!(publish("", b"x").status, 415, "no Content-Type");
    let r = publish("Content-Type: text/plain; charset=iso-8859-1\r\n", b"x");
    assert_eq!(
        (r.status, r.error().as_str()),
        (415, "the charset must be utf-8")
    );
    let r = publish(TEXT, b"caf\xe9");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("UTF-8"));
    let r = publish("Content-Type: application/json\r\n", b"\xff");
    assert_eq!(r.status, 400);
    // Bytes that are not UTF-8 are fine as binary: past the front (the relay answers).
    let r = publish("Content-Type: application/octet-stream\r\n", b"\xff\x00");
    assert!(![400, 415].contains(&r.status), "{}", r.text());

    let mut c = Client::new(&d);
    c.write(&request(
        "POST",
        "/api/v1/publish/rooms/a",
        &format!("{}{TEXT}", auth()),
        b"",
    ));
    assert_eq!(c.read().status, 411, "a POST without Content-Length");
    let mut c = Client::new(&d);
    let chunked = format!(
        "POST /api/v1/publish/rooms/a HTTP/1.1\r\n{}{TEXT}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        auth()
    );
    c.write(chunked.as_bytes());
    let r = c.read();
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(c.closed());
    let mut c = Client::new(&d);
    c.write(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not HTTP\r\n\r\n");
    assert_eq!(c.read().status, 400);
}

#[test]
fn a_slow_request_gets_408_and_a_big_head_431() {
    let d = Daemon::start_api(CONFIG, "");
    let mut c = Client::new(&d);
    let start = Instant::now();
    c.write(format!("GET /api/v1/rooms HTTP/1.1\r\n{}", auth()).as_bytes());
    let r = c.read();
    let took = start.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(c.closed());
    // A body that never comes: 408 too.
    let mut c = Client::new(&d);
    c.write(
        format!(
            "POST /api/v1/publish/rooms/a HTTP/1.1\r\n{}{TEXT}Content-Length: 10\r\n\r\nabc",
            auth()
        )
        .as_bytes(),
    );
    assert_eq!(c.read().status, 408);

    let mut c = Client::new(&d);
    let big = format!(
        "GET /api/v1/rooms HTTP/1.1\r\n{}X-Pad: {}\r\n\r\n",
        auth(),
        "a".repeat(3000)
    );
    c.write(big.as_bytes());
    let r = c.read();
    assert_eq!(r.status, 431);
    assert!(c.closed());
}

#[test]
fn keep_alive_serves_requests_in_order_on_one_connection() {
    let d = Daemon::start_api(CONFIG, "");
    let mut c = Client::new(&d);
    for _ in 0..5 {
        assert_eq!(c.send("GET", "/api/v1/nothing", "", b"").status, 404);
        assert_eq!(
            c.send("POST", "/api/v1/publish/rooms/a", TEXT, b"\xff")
                .status,
            400
        );
        assert_eq!(
            c.send("GET", "/api/v1/publish/rooms/a", "", b"").status,
            405
        );
        let r = c.send("GET", "/api/v1/rooms", "", b"");
        assert!(r.header("connection").is_none(), "{}", r.head);
    }
    // Pipelined: three requests in one write, three answers in their order.
    let mut burst = Vec::new();
    burst.extend(request("GET", "/api/v1/nothing", &auth(), b""));
    burst.extend(request(
        "POST",
        "/api/v1/publish/rooms/a",
        &format!("{}{TEXT}", auth()),
        b"\xfe",
    ));
    burst.extend(request("DELETE", "/api/v1/rooms", &auth(), b""));
    c.write(&burst);
    let got: Vec<u16> = (0..3).map(|_| c.read().status).collect();
    assert_eq!(got, [404, 400, 405]);
    // Connection: close is honoured.
    let r = c.send("GET", "/api/v1/nothing", "Connection: close\r\n", b"");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed());
}

#[test]
fn past_the_connection_cap_new_connections_are_closed() {
    let d = Daemon::start_api(CONFIG, "max_connections = 3\n");
    let mut held: Vec<Client> = (0..3).map(|_| Client::new(&d)).collect();
    for c in &mut held {
        assert_eq!(c.send("GET", "/api/v1/nothing", "", b"").status, 404);
    }
    let mut extra = Client::new(&d);
    let _ = extra
        .s
        .write_all(&request("GET", "/api/v1/nothing", &auth(), b""));
    assert!(extra.closed(), "the fourth connection is closed at accept");
    d.wait_metric("wsrelay_api_connections_refused_total", |v| v >= 1.0);
    d.wait_metric("wsrelay_api_connections_open", |v| v == 3.0);
    drop(held);
    // The gauge follows the connections themselves: at 0 there is room again.
    d.wait_metric("wsrelay_api_connections_open", |v| v == 0.0);
    assert_eq!(d.api("GET", "/api/v1/nothing", "", b"").status, 404);
}

#[test]
fn a_reload_changes_the_key() {
    let d = Daemon::start_api(CONFIG, "");
    let new_key = "another-key-0123456789abcdef-0123456789";
    let config = with_api(CONFIG, "").replace(API_KEY, new_key);
    d.rewrite_config(&config.replace("127.0.0.1:0", &d.api_addr().to_string()));
    d.signal(libc::SIGHUP);
    d.wait_metric("wsrelay_config_reloads_total{result=\"ok\"}", |v| v >= 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::new(&d);
        c.write(&request(
            "GET",
            "/api/v1/nothing",
            &format!("Authorization: Bearer {new_key}\r\n"),
            b"",
        ));
        if c.read().status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the new key is not taken");
    }
    assert_eq!(
        d.api("GET", "/api/v1/nothing", "", b"").status,
        401,
        "the old key is gone"
    );
}

#[test]
fn requests_are_counted_by_endpoint_and_status() {
    let d = Daemon::start_api(CONFIG, "");
    d.api("GET", "/api/v1/nothing", "", b"");
    d.api(
        "POST",
        "/api/v1/publish/rooms/a",
        "Content-Type: image/png\r\n",
        b"x",
    );
    let mut c = Client::new(&d);
    c.write(&request("GET", "/api/v1/rooms", "", b""));
    assert_eq!(c.read().status, 401);
    d.wait_metric(
        "wsrelay_api_requests_total{endpoint=\"unknown\",status=\"404\"}",
        |v| v == 1.0,
    );
    d.wait_metric(
        "wsrelay_api_requests_total{endpoint=\"publish\",status=\"415\"}",
        |v| v == 1.0,
    );
    d.wait_metric(
        "wsrelay_api_requests_total{endpoint=\"rooms\",status=\"401\"}",
        |v| v == 1.0,
    );
    assert_eq!(d.metric("wsrelay_api_messages_published_total"), Some(0.0));
}

#[test]
fn the_api_port_is_not_the_public_port() {
    let d = Daemon::start_api(CONFIG, "");
    // The public port knows nothing of the API.
    let (head, _) = d.http_get("/api/v1/rooms");
    assert_eq!(status(&head), 404);
    // The API port is no WebSocket port.
    let mut s = d.api_tcp();
    s.write_all(common::upgrade_request("/chat", "").as_bytes())
        .unwrap();
    assert_eq!(status(&read_head(&mut s)), 401);
}

#[test]
fn expect_100_continue_is_answered_once_the_head_passes() {
    let d = Daemon::start_api(CONFIG, "");
    let mut c = Client::new(&d);
    let head = format!(
        "POST /api/v1/publish/rooms/a HTTP/1.1\r\n{}{TEXT}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        auth()
    );
    c.write(head.as_bytes());
    let interim = read_head(&mut c.s);
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "{interim}"
    );
    c.write(b"hello");
    let r = c.read();
    assert!(r.status >= 200, "{}", r.head);
    // A head that fails gets its refusal instead, and no 100.
    let mut c = Client::new(&d);
    let head = format!(
        "POST /api/v1/publish/rooms/a HTTP/1.1\r\n{}{TEXT}Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        auth()
    );
    c.write(head.as_bytes());
    assert_eq!(c.read().status, 413);
}
