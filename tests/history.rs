//! History and resume against the real daemon: `?last=N` for raw and `wsrelay.v1` clients, resuming
//! with `since`/`epoch` (all of what was missed, or `recovered:false` and nothing), one numbering
//! for every member across workers, the binary number prefix, a room that expires, bad queries.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::v1::{self, Numbered};
use common::{Daemon, Ws, recv, recv_text, send_text, status};
use tungstenite::Message;

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0

[[room]]
path = "/kept/*"
history_size = 100

[[room]]
path = "/small/*"
history_size = 10

[[room]]
path = "/short/*"
history_size = 100
history_ttl = "300ms"

[[room]]
path = "/none/*"
"#;

fn number(text: &str) -> usize {
    text.strip_prefix('m')
        .and_then(|n| n.parse().ok())
        .expect("mK")
}

#[test]
fn last_n_then_live_with_no_gap_for_raw_and_v1_clients() {
    let d = Daemon::start(CONFIG);
    let mut first = d.connect("/kept/a", &[]);
    for k in 0..30 {
        send_text(&mut first, &format!("m{k}"));
    }
    // Everything sequenced once the sender has its own echo back.
    for _ in 0..30 {
        recv_text(&mut first);
    }
    // A newcomer asks for the last 10 while the publisher keeps going: the 10 latest kept at its
    // join, then every later message, consecutive.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = thread::spawn({
        let mut ws = first;
        let stop = Arc::clone(&stop);
        move || {
            let mut k = 30;
            while !stop.load(Ordering::Relaxed) {
                send_text(&mut ws, &format!("m{k}"));
                while number(&recv_text(&mut ws)) != k {}
                k += 1;
            }
        }
    });
    let mut raw = d.connect("/kept/a?last=10", &[]);
    let (mut v1c, welcome) = v1::join(&d, "/kept/a?last=10");
    assert_eq!(
        (welcome.room.as_str(), welcome.recovered),
        ("/kept/a", false)
    );
    assert_eq!(welcome.replayed, 10);
    let raw_got: Vec<usize> = (0..60).map(|_| number(&recv_text(&mut raw))).collect();
    let v1_got: Vec<Numbered> = (0..60).map(|_| v1::next(&mut v1c)).collect();
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();

    let start = raw_got[0];
    assert!(
        start >= 20,
        "at least the 10 latest of the first 30: {raw_got:?}"
    );
    assert_eq!(raw_got, (start..start + 60).collect::<Vec<_>>());
    // v1: numbers are dense and match the text (message mK is seq K+1 in a fresh room); the
    // replay ends at the welcome's seq.
    let seqs: Vec<u64> = v1_got.iter().map(|m| m.seq).collect();
    let s0 = welcome.seq - 9;
    assert_eq!(seqs, (s0..s0 + 60).collect::<Vec<_>>());
    for m in &v1_got {
        assert_eq!(m.text(), format!("m{}", m.seq - 1));
    }
}

