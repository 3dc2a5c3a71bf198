-- sliding_window.lua: weighted two-window counter. Twin of core::sliding_window.
--
-- State: a hash {w = current window start (us), c = its count, p = previous window's count}.
-- The estimate prev * (period - e) / period + cur is computed in doubles in exactly the
-- order core::sliding_window uses, so both decide identically.
-- sliding_window(key, now, cost, limit, period, _, peek)
--   peek = when true (Status), remaining and reset_after describe the limit as it is
-- returns {allowed, limit, remaining, reset_after, retry_after}, commit (nil when denied)
local function sliding_window(key, now, cost, limit, period, _, peek)
  limit = tonumber(limit)
  period = tonumber(period)
  local start = now - math.fmod(now, period)
  local e = now - start
  local st = redis.call('HMGET', key, 'w', 'c', 'p')
  local w = tonumber(st[1])
  local cur, prev = 0, 0
  if w == start then
    cur, prev = tonumber(st[2]), tonumber(st[3])
  elseif w ~= nil and w + period == start then
    prev = tonumber(st[2])
  end
  local function estimate(p, c, elapsed)
    return p * (period - elapsed) / period + c
  end
  local function reset_after(c)
    if c > 0 then return start + 2 * period - now end
    if prev > 0 then return start + period - now end
    return 0
  end
  local function floor_remaining(x)
    if x > 0 then return math.floor(x) end
    return 0
  end
  local est = estimate(prev, cur, e)
  if est + cost <= limit and peek then
    return {1, limit, floor_remaining(limit - est), reset_after(cur), 0}, nil
  end
  if est + cost <= limit then
    local c = cur + cost
    local commit = function()
      redis.call('HSET', key, 'w', fmt(start), 'c', fmt(c), 'p', fmt(prev))
      expire_in(key, start + 2 * period - now)
    end
    return {1, limit, floor_remaining(limit - (est + cost)), reset_after(c), 0}, commit
  end
  local retry
  if cur + cost <= limit then
    -- wait inside this window until the previous window's weight has fallen enough
    local x = (limit - cur - cost) * period / prev
    local e2 = math.ceil(period - x)
    if e2 < 0 then e2 = 0 end
    if e2 <= e then e2 = e + 1 end
    while e2 < period and estimate(prev, cur, e2) + cost > limit do e2 = e2 + 1 end
    retry = e2 - e
  else
    -- wait into the next window, where this window's count becomes the previous one
    local x = (limit - cost) * period / cur
    local e2 = math.ceil(period - x)
    if e2 < 0 then e2 = 0 end
    while e2 < period and estimate(cur, 0, e2) + cost > limit do e2 = e2 + 1 end
    retry = (period - e) + e2
  end
  return {0, limit, floor_remaining(limit - est), reset_after(cur), retry}, nil
end
