//! Scale-out over Redis (`[cluster]`), with a real redis-server and two wsrelay nodes: one room,
//! one order, on every node (raw and `wsrelay.v1` members, the numbers Redis's and dense), echo
//! rules across nodes, and `/healthz` while Redis is stopped and back.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::api::Client;
use common::redis::Redis;
use common::v1::{self, Numbered};
use common::{Daemon, Ws, frames, recv_text, send_text, status};

const PER_PUBLISHER: usize = 2_000;
const TEXT: &str = "Content-Type: text/plain; charset=utf-8\r\n";
const ROUND: usize = 50;

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
path = "/chat"

[[room]]
path = "/quiet"
echo = false

[[room]]
path = "/lobby"
presence = true

[[room]]
path = "/z"
compression = true
history_size = 10
"#,
        redis.url()
    )
}

fn nodes(redis: &Redis) -> (Daemon, Daemon) {
    let a = Daemon::start_api(&config(redis, "a"), "");
    let b = Daemon::start_api(&config(redis, "b"), "");
    a.wait_health(200);
    b.wait_health(200);
    (a, b)
}

#[test]
fn two_nodes_one_order() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    // On each node: a publisher (a raw member, which gets every message too), a raw member and
    // a v1 member; both workers of each node carry some (spread round-robin).
    let mut raw: Vec<Ws> = Vec::new();
    let mut v1s: Vec<(Ws, v1::Welcome)> = Vec::new();
    for d in [&a, &b] {
        raw.push(d.connect("/chat", &[]));
        raw.push(d.connect("/chat", &[]));
        v1s.push(v1::join(d, "/chat"));
    }
    assert_eq!(v1s[0].1.epoch, v1s[1].1.epoch, "one epoch on both nodes");
    let start = v1s[0].1.seq;
    assert_eq!(v1s[1].1.seq, start);

    // Two members publish (one on each node) and one API client (on b), concurrently.
    let total = 3 * PER_PUBLISHER;
    let rounds = Arc::new(Barrier::new(3));
    let mut threads = Vec::new();
    let api_rounds = rounds.clone();
    let mut api = Client::new(&b);
    let api_thread = thread::spawn(move || {
        let mut seqs = Vec::new();
        for k in 0..PER_PUBLISHER {
            if k % ROUND == 0 {
                api_rounds.wait();
            }
            let body = format!("api:{k}");
            let r = api.send("POST", "/api/v1/publish/chat", TEXT, body.as_bytes());
            assert_eq!(r.status, 200, "{}", r.text());
            seqs.push(r.json()["seq"].as_u64().expect("seq"));
        }
        seqs
    });
    for (i, mut ws) in raw.into_iter().enumerate() {
        let rounds = rounds.clone();
        // Members 0 and 2 publish: one on node a, one on node b.
        let publisher = i % 2 == 0;
        threads.push(thread::spawn(move || {
            if publisher {
                for k in 0..PER_PUBLISHER {
                    if k % ROUND == 0 {
                        rounds.wait();
                    }
                    send_text(&mut ws, &format!("p{i}:{k}"));
                }
            }
            (0..total).map(|_| recv_text(&mut ws)).collect::<Vec<_>>()
        }));
    }
    let mut v1_threads = Vec::new();
    for (mut ws, _) in v1s {
        v1_threads.push(thread::spawn(move || {
            (0..total)
                .map(|_| v1::next(&mut ws))
                .collect::<Vec<Numbered>>()
        }));
    }
    let seen: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let api_seqs = api_thread.join().unwrap();
    let numbered: Vec<Vec<Numbered>> = v1_threads.into_iter().map(|t| t.join().unwrap()).collect();

    let first = &seen[0];
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), total, "a message was delivered twice");
    for p in ["p0", "p2", "api"] {
        let own: Vec<usize> = first
            .iter()
            .filter_map(|m| m.strip_prefix(&format!("{p}:")))
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(
            own,
            (0..PER_PUBLISHER).collect::<Vec<_>>(),
            "publisher {p} out of order"
        );
    }
    for (member, order) in seen.iter().enumerate().skip(1) {
        if let Some(at) = (0..total).find(|&k| order[k] != first[k]) {
            panic!(
                "member {member} differs from member 0 at {at}: {} vs {}",
                order[at], first[at]
            );
        }
    }
    for (member, got) in numbered.iter().enumerate() {
        for (k, m) in got.iter().enumerate() {
            assert_eq!(
                m.seq,
                start + 1 + k as u64,
                "v1 member {member}: seq not dense"
            );
            assert_eq!(
                m.text(),
                first[k],
                "v1 member {member}: another order at {k}"
            );
        }
    }
    // The API's answers carry the numbers the members saw.
    for (k, seq) in api_seqs.iter().enumerate() {
        let at = (seq - start - 1) as usize;
        assert_eq!(
            first[at],
            format!("api:{k}"),
            "API message {k} numbered {seq}"
        );
    }
    assert_eq!(
        a.metric("wsrelay_cluster_published_total"),
        Some(PER_PUBLISHER as f64)
    );
    assert_eq!(a.metric("wsrelay_cluster_dropped_total"), Some(0.0));
}

#[test]
fn echo_off_holds_across_nodes() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let mut sender = a.connect("/quiet", &[]);
    let mut same_node = a.connect("/quiet", &[]);
    let mut other_node = b.connect("/quiet", &[]);
    send_text(&mut sender, "from a");
    assert_eq!(recv_text(&mut same_node), "from a");
    assert_eq!(recv_text(&mut other_node), "from a");
    send_text(&mut other_node, "from b");
    // The sender's next message is b's: it never got its own.
    assert_eq!(recv_text(&mut sender), "from b");
    assert_eq!(recv_text(&mut same_node), "from b");
}

