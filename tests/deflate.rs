//! permessage-deflate (RFC 7692) end to end, against the real daemon: the handshake's answer,
//! compressed and plain recipients of one room getting the same messages in one order, each
//! message deflated once whatever the number of recipients, and the bad inputs: a decompression
//! bomb (1009, without the daemon growing by the inflated size), invalid deflate data (1007),
//! RSV1 where it does not belong (1002). The client side deflates and inflates with flate2 (zlib).

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::frames::{
    FIN, OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RSV1, client_frame, expect_close_raw, next_message,
};
use common::{Daemon, header, read_head, recv, status, upgrade_request};
use flate2::{Compress, Compression, FlushCompress};
use tungstenite::Message;

const CONFIG: &str = r#"
[server]
max_message_size = "64KiB"

[[room]]
path = "/z"
compression = true

[[room]]
path = "/plain"
compression = false
"#;

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Upgrade by hand with `extra` header lines; the socket and the response head.
fn upgrade(d: &Daemon, path: &str, extra: &str) -> (TcpStream, String) {
    let mut s = d.tcp();
    s.write_all(upgrade_request(path, extra).as_bytes())
        .unwrap();
    let head = read_head(&mut s);
    assert_eq!(status(&head), 101, "{head}");
    (s, head)
}

/// A message as a client compresses it (raw deflate, sync flush, tail removed: RFC 7692 §7.2.1).
fn deflate(message: &[u8]) -> Vec<u8> {
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(message.len() + 64);
    loop {
        let at = z.total_in() as usize;
        out.reserve(4096);
        z.compress_vec(&message[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        if z.total_in() as usize == message.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
    }
    out.truncate(out.len() - 4);
    out
}

/// JSON of about `n` bytes that compresses several times over.
fn json(n: usize, seq: u32) -> String {
    let mut s = format!("{{\"seq\":{seq},\"items\":[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.5}},",
            i * 7
        ));
        i += 1;
    }
    s.push_str("{}]}");
    s
}

#[test]
fn the_handshake_answers_what_was_agreed() {
    let d = Daemon::start(CONFIG);
    let ext =
        |path: &str, extra: &str| header(&upgrade(&d, path, extra).1, "Sec-WebSocket-Extensions");
    assert_eq!(ext("/z", OFFER).as_deref(), Some(ANSWER));
    assert_eq!(
        ext(
            "/z",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n"
        ),
        Some(format!("{ANSWER}; server_max_window_bits=10"))
    );
    // The first offer we can honour wins; one we must decline is skipped.
    assert_eq!(
        ext(
            "/z",
            "Sec-WebSocket-Extensions: permessage-deflate; x=1, permessage-deflate\r\n"
        )
        .as_deref(),
        Some(ANSWER)
    );
    assert_eq!(
        ext(
            "/z",
            "Sec-WebSocket-Extensions: permessage-deflate; x=1\r\n"
        ),
        None
    );
    assert_eq!(
        ext("/z", "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n"),
        None
    );
    assert_eq!(ext("/z", ""), None);
    assert_eq!(ext("/plain", OFFER), None, "a room with compression off");
}

#[test]
fn compressed_and_plain_recipients_get_the_same_messages_in_one_order() {
    let d = Daemon::start(CONFIG);
    let (mut a, _) = upgrade(&d, "/z", OFFER);
    let small_window = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8\r\n";
    let (mut b, _) = upgrade(&d, "/z", small_window);
    let mut c = d.connect("/z", &[]); // no extension

    let big = json(2000, 1);
    let short = "short message";
    let big_binary = json(5000, 2).into_bytes();
    let from_c = json(1500, 3);
    a.write_all(&client_frame(
        FIN | RSV1 | OP_TEXT,
        &deflate(big.as_bytes()),
        true,
    ))
    .unwrap();
    // A plain message from a compressing client, and a fragmented compressed one.
    a.write_all(&client_frame(FIN | OP_TEXT, short.as_bytes(), true))
        .unwrap();
    let z = deflate(&big_binary);
    let (z1, z2) = z.split_at(z.len() / 3);
    a.write_all(
        &[
            client_frame(RSV1 | OP_BINARY, z1, true),
            client_frame(FIN | OP_CONT, z2, true),
        ]
        .concat(),
    )
    .unwrap();

    let want: [(u8, &[u8]); 4] = [
        (OP_TEXT, big.as_bytes()),
        (OP_TEXT, short.as_bytes()),
        (OP_BINARY, &big_binary),
        (OP_TEXT, from_c.as_bytes()),
    ];
    // c publishes once a has its three back: they are in the room's order by then, so the
    // order every member must see is known.
    let mut a_got: Vec<_> = (0..3).map(|_| next_message(&mut a)).collect();
    c.send(Message::text(from_c.clone())).unwrap();
    a_got.push(next_message(&mut a));
    let b_got: Vec<_> = (0..4).map(|_| next_message(&mut b)).collect();
    for (who, got) in [("a", a_got), ("b, 8-bit window", b_got)] {
        for ((op, bytes), (got_op, compressed, got)) in want.iter().zip(got) {
            assert_eq!((got_op, &got[..]), (*op, *bytes), "{who}");
            // Under compression_min_size (128) a message goes plain; the others compressed.
            assert_eq!(
                compressed,
                bytes.len() >= 128,
                "{who}: {} bytes",
                bytes.len()
            );
        }
    }
    for (op, bytes) in want {
        let m = recv(&mut c);
        let expected = match op {
            OP_TEXT => Message::text(String::from_utf8(bytes.to_vec()).unwrap()),
            _ => Message::binary(bytes.to_vec()),
        };
        assert_eq!(m, expected, "c (no extension) gets them plain");
    }
}

