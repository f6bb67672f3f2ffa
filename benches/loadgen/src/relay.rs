//! The `fanout` and `rooms` scenarios: R rooms of K members, the first P members of each room
//! publish. Every member receives every message of its room (the server includes the sender).
//!
//! A message's payload is `publisher id (u32 LE) | sequence (u64 LE) | send time (u64 LE, ns
//! since the run's epoch)`, padded to the message size. Each receiver checks, per publisher, that
//! sequences arrive once and in order (a 64-message bitmap tells a duplicate from a late one).
//!
//! Windowed mode: a publisher has at most W messages in flight, a message being in flight until
//! all K members of its room have received it. Receivers count per (message slot) locally and
//! add to a shared atomic counter once per loop pass, not per delivery; whoever completes a
//! message tells the publisher's thread. Rate mode: publishers send on a fixed schedule and the
//! send time in the payload is the scheduled time (no coordinated omission).
//!
//! Threads: the connections are dealt round robin to `threads` threads, each with its own poll.

use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Conn, Counts, HEADER, Rx, SCRATCH, Track, close, flush, pick, read_conn, send};
use crate::hist::Hist;
use crate::inflate::Inflate;
use crate::json::Json;
use crate::net::{self, Open, Sources};
use crate::payload::{self, Kind};
use crate::sys;
use crate::v1::{self, Expect};
use crate::ws::Offer;

const SETUP: u8 = 0;
const WARMUP: u8 = 1;
const MEASURE: u8 = 2;
const DRAIN: u8 = 3;
const STOP: u8 = 4;

const WAKER: Token = Token(usize::MAX);

pub struct Opts {
    pub scenario: &'static str,
    /// The server, or several nodes of one cluster: connection i goes to `servers[i % len]`.
    pub servers: Vec<SocketAddrV4>,
    /// The processes whose CPU counts as the server's (several: a cluster's nodes and Redis).
    pub server_pids: Vec<u32>,
    pub path_prefix: String,
    pub rooms: usize,
    /// Members per room, publishers included.
    pub members: usize,
    /// Publishers per room (the first members).
    pub publishers: usize,
    /// Message size (binary payloads; JSON ones are 1–2 KiB).
    pub size: usize,
    pub payload: Kind,
    /// Offer permessage-deflate (and fail if the server declines it).
    pub deflate: bool,
    /// Offer the subprotocol `wsrelay.v1` (and fail if the server does not choose it): messages
    /// then arrive numbered, after a welcome.
    pub v1: bool,
    /// Messages in flight per publisher (windowed mode).
    pub window: Option<u32>,
    /// Deliveries per second over all rooms (rate mode).
    pub rate: Option<f64>,
    /// Messages per publisher, 0 for no limit.
    pub messages: u64,
    pub threads: usize,
    pub sources: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub setup_timeout: Duration,
}

#[derive(Default)]
struct Stats {
    received: AtomicU64,
    unique: AtomicU64,
    sent: AtomicU64,
    disconnected: AtomicU64,
    wire_bytes: AtomicU64,
    body_bytes: AtomicU64,
    compressed: AtomicU64,
}

struct Shared {
    phase: AtomicU8,
    epoch: Instant,
    /// Messages in flight per publisher; 0 in rate mode.
    window: u32,
    /// Receivers per message.
    target: u32,
    /// Per (publisher, seq % window): receivers so far.
    slots: Vec<AtomicU32>,
    /// Per publisher: its thread and its index there.
    owner: Vec<(u32, u32)>,
    /// Per thread: publishers whose message another thread completed.
    mailboxes: Vec<Mutex<Vec<u32>>>,
    wakers: Vec<Waker>,
    stats: Vec<Stats>,
    messages: u64,
    /// Rate mode: time between two messages of one publisher.
    interval: Option<Duration>,
}

struct Pub {
    conn: usize,
    id: u32,
    sent: u64,
    done: u64,
    next_at: Instant,
}

