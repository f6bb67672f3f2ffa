//! A loader thread's connections in the `fanout` and `rooms` scenarios: the frames they read, the
//! checks on every message (once each, in order per publisher), inflating the ones that arrive
//! compressed, taking the `wsrelay.v1` number off the ones that carry it; and what they write.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::Poll;

use crate::hist::Hist;
use crate::inflate::{Agreed, Inflate};
use crate::v1::{Expect, Got};
use crate::ws;

/// Bytes at the start of every message: publisher id, sequence, send time.
pub const HEADER: usize = 20;
pub const MASK: [u8; 4] = [0x5a, 0xc3, 0x17, 0x8e];
pub const SCRATCH: usize = 256 * 1024;

pub struct Conn {
    pub stream: mio::net::TcpStream,
    pub room: u32,
    pub carry: Vec<u8>,
    pub out: Vec<u8>,
    /// First of this connection's per-publisher trackers.
    pub track: usize,
    pub open: bool,
    /// What the server agreed of permessage-deflate.
    pub deflate: Option<Agreed>,
    /// This connection's own inflater, for a server that keeps its compression context.
    pub inflate: Option<Box<Inflate>>,
    /// It speaks `wsrelay.v1`: what its next data frame must be.
    pub v1: Option<Expect>,
}

#[derive(Clone, Copy, Default)]
pub struct Track {
    next: u64,
    /// Bit i: sequence next-1-i was seen.
    seen: u64,
}

#[derive(Default)]
pub struct Counts {
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub bad_frames: u64,
    pub foreign: u64,
    pub disconnected: u64,
    /// WebSocket bytes read (frames with their headers).
    pub wire_bytes: u64,
    /// Message bytes delivered, as sent (inflated).
    pub body_bytes: u64,
    /// Messages delivered compressed.
    pub compressed: u64,
    /// `wsrelay.v1` welcomes received.
    pub welcomes: u64,
    /// `wsrelay.v1` messages whose number was not the previous one's + 1 (on that connection).
    pub seq_gaps: u64,
}

/// Receive-side state of one thread, apart from the connections.
pub struct Rx {
    pub publishers: usize,
    pub tracks: Vec<Track>,
    pub local: Vec<u32>,
    pub touched: Vec<u32>,
    pub window: u32,
    pub hist: Hist,
    pub counts: Counts,
    pub measuring: bool,
    pub epoch: Instant,
    /// The thread's inflater, for servers without context takeover, and its output.
    pub inflate: Inflate,
    pub inflated: Vec<u8>,
    /// A `wsrelay.v1` text message's data, unescaped.
    pub unescaped: Vec<u8>,
}

