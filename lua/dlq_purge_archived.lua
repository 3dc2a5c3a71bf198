-- dlq_purge_archived.lua: delete archived dead letters (DeadLetters.Purge with archived).
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- ARGV[1..]   archive ids (at most 1,000)
-- returns the number of ids that were in the archive
local k = dlq_keys()
local n = 0
for _, aid in ipairs(dlq_ids(1)) do
  n = n + redis.call('XDEL', k.a, aid)
  redis.call('HDEL', k.ap, aid)
end
return n
