//! The API's reads over a cluster (`[cluster]`), with a real redis-server and two wsrelay nodes:
//! room list, room info and presence on either node cover both nodes' members, and follow a
//! member joining or leaving on the other node within about one write interval; an idle node's
//! writes set nothing; after Redis lost its data (`FLUSHALL`) the lists come back complete within
//! a few intervals; a node killed with SIGKILL leaves the lists within the registry's bound
//! (5 s); with Redis stopped the reads answer 503 with `Retry-After`.

mod common;

use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

use common::api::{Response, with_api};
use common::jwt::token;
use common::redis::Redis;
use common::{Daemon, Ws, close, send_text, status, v1};
use serde_json::Value;

const SECRET: &str = "cluster-api-secret-0123456789abcdef-0123";

/// A killed node's entries are gone within this (`cluster::registry::EXPIRY`).
const EXPIRY: Duration = Duration::from_secs(5);
/// Slack over a bound for the polling itself and a loaded test machine.
const SLACK: Duration = Duration::from_secs(2);
/// A node writes its rooms this often (`cluster::registry::INTERVAL`): a change on one node is
/// in the other's lists about one interval later.
const INTERVAL: Duration = Duration::from_secs(1);

fn config(redis: &Redis, name: &str) -> String {
    let toml = format!(
        r#"
[server]
workers = 2
colocate_members = 0

[auth]
jwt_secret = "{SECRET}"

[cluster]
redis = "{}"
name = "{name}"

[[room]]
path = "/chat"

[[room]]
path = "/vip/*"
auth = "jwt"
presence = true
"#,
        redis.url()
    );
    with_api(&toml, "")
}

fn node(redis: &Redis, name: &str) -> Daemon {
    node_env(redis, name, &[])
}

fn node_env(redis: &Redis, name: &str, envs: &[(&str, &str)]) -> Daemon {
    let d = Daemon::start_env(&config(redis, name), envs);
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&d.http_get("/healthz").0) != 200 {
        assert!(Instant::now() < deadline, "node {name} never reached Redis");
        thread::sleep(Duration::from_millis(50)); // polling a status; the deadline decides
    }
    d
}

/// Ask `get` until `want` holds of its answer (`within` at most); the answer then.
fn until(d: &Daemon, get: &str, within: Duration, want: impl Fn(&Response) -> bool) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let r = d.api("GET", get, "", b"");
        if want(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "GET {get}: still {} {}",
            r.status,
            r.text()
        );
        thread::sleep(Duration::from_millis(50)); // polling an answer; the deadline decides
    }
}

fn room_count(r: &Response, path: &str) -> Option<u64> {
    let rooms = r.json()["rooms"].as_array()?.clone();
    rooms
        .iter()
        .find(|room| room["room"] == path)
        .and_then(|room| room["members"].as_u64())
}

fn users(r: &Response) -> Vec<String> {
    let mut users: Vec<String> = r.json()["members"]
        .as_array()
        .map(|m| m.iter())
        .into_iter()
        .flatten()
        .map(|m| m["user"].as_str().unwrap_or("?").to_owned())
        .collect();
    users.sort();
    users
}

fn vip(d: &Daemon, user: &str) -> Ws {
    vip_in(d, "/vip/x", user)
}

