//! The registry's Redis side: one blocking connection (read and write timeouts, our `resp`),
//! made again with a backoff; which write this node's snapshot gets (the changes since the last
//! one, or everything: `write`), and the calls that read every live node's (the scripts are in
//! `lua`, reading their answers in `merge`). The thread around it is `registry`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::super::resp::{self, Value};
use super::super::scripts::keys;
use super::diff::Snapshot;
use super::lua::{LIVE, NOW, PRESENCE, ROOM, ROOMS};
use super::merge::{epoch_seq, merge_presence, parse_rooms};
use super::write::{self, Keys, Wrote};
use super::{BACKOFF_MAX, BACKOFF_MIN, EXPIRY, FULL_EVERY, TIMEOUT};
use crate::server::api::{Member, RoomInfo};

/// Keys passed to `MGET` at once (its answer stays under `resp::MAX_ARRAY`).
const MGET_CHUNK: usize = 8_192;

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One blocking connection.
pub(super) struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
}

impl Conn {
    fn open(host: &(String, u16)) -> io::Result<Conn> {
        let addr = (host.0.as_str(), host.1)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let _ = stream.set_nodelay(true);
        let mut c = Conn {
            stream,
            rbuf: Vec::new(),
        };
        c.call(&[b"PING"])?;
        Ok(c)
    }