#[test]
fn resume_replays_exactly_what_was_missed_then_live() {
    let d = Daemon::start(CONFIG);
    let mut publisher = d.connect("/kept/r", &[]);
    let (mut c, w) = v1::join(&d, "/kept/r");
    assert_eq!((w.seq, w.recovered, w.replayed), (0, false, 0));
    assert_eq!(w.epoch.len(), 16);
    send_text(&mut publisher, "before");
    let got = v1::next(&mut c);
    assert_eq!((got.seq, got.text()), (1, "before"));
    common::close(c);

    for k in 0..50 {
        send_text(&mut publisher, &format!("missed {k}"));
    }
    for _ in 0..51 {
        recv_text(&mut publisher); // its echoes: all 50 sequenced
    }
    let (mut c, w2) = v1::join(&d, &format!("/kept/r?since=1&epoch={}", w.epoch));
    assert_eq!(w2.epoch, w.epoch);
    assert_eq!((w2.seq, w2.recovered, w2.replayed), (51, true, 50));
    for k in 0..50 {
        let m = v1::next(&mut c);
        assert_eq!((m.seq, m.text()), (k + 2, format!("missed {k}").as_str()));
    }
    send_text(&mut publisher, "live");
    let m = v1::next(&mut c);
    assert_eq!((m.seq, m.text()), (52, "live"));

    // Nothing missed: recovered, nothing replayed.
    let (_c, w3) = v1::join(&d, &format!("/kept/r?since=52&epoch={}", w.epoch));
    assert_eq!((w3.recovered, w3.replayed, w3.seq), (true, 0, 52));
    // Another epoch: not recovered, nothing replayed.
    let (_c, w4) = v1::join(&d, "/kept/r?since=1&epoch=0123456789abcdef");
    assert_eq!((w4.recovered, w4.replayed), (false, 0));
    // From the future: not this room's numbers.
    let (_c, w5) = v1::join(&d, &format!("/kept/r?since=99&epoch={}", w.epoch));
    assert_eq!((w5.recovered, w5.replayed), (false, 0));
    // `last` applies when there is no `since`.
    let (mut c6, w6) = v1::join(&d, "/kept/r?last=2");
    assert_eq!((w6.recovered, w6.replayed), (false, 2));
    assert_eq!(v1::next(&mut c6).seq, 51);
    assert_eq!(v1::next(&mut c6).seq, 52);
    d.wait_metric("wsrelay_resumes_total{outcome=\"recovered\"}", |v| v == 2.0);
    d.wait_metric("wsrelay_resumes_total{outcome=\"unrecovered\"}", |v| {
        v == 2.0
    });
    d.wait_metric("wsrelay_messages_replayed_total", |v| v == 52.0);
    d.wait_metric("wsrelay_history_messages", |v| v == 52.0);
    assert!(d.metric("wsrelay_history_bytes").unwrap() > 52.0 * 10.0);
}

#[test]
fn a_resume_past_what_is_kept_is_not_recovered_and_replays_nothing() {
    let d = Daemon::start(CONFIG);
    let mut publisher = d.connect("/small/x", &[]);
    let (c, w) = v1::join(&d, "/small/x");
    common::close(c);
    for k in 0..25 {
        send_text(&mut publisher, &format!("m{k}"));
    }
    for _ in 0..25 {
        recv_text(&mut publisher);
    }
    // 25 missed, 10 kept: never a partial replay.
    let (mut c, w2) = v1::join(&d, &format!("/small/x?since=0&epoch={}", w.epoch));
    assert_eq!((w2.recovered, w2.replayed, w2.seq), (false, 0, 25));
    send_text(&mut publisher, "next");
    assert_eq!(v1::next(&mut c).seq, 26, "live messages only");
    // 10 missed, 10 kept: all of them.
    let (_c, w3) = v1::join(&d, &format!("/small/x?since=16&epoch={}", w.epoch));
    assert_eq!((w3.recovered, w3.replayed), (true, 10));
}

