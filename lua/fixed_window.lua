-- fixed_window.lua: one counter per epoch-aligned window. Twin of core::fixed_window.
--
-- State: a hash {w = window start (us), c = units admitted in it}.
-- fixed_window(key, now, cost, limit, period, _, peek)
--   peek = when true (Status), remaining and reset_after describe the window as it is
-- returns {allowed, limit, remaining, reset_after, retry_after}, commit (nil when denied)
local function fixed_window(key, now, cost, limit, period, _, peek)
  limit = tonumber(limit)
  period = tonumber(period)
  local start = now - math.fmod(now, period)
  local st = redis.call('HMGET', key, 'w', 'c')
  local count = 0
  if tonumber(st[1]) == start then count = tonumber(st[2]) end
  local ends = start + period - now
  if count + cost <= limit and peek then
    local reset = 0
    if count > 0 then reset = ends end
    return {1, limit, limit - count, reset, 0}, nil
  end
  if count + cost <= limit then
    local c = count + cost
    local commit = function()
      redis.call('HSET', key, 'w', fmt(start), 'c', fmt(c))
      expire_in(key, ends)
    end
    return {1, limit, limit - c, ends, 0}, commit
  end
  local reset = 0
  if count > 0 then reset = ends end
  -- the count may exceed a limit a reload lowered
  local remaining = limit - count
  if remaining < 0 then remaining = 0 end
  return {0, limit, remaining, reset, ends}, nil
end
