-- concurrency.lua: take a lease on a distributed semaphore. Twin of core::concurrency.
--
-- State: a sorted set of leases; member "<cost>~<id>", score = expiry (us). Expired leases
-- are dropped on every write, and the key's TTL is refreshed on every acquire, release and
-- renew to outlive its latest lease.
-- concurrency(key, now, cost, limit, ttl, member, peek)
--   peek = when true (Status), remaining and reset_after describe the leases as they are
-- returns {allowed, limit, remaining, reset_after, retry_after}, commit (nil when denied)
local function lease_cost(member)
  return tonumber(string.match(member, '^(%d+)~'))
end

-- Drop expired leases and make the key outlive its latest lease (or vanish when empty).
local function refresh_leases(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
  local last = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if last[2] then expire_in(key, tonumber(last[2]) - now) end
end

local function concurrency(key, now, cost, limit, ttl, member, peek)
  limit = tonumber(limit)
  ttl = tonumber(ttl)
  local live = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf', 'WITHSCORES')
  local used, latest = 0, nil
  for i = 1, #live, 2 do
    used = used + lease_cost(live[i])
    latest = tonumber(live[i + 1])
  end
  if used + cost <= limit and peek then
    local reset = 0
    if latest ~= nil then reset = latest - now end
    return {1, limit, limit - used, reset, 0}, nil
  end
  if used + cost <= limit then
    local expires = now + ttl
    local last = expires
    if latest ~= nil and latest > last then last = latest end
    local commit = function()
      redis.call('ZADD', key, fmt(expires), member)
      refresh_leases(key, now)
    end
    return {1, limit, limit - used - cost, last - now, 0}, commit
  end
  -- leases end in expiry order; find the one whose end makes room for `cost`
  local freed, retry = 0, 0
  for i = 1, #live, 2 do
    freed = freed + lease_cost(live[i])
    if used - freed + cost <= limit then
      retry = tonumber(live[i + 1]) - now
      break
    end
  end
  local remaining = limit - used
  if remaining < 0 then remaining = 0 end
  return {0, limit, remaining, latest - now, retry}, nil
end
