//! Writing this node's snapshot over one connection: the incremental write (the changes since
//! the last write) and the full one, each as `EVAL`s of bounded chunks (`diff`); the scripts
//! are in `lua`. When to write which is `store`'s business.

use std::io;

use super::super::resp::Value;
use super::diff::{self, CHUNK_BYTES, CHUNK_FIELDS, Op, Snapshot};
use super::lua;
use super::store::Conn;

/// This node's keys and the header of every write.
pub(super) struct Keys {
    pub(super) nodes: Vec<u8>,
    pub(super) rooms: Vec<u8>,
    pub(super) presence: Vec<u8>,
    /// Where a full write puts everything before it replaces `rooms` and `presence`.
    pub(super) new_rooms: Vec<u8>,
    pub(super) new_presence: Vec<u8>,
    pub(super) name: String,
    /// [`super::EXPIRY`] in ms.
    pub(super) ttl: String,
    /// Changes per `EVAL`: [`chunk_fields`].
    pub(super) chunk: usize,
}

/// Changes per `EVAL`: [`CHUNK_FIELDS`]; with the `test-faults` feature,
/// `WSRELAY_TEST_REGISTRY_CHUNK` when set (the tests make a write of a few rooms take several
/// chunks).
pub(super) fn chunk_fields() -> usize {
    if cfg!(feature = "test-faults")
        && let Some(n) = std::env::var("WSRELAY_TEST_REGISTRY_CHUNK")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
    {
        return n;
    }
    CHUNK_FIELDS
}

/// What a write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wrote {
    /// Redis holds the snapshot.
    Done,
    /// Incremental: a hash that should hold the last write's entries is gone; nothing written.
    Lost,
    /// Full: the fresh keys lost entries between chunks; nothing replaced.
    Incomplete,
}

fn answer(v: Value, what: &str) -> io::Result<bool> {
    match v {
        Value::Int(1) => Ok(true),
        Value::Int(0) => Ok(false),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the registry's {what} script answered {other:?}"),
        )),
    }
}

/// The changes from `old` (what the last write left in Redis) to `new`. Only the first chunk
/// checks that the hashes are still there: later ones may follow a chunk that emptied a hash.
pub(super) fn incremental(
    c: &mut Conn,
    k: &Keys,
    old: &Snapshot,
    new: &Snapshot,
) -> io::Result<Wrote> {
    let ops = diff::diff(old, new);
    let script = lua::diff();
    let keys: [&[u8]; 3] = [&k.nodes, &k.rooms, &k.presence];
    let must = |claims: bool| if claims { "1" } else { "0" };
    let check = [must(!old.rooms.is_empty()), must(!old.presence.is_empty())];
    for (n, chunk) in diff::chunks(&ops, k.chunk, CHUNK_BYTES)
        .into_iter()
        .enumerate()
    {
        let flags = if n == 0 { check } else { ["0", "0"] };
        let head = [k.name.as_str(), &k.ttl, flags[0], flags[1]];
        let v = eval(c, &script, &keys, &head, chunk)?;
        if !answer(v, "incremental write")? {
            return Ok(Wrote::Lost);
        }
    }
    Ok(Wrote::Done)
}

/// Everything in `snap`, into fresh keys that replace the live hashes at the last chunk.
pub(super) fn full(c: &mut Conn, k: &Keys, snap: &Snapshot) -> io::Result<Wrote> {
    let ops = diff::all(snap);
    let script = lua::full();
    let keys: [&[u8]; 5] = [
        &k.nodes,
        &k.rooms,
        &k.presence,
        &k.new_rooms,
        &k.new_presence,
    ];
    let (rooms, presence) = (
        snap.rooms.len().to_string(),
        snap.presence.len().to_string(),
    );
    let chunks = diff::chunks(&ops, k.chunk, CHUNK_BYTES);
    let last = chunks.len() - 1;
    for (n, chunk) in chunks.into_iter().enumerate() {
        let first = if n == 0 { "1" } else { "0" };
        let end = if n == last { "1" } else { "0" };
        let head = [k.name.as_str(), &k.ttl, first, end, &rooms, &presence];
        let v = eval(c, &script, &keys, &head, chunk)?;
        if !answer(v, "full write")? {
            return Ok(Wrote::Incomplete);
        }
    }
    Ok(Wrote::Done)
}

/// One chunk: `head`, then the chunk's counts and fields as `lua`'s `APPLY` takes them.
fn eval(
    c: &mut Conn,
    script: &str,
    keys: &[&[u8]],
    head: &[&str],
    chunk: &[Op<'_>],
) -> io::Result<Value> {
    let counts = diff::counts(chunk).map(|n| n.to_string());
    let members: Vec<String> = chunk
        .iter()
        .filter_map(|op| match op {
            Op::SetRoom(_, n) => Some(n.to_string()),
            _ => None,
        })
        .collect();
    let mut members = members.iter();
    let mut args: Vec<&[u8]> = Vec::with_capacity(head.len() + 3 + 2 * chunk.len());
    args.extend(head.iter().map(|h| h.as_bytes()));
    args.extend(counts.iter().map(|n| n.as_bytes()));
    for op in chunk {
        match op {
            Op::SetRoom(path, _) => {
                args.push(path.as_bytes());
                args.push(members.next().expect("one per room set").as_bytes());
            }
            Op::SetPresence(path, json) => {
                args.push(path.as_bytes());
                args.push(json.as_bytes());
            }
            Op::DelRoom(path) | Op::DelPresence(path) => args.push(path.as_bytes()),
        }
    }
    c.script(false, script, keys, &args)
}
