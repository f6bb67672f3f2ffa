//! The registry's Redis side: one blocking connection (read and write timeouts, our `resp`),
//! made again with a backoff, and the scripts that write this node's snapshot and read every
//! live node's. Merging what the nodes wrote is pure (`parse_rooms`, `merge_presence`) and unit
//! tested; the thread around it is `registry`.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use log::{info, warn};

use super::super::resp::{self, Value};
use super::super::scripts::keys;
use super::{BACKOFF_MAX, BACKOFF_MIN, EXPIRY, TIMEOUT};
use crate::server::api::{Member, RoomInfo};

/// Keys passed to `MGET` at once (its answer stays under `resp::MAX_ARRAY`).
const MGET_CHUNK: usize = 8_192;

/// Redis's clock in ms (so nodes' clocks never matter), shared by the scripts.
const NOW: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// KEYS: nodes zset, this node's rooms hash, its presence hash. ARGV: name, expiry ms, n rooms,
/// then n (path, count) pairs, then (path, presence JSON) pairs. One atomic write: the node is
/// live until `now + expiry`, and its hashes expire with it.
const WRITE: &str = "local ttl = tonumber(ARGV[2])\n\
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n\
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])\n\
    redis.call('DEL', KEYS[2], KEYS[3])\n\
    local n = tonumber(ARGV[3])\n\
    for i = 4, 3 + 2 * n, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end\n\
    for i = 4 + 2 * n, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end\n\
    redis.call('PEXPIRE', KEYS[2], ttl)\n\
    redis.call('PEXPIRE', KEYS[3], ttl)\n\
    return now";

/// The live nodes' names: `ZRANGEBYSCORE nodes now +inf`.
const LIVE: &str = "local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')\n";

/// KEYS: nodes. ARGV: node key prefix, path prefix. Every live node's rooms under the prefix,
/// counts summed, as arrays of at most 1,000 (path, count) pairs (unsorted: Lua compares
/// strings by locale, so the order is made in Rust).
const ROOMS: &str = "local counts, paths = {}, {}\n\
    for _, n in ipairs(live) do\n\
      local h = redis.call('HGETALL', ARGV[1] .. n .. ':rooms')\n\
      for i = 1, #h, 2 do\n\
        local p = h[i]\n\
        if string.sub(p, 1, #ARGV[2]) == ARGV[2] then\n\
          if not counts[p] then counts[p] = 0; paths[#paths + 1] = p end\n\
          counts[p] = counts[p] + tonumber(h[i + 1])\n\
        end\n\
      end\n\
    end\n\
    local out, chunk = {}, {}\n\
    for _, p in ipairs(paths) do\n\
      chunk[#chunk + 1] = p; chunk[#chunk + 1] = counts[p]\n\
      if #chunk >= 2000 then out[#out + 1] = chunk; chunk = {} end\n\
    end\n\
    if #chunk > 0 then out[#out + 1] = chunk end\n\
    return out";

/// KEYS: nodes, the room's epoch and seq keys. ARGV: node key prefix, path. The members summed
/// over the live nodes, the epoch, the last number.
const ROOM: &str = "local sum = 0\n\
    for _, n in ipairs(live) do\n\
      local c = redis.call('HGET', ARGV[1] .. n .. ':rooms', ARGV[2])\n\
      if c then sum = sum + tonumber(c) end\n\
    end\n\
    return {sum, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}";

