-- dlq_ack.lua: remove dead letters from the queue (Ack, and the delete step of Redrive and
-- Purge), with their payloads, claims and counts.
--
-- KEYS[1..8]  the queue's keys (dlq.lua); KEYS[9] the redrive in-flight hash (may be unused)
-- ARGV[1..]   entry ids (at most 1,000)
-- returns the number of ids that were in the queue
local k = dlq_keys()
local n = 0
for _, id in ipairs(dlq_ids(1)) do
  if dlq_forget(k, id) then n = n + 1 end
  if KEYS[9] then redis.call('HDEL', KEYS[9], id) end
end
return n