fn vip_in(d: &Daemon, path: &str, user: &str) -> Ws {
    let t = token(SECRET, &format!(r#","sub":"{user}""#));
    d.connect(&format!("{path}?token={t}"), &[])
}

#[test]
fn lists_cover_both_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let (mut on_a, welcome) = v1::join(&a, "/chat");
    let (on_b1, _) = v1::join(&b, "/chat");
    let (on_b2, _) = v1::join(&b, "/chat");
    let (alice, bob, carol) = (vip(&a, "alice"), vip(&b, "bob"), vip(&b, "carol"));
    send_text(&mut on_a, "one");

    let within = Duration::from_secs(10);
    for d in [&a, &b] {
        let r = until(d, "/api/v1/rooms", within, |r| {
            r.status == 200 && room_count(r, "/chat") == Some(3)
        });
        assert_eq!(room_count(&r, "/vip/x"), Some(3), "{}", r.text());
        let r = until(d, "/api/v1/rooms?prefix=/vip/", within, |r| r.status == 200);
        let paths: Vec<Value> = r.json()["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room"].clone())
            .collect();
        assert_eq!(paths, [Value::from("/vip/x")], "{}", r.text());

        let r = until(d, "/api/v1/rooms/chat", within, |r| {
            r.status == 200 && r.json()["seq"] == 1
        });
        let v = r.json();
        assert_eq!(v["room"], "/chat");
        assert_eq!(v["members"], 3, "{v}");
        assert_eq!(v["epoch"], welcome.epoch.as_str(), "one epoch, Redis's");

        let r = until(d, "/api/v1/presence/vip/x", within, |r| {
            r.status == 200 && users(r).len() == 3
        });
        assert_eq!(users(&r), ["alice", "bob", "carol"]);
        let v = r.json();
        assert_eq!(v["room"], "/vip/x");
        let ids: HashSet<&str> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert!(m["joined"].as_u64().unwrap() > 1_700_000_000_000, "{m}");
                m["member"].as_str().unwrap()
            })
            .collect();
        assert_eq!(ids.len(), 3, "member ids unique across nodes: {v}");
        assert_eq!(ids.iter().filter(|id| id.ends_with("@a")).count(), 1, "{v}");
        assert_eq!(ids.iter().filter(|id| id.ends_with("@b")).count(), 2, "{v}");
    }
    let r = a.api("GET", "/api/v1/rooms/nobody", "", b"");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = a.api("GET", "/api/v1/presence/chat", "", b"");
    assert_eq!(r.status, 404, "presence is off in /chat: {}", r.text());

    // Members leave and join on b: a's lists follow within about one interval.
    let bound = INTERVAL + SLACK;
    let members = |n: u64| move |r: &Response| r.status == 200 && r.json()["members"] == n;
    close(on_b2);
    let left = Instant::now();
    until(&a, "/api/v1/rooms/chat", bound, members(2));
    eprintln!("a member leaving b showed on a after {:?}", left.elapsed());
    let (on_b3, _) = v1::join(&b, "/chat");
    until(&a, "/api/v1/rooms/chat", bound, members(3));
    close(carol);
    until(&a, "/api/v1/presence/vip/x", bound, |r| {
        users(r) == ["alice", "bob"]
    });
    let dave = vip(&b, "dave");
    let joined = Instant::now();
    until(&a, "/api/v1/presence/vip/x", bound, |r| {
        users(r) == ["alice", "bob", "dave"]
    });
    eprintln!(
        "a member joining b showed on a after {:?}",
        joined.elapsed()
    );
    until(&b, "/api/v1/rooms/chat", bound, members(3));
    drop((on_a, on_b1, on_b3, alice, bob, dave));
}

/// `INFO commandstats`' count of calls to `command` (0 when it was never called).
fn calls(redis: &Redis, command: &str) -> u64 {
    let info = redis.cmd(&["INFO", "commandstats"]);
    let line = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// Wait until node `name` has written (refreshed its liveness) `n` more times.
fn writes(redis: &Redis, name: &str, n: u64) {
    let score = || -> u64 {
        let s = redis.cmd(&["ZSCORE", "wsrelay:nodes", name]);
        s.parse::<f64>().map_or(0, |f| f as u64)
    };
    let (from, deadline) = (score(), Instant::now() + INTERVAL * (n as u32 + 5));
    while score() < from + n * INTERVAL.as_millis() as u64 {
        assert!(Instant::now() < deadline, "node {name} stopped writing");
        thread::sleep(Duration::from_millis(50)); // polling a score; the deadline decides
    }
}

#[test]
fn an_idle_node_only_keeps_itself_live() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let members = [vip(&a, "alice"), vip(&a, "bob"), a.connect("/chat", &[])];
    until(&a, "/api/v1/presence/vip/x", Duration::from_secs(10), |r| {
        users(r) == ["alice", "bob"]
    });
    writes(&redis, "a", 1); // the count above may have been written by a write not yet done
    redis.cmd(&["CONFIG", "RESETSTAT"]);
    writes(&redis, "a", 2);
    assert_eq!(calls(&redis, "hset"), 0, "nothing changed, nothing set");
    assert_eq!(calls(&redis, "hdel"), 0);
    assert!(calls(&redis, "zadd") >= 2, "the node stays live");
    assert_eq!(redis.cmd(&["HLEN", "wsrelay:node:a:rooms"]), "2");
    drop(members);
}

