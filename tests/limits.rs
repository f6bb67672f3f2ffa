//! Admission limits: a full room and a full server answer 503 with `Retry-After`, too many
//! connections from one address 429; a slot frees again once a member leaves.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, Ws, close, describe};

/// Try to join `path`; `Ok` on a 101, else the refusal's status and `Retry-After`.
fn attempt(d: &Daemon, path: &str) -> Result<Ws, (u16, Option<String>)> {
    match d.try_connect(path, &[], &[]) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let retry = resp.headers().get("Retry-After");
            let retry = retry.map(|v| v.to_str().unwrap().to_string());
            Err((resp.status().as_u16(), retry))
        }
        Err(e) => panic!("handshake on {path}: {}", describe(&e)),
    }
}

fn assert_refused(d: &Daemon, path: &str, code: u16) {
    match attempt(d, path) {
        Ok(_) => panic!("{path}: admitted past the limit, expected {code}"),
        Err((got, retry)) => {
            assert_eq!(got, code, "{path}");
            if code == 503 {
                let retry = retry.expect("503 without Retry-After");
                assert!(retry.parse::<u64>().is_ok(), "Retry-After {retry:?}");
            }
        }
    }
}

/// After a member left, joining `path` must succeed again soon: retry until it does.
fn admitted_again(d: &Daemon, path: &str, refusal: u16) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match attempt(d, path) {
            Ok(ws) => return ws,
            Err((code, _)) if code == refusal && Instant::now() < deadline => {
                // Backing off between attempts; the loop, not the pause, decides.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((code, _)) => panic!("{path}: still refused with {code} after a member left"),
        }
    }
}

#[test]
fn full_room_is_503_until_a_member_leaves() {
    let d = Daemon::start(
        "[[room]]\npath = \"/small\"\nmax_members = 2\n\n[[room]]\npath = \"/other\"\n",
    );
    let mut m: Vec<Ws> = (0..2).map(|_| d.connect("/small", &[])).collect();
    assert_refused(&d, "/small", 503);
    // Only that room is full.
    let _other = d.connect("/other", &[]);
    close(m.pop().unwrap());
    let _back = [m.pop().unwrap(), admitted_again(&d, "/small", 503)];
    assert_refused(&d, "/small", 503);
}

#[test]
fn full_pattern_room_does_not_fill_its_siblings() {
    let d = Daemon::start("[[room]]\npath = \"/r/*\"\nmax_members = 1\n");
    let _a = d.connect("/r/a", &[]);
    let _b = d.connect("/r/b", &[]);
    assert_refused(&d, "/r/a", 503);
}

#[test]
fn full_server_is_503_until_a_connection_closes() {
    let d = Daemon::start("[server]\nmax_connections = 2\n\n[[room]]\npath = \"/r/*\"\n");
    let a = d.connect("/r/a", &[]);
    let b = d.connect("/r/b", &[]);
    assert_refused(&d, "/r/c", 503);
    close(a);
    let _c = admitted_again(&d, "/r/c", 503);
    assert_refused(&d, "/r/d", 503);
    drop(b);
}

#[test]
fn too_many_from_one_address_is_429() {
    let d = Daemon::start("[server]\nmax_connections_per_ip = 2\n\n[[room]]\npath = \"/r/*\"\n");
    let a = d.connect("/r/a", &[]);
    let _b = d.connect("/r/b", &[]);
    assert_refused(&d, "/r/c", 429);
    close(a);
    let _c = admitted_again(&d, "/r/c", 429);
    assert_refused(&d, "/r/d", 429);
}

#[test]
fn health_check_is_not_refused_when_full() {
    let d = Daemon::start("[server]\nmax_connections = 1\n\n[[room]]\npath = \"/r/*\"\n");
    let _a = d.connect("/r/a", &[]);
    let (head, body) = d.http_get("/healthz");
    assert_eq!(
        (common::status(&head), body.trim_end()),
        (200, "ok"),
        "{head}"
    );
}