impl Rx {
    /// Parse every whole frame at the front of `buf`; returns the bytes used.
    fn frames(&mut self, c: &mut Conn, buf: &[u8], now_ns: u64) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let (f, used) = match ws::decode(&buf[at..]) {
                Ok(Some(x)) => x,
                Ok(None) => return Ok(at),
                Err(e) => return Err(e.into()),
            };
            at += used;
            match f.op {
                ws::OP_BINARY | ws::OP_TEXT if f.fin && f.rsv1 => {
                    let Some(agreed) = c.deflate else {
                        return Err("a compressed frame without permessage-deflate".into());
                    };
                    let mut out = std::mem::take(&mut self.inflated);
                    let inflater = if agreed.no_context {
                        &mut self.inflate
                    } else {
                        c.inflate.get_or_insert_with(|| Box::new(Inflate::new()))
                    };
                    inflater.message(f.payload, agreed.no_context, &mut out)?;
                    let r = self.data(c, f.op, &out, true, now_ns);
                    self.inflated = out;
                    r?;
                }
                ws::OP_BINARY | ws::OP_TEXT if f.fin => {
                    self.data(c, f.op, f.payload, false, now_ns)?
                }
                ws::OP_PING => ws::encode(&mut c.out, ws::OP_PONG, f.payload, MASK),
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = f.payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                    let why = String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[]));
                    return Err(format!("server closed: {code:?} {why}"));
                }
                _ => self.counts.bad_frames += 1,
            }
        }
    }

    /// A whole data message as sent by the server (inflated); err: it breaks `wsrelay.v1`.
    #[inline]
    fn data(
        &mut self,
        c: &mut Conn,
        op: u8,
        p: &[u8],
        compressed: bool,
        now_ns: u64,
    ) -> Result<(), String> {
        let Some(expect) = &mut c.v1 else {
            self.body(c, p, compressed, now_ns);
            return Ok(());
        };
        let mut text = std::mem::take(&mut self.unescaped);
        let r = match expect.frame(op, p, &mut text) {
            Ok(Got::Welcome) => {
                self.counts.welcomes += 1;
                Ok(())
            }
            Ok(Got::Message { body, in_sequence }) => {
                self.counts.seq_gaps += u64::from(!in_sequence);
                self.body(c, body, compressed, now_ns);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.unescaped = text;
        r
    }

    /// The publisher's bytes of a message.
    #[inline]
    fn body(&mut self, c: &Conn, p: &[u8], compressed: bool, now_ns: u64) {
        if p.len() < HEADER {
            self.counts.bad_frames += 1;
            return;
        }
        self.counts.compressed += u64::from(compressed);
        self.message(c, p, now_ns);
    }

    #[inline]
    fn message(&mut self, c: &Conn, p: &[u8], now_ns: u64) {
        let id = u32::from_le_bytes(p[0..4].try_into().unwrap());
        let seq = u64::from_le_bytes(p[4..12].try_into().unwrap());
        let ts = u64::from_le_bytes(p[12..20].try_into().unwrap());
        let (room, j) = (id as usize / self.publishers, id as usize % self.publishers);
        if room != c.room as usize {
            self.counts.foreign += 1;
            return;
        }
        self.counts.received += 1;
        self.counts.body_bytes += p.len() as u64;
        let t = &mut self.tracks[c.track + j];
        if seq >= t.next {
            let gap = seq - t.next;
            t.seen = if gap >= 63 {
                1
            } else {
                (t.seen << (gap + 1)) | 1
            };
            t.next = seq + 1;
        } else {
            let back = t.next - 1 - seq;
            if back < 64 && t.seen & (1 << back) != 0 {
                self.counts.duplicates += 1;
                return;
            }
            if back < 64 {
                t.seen |= 1 << back;
            }
            self.counts.out_of_order += 1;
        }
        if self.measuring {
            self.hist.record(now_ns.saturating_sub(ts));
        }
        if self.window > 0 {
            let slot = id as usize * self.window as usize + (seq % self.window as u64) as usize;
            if self.local[slot] == 0 {
                self.touched.push(slot as u32);
            }
            self.local[slot] += 1;
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Read until the socket would block. Err: the connection is over (and why).
pub fn read_conn(c: &mut Conn, scratch: &mut [u8], rx: &mut Rx) -> Result<(), String> {
    loop {
        let l = c.carry.len();
        scratch[..l].copy_from_slice(&c.carry);
        match c.stream.read(&mut scratch[l..]) {
            Ok(0) => return Err("server closed the TCP connection".into()),
            Ok(n) => {
                rx.counts.wire_bytes += n as u64;
                let total = l + n;
                let now = rx.now_ns();
                let used = rx.frames(c, &scratch[..total], now)?;
                c.carry.clear();
                c.carry.extend_from_slice(&scratch[used..total]);
                if c.carry.len() > SCRATCH / 2 {
                    return Err("frame larger than the read buffer".into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

pub fn flush(c: &mut Conn) -> Result<(), String> {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

/// The body for message `seq` of publisher `id`.
pub fn pick(bodies: &mut [Vec<u8>], id: u32, seq: u64) -> &mut [u8] {
    let k = (u64::from(id) * 7 + seq) % bodies.len() as u64;
    &mut bodies[k as usize]
}

pub fn send(c: &mut Conn, payload: &mut [u8], id: u32, seq: u64, ts: u64) {
    stamp(payload, id, seq, ts);
    ws::encode(&mut c.out, ws::OP_BINARY, payload, MASK);
}

/// Write the `HEADER` receivers check into the front of `payload`: publisher `id`, its `seq`,
/// the send time `ts` (ns since the run's epoch).
pub fn stamp(payload: &mut [u8], id: u32, seq: u64, ts: u64) {
    payload[0..4].copy_from_slice(&id.to_le_bytes());
    payload[4..12].copy_from_slice(&seq.to_le_bytes());
    payload[12..20].copy_from_slice(&ts.to_le_bytes());
}

pub fn close(
    c: &mut Conn,
    poll: &mut Poll,
    counts: &mut Counts,
    first: &mut Option<String>,
    why: String,
) {
    c.open = false;
    let _ = poll.registry().deregister(&mut c.stream);
    let _ = c.stream.shutdown(std::net::Shutdown::Both);
    counts.disconnected += 1;
    first.get_or_insert(why);
}