#[test]
fn lists_come_back_after_redis_loses_its_data() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let mut chat = a.connect("/chat", &[]);
    let on_b = b.connect("/chat", &[]);
    let (mut alice, bob) = (vip(&a, "alice"), vip(&b, "bob"));
    let within = Duration::from_secs(10);
    let complete = |r: &Response| {
        r.status == 200 && room_count(r, "/chat") == Some(2) && room_count(r, "/vip/x") == Some(2)
    };
    until(&a, "/api/v1/rooms", within, complete);

    assert_eq!(redis.cmd(&["FLUSHALL"]), "OK");
    let flushed = Instant::now();
    // The incremental write finds the hashes gone and writes everything again at once: well
    // before the full write every 30 s would.
    let bound = INTERVAL * 3 + SLACK;
    for d in [&a, &b] {
        until(d, "/api/v1/presence/vip/x", bound, |r| {
            r.status == 200 && users(r) == ["alice", "bob"]
        });
    }
    eprintln!(
        "presence complete again {:?} after FLUSHALL",
        flushed.elapsed()
    );
    assert!(flushed.elapsed() <= bound);
    // The room list shows rooms with an epoch, which a room gets again with its next message.
    send_text(&mut chat, "after the flush");
    send_text(&mut alice, "after the flush");
    for d in [&a, &b] {
        until(d, "/api/v1/rooms", bound, complete);
    }
    drop((chat, on_b, alice, bob));
}

#[test]
fn a_killed_node_leaves_the_lists_within_the_bound() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a"), node(&redis, "b"));
    let alice = vip(&a, "alice");
    let bob = vip(&b, "bob");
    let b_only = b.connect("/chat", &[]);
    let within = Duration::from_secs(10);
    until(&a, "/api/v1/presence/vip/x", within, |r| {
        users(r).len() == 2
    });
    until(&a, "/api/v1/rooms/chat", within, |r| r.status == 200);

    let log = b.stop(); // SIGKILL
    let killed = Instant::now();
    let r = until(&a, "/api/v1/presence/vip/x", EXPIRY + SLACK, |r| {
        users(r) == ["alice"]
    });
    assert!(
        r.json()["members"][0]["member"]
            .as_str()
            .unwrap()
            .ends_with("@a")
    );
    until(&a, "/api/v1/rooms/chat", EXPIRY + SLACK, |r| {
        r.status == 404
    });
    let r = a.api("GET", "/api/v1/rooms", "", b"");
    assert_eq!(room_count(&r, "/vip/x"), Some(1), "{}", r.text());
    assert_eq!(room_count(&r, "/chat"), None, "{}", r.text());
    let took = killed.elapsed();
    eprintln!("b's entries left a's lists {took:?} after the SIGKILL");
    assert!(
        took <= EXPIRY + SLACK,
        "b's entries lasted {took:?}\n--- b ---\n{log}"
    );
    drop((alice, bob, b_only));
}

