//! The `api-publish` scenario: S WebSocket subscribers in one room ({prefix}/api-publish), and
//! P keep-alive connections to wsrelay's server-side API publishing into it
//! (`POST /api/v1/publish/…`, `application/octet-stream`, so members get binary frames).
//!
//! A body carries the same 20-byte header as a WebSocket publisher's (connection id, its
//! sequence, send time), so subscribers run the usual checks (once, in order per connection,
//! latency from the request to the member) with `conn`'s code. The API has no sender in the
//! room: every subscriber gets every message. The publishing thread is `api`'s; this module
//! holds the subscribers' threads and the run's phases and report.

use std::io;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use crate::api::{self, DRAIN, Gate, MEASURE, STOP, Shared, WAKER, WARMUP};
use crate::conn::{Conn, Counts, HEADER, Rx, SCRATCH, Track, close, flush, read_conn};
use crate::hist::Hist;
use crate::http::{self, Publish};
use crate::inflate::Inflate;
use crate::json::Json;
use crate::net::{self, Open, Sources};
use crate::relay::server_fields;
use crate::sys;
use crate::ws::Offer;

pub struct Opts {
    pub server: SocketAddrV4,
    /// wsrelay's API listener.
    pub api: SocketAddrV4,
    /// The bearer key.
    pub key: Vec<u8>,
    pub server_pid: Option<u32>,
    pub path_prefix: String,
    pub subs: usize,
    /// Keep-alive API connections.
    pub conns: usize,
    /// Requests in flight per API connection (pipelined when over 1).
    pub window: u32,
    pub gate: Gate,
    pub size: usize,
    /// Messages per API connection, 0 for no limit.
    pub messages: u64,
    /// Subscriber threads (the publishing thread is one more).
    pub threads: usize,
    pub sources: u32,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain: Duration,
    pub setup_timeout: Duration,
}

/// A subscriber thread's running totals, read by the main thread.
#[derive(Default)]
struct Stats {
    unique: AtomicU64,
    disconnected: AtomicU64,
}

struct SubResult {
    hist: Hist,
    counts: Counts,
    first_error: Option<String>,
}

fn subscriber_main(
    me: usize,
    mut poll: Poll,
    opened: Vec<Open>,
    shared: Arc<Shared>,
    stats: Arc<Vec<Stats>>,
    conns_api: usize,
    barrier: Arc<Barrier>,
) -> SubResult {
    let mut conns: Vec<Conn> = Vec::with_capacity(opened.len());
    for (i, mut o) in opened.into_iter().enumerate() {
        poll.registry()
            .register(&mut o.stream, Token(i), Interest::READABLE)
            .expect("register");
        let mut carry = o.early;
        carry.reserve(4096);
        conns.push(Conn {
            stream: o.stream,
            room: 0,
            carry,
            out: Vec::new(),
            track: i * conns_api,
            open: true,
            deflate: None,
            inflate: None,
            v1: None,
        });
    }
    let gated = shared.gate == Gate::Delivered;
    let window = if gated { shared.window } else { 0 };
    let mut rx = Rx {
        publishers: conns_api,
        tracks: vec![Track::default(); conns.len() * conns_api],
        local: vec![0; shared.slots.len()],
        touched: Vec::with_capacity(1024),
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
    let mut events = Events::with_capacity(1024);
    let mut first_error = None;
    let mine = &stats[me];
    barrier.wait();
    loop {
        let phase = shared.phase.load(Acquire);
        if phase == STOP {
            break;
        }
        rx.measuring = phase == MEASURE;
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(100)))
            && e.kind() != io::ErrorKind::Interrupted
        {
            first_error.get_or_insert(format!("poll: {e}"));
            break;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let c = &mut conns[ev.token().0];
            if !c.open {
                continue;
            }
            let mut r = read_conn(c, &mut scratch, &mut rx);
            // Pongs, if the server pings.
            if r.is_ok() && !c.out.is_empty() {
                r = flush(c);
            }
            if let Err(e) = r {
                close(c, &mut poll, &mut rx.counts, &mut first_error, e);
            }
        }
        // This pass's receipts to the shared counters, once per slot; a completed message is
        // the publishing thread's news.
        if window > 0 && !rx.touched.is_empty() {
            let mut any = false;
            let mut mb = shared.mailbox.lock().unwrap();
            for &slot in &rx.touched {
                let n = std::mem::take(&mut rx.local[slot as usize]);
                let before = shared.slots[slot as usize].fetch_add(n, AcqRel);
                if before + n >= shared.target {
                    mb.push(slot / window);
                    any = true;
                }
            }
            drop(mb);
            rx.touched.clear();
            if any {
                let _ = shared.waker.wake();
            }
        }
        mine.unique.store(rx.counts.received, Relaxed);
        mine.disconnected.store(rx.counts.disconnected, Relaxed);
    }
    SubResult {
        hist: rx.hist,
        counts: rx.counts,
        first_error,
    }
}

