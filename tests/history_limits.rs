//! What history may hold: `history_memory` caps the kept bytes of all rooms (the oldest messages
//! of the largest rooms go first), and a reload that lowers `history_size` trims at once.

mod common;

use common::v1;
use common::{Daemon, recv_text, send_text, status};

#[test]
fn history_memory_drops_the_oldest_messages_of_the_largest_room_first() {
    let d = Daemon::start(
        r#"
[server]
workers = 1
history_memory = "1MiB"

[[room]]
path = "/big/*"
history_size = 1000
"#,
    );
    let mut small = d.connect("/big/small", &[]);
    for k in 0..10 {
        send_text(&mut small, &format!("s{k}"));
        recv_text(&mut small);
    }
    let (c, w) = v1::join(&d, "/big/large");
    common::close(c);
    let mut large = d.connect("/big/large", &[]);
    let chunk = "x".repeat(32 * 1024);
    for k in 0..60 {
        send_text(&mut large, &format!("{k}:{chunk}"));
        recv_text(&mut large);
    }
    // 60 x 32 KiB kept would be 1.9 MiB: the cap holds.
    let bytes = d.wait_metric("wsrelay_history_bytes", |v| v > 0.0);
    assert!(bytes <= 1024.0 * 1024.0, "{bytes} bytes kept");
    // The large room lost its oldest: a resume from its start cannot be complete.
    let (_c, back) = v1::join(&d, &format!("/big/large?since=0&epoch={}", w.epoch));
    assert_eq!((back.recovered, back.replayed), (false, 0));
    let (mut c, latest) = v1::join(&d, "/big/large?last=1000");
    assert!(latest.replayed > 0 && latest.replayed < 60, "{latest:?}");
    let newest: Vec<u64> = (0..latest.replayed).map(|_| v1::next(&mut c).seq).collect();
    assert_eq!(newest.last(), Some(&60), "the newest are kept");
    // The small room kept all of its messages.
    let (_c, s) = v1::join(&d, "/big/small?last=1000");
    assert_eq!(s.replayed, 10);
}

#[test]
fn a_reload_that_lowers_history_size_trims_at_once() {
    let config = |size: usize| {
        format!("[server]\nworkers = 2\n\n[[room]]\npath = \"/r/*\"\nhistory_size = {size}\n")
    };
    let d = Daemon::start(&config(100));
    let mut p = d.connect("/r/a", &[]);
    for k in 0..40 {
        send_text(&mut p, &format!("m{k}"));
        recv_text(&mut p);
    }
    d.wait_metric("wsrelay_history_messages", |v| v == 40.0);
    d.rewrite_config(&config(5));
    d.signal(libc::SIGHUP);
    d.wait_metric("wsrelay_history_messages", |v| v == 5.0);
    let (mut c, w) = v1::join(&d, "/r/a?last=5");
    assert_eq!((w.replayed, v1::next(&mut c).seq), (5, 36));
    // The new size is the new bound for ?last.
    let mut s = d.tcp();
    use std::io::{Read, Write};
    s.write_all(common::upgrade_request("/r/a?last=6", "").as_bytes())
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert_eq!(status(&answer), 400, "{answer}");
}
