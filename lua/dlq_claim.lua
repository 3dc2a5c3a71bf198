-- dlq_claim.lua: hand out dead letters to a consumer (DeadLetters.Claim): first entries
-- whose earlier claim expired (by deadline, then id), each delivery counted and an entry
-- past max_deliveries moved to the archive instead; then never-delivered entries through
-- the consumer group.
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..5]  count, visibility timeout (us), max_deliveries (0: no limit), consumer
-- returns {archived, then per entry {id, fields, payload, delivery count}}
local now = clock(ARGV[1])
local k = dlq_keys()
local count, vis, max_d, consumer = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
dlq_ensure_group(k)
local out, archived = {}, 0
local expired = redis.call('ZRANGEBYSCORE', k.v, '-inf', fmt(now), 'LIMIT', 0, count)
for _, id in ipairs(expired) do
  local e = redis.call('XRANGE', k.s, id, id)
  if #e > 0 then
    local dc = redis.call('HINCRBY', k.d, id, 1)
    if max_d > 0 and dc > max_d then
      redis.call('HINCRBY', k.d, id, -1)
      dlq_archive_entry(k, id, now)
      archived = archived + 1
    else
      redis.call('ZADD', k.v, fmt(now + vis), id)
      redis.call('XCLAIM', k.s, DLQ_GROUP, consumer, 0, id, 'JUSTID')
      out[#out + 1] = dlq_reply_entry(k, id, e[1][2])
    end
  else
    redis.call('ZREM', k.v, id)
  end
end
local want = count - #out
if want > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', DLQ_GROUP, consumer, 'COUNT', want, 'STREAMS', k.s, '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      redis.call('HINCRBY', k.d, e[1], 1)
      redis.call('ZADD', k.v, fmt(now + vis), e[1])
      out[#out + 1] = dlq_reply_entry(k, e[1], e[2])
    end
  end
end
table.insert(out, 1, archived)
return out
