-- token_bucket.lua: GCRA token bucket. Twin of core::token_bucket.
--
-- State: a string holding the theoretical arrival time (TAT), microseconds.
-- token_bucket(key, now, cost, t, cap, peek)
--   t   = emission interval, microseconds per token (ceil(period / limit))
--   cap = capacity (burst)
--   peek = when true (Status), remaining and reset_after describe the bucket as it is
-- returns {allowed, limit, remaining, reset_after, retry_after}, commit (nil when denied)
local function token_bucket(key, now, cost, t, cap, _, peek)
  t = tonumber(t)
  cap = tonumber(cap)
  local tau = cap * t
  local tat = tonumber(redis.call('GET', key) or 0)
  if tat < now then tat = now end
  local new_tat = tat + cost * t
  if new_tat - now <= tau then
    if peek then
      return {1, cap, math.floor((tau - (tat - now)) / t), tat - now, 0}, nil
    end
    local commit = function()
      redis.call('SET', key, fmt(new_tat))
      expire_in(key, new_tat - now)
    end
    return {1, cap, math.floor((tau - (new_tat - now)) / t), new_tat - now, 0}, commit
  end
  -- the state may be further ahead than tau when a reload lowered the burst
  local remaining = math.floor((tau - (tat - now)) / t)
  if remaining < 0 then remaining = 0 end
  return {0, cap, remaining, tat - now, new_tat - tau - now}, nil
end
