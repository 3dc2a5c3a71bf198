-- sliding_log.lua: exact log of arrivals. Twin of core::sliding_log.
--
-- State: a sorted set, one member per admitted unit, scored by its arrival time (us).
-- Members are "<now>:<k>" where k numbers the units stamped `now`, which is unique: the
-- trim only removes older stamps, so the units stamped `now` only grow. (Numbering by the
-- live count was not: a reload that shortens the period shrinks it at the same `now`, and
-- ZADD then overwrote a stored unit.)
-- An entry stamped t is live while now - period < t.
-- sliding_log(key, now, cost, limit, period, _, peek)
--   peek = when true (Status), remaining and reset_after describe the log as it is
-- returns {allowed, limit, remaining, reset_after, retry_after}, commit (nil when denied)
local function sliding_log(key, now, cost, limit, period, _, peek)
  limit = tonumber(limit)
  period = tonumber(period)
  local since = '(' .. fmt(now - period)
  local n = redis.call('ZCOUNT', key, since, '+inf')
  if n + cost <= limit and peek then
    local newest = redis.call('ZREVRANGEBYSCORE', key, '+inf', since, 'WITHSCORES', 'LIMIT', 0, 1)
    local reset = 0
    if newest[2] then reset = tonumber(newest[2]) + period - now end
    return {1, limit, limit - n, reset, 0}, nil
  end
  if n + cost <= limit then
    local commit = function()
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - period))
      local stamp = fmt(now)
      local first = redis.call('ZCOUNT', key, stamp, stamp)
      local i = 0
      while i < cost do
        local args = {}
        local j = 0
        while j < 500 and i < cost do
          args[#args + 1] = stamp
          args[#args + 1] = stamp .. ':' .. fmt(first + i)
          i = i + 1
          j = j + 1
        end
        redis.call('ZADD', key, unpack(args))
      end
      expire_in(key, period)
    end
    return {1, limit, limit - n - cost, period, 0}, commit
  end
  -- the need-th oldest live unit must expire before `cost` fits
  local need = n + cost - limit
  local kth = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', need - 1, 1)
  local newest = redis.call('ZREVRANGEBYSCORE', key, '+inf', since, 'WITHSCORES', 'LIMIT', 0, 1)
  local reset = 0
  if newest[2] then reset = tonumber(newest[2]) + period - now end
  local remaining = limit - n
  if remaining < 0 then remaining = 0 end
  return {0, limit, remaining, reset, tonumber(kth[2]) + period - now}, nil
end