#[test]
fn redis_stopped_then_back() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let mut on_a = a.connect("/chat", &[]);
    let mut on_b = b.connect("/chat", &[]);
    send_text(&mut on_a, "before");
    assert_eq!(recv_text(&mut on_b), "before");
    assert_eq!(recv_text(&mut on_a), "before");

    redis.signal(libc::SIGSTOP);
    // Found by the probe: no answer within the reply timeout.
    assert_eq!(a.wait_health(503), "redis unavailable\n");
    b.wait_health(503);
    // Members stay connected; what cannot be sequenced is dropped and counted.
    // A new client is sent elsewhere rather than left waiting for a room's epoch.
    let refused = a.raw_request(common::upgrade_request("/chat", "").as_bytes());
    assert_eq!(status(&refused), 503, "{refused}");
    assert!(
        common::header(&refused, "retry-after").is_some(),
        "{refused}"
    );
    send_text(&mut on_a, "lost");
    a.wait_metric("wsrelay_cluster_dropped_total", |v| v >= 1.0);
    let up = format!("wsrelay_cluster_redis_up{{redis=\"{}\"}}", redis.url());
    assert_eq!(a.metric(&up), Some(0.0));

    redis.signal(libc::SIGCONT);
    a.wait_health(200);
    b.wait_health(200);
    // Subscriptions are back: a message from b reaches a, and nothing dropped comes late.
    send_text(&mut on_b, "after");
    assert_eq!(recv_text(&mut on_a), "after");
    assert_eq!(recv_text(&mut on_b), "after");
    assert!(a.metric("wsrelay_cluster_reconnects_total").unwrap() >= 1.0);
}

#[test]
fn redis_killed_and_restarted() {
    let redis = Redis::start();
    let port = redis.port();
    let (a, b) = nodes(&redis);
    let mut on_a = a.connect("/chat", &[]);
    let mut on_b = b.connect("/chat", &[]);
    drop(redis); // SIGKILL
    assert_eq!(a.wait_health(503), "redis unavailable\n");
    let _redis = Redis::start_on(port);
    a.wait_health(200);
    b.wait_health(200);
    send_text(&mut on_a, "after restart");
    assert_eq!(recv_text(&mut on_b), "after restart");
    assert_eq!(recv_text(&mut on_a), "after restart");
}

#[test]
fn compressed_rooms_stay_compressed_across_nodes() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n";
    let mut deflating = b.raw_upgrade("/z", offer);
    let mut plain = b.connect("/z", &[]);
    let (mut v1ws, _) = v1::join(&b, "/z");
    let mut sender = a.connect("/z", &[]);
    let text = "{\"item\":\"a JSON line that repeats\"},".repeat(40);
    send_text(&mut sender, &text);
    let (op, compressed, bytes) = frames::next_message(&mut deflating);
    assert_eq!(
        (op, compressed),
        (frames::OP_TEXT, true),
        "compressed on the other node"
    );
    assert_eq!(bytes, text.as_bytes());
    assert_eq!(recv_text(&mut plain), text);
    assert_eq!(v1::next(&mut v1ws).text(), text);
    // A replay gives it as well.
    let (mut resumed, _) = v1::join(&b, "/z?last=1");
    assert_eq!(v1::next(&mut resumed).text(), text);
}

#[test]
fn presence_events_cross_nodes() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let (mut on_a, wa) = v1::join(&a, "/lobby");
    assert_eq!(wa.members, Some(1));
    let (mut on_b, wb) = v1::join(&b, "/lobby");
    let join = v1::next_json(&mut on_a);
    assert_eq!(
        (join["type"].as_str(), join["member"].as_str()),
        (Some("join"), Some(wb.member.as_str()))
    );
    // Messages and events keep one order on each node.
    send_text(&mut on_b, "hello");
    assert_eq!(v1::next_json(&mut on_a)["data"], "hello");
    assert_eq!(v1::next_json(&mut on_b)["data"], "hello");
    common::close(on_b);
    let leave = v1::next_json(&mut on_a);
    assert_eq!(
        (leave["type"].as_str(), leave["member"].as_str()),
        (Some("leave"), Some(wb.member.as_str()))
    );
}

#[test]
fn a_dead_nodes_members_leave_the_counts() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let (mut on_a, _) = v1::join(&a, "/lobby");
    let (_on_b, _) = v1::join(&b, "/lobby");
    let join = v1::next_json(&mut on_a);
    assert_eq!(join["type"], "join");
    b.signal(libc::SIGKILL);
    b.expect_death(Duration::from_secs(10));
    // No leave comes from a dead node: within its 15 s of silence, a's members get the count.
    let started = Instant::now();
    on_a.get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let count = v1::next_json(&mut on_a);
    assert_eq!(
        (count["type"].as_str(), count["count"].as_u64()),
        (Some("members"), Some(1)),
        "{count}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn member_ids_name_their_node_and_disconnect_acts_on_its_own() {
    let redis = Redis::start();
    let (a, b) = nodes(&redis);
    let (mut on_b, wb) = v1::join(&b, "/lobby");
    assert!(wb.member.ends_with("@b"), "{}", wb.member);
    let path = format!("/api/v1/disconnect/lobby?member={}", wb.member);
    let r = a.api("POST", &path, "", b"");
    assert_eq!(r.status, 421, "{}", r.text());
    assert!(r.error().contains("node b"), "{}", r.text());
    let r = b.api("POST", &path, "", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["disconnected"], 1);
    assert_eq!(common::read_close(&mut on_b).0, 4001);
}
