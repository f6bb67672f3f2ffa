//! Which Redis a room lives on, with several in `[cluster] redis`: [`shard_of`], the same answer
//! on every node, for every build, on every platform.
//!
//! The room's path is hashed to 64 bits with FNV-1a over its UTF-8 bytes, then mixed with the
//! splitmix64 finalizer (FNV-1a alone leaves paths that differ in their last byte close in the
//! high bits, which jump hash reads first); the result picks a shard by jump consistent hash
//! (Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm", 2014). Not std's
//! `DefaultHasher`: its SipHash keys may differ between Rust releases, and every node must agree.
//!
//! Why jump hash: it needs no ring and no memory (a few multiplications per shard count's
//! logarithm), spreads rooms evenly, and when an operator appends a Redis to the list (N → N+1)
//! only about 1/(N+1) of the rooms move, all of them to the new one. Its one condition suits a
//! list in a config file: shards are numbered 0..N, so Redis are added or removed at the end.

/// The shard, in `0..shards`, of the room at `path`. `shards` of 0 is taken as 1.
pub fn shard_of(path: &str, shards: usize) -> usize {
    let buckets = i32::try_from(shards.max(1)).unwrap_or(i32::MAX);
    jump_consistent_hash(path_hash(path.as_bytes()), buckets) as usize
}

/// FNV-1a (64 bits) of `bytes`, then splitmix64's finalizer.
pub fn path_hash(bytes: &[u8]) -> u64 {
    mix(fnv1a(bytes))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// splitmix64's output function: every input bit reaches every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The paper's algorithm, as printed: a bucket in `0..buckets` for `key` (`buckets` ≥ 1).
pub fn jump_consistent_hash(mut key: u64, buckets: i32) -> i32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(n: usize) -> impl Iterator<Item = String> {
        (0..n).map(|i| format!("/rooms/{i}"))
    }

    #[test]
    fn fnv1a_is_the_published_one() {
        // Test vectors of the FNV reference (http://www.isthe.com/chongo/tech/comp/fnv/).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_is_the_papers() {
        // The paper's `JumpConsistentHash(key, num_buckets)` (values: see the constants).
        assert_eq!(jump_consistent_hash(0, 1), 0);
        assert_eq!(jump_consistent_hash(0, 1000), 0);
        assert_eq!(jump_consistent_hash(1, 1000), JUMP_1_1000);
        assert_eq!(jump_consistent_hash(0xdead_beef, 16), JUMP_DEADBEEF_16);
        assert_eq!(jump_consistent_hash(u64::MAX, 100), JUMP_MAX_100);
    }

    #[test]
    fn known_shards_never_change() {
        // Every node of a cluster, old build or new, must put these rooms where they were.
        let got: Vec<usize> = ["/chat", "/rooms/1", "/rooms/2", "/", "/é"]
            .iter()
            .map(|p| shard_of(p, 4))
            .collect();
        assert_eq!(got, KNOWN_4);
        assert_eq!(path_hash(b"/chat"), CHAT_HASH);
    }

    #[test]
    fn one_shard_takes_every_room() {
        for p in paths(1000) {
            assert_eq!(shard_of(&p, 1), 0);
            assert_eq!(shard_of(&p, 0), 0);
        }
    }

    #[test]
    fn rooms_spread_evenly() {
        for shards in [2, 3, 5, 8] {
            let mut count = vec![0usize; shards];
            for p in paths(10_000) {
                count[shard_of(&p, shards)] += 1;
            }
            let fair = 10_000 / shards;
            for (s, &n) in count.iter().enumerate() {
                // Binomial spread is about sqrt(fair) ≈ 30-70; 10% of fair is several of them.
                assert!(
                    n.abs_diff(fair) < fair / 10,
                    "{shards} shards: shard {s} has {n} rooms of 10000 ({count:?})"
                );
            }
        }
    }

    #[test]
    fn a_new_shard_takes_only_its_share() {
        for n in 1..8 {
            let mut moved = 0usize;
            for p in paths(10_000) {
                let (before, after) = (shard_of(&p, n), shard_of(&p, n + 1));
                if before != after {
                    assert_eq!(after, n, "a room moved between old shards");
                    moved += 1;
                }
            }
            let share = 10_000 / (n + 1);
            assert!(
                moved.abs_diff(share) < share / 10 + 50,
                "{n} → {}: {moved} of 10000 moved, expected about {share}",
                n + 1
            );
        }
    }

    // Computed apart from this file: the paper's C++ transliterated to Python, 64-bit wrapping
    // by masks, the same IEEE doubles.
    const JUMP_1_1000: i32 = 549;
    const JUMP_DEADBEEF_16: i32 = 5;
    const JUMP_MAX_100: i32 = 92;
    const KNOWN_4: [usize; 5] = [3, 2, 3, 0, 2];
    const CHAT_HASH: u64 = 0x3998_a963_771c_fb0a;
}
