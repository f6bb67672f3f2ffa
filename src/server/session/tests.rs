use super::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// A masked client frame.
fn client(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Feed `input` split into `chunk`-byte pieces; the messages published and the bytes out,
/// the pongs after them.
fn run(s: &mut Session, input: &[u8], chunk: usize) -> (Vec<(Opcode, Vec<u8>)>, Vec<u8>) {
    let now = Instant::now();
    let (mut got, mut out, mut pongs) = (Vec::new(), Vec::new(), Vec::new());
    for piece in input.chunks(chunk.max(1)) {
        let inflater = &mut Inflater::new();
        s.feed(
            piece,
            now,
            TIMEOUT,
            &mut out,
            &mut pongs,
            inflater,
            &mut |op, p| got.push((op, p.to_vec())),
        );
    }
    out.extend(pongs.concat());
    (got, out)
}

fn session() -> Session {
    Session::new(1000, 0, true, Vec::new(), Instant::now())
}

#[test]
fn messages_come_out_whole_however_the_bytes_are_split() {
    let mut input = client(0x81, "héllo".as_bytes());
    input.extend(client(0x02, b"bin"));
    input.extend(client(0x89, b"ping")); // a ping between fragments
    input.extend(client(0x80, b"ary"));
    for chunk in [1, 3, 7, input.len()] {
        let mut s = session();
        let (got, out) = run(&mut s, &input, chunk);
        assert_eq!(
            got,
            [
                (Opcode::Text, "héllo".as_bytes().to_vec()),
                (Opcode::Binary, b"binary".to_vec())
            ]
        );
        assert_eq!(out, wire::frame_with_opcode(0xA, b"ping"), "the pong");
        assert!(s.is_open());
    }
}

#[test]
fn failures_get_their_close_codes() {
    let cases: [(Vec<u8>, u16, CloseReason); 4] = [
        (client(0x81, &[0xff, 0xfe]), 1007, CloseReason::BadUtf8),
        (client(0x82, &[0; 1001]), 1009, CloseReason::TooBig),
        (client(0xC1, b"x"), 1002, CloseReason::Protocol), // RSV1 without an extension
        (vec![0x81, 0x01, b'x'], 1002, CloseReason::Protocol), // unmasked
    ];
    for (input, code, reason) in cases {
        let mut s = session();
        let (got, out) = run(&mut s, &input, 2);
        assert!(got.is_empty());
        assert_eq!(&out[..4], &[0x88, out[1], (code >> 8) as u8, code as u8]);
        assert_eq!(s.reason(), Some(reason));
        assert!(matches!(s.phase(), Phase::Lingering { shut: false, .. }));
        // Nothing after a failure is read as WebSocket.
        let (got, out) = run(&mut s, &client(0x81, b"late"), 100);
        assert!(got.is_empty() && out.is_empty());
    }
}

#[test]
fn a_peer_close_is_answered_and_ends_the_session() {
    let mut s = session();
    let (_, out) = run(&mut s, &client(0x88, &1000u16.to_be_bytes()), 100);
    assert_eq!(out, wire::close(1000, ""));
    assert!(matches!(s.phase(), Phase::Closed { .. }));
    assert_eq!(s.reason(), Some(CloseReason::Normal));
    assert!(
        !s.shut(),
        "a completed handshake closes, it does not linger"
    );
}

#[test]
fn our_close_waits_for_the_peer_and_ignores_its_data_meanwhile() {
    let mut s = session();
    let mut out = Vec::new();
    let now = Instant::now();
    s.close(1001, "bye", CloseReason::Shutdown, now, TIMEOUT, &mut out);
    assert_eq!(out, wire::close(1001, "bye"));
    assert!(matches!(s.phase(), Phase::Closing { .. }));
    assert!(!s.expired(now) && s.expired(now + TIMEOUT));
    let mut input = client(0x81, b"ignored");
    input.extend(client(0x88, &1001u16.to_be_bytes()));
    let (got, out) = run(&mut s, &input, 100);
    assert!(got.is_empty() && out.is_empty(), "no second close frame");
    assert!(matches!(s.phase(), Phase::Closed { .. }));
    assert_eq!(s.reason(), Some(CloseReason::Shutdown));
}

#[test]
fn rate_and_publish_rights_close_with_1008() {
    let mut s = Session::new(1000, 2, true, Vec::new(), Instant::now());
    let three: Vec<u8> = (0..3).flat_map(|_| client(0x81, b"m")).collect();
    let (got, out) = run(&mut s, &three, 100);
    assert_eq!(got.len(), 2, "a burst of the rate passes");
    assert_eq!(out, wire::close(1008, "rate limit"));

    let mut s = Session::new(1000, 0, false, Vec::new(), Instant::now());
    let (got, out) = run(&mut s, &client(0x81, b"m"), 100);
    assert!(got.is_empty());
    assert_eq!((out[0], &out[2..4]), (0x88, &1008u16.to_be_bytes()[..]));
    assert_eq!(s.reason(), Some(CloseReason::Policy));
}

#[test]
fn a_ping_flood_leaves_a_budget_of_pongs_and_counts_toward_the_rate() {
    let mut flood = Vec::new();
    for k in 0..10_000u32 {
        flood.extend(client(0x89, &k.to_be_bytes()));
    }
    let mut s = session();
    let (got, out) = run(&mut s, &flood, 4096);
    assert!(got.is_empty());
    assert!(out.len() <= PONG_BUDGET, "{} bytes of pongs", out.len());
    assert!(
        out.ends_with(&wire::frame_with_opcode(0xA, &9_999u32.to_be_bytes())),
        "the latest last"
    );
    assert!(s.is_open());
    let ten: Vec<u8> = (0..10u32)
        .flat_map(|k| client(0x89, &k.to_be_bytes()))
        .collect();
    let (_, out) = run(&mut session(), &ten, ten.len());
    let want: Vec<u8> = (0..10u32)
        .flat_map(|k| wire::frame_with_opcode(0xA, &k.to_be_bytes()))
        .collect();
    assert_eq!(out, want, "ten pings in one read get ten pongs");

    let mut s = Session::new(1000, 5, true, Vec::new(), Instant::now());
    let (_, out) = run(&mut s, &flood, 4096);
    assert_eq!(out, wire::close(1008, "rate limit"), "no pong once failed");
    assert_eq!(s.reason(), Some(CloseReason::Policy));
}

/// Found by the `frames` fuzz target: many small pongs held, then a large one; dropping only the
/// newest small one left the pongs over the budget.
#[test]
fn a_large_ping_after_small_ones_stays_within_the_pong_budget() {
    let mut input = Vec::new();
    for _ in 0..PONG_BUDGET / 2 {
        input.extend(client(0x89, b""));
    }
    input.extend(client(0x89, &[7; 125]));
    let mut s = session();
    let (got, out) = run(&mut s, &input, input.len());
    assert!(got.is_empty());
    assert!(out.len() <= PONG_BUDGET, "{} bytes of pongs", out.len());
    assert!(
        out.ends_with(&wire::frame_with_opcode(0xA, &[7; 125])),
        "the latest last"
    );
}

#[test]
fn early_bytes_are_decoded_by_an_empty_feed() {
    let mut s = Session::new(1000, 0, true, client(0x81, b"early"), Instant::now());
    let mut got = Vec::new();
    let now = Instant::now();
    s.feed(
        &[],
        now,
        TIMEOUT,
        &mut Vec::new(),
        &mut Vec::new(),
        &mut Inflater::new(),
        &mut |op, p| got.push((op, p.to_vec())),
    );
    assert_eq!(got, [(Opcode::Text, b"early".to_vec())]);
}

/// A masked client frame with its first byte and second byte's mask bit as given.
fn raw(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = client(first, payload);
    if !masked {
        // Drop the mask key and unmask the payload again.
        let at = if payload.len() < 126 { 2 } else { 4 };
        f[1] &= 0x7f;
        f.drain(at..at + 4);
        f[at..].copy_from_slice(payload);
    }
    f
}

/// Everything a feed shows: the messages, the bytes out and the pongs, the phase, the reason.
type Seen = (
    Vec<(Opcode, Vec<u8>)>,
    Vec<u8>,
    &'static str,
    Option<CloseReason>,
);

fn seen(mut s: Session, input: &[u8], chunk: usize) -> Seen {
    let (got, out) = run(&mut s, input, chunk);
    let phase = match s.phase() {
        Phase::Open => "open",
        Phase::Closing { .. } => "closing",
        Phase::Lingering { .. } => "lingering",
        Phase::Closed { .. } => "closed",
    };
    (got, out, phase, s.reason())
}

#[test]
fn the_quick_path_decides_as_tungstenite_does() {
    let long = vec![b'x'; 600];
    let mid = vec![b'y'; 126];
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "small data",
            vec![client(0x81, b"a"), client(0x82, b"b"), client(0x81, b"")],
        ),
        (
            "lengths",
            vec![client(0x81, &mid), client(0x82, &long), client(0x81, b"c")],
        ),
        (
            "ping between",
            vec![client(0x81, b"a"), client(0x89, b"p"), client(0x82, b"b")],
        ),
        ("pong", vec![client(0x8A, b"p"), client(0x81, b"a")]),
        (
            "fragmented, then whole",
            vec![
                client(0x01, b"fr"),
                client(0x89, b""),
                client(0x80, b"ag"),
                client(0x81, b"after"),
            ],
        ),
        (
            "bad utf-8",
            vec![client(0x81, b"ok"), client(0x81, &[0xff, 0xfe])],
        ),
        (
            "cut utf-8",
            vec![client(0x81, "é".as_bytes()[..1].as_ref())],
        ),
        (
            "rsv1 without deflate",
            vec![client(0xC1, b"z"), client(0x81, b"a")],
        ),
        ("rsv3", vec![client(0x91, b"z")]),
        ("unmasked", vec![client(0x81, b"a"), raw(0x81, false, b"b")]),
        ("reserved opcode", vec![client(0x83, b"a")]),
        ("lone continuation", vec![client(0x80, b"a")]),
        (
            "too big",
            vec![client(0x81, b"a"), client(0x82, &vec![1; 1001])],
        ),
        (
            "close then data",
            vec![client(0x88, &1000u16.to_be_bytes()), client(0x81, b"a")],
        ),
        ("bad close", vec![client(0x88, &[3])]),
        (
            "cut at the end",
            vec![client(0x81, b"a"), client(0x82, b"bcd")[..5].to_vec()],
        ),
    ];
    for (name, frames) in cases {
        let input = frames.concat();
        let fresh = || Session::new(1000, 0, true, Vec::new(), Instant::now());
        let mut reference = fresh();
        reference.tungstenite_holds = true; // Every byte through tungstenite.
        let want = seen(reference, &input, input.len());
        assert_eq!(seen(fresh(), &input, input.len()), want, "{name}: whole");
        assert_eq!(seen(fresh(), &input, 7), want, "{name}: in pieces");
    }
}

