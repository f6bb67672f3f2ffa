//! A resume storm: 2,000 `wsrelay.v1` clients come back at once, each 1,000 messages behind,
//! while a publisher keeps sending. Every client gets every message once, in order (the replay,
//! then live), and none that reads is cut as too slow.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;

use common::v1;
use common::{Daemon, Ws, raise_nofile, read_head, recv_text, send_text, status};
use tungstenite::WebSocket;
use tungstenite::protocol::Role;

const CLIENTS: usize = 2_000;
const BEHIND: usize = 1_000;
/// Messages the publisher sends while the clients come back.
const DURING: usize = 300;
const READERS: usize = 8;

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0

[[room]]
path = "/storm"
history_size = 5000
"#;

#[test]
fn two_thousand_clients_resume_at_once_and_miss_nothing() {
    let limit = raise_nofile();
    assert!(
        limit as usize > CLIENTS + 200,
        "RLIMIT_NOFILE hard limit {limit} is too low"
    );
    let d = Daemon::start(CONFIG);
    let mut publisher = d.connect("/storm", &[]);
    let (first, w) = v1::join(&d, "/storm");
    assert_eq!(w.seq, 0);
    common::close(first);
    for k in 0..BEHIND {
        send_text(&mut publisher, &format!("m{k}"));
    }
    for _ in 0..BEHIND {
        recv_text(&mut publisher);
    }

    // Everyone asks at once: all the requests are written before any answer is read.
    let request = common::upgrade_request(
        &format!("/storm?since=0&epoch={}", w.epoch),
        "Sec-WebSocket-Protocol: wsrelay.v1\r\n",
    );
    let sockets: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let mut s = d.tcp();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    let sender = thread::spawn(move || {
        for k in BEHIND..BEHIND + DURING {
            send_text(&mut publisher, &format!("m{k}"));
            // Paced by its own echoes, so the storm and the live traffic overlap.
            assert_eq!(recv_text(&mut publisher), format!("m{k}"));
        }
        send_text(&mut publisher, "end");
        publisher
    });
    let mut clients: Vec<Ws> = Vec::with_capacity(CLIENTS);
    for mut s in sockets {
        let head = read_head(&mut s);
        assert_eq!(status(&head), 101, "{head}");
        clients.push(WebSocket::from_raw_socket(s, Role::Client, None));
    }
    let mut groups: Vec<Vec<Ws>> = (0..READERS).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        groups[i % READERS].push(c);
    }
    let readers: Vec<_> = groups
        .into_iter()
        .map(|group| {
            thread::spawn(move || {
                let mut last_seqs = Vec::new();
                for mut c in group {
                    let w = v1::welcome(&mut c);
                    assert!(w.recovered, "{w:?}");
                    assert_eq!(w.replayed, w.seq, "everything since 0 is replayed");
                    let mut seq = 0;
                    loop {
                        let m = v1::next(&mut c);
                        assert_eq!(m.seq, seq + 1, "a gap or a duplicate");
                        seq = m.seq;
                        if m.text() == "end" {
                            break;
                        }
                        assert_eq!(m.text(), format!("m{}", seq - 1));
                    }
                    last_seqs.push(seq);
                }
                last_seqs
            })
        })
        .collect();
    let mut ends = Vec::new();
    for r in readers {
        ends.extend(r.join().unwrap());
    }
    drop(sender.join().unwrap());
    assert_eq!(ends.len(), CLIENTS);
    assert!(ends.iter().all(|&e| e == (BEHIND + DURING + 1) as u64));
    assert_eq!(
        d.metric("wsrelay_slow_consumer_disconnects_total"),
        Some(0.0)
    );
    d.wait_metric("wsrelay_resumes_total{outcome=\"recovered\"}", |v| {
        v == CLIENTS as f64
    });
}
