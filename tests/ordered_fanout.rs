//! All members of a room see its messages in one identical order, with two workers and
//! publishers on both of them (connections are dealt to workers round-robin), each publisher
//! sending concurrently from its own thread.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use common::{Daemon, Ws, recv_text, send_text};

const PUBLISHERS: usize = 4;
const SUBSCRIBERS: usize = 3;
const PER_PUBLISHER: usize = 500;
const ROUND: usize = 25;

const CONFIG: &str = r#"
[server]
workers = 2
# Spread every member round-robin, so publishers and subscribers sit on both workers and the
# room's messages cross threads (small rooms are otherwise kept on their owner's worker).
colocate_members = 0

[[room]]
path = "/rooms/*"
"#;

/// Read the next `n` messages.
fn take(ws: &mut Ws, n: usize) -> Vec<String> {
    (0..n).map(|_| recv_text(ws)).collect()
}

#[test]
fn every_member_sees_one_order() {
    let d = Daemon::start(CONFIG);
    // Publishers first, so consecutive connections (and so both workers) carry publishers.
    let members: Vec<Ws> = (0..PUBLISHERS + SUBSCRIBERS)
        .map(|_| d.connect("/rooms/ordered", &[]))
        .collect();

    let total = PUBLISHERS * PER_PUBLISHER;
    let rounds = Arc::new(Barrier::new(PUBLISHERS));
    let mut threads = Vec::new();
    for (i, mut ws) in members.into_iter().enumerate() {
        let rounds = rounds.clone();
        threads.push(thread::spawn(move || {
            if i < PUBLISHERS {
                for k in 0..PER_PUBLISHER {
                    // Publishers meet every ROUND messages, so they really publish at the same
                    // time instead of one finishing before the next is scheduled.
                    if k % ROUND == 0 {
                        rounds.wait();
                    }
                    send_text(&mut ws, &format!("p{i}:{k}"));
                }
            }
            take(&mut ws, total)
        }));
    }
    let seen: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let first = &seen[0];
    let unique: HashSet<&String> = first.iter().collect();
    assert_eq!(unique.len(), total, "a message was delivered twice");
    for p in 0..PUBLISHERS {
        let own: Vec<usize> = first
            .iter()
            .filter_map(|m| m.strip_prefix(&format!("p{p}:")))
            .map(|k| k.parse().unwrap())
            .collect();
        assert_eq!(
            own,
            (0..PER_PUBLISHER).collect::<Vec<_>>(),
            "publisher {p} out of order"
        );
    }
    for (member, seq) in seen.iter().enumerate().skip(1) {
        if let Some(at) = (0..total).find(|&k| seq[k] != first[k]) {
            panic!(
                "member {member} differs from member 0 at position {at}: {:?} vs {:?}",
                seq[at], first[at]
            );
        }
    }
    // The publishers really were interleaved, or the test proved nothing about ordering.
    let runs = first.windows(2).filter(|w| w[0][..2] != w[1][..2]).count();
    assert!(
        runs >= PUBLISHERS,
        "publishers never interleaved: {runs} switches"
    );
}

#[test]
fn rooms_on_different_owners_each_keep_one_order() {
    let d = Daemon::start(CONFIG);
    let names = ["/rooms/r1", "/rooms/r2", "/rooms/r3"];
    let mut threads = Vec::new();
    for name in names {
        let members: Vec<Ws> = (0..3).map(|_| d.connect(name, &[])).collect();
        threads.push(thread::spawn(move || {
            let mut handles = Vec::new();
            for (i, mut ws) in members.into_iter().enumerate() {
                handles.push(thread::spawn(move || {
                    for k in 0..200 {
                        send_text(&mut ws, &format!("{i}:{k}"));
                    }
                    take(&mut ws, 600)
                }));
            }
            let seen: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            assert!(
                seen.iter().all(|s| *s == seen[0]),
                "room {name}: orders differ"
            );
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}
