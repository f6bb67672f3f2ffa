//! `Idempotency-Key` on publish: the same key within [`TTL`] gets the first answer again and
//! publishes nothing; the same key with another room or body gets 422; while the first request
//! is still in flight, 409. Only a published message's answer is kept (a refusal may be retried).
//! Bounded: at most [`ENTRIES`] keys, the oldest dropped first when full (then a retry that late
//! publishes again).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::reply::Reply;

/// How long a key is remembered.
pub const TTL: Duration = Duration::from_secs(300);
/// Keys remembered at once: at most about 400 bytes each (a 255-byte key, a digest, the answer),
/// so 4 MiB at worst; 33 publishes a second with a fresh key each for the whole five minutes.
pub const ENTRIES: usize = 10_000;

/// What a request's room and body hash to: a retry must match it.
pub type Fingerprint = [u8; 32];

pub fn fingerprint(room: &str, binary: bool, bytes: &[u8]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update((room.len() as u64).to_be_bytes());
    h.update(room.as_bytes());
    h.update([u8::from(binary)]);
    h.update(bytes);
    h.finalize().into()
}

/// What the cache says about a request that carries a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// First time: carry it out, then [`Cache::finish`].
    New,
    /// Seen and published: answer this again.
    Replay(Reply),
    /// Seen and still in flight: 409.
    InFlight,
    /// Seen with another room or body: 422.
    Mismatch,
}

enum State {
    InFlight,
    Done(Reply),
}

struct Entry {
    fingerprint: Fingerprint,
    at: Instant,
    state: State,
}

/// The keys seen in the last [`TTL`], oldest first.
#[derive(Default)]
pub struct Cache {
    map: HashMap<String, Entry>,
    /// Keys by age; an item whose time is not its entry's is stale and skipped.
    order: VecDeque<(Instant, String)>,
}

impl Cache {
    /// Look `key` up; a new key is remembered as in flight.
    pub fn begin(&mut self, key: &str, fp: Fingerprint, now: Instant) -> Lookup {
        self.expire(now);
        if let Some(e) = self.map.get(key) {
            return match (&e.state, e.fingerprint == fp) {
                (_, false) => Lookup::Mismatch,
                (State::InFlight, true) => Lookup::InFlight,
                (State::Done(r), true) => Lookup::Replay(r.clone()),
            };
        }
        while self.map.len() >= ENTRIES || self.order.len() >= 2 * ENTRIES {
            self.pop_oldest();
        }
        self.map.insert(
            key.to_owned(),
            Entry {
                fingerprint: fp,
                at: now,
                state: State::InFlight,
            },
        );
        self.order.push_back((now, key.to_owned()));
        Lookup::New
    }

    /// The request under `key` is answered: `Some` (published) is kept for retries, `None`
    /// (refused) forgets the key.
    pub fn finish(&mut self, key: &str, reply: Option<Reply>) {
        match reply {
            Some(r) => {
                if let Some(e) = self.map.get_mut(key) {
                    e.state = State::Done(r);
                }
            }
            None => {
                self.map.remove(key);
            }
        }
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.map.len()
    }

    fn expire(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= TTL)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((at, key)) = self.order.pop_front() else {
            return;
        };
        if self.map.get(&key).is_some_and(|e| e.at == at) {
            self.map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_replays_its_first_answer_for_five_minutes() {
        let mut c = Cache::default();
        let t = Instant::now();
        let fp = fingerprint("/a", false, b"x");
        assert_eq!(c.begin("k", fp, t), Lookup::New);
        assert_eq!(c.begin("k", fp, t), Lookup::InFlight);
        assert_eq!(
            c.begin("k", fingerprint("/a", false, b"y"), t),
            Lookup::Mismatch
        );
        assert_eq!(
            c.begin("k", fingerprint("/b", false, b"x"), t),
            Lookup::Mismatch
        );
        assert_eq!(
            c.begin("k", fingerprint("/a", true, b"x"), t),
            Lookup::Mismatch
        );
        let r = Reply::error(200, "first");
        c.finish("k", Some(r.clone()));
        assert_eq!(c.begin("k", fp, t + TTL / 2), Lookup::Replay(r));
        assert_eq!(c.begin("k", fp, t + TTL), Lookup::New, "expired");
    }

    #[test]
    fn a_refusal_is_forgotten() {
        let mut c = Cache::default();
        let t = Instant::now();
        let fp = fingerprint("/a", false, b"x");
        assert_eq!(c.begin("k", fp, t), Lookup::New);
        c.finish("k", None);
        assert_eq!(c.begin("k", fp, t), Lookup::New);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = Cache::default();
        let t = Instant::now();
        for i in 0..ENTRIES + 10 {
            let key = i.to_string();
            assert_eq!(c.begin(&key, [0; 32], t), Lookup::New);
            c.finish(&key, None);
            c.begin(&key, [0; 32], t);
        }
        assert!(c.keys() <= ENTRIES);
        assert!(c.order.len() <= 2 * ENTRIES);
        assert_eq!(
            c.begin("0", [0; 32], t),
            Lookup::New,
            "the oldest went first"
        );
    }
}