#[test]
fn each_message_is_deflated_once_however_many_recipients() {
    let d = Daemon::start(CONFIG);
    let members: Vec<TcpStream> = (0..6).map(|_| upgrade(&d, "/z", OFFER).0).collect();
    let mut plain = d.connect("/z", &[]);
    const MESSAGES: u32 = 10;
    for seq in 0..MESSAGES {
        plain.send(Message::text(json(1000, seq))).unwrap();
    }
    for mut s in members {
        for seq in 0..MESSAGES {
            let (_, compressed, got) = next_message(&mut s);
            assert!(compressed);
            assert_eq!(got, json(1000, seq).as_bytes());
        }
    }
    for _ in 0..MESSAGES {
        recv(&mut plain); // echo, plain
    }
    let calls = d.wait_metric("wsrelay_frames_delivered_compressed_total", |v| v >= 60.0);
    assert_eq!(calls, 60.0, "6 compressed recipients x 10 messages");
    assert_eq!(
        d.metric("wsrelay_deflate_messages_total"),
        Some(f64::from(MESSAGES))
    );
    let (before, after) = (
        d.metric("wsrelay_deflate_input_bytes_total").unwrap(),
        d.metric("wsrelay_deflate_output_bytes_total").unwrap(),
    );
    assert!(
        after * 3.0 < before,
        "JSON compresses: {before} -> {after} bytes"
    );
    assert_eq!(d.metric("wsrelay_frames_delivered_total"), Some(70.0));
}

#[test]
fn a_decompression_bomb_is_1009_and_costs_no_more_than_the_limit() {
    let d = Daemon::start(CONFIG);
    let bomb = deflate(&vec![0u8; 1 << 20]);
    assert!(
        bomb.len() < 2048,
        "1 MiB of zeros deflates to {} bytes",
        bomb.len()
    );
    // Warm up: the worker's inflater exists after one honest message.
    let (mut s, _) = upgrade(&d, "/z", OFFER);
    s.write_all(&client_frame(
        FIN | RSV1 | OP_BINARY,
        &deflate(&[1; 1000]),
        true,
    ))
    .unwrap();
    assert_eq!(next_message(&mut s).2, [1; 1000]);
    // Sixteen bombs at once: a server that inflated them whole would hold 16 MiB.
    let watch = d.watch_rss();
    let mut bombers: Vec<TcpStream> = (0..16).map(|_| upgrade(&d, "/z", OFFER).0).collect();
    for s in &mut bombers {
        s.write_all(&client_frame(FIN | RSV1 | OP_BINARY, &bomb, true))
            .unwrap();
    }
    for s in &mut bombers {
        let (code, reason) = expect_close_raw(s);
        assert_eq!((code, reason.as_str()), (1009, "message too big"));
    }
    let start = watch.start;
    let grew = watch.peak().saturating_sub(start);
    assert!(
        grew < 1024,
        "RSS grew by {grew} KiB for 16 bombs of 1 MiB with a 64 KiB limit"
    );
    d.wait_metric(
        "wsrelay_connections_closed_total{reason=\"too_big\"}",
        |v| v == 16.0,
    );
}

#[test]
fn invalid_deflate_data_is_1007() {
    let d = Daemon::start(CONFIG);
    let (mut s, _) = upgrade(&d, "/z", OFFER);
    s.write_all(&client_frame(FIN | RSV1 | OP_TEXT, &[0xff; 16], true))
        .unwrap();
    assert_eq!(expect_close_raw(&mut s).0, 1007);
    d.wait_metric(
        "wsrelay_connections_closed_total{reason=\"bad_deflate\"}",
        |v| v == 1.0,
    );
    // Valid deflate of invalid UTF-8 in a text message.
    let (mut s, _) = upgrade(&d, "/z", OFFER);
    s.write_all(&client_frame(
        FIN | RSV1 | OP_TEXT,
        &deflate(b"ok \xff\xfe"),
        true,
    ))
    .unwrap();
    assert_eq!(expect_close_raw(&mut s).0, 1007);
}

#[test]
fn rsv1_where_it_does_not_belong_is_1002() {
    let d = Daemon::start(CONFIG);
    let z = deflate(&json(500, 0).into_bytes());
    let cases: [(&str, &str, Vec<u8>); 4] = [
        ("/z", OFFER, client_frame(FIN | RSV1 | OP_PING, b"p", true)),
        (
            "/z",
            OFFER,
            [
                client_frame(RSV1 | OP_TEXT, &z[..10], true),
                client_frame(FIN | RSV1 | OP_CONT, &z[10..], true),
            ]
            .concat(),
        ),
        ("/z", "", client_frame(FIN | RSV1 | OP_TEXT, &z, true)), // not negotiated
        (
            "/plain",
            OFFER,
            client_frame(FIN | RSV1 | OP_TEXT, &z, true),
        ), // room off
    ];
    for (path, extra, bytes) in cases {
        let (mut s, _) = upgrade(&d, path, extra);
        s.write_all(&bytes).unwrap();
        assert_eq!(expect_close_raw(&mut s).0, 1002, "{path} {extra:?}");
    }
}