struct ThreadResult {
    hist: Hist,
    counts: Counts,
    first_error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn thread_main(
    me: usize,
    mut poll: Poll,
    opened: Vec<(usize, Open)>,
    shared: Arc<Shared>,
    barrier: Arc<Barrier>,
    opts: Arc<OptsView>,
) -> ThreadResult {
    let p = opts.publishers;
    let mut conns: Vec<Conn> = Vec::with_capacity(opened.len());
    let mut pubs: Vec<Pub> = Vec::new();
    let mut first_error = None;
    for (i, (global, mut o)) in opened.into_iter().enumerate() {
        poll.registry()
            .register(
                &mut o.stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        let room = global / opts.members;
        let member = global % opts.members;
        if member < p {
            pubs.push(Pub {
                conn: i,
                id: (room * p + member) as u32,
                sent: 0,
                done: 0,
                next_at: shared.epoch,
            });
        }
        let mut carry = o.early;
        carry.reserve(4096);
        conns.push(Conn {
            stream: o.stream,
            room: room as u32,
            carry,
            out: Vec::with_capacity(4096),
            track: i * p,
            open: true,
            deflate: o.deflate,
            inflate: None,
            v1: o.v1.then_some(Expect::Welcome),
        });
    }
    let total_pubs = opts.rooms * p;
    let window = shared.window;
    let mut rx = Rx {
        publishers: p,
        tracks: vec![Track::default(); conns.len() * p],
        local: vec![
            0;
            if window > 0 {
                total_pubs * window as usize
            } else {
                0
            }
        ],
        touched: Vec::with_capacity(4096),
        window,
        hist: Hist::default(),
        counts: Counts::default(),
        measuring: false,
        epoch: shared.epoch,
        inflate: Inflate::new(),
        inflated: Vec::new(),
        unescaped: Vec::new(),
    };
    let mut scratch = vec![0u8; SCRATCH];
    // Distinct bodies, made before the run; a message takes one by its publisher and sequence.
    let mut bodies = payload::pool(opts.payload, HEADER, opts.size, me as u64 + 1);
    let mut events = Events::with_capacity(1024);
    let mut completed: Vec<u32> = Vec::new();
    let mut dirty: Vec<usize> = Vec::new();
    let mut wake = vec![false; shared.wakers.len()];
    let stats = &shared.stats[me];
    let mut sent_total = 0u64;

    barrier.wait();
    let mut started = false;
    loop {
        let phase = shared.phase.load(Acquire);
        if phase == STOP {
            break;
        }
        rx.measuring = phase == MEASURE;
        let sending = phase == WARMUP || phase == MEASURE;
        let now = Instant::now();
        let mut timeout = Duration::from_millis(100);
        if sending {
            if let Some(interval) = shared.interval {
                if !started {
                    // Stagger the publishers over one interval.
                    for pb in pubs.iter_mut() {
                        let share =
                            (pb.id as u64 * interval.as_nanos() as u64) / total_pubs.max(1) as u64;
                        pb.next_at = now + Duration::from_nanos(share);
                    }
                    started = true;
                }
                for pb in pubs.iter_mut() {
                    while pb.next_at <= now && (shared.messages == 0 || pb.sent < shared.messages) {
                        let ts = pb.next_at.duration_since(shared.epoch).as_nanos() as u64;
                        let c = &mut conns[pb.conn];
                        if c.open {
                            let body = pick(&mut bodies, pb.id, pb.sent);
                            send(c, body, pb.id, pb.sent, ts);
                            if !c.out.is_empty() {
                                dirty.push(pb.conn);
                            }
                        }
                        pb.sent += 1;
                        sent_total += 1;
                        pb.next_at += interval;
                    }
                    timeout = timeout.min(pb.next_at.saturating_duration_since(now));
                }
            } else {
                if !started {
                    completed.extend(0..pubs.len() as u32);
                    started = true;
                }
                {
                    let mut mb = shared.mailboxes[me].lock().unwrap();
                    completed.extend(mb.drain(..));
                }
                for k in completed.drain(..) {
                    let pb = &mut pubs[k as usize];
                    let base = pb.id as usize * window as usize;
                    while pb.done < pb.sent {
                        let slot = &shared.slots[base + (pb.done % window as u64) as usize];
                        if slot.load(Acquire) < shared.target {
                            break;
                        }
                        slot.store(0, Relaxed);
                        pb.done += 1;
                    }
                    let c = &mut conns[pb.conn];
                    let ts = shared.epoch.elapsed().as_nanos() as u64;
                    let mut any = false;
                    while c.open
                        && pb.sent - pb.done < window as u64
                        && (shared.messages == 0 || pb.sent < shared.messages)
                    {
                        let body = pick(&mut bodies, pb.id, pb.sent);
                        send(c, body, pb.id, pb.sent, ts);
                        pb.sent += 1;
                        sent_total += 1;
                        any = true;
                    }
                    if any {
                        dirty.push(pb.conn);
                    }
                }
            }
        }
        for k in dirty.drain(..) {
            if let Err(e) = flush(&mut conns[k]) {
                close(
                    &mut conns[k],
                    &mut poll,
                    &mut rx.counts,
                    &mut first_error,
                    e,
                );
            }
        }
        stats.sent.store(sent_total, Relaxed);

        if let Err(e) = poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            first_error.get_or_insert(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let k = ev.token().0;
            let c = &mut conns[k];
            if !c.open {
                continue;
            }
            let mut r = Ok(());
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                r = read_conn(c, &mut scratch, &mut rx);
            }
            if r.is_ok() && !c.out.is_empty() {
                r = flush(c);
            }
            if let Err(e) = r {
                close(c, &mut poll, &mut rx.counts, &mut first_error, e);
            }
        }
        // Hand this pass's receipts to the shared counters; completed messages go to their
        // publisher's thread.
        if let Some(w) = std::num::NonZeroU32::new(window) {
            for &slot in &rx.touched {
                let n = std::mem::take(&mut rx.local[slot as usize]);
                let before = shared.slots[slot as usize].fetch_add(n, AcqRel);
                if before + n >= shared.target {
                    let id = slot / w;
                    let (owner, idx) = shared.owner[id as usize];
                    if owner as usize == me {
                        completed.push(idx);
                    } else {
                        shared.mailboxes[owner as usize].lock().unwrap().push(idx);
                        wake[owner as usize] = true;
                    }
                }
            }
            rx.touched.clear();
            for (t, w) in wake.iter_mut().enumerate() {
                if std::mem::take(w) {
                    let _ = shared.wakers[t].wake();
                }
            }
        }
        stats
            .received
            .store(rx.counts.received + rx.counts.duplicates, Relaxed);
        stats.unique.store(rx.counts.received, Relaxed);
        stats.disconnected.store(rx.counts.disconnected, Relaxed);
        stats.wire_bytes.store(rx.counts.wire_bytes, Relaxed);
        stats.body_bytes.store(rx.counts.body_bytes, Relaxed);
        stats.compressed.store(rx.counts.compressed, Relaxed);
    }
    ThreadResult {
        hist: rx.hist,
        counts: rx.counts,
        first_error,
    }
}

/// The parts of the options the threads need.
struct OptsView {
    rooms: usize,
    members: usize,
    publishers: usize,
    size: usize,
    payload: Kind,
}

pub fn run(o: &Opts) -> Result<Json, String> {
    let k = o.members;
    let p = o.publishers;
    if p == 0 || p > k {
        return Err("publishers must be between 1 and the room size".into());
    }
    if o.size < HEADER {
        return Err(format!("--size must be at least {HEADER} bytes"));
    }
    let n = o.rooms * k;
    let total_pubs = o.rooms * p;
    let threads = o.threads.clamp(1, 64);
    let t_setup = Instant::now();
    let mut sources = Sources::new(o.sources);
    let single = o.rooms == 1;
    let prefix = o.path_prefix.clone();
    let scenario = o.scenario;
    let opened = net::establish(
        &o.servers,
        &mut sources,
        n,
        |i| {
            if single {
                format!("{prefix}/{scenario}")
            } else {
                format!("{prefix}/{scenario}-{}", i / k)
            }
        },
        o.concurrency,
        t_setup + o.setup_timeout,
        Offer {
            deflate: o.deflate,
            v1: o.v1,
        },
    )?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let window = o.window.unwrap_or(0);
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..threads {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        wakers.push(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        polls.push(poll);
    }
    let mut per_thread: Vec<Vec<(usize, Open)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut owner = vec![(0u32, 0u32); total_pubs];
    let mut pub_count = vec![0u32; threads];
    for o_ in opened {
        let t = o_.index % threads;
        let (room, member) = (o_.index / k, o_.index % k);
        if member < p {
            owner[room * p + member] = (t as u32, pub_count[t]);
            pub_count[t] += 1;
        }
        per_thread[t].push((o_.index, o_));
    }
    let interval = o.rate.map(|rate| {
        // rate deliveries/s = messages/s × k; each publisher sends messages/s / total_pubs.
        let per_pub = rate / k as f64 / total_pubs as f64;
        Duration::from_secs_f64(1.0 / per_pub)
    });
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(SETUP),
        epoch: Instant::now(),
        window,
        target: k as u32,
        slots: (0..if window > 0 {
            total_pubs * window as usize
        } else {
            0
        })
            .map(|_| AtomicU32::new(0))
            .collect(),
        owner,
        mailboxes: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
        wakers,
        stats: (0..threads).map(|_| Stats::default()).collect(),
        messages: o.messages,
        interval,
    });
    let view = Arc::new(OptsView {
        rooms: o.rooms,
        members: k,
        publishers: p,
        size: o.size,
        payload: o.payload,
    });
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for (t, (poll, conns)) in polls.into_iter().zip(per_thread).enumerate() {
        let (shared, barrier, view) = (shared.clone(), barrier.clone(), view.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-{t}"))
                .spawn(move || thread_main(t, poll, conns, shared, barrier, view))
                .map_err(|e| e.to_string())?,
        );
    }
    barrier.wait();
    // Let the server finish joining everyone before the first message.
    std::thread::sleep(Duration::from_millis(200));

