//! `echo`: with it on (the default) the sender gets its own message; with it off only the others
//! do. The negative is proved by order: after the others have the message, a marker from another
//! member reaches the sender first, and a room's messages reach everyone in one order.

mod common;

use common::{Daemon, Ws, recv_text, send_text};

const CONFIG: &str = r#"
[[room]]
path = "/quiet"
echo = false

[[room]]
path = "/loud"
"#;

fn members(d: &Daemon, path: &str) -> Vec<Ws> {
    (0..3).map(|_| d.connect(path, &[])).collect()
}

#[test]
fn echo_off_sender_does_not_get_its_own_message() {
    let d = Daemon::start(CONFIG);
    let mut m = members(&d, "/quiet");
    send_text(&mut m[0], "mine");
    assert_eq!(recv_text(&mut m[1]), "mine");
    assert_eq!(recv_text(&mut m[2]), "mine");
    send_text(&mut m[1], "marker");
    assert_eq!(
        recv_text(&mut m[0]),
        "marker",
        "the sender got its own message"
    );
    assert_eq!(recv_text(&mut m[2]), "marker");
}

#[test]
fn echo_on_sender_gets_its_own_message() {
    let d = Daemon::start(CONFIG);
    let mut m = members(&d, "/loud");
    send_text(&mut m[0], "mine");
    for ws in m.iter_mut() {
        assert_eq!(recv_text(ws), "mine");
    }
}
