//! Names and formats in Redis: a room's channel and keys, and the envelope the `PUBLISH`
//! script sends on the channel.

use crate::relay::WorkerId;
use crate::relay::hub::Epoch;
use crate::server::bus::MemberId;
use crate::server::wire::Opcode;

pub(super) fn parse_epoch(hex: &[u8]) -> Option<Epoch> {
    let s = std::str::from_utf8(hex).ok()?;
    u64::from_str_radix(s, 16).ok().map(Epoch)
}

/// A message as the `PUBLISH` script's envelope carries it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed<'a> {
    pub epoch: Epoch,
    pub seq: u64,
    /// Its sender, kept only when it was published by this node.
    pub origin: Option<(WorkerId, MemberId)>,
    pub op: Opcode,
    /// Its room compresses it (the publisher did): every node compresses it once too.
    pub deflate: bool,
    pub payload: &'a [u8],
}

/// What the `PUBLISH` script's envelope holds: `<epoch> <seq> <node> <worker> <key> <generation>
/// <t|b>[z]\n<payload>` (`z`: the room compresses the message).
pub(super) fn parse_envelope(data: &[u8], me: u64) -> Option<Parsed<'_>> {
    let nl = data.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&data[..nl]).ok()?;
    let mut f = head.split(' ');
    let epoch = parse_epoch(f.next()?.as_bytes())?;
    let seq = f.next()?.parse().ok()?;
    let node = u64::from_str_radix(f.next()?, 16).ok()?;
    let worker = f.next()?.parse().ok()?;
    let key = f.next()?.parse().ok()?;
    let generation = f.next()?.parse().ok()?;
    let (op, deflate) = match f.next()? {
        "b" => (Opcode::Binary, false),
        "t" => (Opcode::Text, false),
        "bz" => (Opcode::Binary, true),
        "tz" => (Opcode::Text, true),
        _ => return None,
    };
    let origin = (node == me).then_some((WorkerId(worker), MemberId { key, generation }));
    Some(Parsed {
        epoch,
        seq,
        origin,
        op,
        deflate,
        payload: &data[nl + 1..],
    })
}

/// splitmix64: a well-mixed 64-bit value per call from a counter.
pub(super) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let data = b"00000000000000ff 42 000000000000000a 3 7 9 b\n\x00\x01\n";
        let p = parse_envelope(data, 10).expect("parses");
        assert_eq!(
            (p.epoch, p.seq, p.op, p.deflate),
            (Epoch(255), 42, Opcode::Binary, false)
        );
        let member = MemberId {
            key: 7,
            generation: 9,
        };
        assert_eq!(p.origin, Some((WorkerId(3), member)));
        assert_eq!(p.payload, b"\x00\x01\n");
        assert_eq!(parse_envelope(data, 11).expect("parses").origin, None);
        let z = parse_envelope(b"00000000000000ff 1 0 0 0 0 tz\nabc", 0).expect("parses");
        assert!(z.deflate && z.op == Opcode::Text);
        assert!(parse_envelope(b"zz 1 0 0 0 0 t\nx", 0).is_none());
        assert!(parse_envelope(b"no newline", 0).is_none());
    }
}
