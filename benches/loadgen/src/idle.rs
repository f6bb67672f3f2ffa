//! The `idle` scenario: C connections opened and held; the server's memory per connection.
//! Connections are spread over 127.0.0.x source addresses and over rooms of 100 members.

use std::io::{self, Read, Write};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::json::Json;
use crate::net::{self, Sources};
use crate::{sys, ws};

pub struct Opts {
    pub server: SocketAddrV4,
    pub server_pid: Option<u32>,
    pub path_prefix: String,
    pub conns: usize,
    pub per_room: usize,
    pub sources: u32,
    pub concurrency: usize,
    pub settle: Duration,
    /// Offer permessage-deflate (and fail if the server declines it).
    pub deflate: bool,
    pub duration: Duration,
    pub setup_timeout: Duration,
}

pub fn run(o: &Opts) -> Result<Json, String> {
    let before = sys::sample(o.server_pid);
    let t_setup = Instant::now();
    let mut sources = Sources::new(o.sources);
    let per_room = o.per_room.max(1);
    let prefix = o.path_prefix.clone();
    let opened = net::establish(
        &[o.server],
        &mut sources,
        o.conns,
        |i| format!("{prefix}/idle-{}", i / per_room),
        o.concurrency,
        t_setup + o.setup_timeout,
        ws::Offer {
            deflate: o.deflate,
            v1: false,
        },
    )?;
    let setup_s = t_setup.elapsed().as_secs_f64();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut streams = Vec::with_capacity(opened.len());
    for (i, mut c) in opened.into_iter().enumerate() {
        poll.registry()
            .register(&mut c.stream, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        streams.push(Some(c.stream));
    }
    let mut closed = 0u64;
    let mut first_error = None;
    let mut hold = |until: Instant, closed: &mut u64| {
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 4096];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if poll.poll(&mut events, Some(left)).is_err() {
                continue;
            }
            for ev in events.iter() {
                let i = ev.token().0;
                let Some(s) = streams[i].as_mut() else {
                    continue;
                };
                // Idle clients only answer pings; anything else is read and dropped.
                let gone = loop {
                    match s.read(&mut buf) {
                        Ok(0) => break Some("server closed the TCP connection".to_string()),
                        Ok(n) => {
                            if let Ok(Some((f, _))) = ws::decode(&buf[..n])
                                && f.op == ws::OP_PING
                            {
                                let mut out = Vec::new();
                                ws::encode(&mut out, ws::OP_PONG, f.payload, [1, 2, 3, 4]);
                                let _ = s.write(&out);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                        Err(e) => break Some(format!("read: {e}")),
                    }
                };
                if let Some(why) = gone {
                    streams[i] = None;
                    *closed += 1;
                    first_error.get_or_insert(why);
                }
            }
        }
    };
    hold(Instant::now() + o.settle, &mut closed);
    let settled = sys::sample(o.server_pid);
    let t0 = Instant::now();
    hold(t0 + o.duration, &mut closed);
    let held_s = t0.elapsed().as_secs_f64();
    let after = sys::sample(o.server_pid);

    let mut j = Json::new();
    j.str("scenario", "idle");
    j.num("connections", o.conns as f64);
    j.str("deflate", if o.deflate { "agreed" } else { "off" });
    j.num("setup_s", setup_s);
    j.num("connects_per_s", o.conns as f64 / setup_s);
    j.num("held_s", held_s);
    j.num("disconnected", closed as f64);
    j.opt("server_rss_before_kb", before.rss_kb.map(|v| v as f64));
    j.opt("server_rss_settled_kb", settled.rss_kb.map(|v| v as f64));
    j.opt("server_rss_kb", after.rss_kb.map(|v| v as f64));
    j.opt("server_hwm_kb", after.hwm_kb.map(|v| v as f64));
    let per_conn = match (before.rss_kb, after.rss_kb) {
        (Some(a), Some(b)) => Some((b as f64 - a as f64) * 1024.0 / o.conns as f64),
        _ => None,
    };
    j.opt("server_rss_per_conn_bytes", per_conn);
    let cpu = match (settled.cpu, after.cpu) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    j.opt("server_cpu_idle_s", cpu);
    j.opt(
        "server_cpu_setup_s",
        match (before.cpu, settled.cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
    );
    if let Some(e) = first_error {
        j.str("first_error", &e);
    }
    Ok(j)
}
