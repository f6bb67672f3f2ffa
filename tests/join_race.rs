//! A client that has read its 101 is a member: a message published right after it gets every
//! message the room sequences from then on. 1,000 trials of the tightest race: members spread
//! over two workers (no co-location), a new pattern room each time (so the subscriber's worker is
//! often not registered with the owner yet), and the publisher sends the moment the 101 is read.

mod common;

use std::time::Duration;

use common::{Daemon, send_text};

const CONFIG: &str = r#"
[server]
workers = 2
colocate_members = 0

[[room]]
path = "/rooms/*"
echo = false
"#;

const TRIALS: usize = 1000;

#[test]
fn a_message_sent_right_after_the_101_reaches_the_new_member() {
    let d = Daemon::start(CONFIG);
    let mut misses = Vec::new();
    for trial in 0..TRIALS {
        let path = format!("/rooms/r{trial}");
        let mut publisher = d.connect(&path, &[]);
        let mut subscriber = d.connect(&path, &[]);
        send_text(&mut publisher, &format!("first {trial}"));
        // Generous: the message is on its way in well under a millisecond when all is right.
        subscriber
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        match subscriber.read() {
            Ok(tungstenite::Message::Text(t)) => assert_eq!(t.as_str(), format!("first {trial}")),
            Ok(m) => panic!("trial {trial}: unexpected {m:?}"),
            Err(_) => misses.push(trial),
        }
        assert!(
            misses.len() < 5,
            "missed in trials {misses:?} (stopped early)"
        );
        // Both leave; the room is over before the next trial's.
        common::close(subscriber);
        common::close(publisher);
    }
    assert!(misses.is_empty(), "missed in trials {misses:?}");
}
