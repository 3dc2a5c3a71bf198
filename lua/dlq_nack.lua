-- dlq_nack.lua: make claimed dead letters claimable again now (DeadLetters.Nack).
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..]   entry ids
-- returns the number of ids that were claimed
local now = clock(ARGV[1])
local k = dlq_keys()
local n = 0
for _, id in ipairs(dlq_ids(2)) do
  if redis.call('ZSCORE', k.v, id) then
    redis.call('ZADD', k.v, fmt(now), id)
    n = n + 1
  end
end
return n
