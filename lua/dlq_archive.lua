-- dlq_archive.lua: move dead letters to the queue's archive (DeadLetters.Archive).
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..]   entry ids
-- returns the number of ids that were in the queue
local now = clock(ARGV[1])
local k = dlq_keys()
local n = 0
for _, id in ipairs(dlq_ids(2)) do
  if dlq_archive_entry(k, id, now) then n = n + 1 end
end
return n