#[test]
fn members_on_both_workers_see_the_same_dense_numbers() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 2_500;
    let d = Daemon::start(CONFIG);
    // Dealt round-robin over the two workers.
    let members: Vec<(Ws, v1::Welcome)> = (0..4).map(|_| v1::join(&d, "/none/order")).collect();
    let publishers: Vec<Ws> = (0..PUBLISHERS)
        .map(|_| d.connect("/none/order", &[]))
        .collect();
    let senders: Vec<_> = publishers
        .into_iter()
        .enumerate()
        .map(|(p, mut ws)| {
            thread::spawn(move || {
                for k in 0..EACH {
                    send_text(&mut ws, &format!("p{p}:{k}"));
                    if k % 100 == 99 {
                        while recv_text(&mut ws) != format!("p{p}:{k}") {}
                    }
                }
                ws
            })
        })
        .collect();
    let readers: Vec<_> = members
        .into_iter()
        .map(|(mut ws, w)| {
            thread::spawn(move || {
                assert_eq!(w.seq, 0);
                (0..PUBLISHERS * EACH)
                    .map(|_| {
                        let m = v1::next(&mut ws);
                        (m.seq, m.text().to_owned())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let got: Vec<Vec<(u64, String)>> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    for s in senders {
        s.join().unwrap();
    }
    let seqs: Vec<u64> = got[0].iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=(PUBLISHERS * EACH) as u64).collect::<Vec<_>>());
    for other in &got[1..] {
        assert!(other == &got[0], "two members saw different numberings");
    }
}

#[test]
fn binary_messages_carry_their_number_in_8_bytes() {
    let d = Daemon::start(CONFIG);
    let mut raw = d.connect("/kept/bin", &[]);
    let (mut c, _) = v1::join(&d, "/kept/bin");
    raw.send(Message::binary(vec![0xde, 0xad])).unwrap();
    let m = v1::next(&mut c);
    assert!(m.binary);
    assert_eq!((m.seq, m.data), (1, vec![0xde, 0xad]));
    // The raw client gets the plain frame.
    assert_eq!(recv(&mut raw), Message::binary(vec![0xde, 0xad]));
    // And a replay of it to a v1 client is framed the same way.
    let (mut late, w) = v1::join(&d, "/kept/bin?last=1");
    assert_eq!(w.replayed, 1);
    let m = v1::next(&mut late);
    assert_eq!((m.seq, m.binary, m.data), (1, true, vec![0xde, 0xad]));
}

#[test]
fn a_room_with_no_members_and_nothing_kept_comes_back_with_a_new_epoch() {
    let d = Daemon::start(CONFIG);
    let (mut c, w) = v1::join(&d, "/short/e");
    send_text(&mut c, "hello");
    assert_eq!(v1::next(&mut c).seq, 1);
    common::close(c);
    // While it is kept, the room lives on without members: same epoch, the message replayed.
    let (c, w2) = v1::join(&d, &format!("/short/e?since=0&epoch={}", w.epoch));
    if w2.recovered {
        assert_eq!((w2.epoch.as_str(), w2.replayed), (w.epoch.as_str(), 1));
    }
    common::close(c);
    // After history_ttl the message is dropped and the room ends: a new epoch, numbers from 0.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (c, w3) = v1::join(&d, "/short/e");
        if w3.epoch != w.epoch {
            assert_eq!((w3.seq, w3.recovered), (0, false));
            break;
        }
        common::close(c);
        assert!(Instant::now() < deadline, "the room never expired");
        d.wait_metric("wsrelay_history_messages", |v| v == 0.0);
        d.wait_metric("wsrelay_rooms_open", |v| v == 0.0);
    }
}

#[test]
fn bad_queries_get_400_with_a_reason_before_the_upgrade() {
    let d = Daemon::start(CONFIG);
    let cases = [
        (
            "/small/q?last=11",
            "last=11 is more than this room keeps (history_size = 10)",
        ),
        (
            "/none/q?last=1",
            "last=1 is more than this room keeps (history_size = 0)",
        ),
        (
            "/kept/q?last=x",
            "last must be a number of messages (decimal digits)",
        ),
        (
            "/kept/q?since=a&epoch=0123456789abcdef",
            "since must be a sequence number",
        ),
        ("/kept/q?since=1&epoch=xyz", "epoch must be 16 hex digits"),
        (
            "/kept/q?since=1",
            "since needs the epoch it counts in (&epoch=)",
        ),
    ];
    for (path, why) in cases {
        let mut s = d.tcp();
        use std::io::{Read, Write};
        s.write_all(common::upgrade_request(path, "").as_bytes())
            .unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert_eq!(status(&answer), 400, "{path}: {answer}");
        assert!(answer.contains(why), "{path}: {answer}");
    }
    // A room without history takes v1 clients too, and plain clients exactly as before.
    let (mut c, w) = v1::join(&d, "/none/plain");
    let mut raw = d.connect("/none/plain", &[]);
    send_text(&mut raw, "x");
    assert_eq!(recv_text(&mut raw), "x");
    assert_eq!((w.seq, v1::next(&mut c).seq), (0, 1));
    // A client offering other protocols too gets wsrelay.v1.
    let (ws, resp) = d
        .try_connect("/none/plain", &["chat", "wsrelay.v1"], &[])
        .unwrap();
    assert_eq!(
        resp.headers()["sec-websocket-protocol"].to_str().unwrap(),
        "wsrelay.v1"
    );
    drop(ws);
}
