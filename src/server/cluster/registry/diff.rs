//! Pure: this node's snapshot as the registry keeps it (the last one written to Redis and the
//! one just taken), what changed between two of them (the incremental write), and the split of
//! a write into chunks of bounded size, one `EVAL` each. The Redis side is `store` and `write`.

use std::collections::BTreeMap;

/// Changes (fields set or deleted) in one `EVAL` at most: its argument list stays near 8k
/// items, well under Redis's limits and our `resp::MAX_ARRAY`, and one script keeps Redis
/// busy for a few milliseconds at most.
pub(super) const CHUNK_FIELDS: usize = 4_096;
/// Bytes of paths and values in one `EVAL`, about: a chunk is closed before it passes this
/// (an entry bigger on its own, a huge presence list, goes alone).
pub(super) const CHUNK_BYTES: usize = 512 << 10;

/// This node's rooms with members (path → members here) and the presence lists (path → JSON)
/// of those with presence, as written into its two hashes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Snapshot {
    pub(super) rooms: BTreeMap<String, usize>,
    pub(super) presence: BTreeMap<String, String>,
}

impl Snapshot {
    pub(super) fn new(rooms: Vec<(String, usize)>, presence: Vec<(String, String)>) -> Snapshot {
        Snapshot {
            rooms: rooms.into_iter().collect(),
            presence: presence.into_iter().collect(),
        }
    }
}

/// One change to one of the node's two hashes. Borrowed from the snapshots: a list of them
/// costs about 40 bytes an entry, never a copy of a path or a presence list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op<'a> {
    SetRoom(&'a str, usize),
    DelRoom(&'a str),
    SetPresence(&'a str, &'a str),
    DelPresence(&'a str),
}

impl Op<'_> {
    /// Bytes this op adds to a script's arguments (a count is at most 20 digits).
    fn bytes(&self) -> usize {
        match self {
            Op::SetRoom(p, _) => p.len() + 20,
            Op::DelRoom(p) | Op::DelPresence(p) => p.len(),
            Op::SetPresence(p, json) => p.len() + json.len(),
        }
    }

    /// Where the op goes in a script's arguments: room sets, room dels, presence sets, then
    /// presence dels (the scripts take the first three counts and read the rest as dels).
    pub(super) fn rank(&self) -> usize {
        match self {
            Op::SetRoom(..) => 0,
            Op::DelRoom(_) => 1,
            Op::SetPresence(..) => 2,
            Op::DelPresence(_) => 3,
        }
    }
}

/// Everything in `snap`, as a full write sets it (in [`Op::rank`] order).
pub(super) fn all(snap: &Snapshot) -> Vec<Op<'_>> {
    let rooms = snap.rooms.iter().map(|(p, n)| Op::SetRoom(p, *n));
    let presence = snap.presence.iter().map(|(p, j)| Op::SetPresence(p, j));
    rooms.chain(presence).collect()
}

/// What turns `old` into `new`: a set for each entry new or changed, a del for each entry
/// gone, in [`Op::rank`] order. At most one op per entry of `old` and `new`.
pub(super) fn diff<'a>(old: &'a Snapshot, new: &'a Snapshot) -> Vec<Op<'a>> {
    let mut ops = Vec::new();
    for (path, n) in &new.rooms {
        if old.rooms.get(path) != Some(n) {
            ops.push(Op::SetRoom(path, *n));
        }
    }
    for path in old.rooms.keys() {
        if !new.rooms.contains_key(path) {
            ops.push(Op::DelRoom(path));
        }
    }
    for (path, json) in &new.presence {
        if old.presence.get(path) != Some(json) {
            ops.push(Op::SetPresence(path, json));
        }
    }
    for path in old.presence.keys() {
        if !new.presence.contains_key(path) {
            ops.push(Op::DelPresence(path));
        }
    }
    ops
}