#[test]
fn reads_answer_503_while_redis_is_stopped() {
    let redis = Redis::start();
    let a = node(&redis, "a");
    let member = vip(&a, "alice");
    let within = Duration::from_secs(10);
    until(&a, "/api/v1/presence/vip/x", within, |r| {
        users(r) == ["alice"]
    });

    redis.signal(libc::SIGSTOP);
    // The link's probe gives up after 3 s; a read waits for Redis 3 s at most.
    let r = until(&a, "/api/v1/rooms", Duration::from_secs(20), |r| {
        r.status == 503
    });
    assert_eq!(r.error(), "redis unavailable");
    assert!(r.header("retry-after").is_some(), "{}", r.head);
    for get in ["/api/v1/rooms/vip/x", "/api/v1/presence/vip/x"] {
        let r = a.api("GET", get, "", b"");
        assert_eq!(r.status, 503, "{get}: {}", r.text());
        assert!(r.header("retry-after").is_some(), "{}", r.head);
    }

    redis.signal(libc::SIGCONT);
    let r = until(&a, "/api/v1/presence/vip/x", Duration::from_secs(20), |r| {
        r.status == 200 && users(r) == ["alice"]
    });
    assert_eq!(r.json()["room"], "/vip/x");
    drop(member);
}

/// The rooms of a room list, with their counts.
fn rooms(r: &Response) -> Vec<(String, u64)> {
    let list = r.json()["rooms"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|room| {
            let path = room["room"].as_str().unwrap_or("?").to_owned();
            (path, room["members"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn counted(want: &[(&str, u64)]) -> Vec<(String, u64)> {
    want.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

/// Node a writes at most two changes per `EVAL` (`WSRELAY_TEST_REGISTRY_CHUNK`): its full
/// writes (at start, after `FLUSHALL`) and its incremental ones take several, and b sees all of
/// a's rooms each time; no fresh key of a full write is left behind.
#[test]
fn writes_in_many_chunks_are_complete() {
    let redis = Redis::start();
    let a = node_env(&redis, "a", &[("WSRELAY_TEST_REGISTRY_CHUNK", "2")]);
    let b = node(&redis, "b");
    let mut on_a: Vec<Ws> = (1..=5)
        .map(|i| vip_in(&a, &format!("/vip/{i}"), &format!("u{i}")))
        .collect();
    let list = "/api/v1/rooms?prefix=/vip/";
    let want: Vec<(String, u64)> = (1..=5).map(|i| (format!("/vip/{i}"), 1)).collect();
    until(&b, list, Duration::from_secs(10), |r| rooms(r) == want);

    // Three leave, two join (one where a member stays): one incremental write in chunks.
    let bound = INTERVAL + SLACK;
    on_a.drain(..3).for_each(close);
    on_a.push(vip_in(&a, "/vip/5", "v5"));
    on_a.push(vip_in(&a, "/vip/6", "v6"));
    let want = counted(&[("/vip/4", 1), ("/vip/5", 2), ("/vip/6", 1)]);
    until(&b, list, bound, |r| rooms(r) == want);
    let r = until(&b, "/api/v1/presence/vip/5", bound, |r| users(r).len() == 2);
    assert_eq!(users(&r), ["u5", "v5"]);

    assert_eq!(redis.cmd(&["FLUSHALL"]), "OK");
    let deadline = Instant::now() + INTERVAL * 3 + SLACK;
    let hlen = |key: &str| redis.cmd(&["HLEN", &format!("wsrelay:node:a:{key}")]);
    while hlen("rooms") != "3" || hlen("presence") != "3" {
        assert!(
            Instant::now() < deadline,
            "a's hashes not written again after FLUSHALL"
        );
        thread::sleep(Duration::from_millis(50)); // polling Redis; the deadline decides
    }
    for path in ["/vip/4", "/vip/5", "/vip/6"] {
        let get = format!("/api/v1/presence{path}");
        until(&b, &get, bound, |r| r.status == 200 && !users(r).is_empty());
    }
    for key in ["rooms:new", "presence:new"] {
        let exists = redis.cmd(&["EXISTS", &format!("wsrelay:node:a:{key}")]);
        assert_eq!(exists, "0", "{key} left behind");
    }
    drop(on_a);
}
