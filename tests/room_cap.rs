//! No surprising room cap: by default a room takes as many members as the server does
//! (`max_connections`); 10,050 clients join one room of the built-in config.

mod common;

use std::io::Write;

use common::{Daemon, raise_nofile, read_head, status, upgrade_request};

const CLIENTS: usize = 10_050;

#[test]
fn ten_thousand_and_fifty_clients_join_one_room_of_the_builtin_config() {
    let limit = raise_nofile();
    assert!(
        limit as usize > CLIENTS + 100,
        "RLIMIT_NOFILE hard limit {limit} is too low"
    );
    let d = Daemon::start_default();
    let request = upgrade_request("/live", "");
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut s = d.tcp();
        s.write_all(request.as_bytes()).unwrap();
        let head = read_head(&mut s);
        assert_eq!(status(&head), 101, "client {i}: {head}");
        clients.push(s);
    }
    assert_eq!(d.metric("wsrelay_connections_open"), Some(CLIENTS as f64));
    assert_eq!(d.metric("wsrelay_rooms_open"), Some(1.0));
}
