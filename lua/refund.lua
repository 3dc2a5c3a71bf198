-- refund.lua: give back what a reserved, admitted Acquire consumed (Redis Cluster: the
-- slots reserved before a later slot denied). Twin of core::refund.
-- Assembled after prelude.lua and concurrency.lua (refresh_leases).
--
-- KEYS[1..n]  the state keys of the checks that allowed (all in one slot)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2]     consumed_at: the `now` the 'reserve' reply carried
-- ARGV[3]     n
-- then per check 6 values: algorithm code, cost, the reservation's reset_after (us; what
-- the 'reserve' reply said for this check), and p1, p2, p3 as acquire.lua takes them
-- returns the number of keys written (informational)
--
-- Never counts below zero, never creates a key; exact per algorithm as core::refund says.
local now = clock(ARGV[1])
local at = tonumber(ARGV[2])
local n = tonumber(ARGV[3])

-- tb: the TAT moves back by cost * t, but by no more than the reservation still weighs at
-- now: it pushed the TAT to at + reset_after, and whatever drained of that by now is gone
-- for good (a request may have found the bucket full meanwhile; giving back more would
-- hand out its tokens twice). At or before now the bucket is full: drop the key.
local function refund_tb(key, cost, t, reset_after)
  local tat = redis.call('GET', key)
  if not tat then return 0 end
  local weighs = math.max(0, at + tonumber(reset_after) - now)
  tat = tonumber(tat) - math.min(cost * tonumber(t), weighs)
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, fmt(tat))
    expire_in(key, tat - now)
  end
  return 1
end

-- fw: only while the consumption's window is stored and still current; the key still
-- lives until the window's end. A rolled window owes nothing.
local function refund_fw(key, cost, period)
  period = tonumber(period)
  local start = at - math.fmod(at, period)
  local st = redis.call('HMGET', key, 'w', 'c')
  if tonumber(st[1]) ~= start or now - math.fmod(now, period) ~= start then return 0 end
  local c = tonumber(st[2]) - cost
  if c <= 0 then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'c', fmt(c))
    expire_in(key, start + period - now)
  end
  return 1
end

-- sw: the consumption counts in the window starting at start(at): c while that window is
-- the stored one, p once the state moved on to the next. Both zero, or both no longer
-- weighing at now: drop the key; else it lives until w + 2 * period, as acquire sets.
local function refund_sw(key, cost, period)
  period = tonumber(period)
  local start = at - math.fmod(at, period)
  local st = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(st[1])
  local c, p = tonumber(st[2]), tonumber(st[3])
  if w == start then
    c = math.max(0, c - cost)
  elseif w ~= nil and w == start + period then
    p = math.max(0, p - cost)
  else
    return 0
  end
  if (c == 0 and p == 0) or w + 2 * period <= now then
    redis.call('DEL', key)
  else
    redis.call('HSET', key, 'c', fmt(c), 'p', fmt(p))
    expire_in(key, w + 2 * period - now)
  end
  return 1
end

-- sl: remove `cost` members stamped `at` ("<at>:<k>"), the highest k first so the stamp's
-- numbering stays 0..m-1 for the next ZADD at it; then the key lives as long as its
-- newest member.
local function refund_sl(key, cost, period)
  period = tonumber(period)
  local stamp = fmt(at)
  local members = redis.call('ZRANGEBYSCORE', key, stamp, stamp)
  if #members == 0 then return 0 end
  local ks = {}
  for i, m in ipairs(members) do ks[i] = tonumber(string.match(m, ':(%d+)$')) end
  table.sort(ks, function(a, b) return a > b end)
  local gone = {}
  for i = 1, math.min(cost, #ks) do gone[i] = stamp .. ':' .. fmt(ks[i]) end
  -- in batches: unpack of thousands of values overflows Lua's stack
  for i = 1, #gone, 500 do
    redis.call('ZREM', key, unpack(gone, i, math.min(i + 499, #gone)))
  end
  local newest = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if newest[2] then
    local ends = tonumber(newest[2]) + period - now
    if ends > 0 then expire_in(key, ends) else redis.call('DEL', key) end
  end
  return 1
end

-- cc: end the lease, as release.lua does.
local function refund_cc(key, member)
  if redis.call('EXISTS', key) == 0 then return 0 end
  redis.call('ZREM', key, member)
  refresh_leases(key, now)
  return 1
end

local changed = 0
for i = 1, n do
  local b = 3 + (i - 1) * 6
  local code, cost, reset_after = ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3]
  local p1, p2, p3 = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  if code == 'tb' then
    changed = changed + refund_tb(KEYS[i], cost, p1, reset_after)
  elseif code == 'fw' then
    changed = changed + refund_fw(KEYS[i], cost, p2)
  elseif code == 'sw' then
    changed = changed + refund_sw(KEYS[i], cost, p2)
  elseif code == 'sl' then
    changed = changed + refund_sl(KEYS[i], cost, p2)
  elseif code == 'cc' then
    changed = changed + refund_cc(KEYS[i], p3)
  else
    return redis.error_reply('refund.lua: unknown algorithm ' .. tostring(code))
  end
end
return changed
