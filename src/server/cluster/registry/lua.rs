//! The registry's Lua scripts: each starts with [`NOW`] (Redis's clock), the reads with
//! [`LIVE`] too, so that which nodes are live is judged by one clock, Redis's.

/// Redis's clock in ms (so nodes' clocks never matter), shared by the scripts.
pub(super) const NOW: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Keeps the node live until `now + ARGV[2]` (ms) under its name `ARGV[1]` in the nodes zset
/// `KEYS[1]`, dropping dead names; `ttl` for the rest of the script.
const ALIVE: &str = "local ttl = tonumber(ARGV[2])\n\
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n\
    redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])\n";

/// Applies a chunk of changes to the hashes `rk` (rooms) and `pk` (presence): from `ARGV[i]`,
/// the numbers of room sets, room dels and presence sets, then those (path, value) pairs and
/// paths, then presence dels to the end.
const APPLY: &str = "local sr, dr, sp = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])\n\
    i = i + 3\n\
    for _ = 1, sr do redis.call('HSET', rk, ARGV[i], ARGV[i + 1]); i = i + 2 end\n\
    for _ = 1, dr do redis.call('HDEL', rk, ARGV[i]); i = i + 1 end\n\
    for _ = 1, sp do redis.call('HSET', pk, ARGV[i], ARGV[i + 1]); i = i + 2 end\n\
    while i <= #ARGV do redis.call('HDEL', pk, ARGV[i]); i = i + 1 end\n";

/// The incremental write, one chunk: the changes since the last write, straight into the live
/// hashes. KEYS: nodes zset, this node's rooms hash, its presence hash. ARGV: name, expiry ms,
/// "1" when the rooms hash must exist (the last write left rooms in it) else "0", the same for
/// the presence hash, then the changes as [`APPLY`] takes them. Answers 0, having written
/// nothing, when a hash that must exist does not (Redis restarted empty, a `FLUSHALL`, the
/// hashes expired while the node was paused): the node then writes everything at once.
pub(super) fn diff() -> String {
    format!(
        "if (ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0)\n\
           or (ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 0) then return 0 end\n\
         {ALIVE}local rk, pk, i = KEYS[2], KEYS[3], 5\n{APPLY}\
         redis.call('PEXPIRE', KEYS[2], ttl)\n\
         redis.call('PEXPIRE', KEYS[3], ttl)\n\
         return 1"
    )
}

/// The full write, one chunk: everything, into fresh keys that replace the live hashes in the
/// last chunk (`RENAME`), so readers see the old hashes or the new ones, never a half-written
/// or empty one in between. KEYS: nodes zset, rooms hash, presence hash, the fresh rooms and
/// presence keys. ARGV: name, expiry ms, "1" on the first chunk (drops what an abandoned full
/// write left), "1" on the last, the snapshot's numbers of rooms and of presence lists, then
/// the sets as [`APPLY`] takes them. Answers 0 when the last chunk finds fewer entries than
/// the snapshot has (the fresh keys expired between chunks): nothing replaced, try again.
pub(super) fn full() -> String {
    format!(
        "if ARGV[3] == '1' then redis.call('DEL', KEYS[4], KEYS[5]) end\n\
         {ALIVE}local rk, pk, i = KEYS[4], KEYS[5], 7\n{APPLY}\
         redis.call('PEXPIRE', KEYS[4], ttl)\n\
         redis.call('PEXPIRE', KEYS[5], ttl)\n\
         if ARGV[4] == '1' then\n\
           for j = 0, 1 do\n\
             if redis.call('HLEN', KEYS[4 + j]) ~= tonumber(ARGV[5 + j]) then return 0 end\n\
           end\n\
           for j = 0, 1 do\n\
             if tonumber(ARGV[5 + j]) > 0 then redis.call('RENAME', KEYS[4 + j], KEYS[2 + j])\n\
             else redis.call('DEL', KEYS[2 + j]) end\n\
           end\n\
         end\n\
         redis.call('PEXPIRE', KEYS[2], ttl)\n\
         redis.call('PEXPIRE', KEYS[3], ttl)\n\
         return 1"
    )
}

/// The live nodes' names: `ZRANGEBYSCORE nodes now +inf`.
pub(super) const LIVE: &str = "local live = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')\n";

/// KEYS: nodes. ARGV: node key prefix, path prefix. Every live node's rooms under the prefix,
/// counts summed, as arrays of at most 1,000 (path, count) pairs (unsorted: Lua compares
/// strings by locale, so the order is made in Rust).
pub(super) const ROOMS: &str = "local counts, paths = {}, {}\n\
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
pub(super) const ROOM: &str = "local sum = 0\n\
    for _, n in ipairs(live) do\n\
      local c = redis.call('HGET', ARGV[1] .. n .. ':rooms', ARGV[2])\n\
      if c then sum = sum + tonumber(c) end\n\
    end\n\
    return {sum, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3])}";

/// KEYS: nodes. ARGV: node key prefix, path. (node, presence JSON) of each live node that has
/// members of the room.
pub(super) const PRESENCE: &str = "local out = {}\n\
    for _, n in ipairs(live) do\n\
      local j = redis.call('HGET', ARGV[1] .. n .. ':presence', ARGV[2])\n\
      if j then out[#out + 1] = n; out[#out + 1] = j end\n\
    end\n\
    return out";
