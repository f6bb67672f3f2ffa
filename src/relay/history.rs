//! A room's kept messages, on the worker that sequences it: the latest `history_size` of them,
//! each dropped after `history_ttl`, for `?last=N` and for resuming with `since`/`epoch`.
//!
//! The rule for resuming (Centrifugo's): a client gets every message after its `since`, or is
//! told it cannot — never a partial replay that looks complete. [`History::since`] therefore
//! answers only when every number after `since` is still kept.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A frame as history keeps it.
pub trait Message: Clone {
    /// A copy fit to keep for a long time. The server's frames carry their publisher's
    /// flow-control credit, which must return when every worker has taken the frame, not when
    /// history lets go of it: its copy holds none.
    fn kept(&self) -> Self;
    /// Bytes it holds, for `history_memory`.
    fn size(&self) -> usize;
}

/// Shared bytes are kept as they are.
impl Message for std::sync::Arc<[u8]> {
    fn kept(&self) -> Self {
        std::sync::Arc::clone(self)
    }
    fn size(&self) -> usize {
        self.len()
    }
}

/// A room's history settings: its `history_size` (0: keeps nothing) and `history_ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub size: usize,
    pub ttl: Duration,
}

impl Keep {
    pub const NONE: Keep = Keep {
        size: 0,
        ttl: Duration::from_secs(3600),
    };
}

/// What a joining member asks to be replayed before live messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Nothing: live messages from its admission on.
    Live,
    /// The latest `n` kept messages (fewer if fewer are kept).
    Last(u32),
    /// Every message after `seq` of the room's incarnation `epoch`, or nothing if any is gone.
    Since { seq: u64, epoch: u64 },
}

impl Want {
    /// Whether the room's owner must be asked (a replay), rather than admitting at once.
    pub fn fetches(self) -> bool {
        !matches!(self, Want::Live | Want::Last(0))
    }
}

/// The subprotocol whose members get numbered messages and can resume; every room accepts it.
pub const V1_PROTOCOL: &str = "wsrelay.v1";

/// What a joining client asks for in its query string: `last=N` (at most the room's
/// `history_size`), or `since=SEQ&epoch=EPOCH` (16 hex digits) to resume; `since` wins over
/// `last`. Other parameters (the token) are not ours. `Err`: the one-line reason for a 400.
pub fn parse_want(query: Option<&str>, history_size: usize) -> Result<Want, String> {
    let (mut last, mut since, mut epoch) = (None, None, None);
    for param in query.unwrap_or("").split('&') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let slot = match name {
            "last" => &mut last,
            "since" => &mut since,
            "epoch" => &mut epoch,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(format!("{name} given twice"));
        }
    }
    let since = match since {
        None => None,
        Some(v) => Some(digits(v).ok_or("since must be a sequence number (decimal digits)")?),
    };
    let epoch = match epoch {
        None => None,
        Some(v) if v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(u64::from_str_radix(v, 16).map_err(|e| e.to_string())?)
        }
        Some(_) => return Err("epoch must be 16 hex digits".into()),
    };
    let last = match last {
        None => None,
        Some(v) => {
            let n = digits(v).ok_or("last must be a number of messages (decimal digits)")?;
            if n > history_size as u64 {
                return Err(format!(
                    "last={n} is more than this room keeps (history_size = {history_size})"
                ));
            }
            Some(n as u32)
        }
    };
    match (since, epoch) {
        (Some(seq), Some(epoch)) => Ok(Want::Since { seq, epoch }),
        (Some(_), None) => Err("since needs the epoch it counts in (&epoch=)".into()),
        (None, Some(_)) => Err("epoch without since: add &since=".into()),
        (None, None) => Ok(last.map_or(Want::Live, Want::Last)),
    }
}

/// A decimal number without sign or spaces that fits in 64 bits.
fn digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// What a kept message costs besides its frame: its entry, and the bookkeeping of a shared frame.
pub const ENTRY_OVERHEAD: usize = 64;

