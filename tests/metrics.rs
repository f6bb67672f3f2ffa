//! `GET /metrics`: Prometheus text format; values move as traffic flows. Workers add their counts
//! once per loop pass, so a test waits (bounded) for a value rather than reading it once.

mod common;

use common::{Daemon, Ws, header, read_close, recv_text, send_text, status};

#[test]
fn exposition_is_prometheus_text_with_help_and_type() {
    let d = Daemon::start("[[room]]\npath = \"/chat\"\n");
    let (head, body) = d.http_get("/metrics");
    assert_eq!(status(&head), 200);
    let ctype = header(&head, "content-type").unwrap();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    for family in [
        "wsrelay_build_info",
        "wsrelay_connections_open",
        "wsrelay_connections_accepted_total",
        "wsrelay_connections_closed_total",
        "wsrelay_messages_received_total",
        "wsrelay_frames_delivered_total",
        "wsrelay_received_bytes_total",
        "wsrelay_sent_bytes_total",
        "wsrelay_rooms_open",
        "wsrelay_slow_consumer_disconnects_total",
        "wsrelay_handshakes_refused_total",
        "wsrelay_config_reloads_total",
    ] {
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit_once(' ').map(|(_, v)| v).unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        assert!(line.starts_with("wsrelay_"), "{line:?}");
    }
}

#[test]
fn values_move_as_traffic_flows() {
    let d = Daemon::start(
        "[server]\nworkers = 2\nclose_timeout = \"1s\"\n[[room]]\npath = \"/chat\"\nmax_message_size = 1000\n",
    );
    assert_eq!(d.metric("wsrelay_connections_open"), Some(0.0));
    let mut m: Vec<Ws> = (0..3).map(|_| d.connect("/chat", &[])).collect();
    assert_eq!(d.metric("wsrelay_connections_open"), Some(3.0));
    assert_eq!(d.metric("wsrelay_connections_accepted_total"), Some(3.0));
    assert_eq!(d.metric("wsrelay_rooms_open"), Some(1.0));
    assert_eq!(d.metric("wsrelay_messages_received_total"), Some(0.0));
    assert_eq!(d.metric("wsrelay_frames_delivered_total"), Some(0.0));

    for i in 0..10 {
        send_text(&mut m[0], &format!("m{i}"));
    }
    for member in &mut m {
        for i in 0..10 {
            assert_eq!(recv_text(member), format!("m{i}"));
        }
    }
    d.wait_metric("wsrelay_messages_received_total", |v| v == 10.0);
    d.wait_metric("wsrelay_frames_delivered_total", |v| v == 30.0);
    assert!(d.metric("wsrelay_sent_bytes_total").unwrap() > 0.0);
    assert!(d.metric("wsrelay_received_bytes_total").unwrap() > 0.0);

    send_text(&mut m[2], &"x".repeat(2000));
    assert_eq!(read_close(&mut m[2]).0, 1009);
    d.wait_metric(
        "wsrelay_connections_closed_total{reason=\"too_big\"}",
        |v| v == 1.0,
    );
    d.wait_metric("wsrelay_connections_open", |v| v == 2.0);

    let head = d.raw_request(common::upgrade_request("/nowhere", "").as_bytes());
    assert_eq!(status(&head), 404);
    assert_eq!(
        d.metric("wsrelay_handshakes_refused_total{status=\"404\"}"),
        Some(1.0)
    );
}
