//! A room's `max_messages_per_second`: a token bucket per connection with a burst of the same
//! size. A client that bursts past it is closed with 1008 "rate limit" (the messages within the
//! burst are relayed first, the rest never); a client that keeps within it is never cut, and the
//! limit is per connection, not per room.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Daemon, Ws, close, read_close, recv_text, send_text};

const RATE: usize = 20;

fn config() -> String {
    format!(
        "[[room]]\npath = \"/limited\"\nmax_messages_per_second = {RATE}\n\n\
         [[room]]\npath = \"/free\"\n"
    )
}

#[test]
fn a_burst_past_the_rate_is_closed_with_1008_rate_limit() {
    let d = Daemon::start(&config());
    let mut m: Vec<Ws> = (0..2).map(|_| d.connect("/limited", &[])).collect();
    let mut flooder = m.pop().unwrap();
    let mut watcher = m.pop().unwrap();

    for k in 0..3 * RATE {
        // Writes may fail once the server has closed; what was relayed is checked below.
        if flooder
            .send(tungstenite::Message::text(format!("flood {k}")))
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = read_close(&mut flooder);
    assert_eq!((code, reason.as_str()), (1008, "rate limit"));

    // The watcher got the burst in order, and nothing past the cut: its own message comes next.
    send_text(&mut watcher, "still here");
    let mut relayed = 0;
    loop {
        let t = recv_text(&mut watcher);
        if t == "still here" {
            break;
        }
        assert_eq!(t, format!("flood {relayed}"), "out of order");
        relayed += 1;
    }
    // A burst of RATE, plus what refilled while the burst arrived (a token per 50 ms): far
    // fewer than were sent.
    assert!(
        (RATE..2 * RATE).contains(&relayed),
        "{relayed} messages relayed from a burst of {} at {RATE}/s",
        3 * RATE
    );
    close(watcher);
}

#[test]
fn a_client_within_the_rate_is_never_cut() {
    let d = Daemon::start(&config());
    let mut m: Vec<Ws> = (0..2).map(|_| d.connect("/limited", &[])).collect();
    let mut steady = m.pop().unwrap();
    let mut other = m.pop().unwrap();

    // A full burst at once is allowed ...
    for k in 0..RATE {
        send_text(&mut steady, &format!("burst {k}"));
    }
    for k in 0..RATE {
        assert_eq!(recv_text(&mut other), format!("burst {k}"));
        assert_eq!(recv_text(&mut steady), format!("burst {k}"));
    }
    // ... and so is half the rate from then on, from an empty bucket, for longer than a burst
    // lasts: more than RATE messages in all, none of them over the rate.
    let interval = Duration::from_millis(2000 / RATE as u64);
    let started = Instant::now();
    for k in 0..RATE + 5 {
        // Pacing the client is the point of this test.
        thread::sleep(
            (started + interval * (k as u32 + 1)).saturating_duration_since(Instant::now()),
        );
        send_text(&mut steady, &format!("steady {k}"));
        assert_eq!(recv_text(&mut steady), format!("steady {k}"), "echo");
        assert_eq!(recv_text(&mut other), format!("steady {k}"));
    }
    // The limit is per connection: both at 3/4 of the rate at once, 3/2 of it in the room.
    for k in 0..RATE * 3 / 4 {
        send_text(&mut steady, &format!("a {k}"));
        send_text(&mut other, &format!("b {k}"));
    }
    let mut seen = 0;
    while seen < 2 * (RATE * 3 / 4) {
        recv_text(&mut other);
        seen += 1;
    }
    send_text(&mut steady, "end");
    while recv_text(&mut steady) != "end" {}
    close(steady);
    close(other);
}

#[test]
fn a_room_without_a_rate_takes_any_burst() {
    let d = Daemon::start(&config());
    let mut ws = d.connect("/free", &[]);
    for k in 0..10 * RATE {
        send_text(&mut ws, &format!("{k}"));
    }
    for k in 0..10 * RATE {
        assert_eq!(recv_text(&mut ws), format!("{k}"));
    }
    close(ws);
}
