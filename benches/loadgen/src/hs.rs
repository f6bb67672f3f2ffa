//! The `handshakes` scenario: connect, upgrade, close (a client close frame, then wait for the
//! server to close), with `concurrency` connections in flight; handshakes/s and latency from the
//! socket's creation to the 101 response.

use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::hist::Hist;
use crate::json::Json;
use crate::net::{Hs, Sources, Step};
use crate::relay::server_fields;
use crate::{sys, ws};

pub struct Opts {
    pub server: SocketAddrV4,
    pub server_pid: Option<u32>,
    pub path_prefix: String,
    pub concurrency: usize,
    pub sources: u32,
    pub warmup: Duration,
    pub duration: Duration,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

enum Entry {
    Opening(Box<Hs>),
    Closing {
        stream: TcpStream,
        deadline: Instant,
    },
}

pub fn run(o: &Opts) -> Result<Json, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut sources = Sources::new(o.sources);
    let mut slab: Slab<Entry> = Slab::new();
    let mut opening = 0usize;
    let path = format!("{}/handshakes", o.path_prefix);
    let mut close_frame = Vec::new();
    ws::encode(
        &mut close_frame,
        ws::OP_CLOSE,
        &1000u16.to_be_bytes(),
        [9, 8, 7, 6],
    );
    let mut hist = Hist::default();
    let (mut done, mut failed, mut close_timeouts) = (0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let t0 = start + o.warmup;
    let end = t0 + o.duration;
    let (mut s0, mut me0, mut done0) = (None, 0.0, 0u64);
    let mut next_sweep = start;
    let mut index = 0usize;
    while Instant::now() < end {
        while opening < o.concurrency {
            let hs = Hs::start(o.server, sources.next(), &path, index, ws::Offer::default())
                .map_err(|e| format!("connect: {e}"))?;
            index += 1;
            let entry = slab.vacant_entry();
            let key = entry.key();
            let Entry::Opening(hs) = entry.insert(Entry::Opening(Box::new(hs))) else {
                unreachable!()
            };
            poll.registry()
                .register(
                    &mut hs.stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .map_err(|e| e.to_string())?;
            opening += 1;
        }
        if s0.is_none() && Instant::now() >= t0 {
            s0 = Some(sys::sample(o.server_pid));
            me0 = sys::self_cpu();
            done0 = done;
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let measuring = now >= t0;
        for ev in events.iter() {
            let key = ev.token().0;
            let Some(entry) = slab.get_mut(key) else {
                continue;
            };
            match entry {
                Entry::Opening(hs) => match hs.step() {
                    Step::Wait => {}
                    Step::Done { .. } => {
                        if measuring {
                            hist.record(now.duration_since(hs.started).as_nanos() as u64);
                        }
                        done += 1;
                        opening -= 1;
                        let Entry::Opening(mut hs) = slab.remove(key) else {
                            unreachable!()
                        };
                        // The close frame fits in an empty socket buffer.
                        let _ = hs.stream.write(&close_frame);
                        let mut stream = hs.stream;
                        let k2 = slab.vacant_entry().key();
                        if k2 != key {
                            let _ = poll.registry().reregister(
                                &mut stream,
                                Token(k2),
                                Interest::READABLE | Interest::WRITABLE,
                            );
                        }
                        // Usually the same key: slab reuses the slot just freed.
                        slab.insert(Entry::Closing {
                            stream,
                            deadline: now + CLOSE_TIMEOUT,
                        });
                    }
                    Step::Fail(why) => {
                        failed += 1;
                        opening -= 1;
                        first_error.get_or_insert(why);
                        let Entry::Opening(mut hs) = slab.remove(key) else {
                            unreachable!()
                        };
                        let _ = poll.registry().deregister(&mut hs.stream);
                    }
                },
                Entry::Closing { stream, .. } => {
                    let over = loop {
                        match stream.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(_) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                            Err(_) => break true,
                        }
                    };
                    if over && let Entry::Closing { mut stream, .. } = slab.remove(key) {
                        let _ = poll.registry().deregister(&mut stream);
                    }
                }
            }
        }
        if now >= next_sweep {
            next_sweep = now + Duration::from_millis(100);
            let stale: Vec<usize> = slab
                .iter()
                .filter(|(_, e)| match e {
                    Entry::Opening(hs) => now.duration_since(hs.started) > HANDSHAKE_TIMEOUT,
                    Entry::Closing { deadline, .. } => now >= *deadline,
                })
                .map(|(k, _)| k)
                .collect();
            for k in stale {
                match slab.remove(k) {
                    Entry::Opening(mut hs) => {
                        failed += 1;
                        opening -= 1;
                        first_error.get_or_insert("handshake timed out".into());
                        let _ = poll.registry().deregister(&mut hs.stream);
                    }
                    Entry::Closing { mut stream, .. } => {
                        close_timeouts += 1;
                        let _ = poll.registry().deregister(&mut stream);
                    }
                }
            }
        }
    }
    let elapsed = Instant::now().duration_since(t0).as_secs_f64();
    let s1 = sys::sample(o.server_pid);
    let me1 = sys::self_cpu();
    let s0 = s0.unwrap_or_default();
    let n = (done - done0) as f64;
    let cpu = match (s0.cpu, s1.cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut j = Json::new();
    j.str("scenario", "handshakes");
    j.num("concurrency", o.concurrency as f64);
    j.num("measured_s", elapsed);
    j.num("handshakes", n);
    j.num("handshakes_per_s", n / elapsed);
    j.num("latency_p50_us", hist.quantile(0.50) as f64 / 1e3);
    j.num("latency_p99_us", hist.quantile(0.99) as f64 / 1e3);
    j.num("latency_max_us", hist.max() as f64 / 1e3);
    j.num("failed", failed as f64);
    j.num("close_timeouts", close_timeouts as f64);
    server_fields(&mut j, cpu, n, "handshakes_per_server_cpu_s", &s1);
    j.num("loader_cpu_s", me1 - me0);
    j.num("loader_cpu_util", (me1 - me0) / elapsed);
    if let Some(e) = first_error {
        j.str("first_error", &e);
    }
    Ok(j)
}
