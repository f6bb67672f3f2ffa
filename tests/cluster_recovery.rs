//! Scale-out over Redis when things go wrong, with a real redis-server and two wsrelay nodes:
//! a resume on the other node after the first was killed (history from the room's stream), a
//! subscription cut (the gap filled from the stream, or a reset without history), Redis stopped
//! (API 503, a v1 sender told), Redis restarted empty (a new epoch), and a node that cannot
//! keep up cut by Redis's output-buffer limit.

mod common;

use std::time::Duration;

use common::api::Client;
use common::redis::Redis;
use common::v1;
use common::{Daemon, Ws, send_text};
use serde_json::Value;

const TEXT: &str = "Content-Type: text/plain; charset=utf-8\r\n";

fn config(redis: &Redis, name: &str) -> String {
    format!(
        r#"
[server]
workers = 2
colocate_members = 0

[cluster]
redis = "{}"
name = "{name}"

[[room]]
path = "/kept"
history_size = 1000

[[room]]
path = "/plain"
"#,
        redis.url()
    )
}

fn node(redis: &Redis, name: &str) -> Daemon {
    let d = Daemon::start_api(&config(redis, name), "");
    d.wait_health(200);
    d
}

/// Read a v1 member's frames until the message `last` arrives: the messages' (seq, text) and
/// the resets, in order.
fn read_until(ws: &mut Ws, last: &str) -> (Vec<(u64, String)>, Vec<Value>) {
    let (mut messages, mut resets) = (Vec::new(), Vec::new());
    loop {
        let v = v1::next_json(ws);
        match v["type"].as_str() {
            Some("message") => {
                let data = v["data"].as_str().unwrap().to_owned();
                messages.push((v["seq"].as_u64().unwrap(), data.clone()));
                if data == last {
                    return (messages, resets);
                }
            }
            Some("reset") => resets.push(v),
            _ => panic!("unexpected {v}"),
        }
    }
}