struct Entry<F> {
    seq: u64,
    at: Instant,
    frame: F,
    size: usize,
}

/// One room's kept messages, oldest first, with consecutive sequence numbers.
pub struct History<F> {
    entries: VecDeque<Entry<F>>,
    bytes: usize,
}

impl<F> Default for History<F> {
    fn default() -> Self {
        History {
            entries: VecDeque::new(),
            bytes: 0,
        }
    }
}

impl<F: Message> History<F> {
    /// Keep message `seq` (one more than the last kept, if any), then drop the oldest past `size`.
    /// Returns the bytes now kept minus before (may be negative).
    pub fn push(&mut self, seq: u64, frame: &F, at: Instant, size: usize) -> isize {
        let before = self.bytes as isize;
        if size > 0 {
            debug_assert!(self.entries.back().is_none_or(|e| e.seq + 1 == seq));
            let frame = frame.kept();
            let bytes = frame.size() + ENTRY_OVERHEAD;
            self.bytes += bytes;
            self.entries.push_back(Entry {
                seq,
                at,
                frame,
                size: bytes,
            });
        }
        self.trim(size);
        self.bytes as isize - before
    }

    /// Keep at most `size` messages. Returns the bytes freed.
    pub fn trim(&mut self, size: usize) -> usize {
        let mut freed = 0;
        while self.entries.len() > size {
            freed += self.pop_oldest();
        }
        freed
    }

