//! `[cluster]` over two Redis (shards): two wsrelay nodes with the same `redis` list spread
//! rooms over both by jump hash of the path, each room on exactly one Redis, one order per room
//! on both nodes; a room's history (replays, the API's) is read from its own Redis; one Redis
//! stopped makes `/healthz` 503 while the other shard's rooms flow.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::api::Client;
use common::redis::Redis;
use common::{Daemon, Ws, recv_text, send_text, status, v1};
use wsrelay::server::cluster::shard_of;

const ROOMS: usize = 40;
const PER_MEMBER: usize = 25;

fn config(shards: &[&Redis], name: &str) -> String {
    let urls: Vec<String> = shards.iter().map(|r| format!("{:?}", r.url())).collect();
    format!(
        r#"
[server]
workers = 2
colocate_members = 0

[cluster]
redis = [{}]
name = "{name}"
prefix = "shards"

[[room]]
path = "/r/*"

[[room]]
path = "/k/*"
history_size = 100
"#,
        urls.join(", ")
    )
}

fn nodes(shards: &[&Redis]) -> (Daemon, Daemon) {
    let a = Daemon::start_api(&config(shards, "a"), "");
    let b = Daemon::start_api(&config(shards, "b"), "");
    a.wait_health(200);
    b.wait_health(200);
    (a, b)
}

/// `KEYS <pattern>` on the Redis at `port`, through a minimal RESP exchange.
fn keys(port: u16, pattern: &str) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cmd = format!("*2\r\n$4\r\nKEYS\r\n${}\r\n{pattern}\r\n", pattern.len());
    s.write_all(cmd.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let n: usize = line
        .trim_end()
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("KEYS answered {line:?}"));
    (0..n)
        .map(|_| {
            // `$<len>` then the key: keys here are ASCII paths, one line each.
            let (mut len, mut key) = (String::new(), String::new());
            r.read_line(&mut len).unwrap();
            r.read_line(&mut key).unwrap();
            let key = key.trim_end_matches("\r\n").to_owned();
            assert_eq!(
                len.trim_end().strip_prefix('$'),
                Some(&*key.len().to_string())
            );
            key
        })
        .collect()
}

/// The rooms a Redis holds keys of: the `{<path>}` in `shards:room:{<path>}:…`.
fn rooms_in(redis: &Redis) -> BTreeSet<String> {
    keys(redis.port(), "shards:room:*")
        .iter()
        .map(|k| {
            let open = k.find('{').expect("a hash tag");
            let close = k[open..].find('}').expect("a closed hash tag") + open;
            k[open + 1..close].to_owned()
        })
        .collect()
}

/// The first room path under `under` on `shard` of 2.
fn path_on(under: &str, shard: usize) -> String {
    (0..)
        .map(|i| format!("{under}{i}"))
        .find(|p| shard_of(p, 2) == shard)
        .unwrap()
}

fn room_on(shard: usize) -> String {
    path_on("/r/", shard)
}

#[test]
fn rooms_are_spread_over_both_redis_one_order_each() {
    let (r0, r1) = (Redis::start(), Redis::start());
    let (a, b) = nodes(&[&r0, &r1]);
    let paths: Vec<String> = (0..ROOMS).map(|i| format!("/r/{i}")).collect();
    let expected: [BTreeSet<String>; 2] = [0, 1].map(|s| {
        paths
            .iter()
            .filter(|p| shard_of(p, 2) == s)
            .cloned()
            .collect()
    });
    assert!(
        !expected[0].is_empty() && !expected[1].is_empty(),
        "both shards get rooms: {expected:?}"
    );

    // In each room a member on a and one on b, both publishing, interleaved.
    let mut rooms = Vec::new();
    for p in &paths {
        rooms.push((p.clone(), a.connect(p, &[]), b.connect(p, &[])));
    }
    let threads: Vec<_> = rooms
        .into_iter()
        .map(|(path, mut on_a, mut on_b)| {
            thread::spawn(move || {
                for k in 0..PER_MEMBER {
                    send_text(&mut on_a, &format!("{path} a{k}"));
                    send_text(&mut on_b, &format!("{path} b{k}"));
                }
                let read = |ws: &mut Ws| -> Vec<String> {
                    (0..2 * PER_MEMBER).map(|_| recv_text(ws)).collect()
                };
                let (got_a, got_b) = (read(&mut on_a), read(&mut on_b));
                (path, got_a, got_b)
            })
        })
        .collect();
    for t in threads {
        let (path, got_a, got_b) = t.join().expect("a room's thread");
        assert_eq!(got_a, got_b, "{path}: the nodes saw two orders");
        let unique: HashSet<&String> = got_a.iter().collect();
        assert_eq!(unique.len(), 2 * PER_MEMBER, "{path}: a message twice");
        for who in ["a", "b"] {
            let own: Vec<usize> = got_a
                .iter()
                .map(|m| m.strip_prefix(&format!("{path} ")).expect("its own room's"))
                .filter_map(|m| m.strip_prefix(who))
                .map(|k| k.parse().unwrap())
                .collect();
            assert_eq!(own, (0..PER_MEMBER).collect::<Vec<_>>(), "{path}: {who}");
        }
    }

    // Each Redis holds exactly the rooms jump hash gives it.
    assert_eq!(rooms_in(&r0), expected[0], "rooms in redis 0");
    assert_eq!(rooms_in(&r1), expected[1], "rooms in redis 1");
    // Both nodes published through both shards, and the sums keep the single-Redis names.
    for d in [&a, &b] {
        assert_eq!(
            d.metric("wsrelay_cluster_published_total"),
            Some((ROOMS * PER_MEMBER) as f64)
        );
        assert_eq!(d.metric("wsrelay_cluster_dropped_total"), Some(0.0));
    }
}