#[test]
fn the_quick_path_keeps_the_relay_checks() {
    let input = [client(0x81, b"a"), client(0x82, b"b"), client(0x81, b"c")].concat();
    for (rate, may_publish) in [(2, true), (0, false), (1, false)] {
        let fresh = || Session::new(1000, rate, may_publish, Vec::new(), Instant::now());
        let mut reference = fresh();
        reference.tungstenite_holds = true;
        let want = seen(reference, &input, input.len());
        assert_eq!(
            seen(fresh(), &input, input.len()),
            want,
            "{rate} {may_publish}"
        );
    }
    // A smaller limit than the quick path's own: tungstenite's 1009 still.
    let fresh = || Session::new(10, 0, true, Vec::new(), Instant::now());
    let input = client(0x82, &[7; 11]);
    let mut reference = fresh();
    reference.tungstenite_holds = true;
    let want = seen(reference, &input, input.len());
    assert_eq!(want.3, Some(CloseReason::TooBig));
    assert_eq!(seen(fresh(), &input, input.len()), want);
}

/// An idle connection keeps no tungstenite context: one is made for a frame the quick path does
/// not decode and let go when it holds nothing; kept once it may hold part of a message, and
/// once the close handshake has begun.
#[test]
fn tungstenite_is_held_only_while_needed() {
    let mut s = session();
    assert!(s.ctx.is_none(), "a new session");
    let (_, out) = run(&mut s, &client(0x89, b"hi"), 64);
    assert_eq!(out, wire::frame_with_opcode(0xA, b"hi"), "the pong");
    assert!(s.ctx.is_none(), "after a ping");
    let long = vec![7u8; QUICK_MAX + 1];
    let (got, _) = run(&mut s, &client(0x82, &long), 4096);
    assert_eq!(got, vec![(Opcode::Binary, long)]);
    assert!(s.ctx.is_none(), "after a message tungstenite decoded whole");
    let (got, _) = run(&mut s, &client(0x81, b"quick"), 64);
    assert_eq!(got, vec![(Opcode::Text, b"quick".to_vec())]);
    assert!(s.ctx.is_none(), "after a quick message");

    let (got, _) = run(&mut s, &client(0x01, b"frag"), 64);
    assert!(got.is_empty());
    assert!(s.ctx.is_some(), "while a fragmented message is under way");
    let (got, _) = run(&mut s, &client(0x80, b"ment"), 64);
    assert_eq!(got, vec![(Opcode::Text, b"fragment".to_vec())]);

    let mut s = session();
    let (_, out) = run(&mut s, &client(0x88, &1000u16.to_be_bytes()), 64);
    assert_eq!(out, wire::close(1000, ""), "the close reply");
    assert!(s.ctx.is_some() && !s.is_open(), "once the peer closed");

    let mut s = session();
    let mut out = Vec::new();
    s.close(
        1001,
        "bye",
        CloseReason::Shutdown,
        Instant::now(),
        TIMEOUT,
        &mut out,
    );
    assert_eq!(out, wire::close(1001, "bye"));
    assert!(s.ctx.is_some(), "once we closed");

    let s = Session::new(1000, 0, true, client(0x81, b"early"), Instant::now());
    assert!(s.ctx.is_some(), "early bytes go to tungstenite");
}
