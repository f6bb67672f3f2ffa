//! A slowloris and a garbage flood against the API listener leave the WebSocket port serving:
//! a member keeps exchanging messages with itself through it all, and once the flood stops the
//! API answers again. Seeded, so a failure can be replayed.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::api::{Client, auth};
use common::{Daemon, close, recv_text, send_text};

const SEED: u64 = 0x0a91_f100_d5ee_d001;
/// Slow connections held open at once: more than `[api] max_connections` (256 by default).
const SLOW: usize = 300;
/// Garbage connections, a few threads at a time.
const GARBAGE: usize = 600;
const PARALLEL: usize = 4;

const CONFIG: &str = r#"
[server]
workers = 2
handshake_timeout = "1s"

[[room]]
path = "/chat"
"#;

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn a_flood_on_the_api_leaves_the_websocket_port_serving() {
    let d = Daemon::start_api(CONFIG, "");
    let api = d.api_addr();
    let stop_at = Instant::now() + Duration::from_secs(4);

    // Slowloris: connections that dribble a head a byte at a time, reconnecting when cut.
    let slow = thread::spawn(move || {
        let head = b"POST /api/v1/publish/chat HTTP/1.1\r\nContent-Length: 5\r\nX-Slow: ";
        let mut conns: Vec<(TcpStream, usize)> = Vec::new();
        while Instant::now() < stop_at {
            while conns.len() < SLOW {
                match TcpStream::connect(api) {
                    Ok(s) => conns.push((s, 0)),
                    Err(_) => break,
                }
            }
            conns.retain_mut(|(s, i)| {
                let byte = head.get(*i).copied().unwrap_or(b'a');
                *i += 1;
                s.write_all(&[byte]).is_ok()
            });
            thread::sleep(Duration::from_millis(50)); // the dribble's pace, not a sync
        }
    });

    // Garbage: random bytes, sometimes after a plausible request line or a real key.
    let garbage: Vec<_> = (0..PARALLEL)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = SEED ^ t as u64;
                for _ in 0..GARBAGE / PARALLEL {
                    let Ok(mut s) = TcpStream::connect(api) else {
                        continue;
                    };
                    let mut out = match splitmix(&mut rng) % 3 {
                        0 => b"POST /api/v1/batch HTTP/1.1\r\n".to_vec(),
                        1 => format!("GET /api/v1/rooms HTTP/1.1\r\n{}", auth()).into_bytes(),
                        _ => Vec::new(),
                    };
                    let n = (splitmix(&mut rng) % 8192) as usize;
                    out.extend((0..n).map(|_| splitmix(&mut rng) as u8));
                    let _ = s.write_all(&out);
                }
            })
        })
        .collect();

    // Meanwhile the public port serves: a member gets back every message it sends.
    let mut ws = d.connect("/chat", &[]);
    let mut n = 0;
    while Instant::now() < stop_at {
        let text = format!("message {n}");
        send_text(&mut ws, &text);
        assert_eq!(recv_text(&mut ws), text);
        n += 1;
        thread::sleep(Duration::from_millis(10)); // pacing the member, not a sync
    }
    assert!(n > 50, "only {n} round trips in 4 s");
    let mut other = d.connect("/chat", &[]);
    send_text(&mut other, "still here");
    assert_eq!(recv_text(&mut ws), "still here");
    close(other);
    close(ws);

    slow.join().unwrap();
    for g in garbage {
        g.join().unwrap();
    }
    // The flood is over: the slow connections are cut within handshake_timeout, and the API
    // answers a well-behaved client again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::new(&d);
        let _ = c.s.set_read_timeout(Some(Duration::from_secs(2)));
        c.write(&common::api::request(
            "GET",
            "/api/v1/nothing",
            &auth(),
            b"",
        ));
        let mut buf = [0u8; 12];
        if std::io::Read::read_exact(&mut c.s, &mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 404")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the API does not come back after the flood"
        );
    }
    // No claim on wsrelay_api_connections_refused_total: how many slow connections are open at
    // once depends on the machine's pace (each is cut after handshake_timeout).
}