pub fn run(o: &Opts) -> Result<Json, String> {
    if o.size < HEADER {
        return Err(format!("--size must be at least {HEADER} bytes"));
    }
    if o.subs == 0 || o.conns == 0 || o.window == 0 {
        return Err("--subs, --conns and --window must be at least 1".into());
    }
    let s = o.subs;
    let threads = o.threads.clamp(1, 64);
    let room = format!("{}/api-publish", o.path_prefix);
    let t_setup = Instant::now();
    let mut sources = Sources::new(o.sources);
    let opened = net::establish(
        &[o.server],
        &mut sources,
        s,
        |_| room.clone(),
        o.concurrency,
        t_setup + o.setup_timeout,
        Offer::default(),
    )?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let api_poll = Poll::new().map_err(|e| e.to_string())?;
    let waker = Waker::new(api_poll.registry(), WAKER).map_err(|e| e.to_string())?;
    let gated = o.gate == Gate::Delivered;
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(api::SETUP),
        epoch: Instant::now(),
        window: o.window,
        gate: o.gate,
        target: s as u32,
        slots: (0..if gated {
            o.conns * o.window as usize
        } else {
            0
        })
            .map(|_| AtomicU32::new(0))
            .collect(),
        mailbox: Mutex::new(Vec::new()),
        waker,
        messages: o.messages,
        sent: AtomicU64::new(0),
        published: AtomicU64::new(0),
        settled: AtomicU64::new(0),
        quiet: AtomicBool::new(false),
    });
    let stats: Arc<Vec<Stats>> = Arc::new((0..threads).map(|_| Stats::default()).collect());
    let mut per_thread: Vec<Vec<Open>> = (0..threads).map(|_| Vec::new()).collect();
    for c in opened {
        per_thread[c.index % threads].push(c);
    }
    let barrier = Arc::new(Barrier::new(threads + 2));
    let mut sub_wakers = Vec::new();
    let mut handles = Vec::new();
    for (t, conns) in per_thread.into_iter().enumerate() {
        let poll = Poll::new().map_err(|e| e.to_string())?;
        sub_wakers.push(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let (shared, stats, barrier) = (shared.clone(), stats.clone(), barrier.clone());
        let p = o.conns;
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadgen-sub{t}"))
                .spawn(move || subscriber_main(t, poll, conns, shared, stats, p, barrier))
                .map_err(|e| e.to_string())?,
        );
    }
    // The API connections last: nothing is sent on them until the run starts.
    let streams = api::connect(o.api, o.conns)?;
    let request = Publish::new(&o.api.to_string(), &room, &o.key, o.size);
    let publisher = {
        let (shared, barrier, room, size) = (shared.clone(), barrier.clone(), room.clone(), o.size);
        std::thread::Builder::new()
            .name("loadgen-api".into())
            .spawn(move || {
                api::thread_main(api_poll, streams, request, room, size, shared, barrier)
            })
            .map_err(|e| e.to_string())?
    };
    barrier.wait();
    // Let the server finish joining everyone before the first message.
    std::thread::sleep(Duration::from_millis(200));

    let set_phase = |ph: u8| {
        shared.phase.store(ph, Release);
        let _ = shared.waker.wake();
        for w in &sub_wakers {
            let _ = w.wake();
        }
    };
    let unique = || stats.iter().map(|s| s.unique.load(Relaxed)).sum::<u64>();
    let published = || shared.published.load(Relaxed);

    set_phase(WARMUP);
    std::thread::sleep(o.warmup);
    let s0 = sys::sample(o.server_pid);
    let me0 = sys::self_cpu();
    let (u0, p0) = (unique(), published());
    let t0 = Instant::now();
    set_phase(MEASURE);
    let all = o.messages * o.conns as u64;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if t0.elapsed() >= o.duration {
            break;
        }
        if o.messages > 0 && published() == all && unique() == all * s as u64 {
            break;
        }
    }
    let (u1, p1) = (unique(), published());
    let elapsed = t0.elapsed().as_secs_f64();
    let s1 = sys::sample(o.server_pid);
    let me1 = sys::self_cpu();
    set_phase(DRAIN);
    let drain_start = Instant::now();
    while drain_start.elapsed() < o.drain {
        std::thread::sleep(Duration::from_millis(10));
        let all_news =
            shared.quiet.load(Acquire) && shared.settled.load(Relaxed) == shared.sent.load(Acquire);
        if all_news && unique() >= published() * s as u64 {
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
            .map_err(|_| "a subscriber thread panicked".to_string())?;
        hist.merge(&r.hist);
        c.received += r.counts.received;
        c.duplicates += r.counts.duplicates;
        c.out_of_order += r.counts.out_of_order;
        c.bad_frames += r.counts.bad_frames + r.counts.foreign;
        c.disconnected += r.counts.disconnected;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let mut a = publisher
        .join()
        .map_err(|_| "the publishing thread panicked".to_string())?;
    let first_error = a.first_error.take().or(first_error);
    let seq_check = http::check_seqs(&mut a.seqs);
    let sent = shared.sent.load(Relaxed);
    let ok = published();
    let expected = ok * s as u64;
    let deliveries = u1 - u0;
    let requests = p1 - p0;
    let server_cpu = match (s0.cpu, s1.cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let loader_cpu = me1 - me0;

    let mut j = Json::new();
    j.str("scenario", "api-publish");
    j.num("subscribers", s as f64);
    j.num("api_connections", o.conns as f64);
    j.num("window", o.window as f64);
    j.str("gate", o.gate.name());
    j.num("size", o.size as f64);
    j.num("threads", threads as f64);
    j.num("setup_s", setup_s);
    j.num("measured_s", elapsed);
    j.num("requests", requests as f64);
    j.num("requests_per_s", requests as f64 / elapsed);
    j.num("answer_p50_us", a.answers.quantile(0.50) as f64 / 1e3);
    j.num("answer_p99_us", a.answers.quantile(0.99) as f64 / 1e3);
    j.num("answer_max_us", a.answers.max() as f64 / 1e3);
    j.num("deliveries", deliveries as f64);
    j.num("deliveries_per_s", deliveries as f64 / elapsed);
    // From the request's send to a subscriber's receipt.
    j.num("delivery_p50_us", hist.quantile(0.50) as f64 / 1e3);
    j.num("delivery_p99_us", hist.quantile(0.99) as f64 / 1e3);
    j.num("delivery_max_us", hist.max() as f64 / 1e3);
    j.num("requests_sent", sent as f64);
    j.num("requests_published", ok as f64);
    j.num("requests_refused", a.refused as f64);
    j.num("bad_answers", a.bad_answers as f64);
    j.num("unanswered", a.unanswered as f64);
    j.num("api_closed", a.closed as f64);
    // The room is fed by the API alone: its numbers answered are one dense run, each once.
    j.num("answer_seq_gaps", seq_check.gaps as f64);
    j.num("answer_seq_duplicates", seq_check.duplicates as f64);
    j.num("expected_deliveries", expected as f64);
    j.num("lost", expected.saturating_sub(c.received) as f64);
    j.num("duplicates", c.duplicates as f64);
    j.num("out_of_order", c.out_of_order as f64);
    j.num("bad_frames", c.bad_frames as f64);
    j.num("disconnected", c.disconnected as f64);
    j.num("drain_s", drain_s);
    server_fields(
        &mut j,
        server_cpu,
        deliveries as f64,
        "deliveries_per_server_cpu_s",
        &s1,
    );
    j.opt(
        "requests_per_server_cpu_s",
        server_cpu.filter(|&c| c > 0.0).map(|c| requests as f64 / c),
    );
    j.num("loader_cpu_s", loader_cpu);
    j.num("loader_cpu_util", loader_cpu / elapsed);
    if let Some(e) = first_error {
        j.str("first_error", &e);
    }
    Ok(j)
}