/// `ops` in chunks of at most `max_fields` ops and about `max_bytes` (a chunk is closed before
/// an op would take it past; a single bigger op goes alone). Always at least one chunk: no ops
/// is one empty chunk, a write that only keeps the node live.
pub(super) fn chunks<'o, 'a>(
    ops: &'o [Op<'a>],
    max_fields: usize,
    max_bytes: usize,
) -> Vec<&'o [Op<'a>]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, op) in ops.iter().enumerate() {
        let b = op.bytes();
        if i > start && (i - start >= max_fields || bytes + b > max_bytes) {
            out.push(&ops[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < ops.len() || out.is_empty() {
        out.push(&ops[start..]);
    }
    out
}

/// How many ops of each of the first three ranks `chunk` holds (the rest are presence dels).
pub(super) fn counts(chunk: &[Op<'_>]) -> [usize; 3] {
    debug_assert!(chunk.is_sorted_by_key(Op::rank), "ops out of order");
    let mut n = [0; 3];
    for op in chunk {
        if let Some(c) = n.get_mut(op.rank()) {
            *c += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rooms: &[(&str, usize)], presence: &[(&str, &str)]) -> Snapshot {
        Snapshot::new(
            rooms.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
            presence
                .iter()
                .map(|(p, j)| (p.to_string(), j.to_string()))
                .collect(),
        )
    }

    #[test]
    fn nothing_changed_is_no_op() {
        let s = snap(&[("/a", 1), ("/b", 2)], &[("/b", "[1]")]);
        assert_eq!(diff(&s, &s.clone()), []);
        assert_eq!(diff(&Snapshot::default(), &Snapshot::default()), []);
    }

    #[test]
    fn sets_for_new_and_changed_dels_for_gone() {
        let old = snap(
            &[("/a", 1), ("/b", 2), ("/gone", 4)],
            &[("/b", "[b]"), ("/p", "[p]")],
        );
        let new = snap(
            &[("/a", 1), ("/b", 3), ("/c", 1), ("/p", 1)],
            &[("/b", "[b]"), ("/p", "[p2]"), ("/c", "[c]")],
        );
        assert_eq!(
            diff(&old, &new),
            [
                Op::SetRoom("/b", 3),
                Op::SetRoom("/c", 1),
                Op::SetRoom("/p", 1),
                Op::DelRoom("/gone"),
                Op::SetPresence("/c", "[c]"),
                Op::SetPresence("/p", "[p2]"),
            ]
        );
        let back = diff(&new, &old);
        assert_eq!(
            back,
            [
                Op::SetRoom("/b", 2),
                Op::SetRoom("/gone", 4),
                Op::DelRoom("/c"),
                Op::DelRoom("/p"),
                Op::SetPresence("/p", "[p]"),
                Op::DelPresence("/c"),
            ]
        );
        assert_eq!(counts(&back), [2, 2, 1]);
    }

    #[test]
    fn from_empty_is_everything_and_to_empty_deletes_everything() {
        let s = snap(&[("/a", 1), ("/b", 2)], &[("/b", "[x]")]);
        let empty = Snapshot::default();
        assert_eq!(diff(&empty, &s), all(&s));
        assert_eq!(
            diff(&s, &empty),
            [Op::DelRoom("/a"), Op::DelRoom("/b"), Op::DelPresence("/b")]
        );
    }

    /// Applying the diff to the old snapshot, as the scripts do to the hashes, gives the new.
    #[test]
    fn applying_the_diff_gives_the_new_snapshot() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut random = || {
            let mut s = Snapshot::default();
            for _ in 0..next(40) {
                let path = format!("/r{}", next(30));
                if next(2) == 0 {
                    s.presence.insert(path.clone(), format!("[{}]", next(3)));
                }
                s.rooms.insert(path, next(4) as usize + 1);
            }
            s
        };
        for _ in 0..200 {
            let (old, new) = (random(), random());
            let ops = diff(&old, &new);
            let entries =
                old.rooms.len() + new.rooms.len() + old.presence.len() + new.presence.len();
            assert!(ops.len() <= entries);
            let mut got = old.clone();
            for op in &ops {
                match *op {
                    Op::SetRoom(p, n) => drop(got.rooms.insert(p.into(), n)),
                    Op::DelRoom(p) => drop(got.rooms.remove(p)),
                    Op::SetPresence(p, j) => drop(got.presence.insert(p.into(), j.into())),
                    Op::DelPresence(p) => drop(got.presence.remove(p)),
                }
            }
            assert_eq!(got, new);
            assert!(ops.is_sorted_by_key(Op::rank));
        }
    }

    #[test]
    fn chunks_are_bounded_by_count_and_bytes() {
        let paths: Vec<String> = (0..10).map(|i| format!("/room{i}")).collect(); // 6 bytes
        let ops: Vec<Op> = paths.iter().map(|p| Op::DelRoom(p)).collect();
        let lens = |c: Vec<&[Op]>| c.iter().map(|c| c.len()).collect::<Vec<_>>();
        assert_eq!(lens(chunks(&ops, 4, 1 << 20)), [4, 4, 2]);
        assert_eq!(lens(chunks(&ops, 100, 13)), [2, 2, 2, 2, 2]);
        assert_eq!(
            lens(chunks(&ops, 100, 1)),
            [1; 10],
            "a bigger op goes alone"
        );
        assert_eq!(lens(chunks(&ops, 10, 60)), [10]);
        assert_eq!(
            lens(chunks(&[], 4, 10)),
            [0],
            "one empty chunk: the liveness write"
        );
        let json = "x".repeat(100);
        let big = [
            Op::DelRoom("/a"),
            Op::SetPresence("/b", &json),
            Op::DelRoom("/c"),
        ];
        assert_eq!(lens(chunks(&big, 100, 50)), [1, 1, 1]);
        let all: Vec<Op> = chunks(&ops, 3, 20).concat();
        assert_eq!(all, ops, "chunks keep every op, in order");
    }
}