fn publish(d: &Daemon, path: &str, text: &str) -> u64 {
    let r = d.api(
        "POST",
        &format!("/api/v1/publish{path}"),
        TEXT,
        text.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["seq"].as_u64().expect("seq")
}

#[test]
fn a_client_resumes_on_the_other_node_after_its_node_was_killed() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let (mut ws, welcome) = v1::join(&a, "/kept");
    for k in 0..5 {
        publish(&a, "/kept", &format!("before {k}"));
    }
    let mut seen = welcome.seq;
    for k in 0..5 {
        let m = v1::next(&mut ws);
        assert_eq!(m.text(), format!("before {k}"));
        seen = m.seq;
    }
    drop(ws);
    a.signal(libc::SIGKILL);
    a.expect_death(Duration::from_secs(10));

    // Sent through b, which has no member of the room and keeps nothing of it itself.
    let mut api = Client::new(&b);
    let mut sent = Vec::new();
    for k in 0..20 {
        let r = api.send(
            "POST",
            "/api/v1/publish/kept",
            TEXT,
            format!("missed {k}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["epoch"], welcome.epoch.as_str(), "one epoch");
        sent.push(r.json()["seq"].as_u64().unwrap());
    }
    assert_eq!(sent, (seen + 1..=seen + 20).collect::<Vec<_>>(), "dense");

    let query = format!("/kept?since={seen}&epoch={}", welcome.epoch);
    let (mut ws, w) = v1::join(&b, &query);
    assert!(w.recovered, "{w:?}");
    assert_eq!(
        (w.replayed, w.seq, w.epoch.as_str()),
        (20, seen + 20, welcome.epoch.as_str())
    );
    for k in 0..20 {
        let m = v1::next(&mut ws);
        assert_eq!(
            (m.seq, m.text()),
            (seen + 1 + k, format!("missed {k}").as_str())
        );
    }
    // Live messages follow the replay.
    let seq = publish(&b, "/kept", "live");
    let m = v1::next(&mut ws);
    assert_eq!((m.seq, m.text()), (seq, "live"));

    // The API's history reads the same stream.
    let r = api.send(
        "GET",
        &format!("/api/v1/history/kept?since={seen}&limit=3"),
        "",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seqs: Vec<u64> = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![seen + 1, seen + 2, seen + 3]);
    let r = api.send("GET", "/api/v1/history/plain", "", b"");
    assert_eq!(r.status, 404, "{}", r.text());
}

/// Redis's client id of a node's subscription connection (`wsrelay:<name>:sub`).
fn sub_id(redis: &Redis, name: &str) -> String {
    let list = redis.cmd(&["CLIENT", "LIST", "TYPE", "pubsub"]);
    let line = list
        .lines()
        .find(|l| l.contains(&format!("name=wsrelay:{name}:sub ")))
        .unwrap_or_else(|| panic!("no subscription of {name} in {list}"));
    let id = line.split(' ').find_map(|f| f.strip_prefix("id=")).unwrap();
    id.to_owned()
}

/// Cut node a's subscription (only a's), send `n` messages through b while a is away, then
/// one more; what a v1 member on a gets after the first message (numbered `start + 1`).
fn cut_a_and_send(path: &str, n: usize) -> (Daemon, Vec<(u64, String)>, Vec<Value>, u64) {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let (mut on_a, welcome) = v1::join(&a, path);
    let (mut on_b, _) = v1::join(&b, path);
    let mut publisher = b.connect(path, &[]);
    send_text(&mut publisher, "first");
    assert_eq!(v1::next(&mut on_a).text(), "first");
    assert_eq!(v1::next(&mut on_b).text(), "first");

    let killed = redis.cmd(&["CLIENT", "KILL", "ID", &sub_id(&redis, "a")]);
    assert_eq!(killed, "1", "a's subscription cut");
    // b goes on: each message is numbered (b's member sees it) while a reconnects.
    for k in 0..n {
        send_text(&mut publisher, &format!("m{k}"));
        assert_eq!(v1::next(&mut on_b).text(), format!("m{k}"));
    }
    a.wait_metric("wsrelay_cluster_reconnects_total", |v| v >= 1.0);
    a.wait_health(200);
    send_text(&mut publisher, "last");
    let (messages, resets) = read_until(&mut on_a, "last");
    (a, messages, resets, welcome.seq)
}

#[test]
fn a_cut_subscription_is_filled_from_the_stream() {
    let (a, messages, resets, start) = cut_a_and_send("/kept", 30);
    assert!(resets.is_empty(), "{resets:?}");
    let texts: Vec<&str> = messages.iter().map(|(_, t)| t.as_str()).collect();
    let mut want: Vec<String> = (0..30).map(|k| format!("m{k}")).collect();
    want.push("last".into());
    assert_eq!(texts, want, "every message, in order");
    let seqs: Vec<u64> = messages.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (start + 2..=start + 32).collect::<Vec<_>>(), "dense");
    let filled = a.metric("wsrelay_cluster_gap_filled_total").unwrap();
    assert!(filled >= 1.0, "filled {filled}");
    assert_eq!(a.metric("wsrelay_cluster_resets_total"), Some(0.0));
}

#[test]
fn a_cut_subscription_without_history_resets_v1_members() {
    let (a, messages, resets, start) = cut_a_and_send("/plain", 10);
    assert_eq!(resets.len(), 1, "one reset: {resets:?}");
    let reset_seq = resets[0]["seq"].as_u64().unwrap();
    let (last_seq, last) = messages.last().unwrap();
    assert_eq!(last, "last");
    assert_eq!(*last_seq, start + 12);
    // Nothing after the reset is missing; what a got before it is in order.
    let after: Vec<u64> = messages
        .iter()
        .map(|m| m.0)
        .filter(|&s| s > reset_seq)
        .collect();
    assert_eq!(after, (reset_seq + 1..=start + 12).collect::<Vec<_>>());
    assert!(
        reset_seq >= start + 2,
        "the gap is in the reset: {reset_seq}"
    );
    let missed = a.metric("wsrelay_cluster_missed_total").unwrap();
    assert!(missed >= 1.0, "missed {missed}");
    assert_eq!(a.metric("wsrelay_cluster_resets_total"), Some(1.0));
}

#[test]
fn redis_stopped_api_503_and_v1_sender_told() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let (mut ws, _) = v1::join(&a, "/plain");
    publish(&a, "/plain", "up");
    assert_eq!(v1::next(&mut ws).text(), "up");

    redis.signal(libc::SIGSTOP);
    a.wait_health(503);
    let r = a.api("POST", "/api/v1/publish/plain", TEXT, b"down");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("retry-after").is_some(), "{}", r.head);
    send_text(&mut ws, "mine");
    let v = v1::next_json(&mut ws);
    assert_eq!(
        (v["type"].as_str(), v["code"].as_str()),
        (Some("error"), Some("unavailable"))
    );
    redis.signal(libc::SIGCONT);
    a.wait_health(200);
    publish(&a, "/plain", "back");
    assert_eq!(v1::next(&mut ws).text(), "back");
}

