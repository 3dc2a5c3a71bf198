-- dlq_publish.lua: store one dead letter (DeadLetters.Publish), unless its idempotency key
-- was seen within the retention; trims by age then by max_len first (at most 1,000 entries,
-- counted), so one more entry fits.
--
-- KEYS[1..8]  the queue's keys (dlq.lua); KEYS[9] the idempotency key when ARGV[4] ~= ''
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..3]  retention (us), max_len
-- ARGV[4..13] idempotency key, payload, reason, error class, source, attempts, metadata
--             (JSON), trace id, first failed at (us, '' = now), payload size
-- returns {id, duplicate (0/1)}
local now = clock(ARGV[1])
local k = dlq_keys()
local retention, max_len = tonumber(ARGV[2]), tonumber(ARGV[3])
local ik = ARGV[4]
if ik ~= '' then
  local seen = redis.call('GET', KEYS[9])
  if seen then
    local id, exp = string.match(seen, '^(.*)|(%d+)$')
    if tonumber(exp) > now then
      redis.call('HINCRBY', k.h, 'dt', 1)
      return {id, 1}
    end
  end
end
dlq_ensure_group(k)

-- trim by age: ids older than the retention
local budget = DLQ_BATCH
local min_ms = math.floor(math.max(now - retention, 0) / 1000)
local old = redis.call('XRANGE', k.s, '-', '(' .. fmt(min_ms) .. '-0', 'COUNT', budget)
for _, e in ipairs(old) do
  dlq_forget(k, e[1])
  redis.call('HINCRBY', k.h, 'ta', 1)
  budget = budget - 1
end
-- trim by length: room for one more
local excess = redis.call('XLEN', k.s) - max_len + 1
if excess > 0 and budget > 0 then
  local oldest = redis.call('XRANGE', k.s, '-', '+', 'COUNT', math.min(excess, budget))
  for _, e in ipairs(oldest) do
    dlq_forget(k, e[1])
    redis.call('HINCRBY', k.h, 'tl', 1)
  end
end

local id = dlq_new_id(k, 'last', now)
local ff = ARGV[12]
if ff == '' then ff = fmt(now) end
redis.call('XADD', k.s, id, 'r', ARGV[6], 'ec', ARGV[7], 'src', ARGV[8], 'att', ARGV[9],
  'md', ARGV[10], 'tid', ARGV[11], 'ff', ff, 'pub', fmt(now), 'ik', ik, 'sz', ARGV[13])
redis.call('HSET', k.p, id, ARGV[5])
redis.call('HINCRBY', k.h, 'r:' .. ARGV[6], 1)
redis.call('HINCRBY', k.h, 'pt', 1)
local minute = math.floor(now / 60000000)
redis.call('HINCRBY', k.m, fmt(minute), 1)
local minutes = redis.call('HKEYS', k.m)
for _, m in ipairs(minutes) do
  if tonumber(m) + 60 <= minute then redis.call('HDEL', k.m, m) end
end
if ik ~= '' then
  redis.call('SET', KEYS[9], id .. '|' .. fmt(now + retention),
    'PX', fmt(math.ceil(retention / 1000) + TTL_SLACK_MS))
end
return {id, 0}