#[test]
fn metrics_name_each_shard() {
    let (r0, r1) = (Redis::start(), Redis::start());
    let (a, _b) = nodes(&[&r0, &r1]);
    let (_, body) = a.http_get("/metrics");
    for r in [&r0, &r1] {
        let line = format!("wsrelay_cluster_redis_up{{redis=\"{}\"}} 1", r.url());
        assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
    }
    // One HELP and one TYPE per family, before its samples; one sample per counter.
    for family in [
        "redis_up",
        "published_total",
        "dropped_total",
        "reconnects_total",
    ] {
        let name = format!("wsrelay_cluster_{family}");
        let help = format!("# HELP {name} ");
        let kind = format!("# TYPE {name} ");
        assert_eq!(body.lines().filter(|l| l.starts_with(&help)).count(), 1);
        assert_eq!(body.lines().filter(|l| l.starts_with(&kind)).count(), 1);
        let samples = body
            .lines()
            .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
            .count();
        assert_eq!(samples, if family == "redis_up" { 2 } else { 1 }, "{name}");
    }
}

#[test]
fn one_redis_stopped_the_other_shard_flows() {
    let (r0, r1) = (Redis::start(), Redis::start());
    let (a, b) = nodes(&[&r0, &r1]);
    let (p0, p1) = (room_on(0), room_on(1));
    let mut on_a = [a.connect(&p0, &[]), a.connect(&p1, &[])];
    let mut on_b = [b.connect(&p0, &[]), b.connect(&p1, &[])];
    for i in 0..2 {
        send_text(&mut on_a[i], "before");
        assert_eq!(recv_text(&mut on_b[i]), "before");
        assert_eq!(recv_text(&mut on_a[i]), "before");
    }

    r0.signal(libc::SIGSTOP);
    // Found by the probe: no answer within the reply timeout. A room on r0 cannot be served.
    assert_eq!(a.wait_health(503), "redis unavailable\n");
    b.wait_health(503);
    let up = |r: &Redis| format!("wsrelay_cluster_redis_up{{redis=\"{}\"}}", r.url());
    assert_eq!(a.metric(&up(&r0)), Some(0.0));
    assert_eq!(a.metric(&up(&r1)), Some(1.0));
    // r1's rooms flow both ways and take new members; r0's refuse new ones.
    send_text(&mut on_a[1], "during from a");
    assert_eq!(recv_text(&mut on_b[1]), "during from a");
    assert_eq!(recv_text(&mut on_a[1]), "during from a");
    send_text(&mut on_b[1], "during from b");
    assert_eq!(recv_text(&mut on_a[1]), "during from b");
    assert_eq!(recv_text(&mut on_b[1]), "during from b");
    let mut newcomer = a.connect(&p1, &[]);
    let refused = a.raw_request(common::upgrade_request(&p0, "").as_bytes());
    assert_eq!(status(&refused), 503, "{refused}");

    r0.signal(libc::SIGCONT);
    a.wait_health(200);
    b.wait_health(200);
    assert_eq!(a.metric(&up(&r0)), Some(1.0));
    // r0's rooms are subscribed again.
    send_text(&mut on_b[0], "after");
    assert_eq!(recv_text(&mut on_a[0]), "after");
    assert_eq!(recv_text(&mut on_b[0]), "after");
    send_text(&mut on_b[1], "after too");
    assert_eq!(recv_text(&mut newcomer), "after too");
}

#[test]
fn history_is_read_from_the_rooms_own_redis() {
    const TEXT: &str = "Content-Type: text/plain; charset=utf-8\r\n";
    let (r0, r1) = (Redis::start(), Redis::start());
    let (a, b) = nodes(&[&r0, &r1]);
    let mut api_a = Client::new(&a);
    let mut api_b = Client::new(&b);
    let kept = [path_on("/k/", 0), path_on("/k/", 1)];
    for path in &kept {
        // Sent through a's API to a room nobody is in yet: kept in the room's stream.
        let sent: Vec<String> = (0..5).map(|k| format!("{path} m{k}")).collect();
        for m in &sent {
            let r = api_a.send(
                "POST",
                &format!("/api/v1/publish{path}"),
                TEXT,
                m.as_bytes(),
            );
            assert_eq!(r.status, 200, "{path}: {}", r.text());
        }
        // A v1 member on b gets them replayed, from the same Redis.
        let (mut ws, w) = v1::join(&b, &format!("{path}?last=5"));
        assert_eq!(w.replayed, 5, "{path}: {w:?}");
        let got: Vec<String> = (0..5)
            .map(|_| v1::next(&mut ws).text().to_owned())
            .collect();
        assert_eq!(got, sent, "{path}: replay");
        // And so does b's API.
        let r = api_b.send("GET", &format!("/api/v1/history{path}"), "", b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let texts: Vec<String> = r.json()["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["data"].as_str().expect("data").to_owned())
            .collect();
        assert_eq!(texts, sent, "{path}: API history");
    }
    let (in0, in1) = (rooms_in(&r0), rooms_in(&r1));
    assert!(
        in0.contains(&kept[0]) && !in1.contains(&kept[0]),
        "{in0:?} {in1:?}"
    );
    assert!(
        in1.contains(&kept[1]) && !in0.contains(&kept[1]),
        "{in0:?} {in1:?}"
    );
}