/// KEYS: nodes. ARGV: node key prefix, path. (node, presence JSON) of each live node that has
/// members of the room.
const PRESENCE: &str = "local out = {}\n\
    for _, n in ipairs(live) do\n\
      local j = redis.call('HGET', ARGV[1] .. n .. ':presence', ARGV[2])\n\
      if j then out[#out + 1] = n; out[#out + 1] = j end\n\
    end\n\
    return out";

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One blocking connection.
struct Conn {
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
    fn script(
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

    /// Write this node's snapshot: rooms with members here (path, count), and the presence
    /// lists (path, JSON) of its rooms with presence.
    pub(super) fn write(
        &mut self,
        rooms: &[(String, usize)],
        presence: &[(String, String)],
    ) -> io::Result<()> {
        let nodes = self.nodes_key();
        let base = format!("{}:node:{}", self.prefix, self.name);
        let (rooms_key, presence_key) = (format!("{base}:rooms"), format!("{base}:presence"));
        let ttl = EXPIRY.as_millis().to_string();
        let n = rooms.len().to_string();
        let name = self.name.clone();
        let counts: Vec<String> = rooms.iter().map(|(_, c)| c.to_string()).collect();
        let mut args: Vec<&[u8]> = vec![name.as_bytes(), ttl.as_bytes(), n.as_bytes()];
        for ((path, _), count) in rooms.iter().zip(&counts) {
            args.push(path.as_bytes());
            args.push(count.as_bytes());
        }
        for (path, json) in presence {
            args.push(path.as_bytes());
            args.push(json.as_bytes());
        }
        let keys: [&[u8]; 3] = [&nodes, rooms_key.as_bytes(), presence_key.as_bytes()];
        self.with(|c| c.script(false, WRITE, &keys, &args).map(drop))
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

/// An epoch (16 hex digits, as kept by the link) and a last number from `GET`s.
fn epoch_seq(pair: &[Value]) -> Option<(String, u64)> {
    let epoch = match pair.first()? {
        Value::Bulk(Some(e)) => String::from_utf8(e.clone()).ok()?,
        _ => return None,
    };
    let seq = match pair.get(1) {
        Some(Value::Bulk(Some(s))) => std::str::from_utf8(s).ok()?.parse().ok()?,
        _ => 0,
    };
    Some((epoch, seq))
}

/// The rooms script's chunks of (path, count) pairs.
fn parse_rooms(v: Value) -> io::Result<Vec<(String, usize)>> {
    let Value::Array(Some(chunks)) = v else {
        return Err(bad(
            "the rooms script answered something else than an array",
        ));
    };
    let mut out = Vec::new();
    for chunk in chunks {
        let Value::Array(Some(items)) = chunk else {
            return Err(bad(
                "the rooms script answered a chunk that is not an array",
            ));
        };
        for pair in items.chunks(2) {
            match pair {
                [Value::Bulk(Some(p)), Value::Int(n)] => out.push((
                    String::from_utf8_lossy(p).into_owned(),
                    usize::try_from(*n).unwrap_or(0),
                )),
                _ => return Err(bad("the rooms script answered a bad pair")),
            }
        }
    }
    Ok(out)
}

/// Each node's presence JSON, as one list: member ids get `@<node>` (ids are per node), lists
/// that do not parse are skipped, the whole sorted by joining time then id (as on one node).
fn merge_presence(lists: &[(String, &[u8])]) -> Vec<Member> {
    #[derive(serde::Deserialize)]
    struct Entry {
        member: String,
        user: Option<String>,
        joined: u64,
    }
    let mut out = Vec::new();
    for (node, json) in lists {
        let Ok(entries) = serde_json::from_slice::<Vec<Entry>>(json) else {
            warn!("cluster registry: node {node}'s presence list is not ours; skipped");
            continue;
        };
        out.extend(entries.into_iter().map(|e| Member {
            member: format!("{}@{node}", e.member),
            user: e.user,
            joined: e.joined,
        }));
    }
    out.sort_by(|a, b| (a.joined, &a.member).cmp(&(b.joined, &b.member)));
    out
}

/// A presence list as a node writes it: the fields the API shows.
pub(super) fn presence_json(members: &[Member]) -> String {
    let list: Vec<serde_json::Value> = members
        .iter()
        .map(|m| serde_json::json!({"member": m.member, "user": m.user, "joined": m.joined}))
        .collect();
    serde_json::Value::Array(list).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(Some(s.as_bytes().to_vec()))
    }

    #[test]
    fn presence_lists_merge_with_node_names() {
        let a = presence_json(&[Member {
            member: "0-1".into(),
            user: Some("alice".into()),
            joined: 20,
        }]);
        let b = r#"[{"member":"0-1","user":null,"joined":10}]"#;
        let merged = merge_presence(&[
            ("a".into(), a.as_bytes()),
            ("b".into(), b.as_bytes()),
            ("c".into(), b"not json"),
        ]);
        let names: Vec<&str> = merged.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["0-1@b", "0-1@a"]);
        assert_eq!(merged[1].user.as_deref(), Some("alice"));
        assert_eq!(merged[0].user, None);
    }

    #[test]
    fn rooms_chunks_and_epochs_parse() {
        let v = Value::Array(Some(vec![
            Value::Array(Some(vec![bulk("/a"), Value::Int(3)])),
            Value::Array(Some(vec![bulk("/b"), Value::Int(1)])),
        ]));
        assert_eq!(
            parse_rooms(v).unwrap(),
            [("/a".to_owned(), 3), ("/b".to_owned(), 1)]
        );
        assert!(parse_rooms(Value::Int(1)).is_err());
        assert!(parse_rooms(Value::Array(Some(vec![Value::Int(1)]))).is_err());
        assert_eq!(
            epoch_seq(&[bulk("00000000000000ff"), bulk("42")]),
            Some(("00000000000000ff".to_owned(), 42))
        );
        assert_eq!(
            epoch_seq(&[bulk("e"), Value::Bulk(None)]),
            Some(("e".into(), 0))
        );
        assert_eq!(epoch_seq(&[Value::Bulk(None), bulk("1")]), None);
    }
}