    /// One command and its answer, within [`TIMEOUT`]; a Redis error is an error.
    fn call(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        let mut out = Vec::new();
        resp::command(&mut out, args);
        self.stream.write_all(&out)?;
        let deadline = Instant::now() + TIMEOUT;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match resp::parse(&self.rbuf).map_err(|e| bad(e.to_string()))? {
                Some((Value::Error(e), used)) => {
                    self.rbuf.drain(..used);
                    return Err(io::Error::other(format!("redis answered {e}")));
                }
                Some((v, used)) => {
                    self.rbuf.drain(..used);
                    return Ok(v);
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// `EVAL` of `body` after [`NOW`] (and [`LIVE`] for a read).
    pub(super) fn script(
        &mut self,
        read: bool,
        body: &str,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> io::Result<Value> {
        let live = if read { LIVE } else { "" };
        let script = format!("{NOW}{live}{body}");
        let n = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), n.as_bytes()];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        self.call(&all)
    }
}

/// The connection while it lives, and when to try again after a failure.
pub(super) struct Store {
    host: (String, u16),
    url: String,
    name: String,
    prefix: String,
    conn: Option<Conn>,
    backoff: Duration,
    retry_at: Instant,
    failures: u32,
    /// What the last write left in Redis over this connection: `None` when not known (no
    /// write yet on this connection, or the last one failed), and the next write is full.
    written: Option<Snapshot>,
    /// Incremental writes since the last full one.
    since_full: u32,
}

impl Store {
    pub(super) fn new(host: (String, u16), url: String, name: String, prefix: String) -> Store {
        Store {
            host,
            url,
            name,
            prefix,
            conn: None,
            backoff: BACKOFF_MIN,
            retry_at: Instant::now(),
            failures: 0,
            written: None,
            since_full: 0,
        }
    }

    fn nodes_key(&self) -> Vec<u8> {
        format!("{}:nodes", self.prefix).into_bytes()
    }

    fn node_prefix(&self) -> Vec<u8> {
        format!("{}:node:", self.prefix).into_bytes()
    }

    /// Run `f` on the connection, made first if it is time to; any failure drops it and waits
    /// out the backoff (250 ms doubling to 5 s) before the next try.
    fn with<T>(&mut self, f: impl FnOnce(&mut Conn) -> io::Result<T>) -> io::Result<T> {
        if self.conn.is_none() {
            if Instant::now() < self.retry_at {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "backing off"));
            }
            match Conn::open(&self.host) {
                Ok(c) => {
                    if self.failures > 0 {
                        info!(
                            "cluster registry: node {} connected to {}",
                            self.name, self.url
                        );
                    }
                    self.conn = Some(c);
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        let conn = self.conn.as_mut().expect("made above");
        match f(conn) {
            Ok(v) => {
                self.failures = 0;
                self.backoff = BACKOFF_MIN;
                Ok(v)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        self.conn = None;
        self.written = None;
        if self.failures == 0 {
            warn!("cluster registry: redis {} unavailable: {e}", self.url);
        } else {
            log::debug!(
                "cluster registry: redis {} still unavailable: {e}",
                self.url
            );
        }
        self.failures += 1;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        e
    }

    fn keys(&self) -> Keys {
        let base = format!("{}:node:{}", self.prefix, self.name);
        let key = |suffix: &str| format!("{base}:{suffix}").into_bytes();
        Keys {
            nodes: self.nodes_key(),
            rooms: key("rooms"),
            presence: key("presence"),
            new_rooms: key("rooms:new"),
            new_presence: key("presence:new"),
            name: self.name.clone(),
            ttl: EXPIRY.as_millis().to_string(),
            chunk: write::chunk_fields(),
        }
    }

    /// Write this node's snapshot: the changes since the last write when Redis is known to
    /// hold it, else (and every [`FULL_EVERY`] writes, and when Redis turns out to have lost
    /// the hashes) everything. A failure makes the next write full.
    pub(super) fn write(&mut self, snap: Snapshot) -> io::Result<()> {
        let old = if self.conn.is_some() {
            self.written.take()
        } else {
            None
        };
        let old = old.filter(|_| self.since_full + 1 < FULL_EVERY);
        let (keys, name) = (self.keys(), self.name.clone());
        let wrote = self.with(|c| {
            if let Some(old) = &old {
                match write::incremental(c, &keys, old, &snap)? {
                    Wrote::Lost => info!(
                        "cluster registry: node {name}'s entries are gone from redis (restarted \
                         empty, flushed or expired); writing them all again"
                    ),
                    done => return Ok((done, false)),
                }
            }
            write::full(c, &keys, &snap).map(|done| (done, true))
        })?;
        match wrote {
            (Wrote::Done, full) => {
                self.since_full = if full { 0 } else { self.since_full + 1 };
                self.written = Some(snap);
            }
            _ => warn!(
                "cluster registry: node {name}'s full write lost entries between its chunks \
                 (redis took over {EXPIRY:?}); it is made again next time"
            ),
        }
        Ok(())
    }

    /// Rooms with members on any live node whose path starts with `prefix`, by path, at most
    /// `limit`, with their epoch and last number (a room whose epoch is not in Redis yet, just
    /// after Redis lost its data, is left out until its owner has attached it again).
    pub(super) fn rooms(&mut self, prefix: &str, limit: usize) -> io::Result<Vec<RoomInfo>> {
        let (nodes, np) = (self.nodes_key(), self.node_prefix());
        let chan = self.prefix.clone();
        self.with(|c| {
            let v = c.script(true, ROOMS, &[&nodes], &[&np, prefix.as_bytes()])?;
            let mut rooms = parse_rooms(v)?;
            rooms.sort();
            rooms.truncate(limit);
            let mut out = Vec::with_capacity(rooms.len());
            for chunk in rooms.chunks(MGET_CHUNK / 2) {
                let ks: Vec<[Vec<u8>; 3]> = chunk
                    .iter()
                    .map(|(p, _)| keys(&channel(&chan, p)))
                    .collect();
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                for [e, s, _] in &ks {
                    args.push(e);
                    args.push(s);
                }
                let Value::Array(Some(vals)) = c.call(&args)? else {
                    return Err(bad("MGET answered something else than an array"));
                };
                for ((path, members), pair) in chunk.iter().zip(vals.chunks(2)) {
                    if let Some((epoch, seq)) = epoch_seq(pair) {
                        out.push(RoomInfo {
                            room: path.clone(),
                            members: *members,
                            epoch,
                            seq,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    /// One room: `None` when no live node has members of it.
    pub(super) fn room(&mut self, path: &str) -> io::Result<Option<RoomInfo>> {
        let (nodes, np) = (self.nodes_key(), self.node_prefix());
        let [ek, sk, _] = keys(&channel(&self.prefix, path));
        self.with(|c| {
            let v = c.script(true, ROOM, &[&nodes, &ek, &sk], &[&np, path.as_bytes()])?;
            let Value::Array(Some(items)) = v else {
                return Err(bad("the room script answered something else than an array"));
            };
            let members = match items.first() {
                Some(Value::Int(n)) => usize::try_from(*n).unwrap_or(0),
                _ => return Err(bad("the room script answered no count")),
            };
            if members == 0 {
                return Ok(None);
            }
            Ok(
                epoch_seq(items.get(1..).unwrap_or(&[])).map(|(epoch, seq)| RoomInfo {
                    room: path.to_owned(),
                    members,
                    epoch,
                    seq,
                }),
            )
        })
    }

    /// The members of a room on every live node.
    pub(super) fn presence(&mut self, path: &str) -> io::Result<Vec<Member>> {
        let (nodes, np) = (self.nodes_key(), self.node_prefix());
        self.with(|c| {
            let v = c.script(true, PRESENCE, &[&nodes], &[&np, path.as_bytes()])?;
            let Value::Array(Some(items)) = v else {
                return Err(bad("the presence script answered something else"));
            };
            let mut lists = Vec::new();
            for pair in items.chunks(2) {
                if let [Value::Bulk(Some(node)), Value::Bulk(Some(json))] = pair {
                    lists.push((String::from_utf8_lossy(node).into_owned(), json.as_slice()));
                }
            }
            Ok(merge_presence(&lists))
        })
    }
}

/// A room's channel, as the Redis link names it.
fn channel(prefix: &str, path: &str) -> Vec<u8> {
    format!("{prefix}:room:{{{path}}}").into_bytes()
}
