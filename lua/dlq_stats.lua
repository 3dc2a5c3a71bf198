-- dlq_stats.lua: one consistent read of a queue's numbers (DeadLetters.Stats).
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- returns {count, archived, in flight, oldest id or '', counters (HGETALL k.h),
--          per-minute publishes (HGETALL k.m)}
local k = dlq_keys()
local first = redis.call('XRANGE', k.s, '-', '+', 'COUNT', 1)
local oldest = ''
if #first > 0 then oldest = first[1][1] end
return {redis.call('XLEN', k.s), redis.call('XLEN', k.a), redis.call('ZCARD', k.v), oldest,
  redis.call('HGETALL', k.h), redis.call('HGETALL', k.m)}
