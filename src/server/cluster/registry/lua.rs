//! The registry's Lua scripts: each starts with [`NOW`] (Redis's clock), the reads with
//! [`LIVE`] too, so that which nodes are live is judged by one clock, Redis's.

/// Redis's clock in ms (so nodes' clocks never matter), shared by the scripts.
pub(super) const NOW: &str = "local t = redis.call('TIME')\n\
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// KEYS: nodes zset, this node's rooms hash, its presence hash. ARGV: name, expiry ms, n rooms,
/// then n (path, count) pairs, then (path, presence JSON) pairs. One atomic write: the node is
/// live until `now + expiry`, and its hashes expire with it.
pub(super) const WRITE: &str = "local ttl = tonumber(ARGV[2])\n\
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
