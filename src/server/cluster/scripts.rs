//! The Lua scripts a room's state lives by in Redis, and how their answers read.
//!
//! A room at `<prefix>:room:{<path>}` (its pub/sub channel) has three keys with the same hash
//! tag: `…:epoch` (16 hex digits, made once per incarnation), `…:seq` (its last number) and
//! `…:log`, a stream of its kept messages (entry id `0-<seq>`, fields `t` = Redis's time in
//! milliseconds and `d` = the envelope as published). Epoch and number expire after
//! [`meta_ttl`] without a message or a member joining anywhere; the stream after the room's
//! `history_ttl`; a new epoch deletes the number and stream left from an older one.

use std::time::Duration;

use super::envelope::{Parsed, parse_envelope, parse_epoch};
use super::resp::Value;
use crate::relay::history::Keep;
use crate::relay::hub::Epoch;

/// Epoch and number live at least this long after the last message or attach: a room quiet for
/// longer starts a new epoch (its v1 members are reset), and Redis does not keep every path
/// ever used.
const META_TTL_MIN: Duration = Duration::from_secs(24 * 3600);

/// How long the epoch and number of a room with `keep` live after its last message.
pub(super) fn meta_ttl(keep: Keep) -> Duration {
    keep.ttl.max(META_TTL_MIN)
}

/// Attach: makes the epoch when the room has none (and drops what an older incarnation left),
/// renews the keys' lives, and returns the epoch and last number.
/// KEYS: epoch, seq, log. ARGV: candidate epoch, key life (ms).
pub(super) const ATTACH: &str = "\
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then redis.call('DEL', KEYS[2], KEYS[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {redis.call('GET', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}";

/// One message, atomically: the room's epoch (made once per incarnation), its next number, the
/// envelope `<epoch> <seq> <origin>\n<payload>` appended to the room's stream (when it keeps
/// messages) and published on its channel. Returns the epoch and number.
/// KEYS: epoch, seq, channel, log. ARGV: candidate epoch, origin, payload, history_size,
/// history_ttl (ms), key life (ms).
pub(super) const PUBLISH: &str = "\
local e = redis.call('GET', KEYS[1])
if not e then e = ARGV[1]; redis.call('SET', KEYS[1], e); redis.call('DEL', KEYS[2], KEYS[4]) end
local s = redis.call('INCR', KEYS[2])
local n = string.format('%d', s)
local env = e .. ' ' .. n .. ' ' .. ARGV[2] .. '\\n' .. ARGV[3]
if tonumber(ARGV[4]) > 0 then
  local t = redis.call('TIME')
  local ms = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
  redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[4], '0-' .. n, 't', ms, 'd', env)
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('PUBLISH', KEYS[3], env)
return {e, s}";

/// Read kept messages: `after N` (those after number N, at most `limit`) or `last N`; none
/// older than the ttl (ms, 0: any age). Returns the epoch (nil when the room has none), the
/// last number and the envelopes, oldest first for `after`, newest first for `last`.
/// KEYS: epoch, seq, log. ARGV: mode, N, ttl, limit.
pub(super) const RANGE: &str = "\
local e = redis.call('GET', KEYS[1])
if not e then return {false, 0, {}} end
local s = tonumber(redis.call('GET', KEYS[2]) or '0')
local r
if ARGV[1] == 'after' then
  local from = '-'
  if tonumber(ARGV[2]) > 0 then from = '(0-' .. ARGV[2] end
  r = redis.call('XRANGE', KEYS[3], from, '+', 'COUNT', ARGV[4])
else
  r = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
end
local cutoff = 0
if tonumber(ARGV[3]) > 0 then
  local t = redis.call('TIME')
  cutoff = t[1] * 1000 + math.floor(t[2] / 1000) - tonumber(ARGV[3])
end
local out = {}
for _, x in ipairs(r) do
  local f = x[2]
  if tonumber(f[2]) >= cutoff then out[#out + 1] = f[4] end
end
return {e, s, out}";

/// The epoch, number, log keys of a room's channel (same hash tag as the channel).
pub(super) fn keys(channel: &[u8]) -> [Vec<u8>; 3] {
    [b":epoch".as_slice(), b":seq", b":log"].map(|suffix| {
        let mut key = channel.to_vec();
        key.extend_from_slice(suffix);
        key
    })
}

/// Milliseconds, as a script argument.
pub(super) fn ms(d: Duration) -> String {
    d.as_millis().max(1).to_string()
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// The `{epoch, seq}` that [`ATTACH`] and [`PUBLISH`] answer.
pub(super) fn epoch_and_seq(v: &Value) -> std::io::Result<(Epoch, u64)> {
    if let Value::Array(Some(items)) = v
        && let [Value::Bulk(Some(e)), Value::Int(s)] = &items[..]
        && let (Some(epoch), Ok(seq)) = (parse_epoch(e), u64::try_from(*s))
    {
        return Ok((epoch, seq));
    }
    Err(bad(format!("expected an epoch and a number, got {v:?}")))
}

/// One message read back from a room's stream.
pub(super) type Entry<'a> = Parsed<'a>;

/// What [`RANGE`] answers: the room's epoch (`None`: Redis has no such room), its last number,
/// and the messages read, oldest first. `me` tells this node's messages (for their origin).
#[allow(clippy::type_complexity)]
pub(super) fn range(
    v: &Value,
    newest_first: bool,
    me: u64,
) -> std::io::Result<(Option<Epoch>, u64, Vec<Entry<'_>>)> {
    let shape = || bad(format!("range answered {v:?}"));
    let Value::Array(Some(items)) = v else {
        return Err(shape());
    };
    let [e, Value::Int(s), Value::Array(Some(envs))] = &items[..] else {
        return Err(shape());
    };
    let epoch = match e {
        Value::Bulk(Some(e)) => Some(parse_epoch(e).ok_or_else(shape)?),
        _ => None,
    };
    let mut entries = Vec::with_capacity(envs.len());
    for env in envs {
        let Value::Bulk(Some(data)) = env else {
            return Err(shape());
        };
        entries.push(parse_envelope(data, me).ok_or_else(shape)?);
    }
    if newest_first {
        entries.reverse();
    }
    Ok((epoch, u64::try_from(*s).unwrap_or(0), entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Value {
        Value::Bulk(Some(b.to_vec()))
    }

    #[test]
    fn answers_read() {
        let v = Value::Array(Some(vec![bulk(b"00000000000000ff"), Value::Int(7)]));
        assert_eq!(epoch_and_seq(&v).unwrap(), (Epoch(255), 7));
        assert!(epoch_and_seq(&Value::Int(7)).is_err());
        let envs = vec![
            bulk(b"00000000000000ff 6 0000000000000001 0 1 1 t\nsix"),
            bulk(b"00000000000000ff 7 0000000000000002 0 1 1 b\nseven"),
        ];
        let v = Value::Array(Some(vec![
            bulk(b"00000000000000ff"),
            Value::Int(7),
            Value::Array(Some(envs)),
        ]));
        let (epoch, last, entries) = range(&v, true, 1).unwrap();
        assert_eq!((epoch, last), (Some(Epoch(255)), 7));
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![7, 6]);
        assert!(entries[1].origin.is_some() && entries[0].origin.is_none());
        assert_eq!(entries[0].payload, b"seven");
        let none = Value::Array(Some(vec![
            Value::Bulk(None),
            Value::Int(0),
            Value::Array(Some(vec![])),
        ]));
        assert_eq!(range(&none, false, 1).unwrap().0, None);
        assert!(range(&Value::Int(1), false, 1).is_err());
    }
}