    let set_phase = |ph: u8| {
        shared.phase.store(ph, Release);
        for w in &shared.wakers {
            let _ = w.wake();
        }
    };
    let sum =
        |f: fn(&Stats) -> &AtomicU64| shared.stats.iter().map(|s| f(s).load(Relaxed)).sum::<u64>();

    set_phase(WARMUP);
    std::thread::sleep(o.warmup);
    let (s0, each0) = sys::sample_all(&o.server_pids);
    let me0 = sys::self_cpu();
    let u0 = sum(|s| &s.unique);
    let bytes0 = [
        sum(|s| &s.wire_bytes),
        sum(|s| &s.body_bytes),
        sum(|s| &s.compressed),
    ];
    let t0 = Instant::now();
    set_phase(MEASURE);
    let capped = o.messages > 0;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if t0.elapsed() >= o.duration {
            break;
        }
        if capped {
            let sent = sum(|s| &s.sent);
            if sent == o.messages * total_pubs as u64 && sum(|s| &s.unique) == sent * k as u64 {
                break;
            }
        }
    }
    let u1 = sum(|s| &s.unique);
    let bytes1 = [
        sum(|s| &s.wire_bytes),
        sum(|s| &s.body_bytes),
        sum(|s| &s.compressed),
    ];
    let elapsed = t0.elapsed().as_secs_f64();
    let (s1, each1) = sys::sample_all(&o.server_pids);
    let me1 = sys::self_cpu();
    set_phase(DRAIN);
    let drain_start = Instant::now();
    while drain_start.elapsed() < o.drain {
        std::thread::sleep(Duration::from_millis(10));
        if sum(|s| &s.unique) >= sum(|s| &s.sent) * k as u64 {
            break;
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    set_phase(STOP);
    let mut hist = Hist::default();
    let mut c = Counts::default();
    let mut first_error = None;
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a loader thread panicked".to_string())?;
        hist.merge(&r.hist);
        c.received += r.counts.received;
        c.duplicates += r.counts.duplicates;
        c.out_of_order += r.counts.out_of_order;
        c.bad_frames += r.counts.bad_frames;
        c.foreign += r.counts.foreign;
        c.disconnected += r.counts.disconnected;
        c.welcomes += r.counts.welcomes;
        c.seq_gaps += r.counts.seq_gaps;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let sent = sum(|s| &s.sent);
    let expected = sent * k as u64;
    let deliveries = u1 - u0;
    let server_cpu = match (s0.cpu, s1.cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let loader_cpu = me1 - me0;

    let mut j = Json::new();
    j.str("scenario", o.scenario);
    j.num("rooms", o.rooms as f64);
    j.num("members_per_room", k as f64);
    j.num("publishers_per_room", p as f64);
    j.num("connections", n as f64);
    j.str("payload", o.payload.name());
    if o.payload == Kind::Binary {
        j.num("size", o.size as f64);
    }
    j.str("deflate", if o.deflate { "agreed" } else { "off" });
    j.str("subprotocol", if o.v1 { v1::PROTOCOL } else { "none" });
    match (o.window, o.rate) {
        (Some(w), _) => {
            j.str("mode", "window");
            j.num("window", w as f64);
        }
        (None, Some(r)) => {
            j.str("mode", "rate");
            j.num("target_deliveries_per_s", r);
        }
        _ => {}
    }
    j.num("threads", threads as f64);
    j.num("setup_s", setup_s);
    j.num("measured_s", elapsed);
    j.num("messages_sent", sent as f64);
    j.num("deliveries", deliveries as f64);
    j.num("deliveries_per_s", deliveries as f64 / elapsed);
    j.num("messages_per_s", deliveries as f64 / elapsed / k as f64);
    j.num("latency_samples", hist.count() as f64);
    j.num("latency_p50_us", hist.quantile(0.50) as f64 / 1e3);
    j.num("latency_p99_us", hist.quantile(0.99) as f64 / 1e3);
    j.num("latency_max_us", hist.max() as f64 / 1e3);
    // Bytes per delivery over the measured interval: WebSocket bytes read (frames and their
    // headers: what crossed the wire, less TCP/IP), and message bytes once inflated.
    let per = |i: usize| (bytes1[i] - bytes0[i]) as f64 / deliveries.max(1) as f64;
    j.num("wire_bytes_per_delivery", per(0));
    j.num("payload_bytes_per_delivery", per(1));
    j.num("compression_ratio", per(1) / per(0).max(1e-9));
    j.num("compressed_share", per(2));
    j.num("expected_deliveries", expected as f64);
    j.num("lost", expected.saturating_sub(c.received) as f64);
    j.num("duplicates", c.duplicates as f64);
    j.num("out_of_order", c.out_of_order as f64);
    j.num("bad_frames", (c.bad_frames + c.foreign) as f64);
    j.num("disconnected", c.disconnected as f64);
    if o.v1 {
        // Every connection is welcomed once; its numbers are dense (the room's order).
        j.num("v1_welcomes", c.welcomes as f64);
        j.num("v1_seq_gaps", c.seq_gaps as f64);
    }
    j.num("drain_s", drain_s);
    server_fields(
        &mut j,
        server_cpu,
        deliveries as f64,
        "deliveries_per_server_cpu_s",
        &s1,
    );
    if o.server_pids.len() > 1 {
        // Each process's share, in --server-pid order (a cluster: its nodes, then Redis).
        let each: Vec<Option<f64>> = each0
            .iter()
            .zip(&each1)
            .map(|(a, b)| Some(b.as_ref()? - a.as_ref()?))
            .collect();
        j.list("server_cpu_s_each", &each);
        j.num("servers", o.servers.len() as f64);
    }
    j.num("loader_cpu_s", loader_cpu);
    j.num("loader_cpu_util", loader_cpu / elapsed);
    if let Some(e) = first_error {
        j.str("first_error", &e);
    }
    Ok(j)
}

/// The server's CPU, efficiency and memory fields (null without `--server-pid`).
pub fn server_fields(
    j: &mut Json,
    cpu: Option<f64>,
    work: f64,
    per_cpu_name: &str,
    s: &sys::ServerSample,
) {
    j.opt("server_cpu_s", cpu);
    j.opt(per_cpu_name, cpu.filter(|&c| c > 0.0).map(|c| work / c));
    j.opt("server_rss_kb", s.rss_kb.map(|v| v as f64));
    j.opt("server_hwm_kb", s.hwm_kb.map(|v| v as f64));
}
