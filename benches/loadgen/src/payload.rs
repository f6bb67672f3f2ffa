//! Message bodies. `binary`: zeros after the 20-byte header (the default; says nothing about
//! compression). `json`: realistic market data, 1–2 KiB, the kind of message chat and live-data
//! apps relay: a batch of trades with sequential ids, nearby prices and shared timestamp
//! prefixes, which deflate compresses about 3.4× at zlib level 1 and 4.5× at level 6.
//!
//! Bodies are made once, before the run (a pool per loader thread), so the loader spends no CPU
//! formatting JSON while it measures.

/// How many distinct bodies a thread cycles through.
pub const POOL: usize = 64;

/// What a message carries after its 20-byte header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Binary,
    Json,
}

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, String> {
        match s {
            "binary" => Ok(Kind::Binary),
            "json" => Ok(Kind::Json),
            _ => Err(format!("--payload: {s:?} is not binary or json")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Binary => "binary",
            Kind::Json => "json",
        }
    }
}

/// `POOL` message buffers of `header` zero bytes followed by a body: `size` zeros (binary), or
/// JSON of 1024 to 2047 bytes in all (json). `seed` makes each thread's pool its own.
pub fn pool(kind: Kind, header: usize, size: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..POOL)
        .map(|i| match kind {
            Kind::Binary => vec![0u8; size],
            Kind::Json => {
                let total = 1024 + (rng.next() % 1024) as usize;
                let mut m = vec![0u8; header];
                m.extend_from_slice(trades(&mut rng, total - header, i as u64).as_bytes());
                m.truncate(total);
                m
            }
        })
        .collect()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A batch of trades as an exchange's feed sends it, `target` bytes or a little under.
fn trades(r: &mut Rng, target: usize, seq: u64) -> String {
    const SYMBOLS: [&str; 4] = ["BTC-USD", "ETH-USD", "SOL-USD", "DOGE-USD"];
    let sym = SYMBOLS[r.below(4) as usize];
    let mut s = format!(
        "{{\"type\":\"trades\",\"channel\":\"market.{sym}.trades\",\"sequence\":{},\"trades\":[",
        7_000_000_000 + seq
    );
    let mut id = 600_000_000 + seq * 64;
    let base = 43_000 + r.below(500);
    let mut first = true;
    // One trade is about 150 bytes; stop while the closing "]}" still fits.
    while s.len() + 152 < target {
        if !first {
            s.push(',');
        }
        first = false;
        id += 1 + r.below(3);
        let side = if r.below(2) == 0 { "buy" } else { "sell" };
        s += &format!(
            "{{\"id\":{id},\"symbol\":\"{sym}\",\"price\":\"{}.{:02}\",\"size\":\"0.{:03}\",\
             \"side\":\"{side}\",\"ts\":\"2026-11-25T13:48:{:02}.{:03}Z\",\"liquidation\":false}}",
            base + r.below(5),
            r.below(100),
            1 + r.below(999),
            r.below(60),
            r.below(1000),
        );
    }
    s += "]}";
    // Pad to the exact size with spaces, as pretty-printers do (whitespace is valid JSON).
    while s.len() < target {
        s.insert(s.len() - 2, ' ');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_bodies_are_1_to_2_kib_of_json() {
        for (i, m) in pool(Kind::Json, 20, 0, 7).iter().enumerate() {
            assert!((1024..2048).contains(&m.len()), "{i}: {}", m.len());
            let body = std::str::from_utf8(&m[20..]).unwrap();
            assert!(body.starts_with("{\"type\":\"trades\"") && body.ends_with("]}"));
            // Every bracket opened is closed: it is one JSON object.
            assert_eq!(body.matches('{').count(), body.matches('}').count());
        }
        assert!(pool(Kind::Binary, 20, 64, 7).iter().all(|m| m == &[0; 64]));
    }

    #[test]
    fn json_compresses_three_to_six_times() {
        use flate2::{Compress, Compression, FlushCompress};
        for level in [1, 6] {
            let (mut raw, mut packed) = (0, 0);
            for m in pool(Kind::Json, 20, 0, 3) {
                let mut z = Compress::new(Compression::new(level), false);
                let mut out = Vec::with_capacity(m.len() + 64);
                z.compress_vec(&m, &mut out, FlushCompress::Sync).unwrap();
                raw += m.len();
                packed += out.len() - 4;
            }
            let ratio = raw as f64 / packed as f64;
            assert!((3.0..6.0).contains(&ratio), "level {level}: {ratio:.2}");
        }
    }
}