#[test]
fn redis_restarted_empty_means_a_new_epoch() {
    let mut redis = Redis::start();
    let a = node(&redis, "a");
    let (mut ws, welcome) = v1::join(&a, "/kept");
    publish(&a, "/kept", "one");
    let seen = v1::next(&mut ws).seq;
    let port = redis.port();
    redis.signal(libc::SIGKILL);
    drop(redis);
    a.wait_health(503);
    redis = Redis::start_on(port);
    a.wait_health(200);
    // The member still connected is told to reload, with the new epoch.
    let v = v1::next_json(&mut ws);
    assert_eq!(v["type"], "reset", "{v}");
    assert_ne!(v["epoch"], welcome.epoch.as_str());
    let query = format!("/kept?since={seen}&epoch={}", welcome.epoch);
    let (_ws, w) = v1::join(&a, &query);
    assert!(!w.recovered, "{w:?}");
    assert_eq!(w.epoch, v["epoch"].as_str().unwrap());
    assert_eq!(a.metric("wsrelay_cluster_resets_total"), Some(1.0));
    drop(redis);
}

#[test]
fn a_node_cut_by_the_output_buffer_limit_recovers() {
    let redis = Redis::start();
    assert_eq!(
        redis.cmd(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 256kb 64kb 1"
        ]),
        "OK"
    );
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let (mut on_a, welcome) = v1::join(&a, "/kept");
    let mut api = Client::new(&b);
    let big = "x".repeat(60 * 1024);
    let a_subscribed = |redis: &Redis| {
        redis
            .cmd(&["CLIENT", "LIST", "TYPE", "pubsub"])
            .contains("name=wsrelay:a:sub ")
    };
    a.signal(libc::SIGSTOP);
    // Past the socket buffers and the hard limit, Redis cuts the stopped node's subscription.
    let mut sent = 0;
    while a_subscribed(&redis) {
        assert!(sent < 2_000, "redis never cut the stopped node");
        for _ in 0..8 {
            let body = format!("{sent} {big}");
            let r = api.send("POST", "/api/v1/publish/kept", TEXT, body.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            sent += 1;
        }
    }
    let r = api.send("POST", "/api/v1/publish/kept", TEXT, b"last");
    let last_seq = r.json()["seq"].as_u64().unwrap();
    a.signal(libc::SIGCONT);
    let (messages, resets) = read_until(&mut on_a, "last");
    // Every message, or a reset and every message after it.
    let from = resets
        .last()
        .map_or(welcome.seq, |r| r["seq"].as_u64().unwrap());
    let after: Vec<u64> = messages.iter().map(|m| m.0).filter(|&s| s > from).collect();
    assert_eq!(after, (from + 1..=last_seq).collect::<Vec<_>>());
    assert!(a.metric("wsrelay_cluster_reconnects_total").unwrap() >= 1.0);
}

#[test]
fn every_subscription_cut_during_traffic_nobody_misses_a_message() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let b = node(&redis, "b");
    let (mut on_a, welcome) = v1::join(&a, "/kept");
    let (mut on_b, _) = v1::join(&b, "/kept");
    let mut api = Client::new(&b);
    let mut answered = Vec::new();
    let mut k = 0;
    // Published through b's API until b is back after the cut: 503s while it is away.
    let mut cut = false;
    loop {
        let r = api.send(
            "POST",
            "/api/v1/publish/kept",
            TEXT,
            format!("m{k}").as_bytes(),
        );
        match r.status {
            200 => answered.push((r.json()["seq"].as_u64().unwrap(), format!("m{k}"))),
            503 => assert!(cut, "503 before the cut: {}", r.text()),
            s => panic!("{s}: {}", r.text()),
        }
        k += 1;
        if k == 100 {
            let killed: u32 = redis
                .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .parse()
                .unwrap();
            assert_eq!(killed, 2, "both nodes' subscriptions cut");
            cut = true;
        }
        if cut && answered.len() >= 200 && b.metric("wsrelay_cluster_reconnects_total") >= Some(1.0)
        {
            break;
        }
        assert!(k < 100_000, "b never came back");
    }
    let last = &answered.last().unwrap().1;
    let (got_a, resets_a) = read_until(&mut on_a, last);
    let (got_b, resets_b) = read_until(&mut on_b, last);
    assert!(
        resets_a.is_empty() && resets_b.is_empty(),
        "{resets_a:?} {resets_b:?}"
    );
    assert_eq!(got_a, got_b, "one order on both nodes");
    let seqs: Vec<u64> = got_a.iter().map(|m| m.0).collect();
    let end = answered.last().unwrap().0;
    assert_eq!(seqs, (welcome.seq + 1..=end).collect::<Vec<_>>(), "dense");
    for m in &answered {
        assert!(got_a.contains(m), "{m:?} answered but not delivered");
    }
}
