//! A burst never cuts a reader that keeps up: publishers on both workers send 200 messages of the
//! largest size the room allows, back to back; two readers that read as fast as they can get every
//! message, in the same order, and stay open, while a third that never reads is closed with 1008
//! without holding the others up. Default limits (64 KiB messages, a 1 MiB send queue).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::{Daemon, Ws, read_close};
use tungstenite::Message;

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0
# The reader that never reads gets its close frame only when it reads at the end.
close_timeout = "60s"

[[room]]
path = "/room"
echo = false
"#;

const MESSAGES: u32 = 200;
const SIZE: usize = 64 * 1024;

fn message(publisher: u8, k: u32) -> Vec<u8> {
    let mut m = vec![publisher ^ (k as u8); SIZE];
    m[0] = publisher;
    m[1..5].copy_from_slice(&k.to_be_bytes());
    m
}

/// The same message as a masked client frame (zero mask: the payload goes as is).
fn client_frame(publisher: u8, k: u32) -> Vec<u8> {
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(SIZE as u64).to_be_bytes());
    f.extend_from_slice(&[0; 4]);
    f.extend(message(publisher, k));
    f
}

/// A publisher: writes its messages back to back while another thread reads and drops what
/// the room sends it (it is a member too), so it is never the slow one.
fn publish(mut s: TcpStream, publisher: u8) -> TcpStream {
    common::drain_in_background(&s);
    for k in 0..MESSAGES {
        s.write_all(&client_frame(publisher, k)).unwrap();
    }
    s
}

/// Read `total` messages as fast as possible; (publisher, number) of each, in order.
fn read_all(mut ws: Ws, total: usize) -> (Vec<(u8, u32)>, Ws) {
    let mut got = Vec::with_capacity(total);
    while got.len() < total {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                let (p, k) = (b[0], u32::from_be_bytes(b[1..5].try_into().unwrap()));
                assert!(b[..] == message(p, k)[..], "message {p}/{k} corrupted");
                got.push((p, k));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => panic!("after {} messages: {m:?}", got.len()),
            Err(e) => panic!("after {} messages: {e}", got.len()),
        }
    }
    (got, ws)
}

fn burst(publishers: u8) {
    let d = Daemon::start(CONFIG);
    let readers: Vec<Ws> = (0..2).map(|_| d.connect("/room", &[])).collect();
    let mut stalled = d.connect("/room", &[]);
    let senders: Vec<TcpStream> = (0..publishers)
        .map(|_| d.raw_upgrade("/room", ""))
        .collect();
    let total = usize::from(publishers) * MESSAGES as usize;
    let readers: Vec<_> = readers
        .into_iter()
        .map(|ws| thread::spawn(move || read_all(ws, total)))
        .collect();
    let senders: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, s)| thread::spawn(move || publish(s, p as u8)))
        .collect();
    let _senders: Vec<TcpStream> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let results: Vec<(Vec<(u8, u32)>, Ws)> =
        readers.into_iter().map(|t| t.join().unwrap()).collect();
    for (got, _) in &results {
        for p in 0..publishers {
            let mine: Vec<u32> = got.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert_eq!(mine, (0..MESSAGES).collect::<Vec<_>>(), "publisher {p}");
        }
    }
    assert_eq!(
        results[0].0, results[1].0,
        "the readers saw different orders"
    );
    // The readers are still members: one more message reaches both.
    let mut results = results;
    let mut last = d.connect("/room", &[]);
    last.send(Message::binary(message(99, 0))).unwrap();
    for (_, ws) in &mut results {
        assert_eq!(common::recv(ws), Message::binary(message(99, 0)));
    }
    // The one that never read was cut off as too slow.
    stalled
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(read_close(&mut stalled).0, 1008);
    let _ = stalled.flush(); // our close reply: the daemon lets go of the connection
    d.wait_metric("wsrelay_slow_consumer_disconnects_total", |v| v == 1.0);
}

#[test]
fn one_publisher_200_largest_messages_cut_nobody_who_reads() {
    burst(1);
}

#[test]
fn four_publishers_on_both_workers_cut_nobody_who_reads() {
    burst(4);
}