    /// Drop the messages kept for `ttl` or longer at `now`. Returns the bytes freed.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let mut freed = 0;
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.at) >= ttl)
        {
            freed += self.pop_oldest();
        }
        freed
    }

    /// Drop the oldest message. Returns the bytes freed (0 when empty).
    pub fn pop_oldest(&mut self) -> usize {
        match self.entries.pop_front() {
            Some(e) => {
                self.bytes -= e.size;
                e.size
            }
            None => 0,
        }
    }

    /// The latest `n` messages, oldest first.
    pub fn last(&self, n: usize) -> Vec<(u64, F)> {
        let skip = self.entries.len().saturating_sub(n);
        self.entries
            .iter()
            .skip(skip)
            .map(|e| (e.seq, e.frame.clone()))
            .collect()
    }

    /// Every message after `since`, when all of them are kept; `last` is the room's latest
    /// sequence number. `None` when some are gone (or `since` is past `last`).
    pub fn since(&self, since: u64, last: u64) -> Option<Vec<(u64, F)>> {
        if since == last {
            return Some(Vec::new());
        }
        let first = self.entries.front()?.seq;
        if since > last || since + 1 < first {
            return None;
        }
        let skip = (since + 1 - first) as usize;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .map(|e| (e.seq, e.frame.clone()))
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes kept, [`ENTRY_OVERHEAD`] per message included.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Message for u64 {
        fn kept(&self) -> Self {
            *self
        }
        fn size(&self) -> usize {
            8
        }
    }

    fn filled(n: u64, size: usize) -> (History<u64>, Instant) {
        let t0 = Instant::now();
        let mut h = History::default();
        for seq in 1..=n {
            h.push(seq, &(seq * 10), t0 + Duration::from_secs(seq), size);
        }
        (h, t0)
    }

    #[test]
    fn keeps_the_latest_size_messages() {
        let (h, _) = filled(30, 10);
        assert_eq!(h.len(), 10);
        assert_eq!(h.bytes(), 10 * (8 + ENTRY_OVERHEAD));
        let seqs: Vec<u64> = h.last(100).iter().map(|m| m.0).collect();
        assert_eq!(seqs, (21..=30).collect::<Vec<_>>());
        assert_eq!(h.last(2), vec![(29, 290), (30, 300)]);
        assert!(h.last(0).is_empty());
    }

    #[test]
    fn since_replays_everything_after_or_nothing() {
        let (h, _) = filled(30, 10);
        // Everything after 20 is kept (21..=30).
        assert_eq!(h.since(20, 30).unwrap().len(), 10);
        assert_eq!(h.since(25, 30).unwrap()[0], (26, 260));
        assert_eq!(h.since(30, 30).unwrap(), vec![]);
        // 20 itself is gone: since 19 would need it.
        assert_eq!(h.since(19, 30), None);
        assert_eq!(h.since(0, 30), None);
        // From the future: not this room's numbers.
        assert_eq!(h.since(31, 30), None);
        // Nothing kept: only "nothing missed" recovers.
        let empty: History<u64> = History::default();
        assert_eq!(empty.since(7, 7), Some(vec![]));
        assert_eq!(empty.since(6, 7), None);
    }

    #[test]
    fn expiry_and_trimming_free_the_oldest() {
        let (mut h, t0) = filled(10, 100);
        let each = 8 + ENTRY_OVERHEAD;
        // Kept at t0+1s .. t0+10s; a 5 s TTL at t0+8s drops those from t0+3s and before.
        assert_eq!(
            h.expire(t0 + Duration::from_secs(8), Duration::from_secs(5)),
            3 * each
        );
        assert_eq!(h.last(1)[0].0, 10);
        assert_eq!(h.since(3, 10).unwrap().len(), 7);
        assert_eq!(h.trim(2), 5 * each);
        assert_eq!(h.since(7, 10), None);
        assert_eq!(h.since(8, 10).unwrap().len(), 2);
        assert_eq!(h.trim(0), 2 * each);
        assert!(h.is_empty() && h.bytes() == 0);
        // With size 0 a push keeps nothing.
        assert_eq!(h.push(11, &1, t0, 0), 0);
        assert!(h.is_empty());
    }

    #[test]
    fn queries_parse_or_get_a_reason() {
        let p = |q: &str| parse_want(Some(q), 100);
        assert_eq!(parse_want(None, 0), Ok(Want::Live));
        assert_eq!(p("token=abc"), Ok(Want::Live));
        assert_eq!(p("last=10"), Ok(Want::Last(10)));
        assert_eq!(p("last=100&token=x"), Ok(Want::Last(100)));
        assert_eq!(
            p("since=5&epoch=00000000000000FF"),
            Ok(Want::Since { seq: 5, epoch: 255 })
        );
        assert_eq!(
            p("last=3&since=0&epoch=0123456789abcdef"),
            Ok(Want::Since {
                seq: 0,
                epoch: 0x0123_4567_89ab_cdef
            })
        );
        let bad = [
            (
                "last=101",
                "last=101 is more than this room keeps (history_size = 100)",
            ),
            (
                "last=-1",
                "last must be a number of messages (decimal digits)",
            ),
            (
                "last=",
                "last must be a number of messages (decimal digits)",
            ),
            ("last=1&last=2", "last given twice"),
            (
                "since=x&epoch=0123456789abcdef",
                "since must be a sequence number (decimal digits)",
            ),
            (
                "since=+1&epoch=0123456789abcdef",
                "since must be a sequence number (decimal digits)",
            ),
            (
                "since=99999999999999999999&epoch=0123456789abcdef",
                "since must be a sequence number (decimal digits)",
            ),
            ("since=1&epoch=0123", "epoch must be 16 hex digits"),
            (
                "since=1&epoch=0123456789abcdeg",
                "epoch must be 16 hex digits",
            ),
            ("since=1", "since needs the epoch it counts in (&epoch=)"),
            ("epoch=0123456789abcdef", "epoch without since: add &since="),
        ];
        for (q, why) in bad {
            assert_eq!(p(q), Err(why.to_string()), "{q}");
        }
        assert!(parse_want(Some("last=1"), 0).is_err());
    }

    #[test]
    fn want_fetches_only_for_a_replay() {
        assert!(!Want::Live.fetches());
        assert!(!Want::Last(0).fetches());
        assert!(Want::Last(1).fetches());
        assert!(Want::Since { seq: 0, epoch: 1 }.fetches());
    }
}
