//! The client address behind a proxy: `X-Forwarded-For` counts only when the peer is in
//! `trusted_proxies`, and then its rightmost address that is not itself a trusted proxy (what
//! the proxy saw; anything left of it the client could have written). The per-address limit
//! `max_connections_per_ip` (429) counts that address. The daemon listens on 127.0.0.1, so the
//! test's own connections come from a trusted or an untrusted peer by config.

mod common;

use std::net::TcpStream;

use common::{Daemon, status, upgrade_request};

fn config(trusted: &str) -> String {
    format!(
        "[server]\nmax_connections_per_ip = 2\ntrusted_proxies = {trusted}\n\n\
         [[room]]\npath = \"/r/*\"\n"
    )
}

fn xff(addresses: &str) -> String {
    format!("X-Forwarded-For: {addresses}\r\n")
}

/// A member from behind `X-Forwarded-For: addresses` (kept open while the value lives).
fn join(d: &Daemon, addresses: &str) -> TcpStream {
    d.raw_upgrade("/r/a", &xff(addresses))
}

fn refused(d: &Daemon, addresses: &str) -> u16 {
    status(&d.raw_request(upgrade_request("/r/a", &xff(addresses)).as_bytes()))
}

#[test]
fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit() {
    let d = Daemon::start(&config("[\"127.0.0.1/32\", \"10.0.0.0/8\"]"));
    let mut held = vec![join(&d, "203.0.113.1"), join(&d, "203.0.113.1")];
    assert_eq!(refused(&d, "203.0.113.1"), 429, "a third from one client");
    // Other clients behind the same proxy are not affected.
    held.push(join(&d, "203.0.113.2"));
    held.push(join(&d, "2001:db8::7"));
    // A hop through another trusted proxy is looked through: the client is still 203.0.113.1.
    assert_eq!(refused(&d, "203.0.113.1, 10.1.2.3"), 429);
    // Addresses left of the client's are the client's own claims and change nothing.
    assert_eq!(refused(&d, "198.51.100.9, 203.0.113.1"), 429);
    assert_eq!(refused(&d, "garbage, 203.0.113.1"), 429);
    // No header: the proxy itself is the client (127.0.0.1, none of its slots taken yet).
    held.push(d.raw_upgrade("/r/a", ""));
    // A slot comes back when one of the client's connections closes.
    drop(held.remove(0));
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    loop {
        let head = d.raw_request(upgrade_request("/r/a", &xff("203.0.113.1")).as_bytes());
        match status(&head) {
            101 => break,
            429 if std::time::Instant::now() < deadline => {
                // Backing off until the worker reports the close; the deadline decides.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            s => panic!("still {s} after a connection closed"),
        }
    }
}

#[test]
fn from_an_untrusted_peer_the_header_is_ignored() {
    let d = Daemon::start(&config("[\"10.0.0.0/8\"]"));
    // Each claims to be someone else; all are 127.0.0.1, which has two slots.
    let _held = [join(&d, "203.0.113.1"), join(&d, "203.0.113.2")];
    assert_eq!(refused(&d, "203.0.113.3"), 429);
    assert_eq!(refused(&d, ""), 429);
    assert_eq!(
        status(&d.raw_request(upgrade_request("/r/a", "").as_bytes())),
        429
    );
}

#[test]
fn an_empty_trusted_list_trusts_nobody() {
    let d = Daemon::start(&config("[]"));
    let _held = [join(&d, "203.0.113.1"), join(&d, "203.0.113.2")];
    assert_eq!(refused(&d, "203.0.113.3"), 429);
}
