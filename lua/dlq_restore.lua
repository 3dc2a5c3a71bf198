-- dlq_restore.lua: move archived dead letters back into the queue as new, never-delivered
-- entries (DeadLetters.Restore).
--
-- KEYS[1..8]  the queue's keys (dlq.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..]   archive ids
-- returns the new ids in order ('' for ids not in the archive)
local now = clock(ARGV[1])
local k = dlq_keys()
dlq_ensure_group(k)
local out = {}
for _, aid in ipairs(dlq_ids(2)) do
  local e = redis.call('XRANGE', k.a, aid, aid)
  if #e == 0 then
    out[#out + 1] = ''
  else
    local id = dlq_new_id(k, 'last', now)
    local args = {'XADD', k.s, id}
    local flat = e[1][2]
    local reason = ''
    for i = 1, #flat, 2 do
      local f = flat[i]
      if f ~= 'oid' and f ~= 'dc' and f ~= 'aat' then
        args[#args + 1] = f
        args[#args + 1] = flat[i + 1]
      end
      if f == 'r' then reason = flat[i + 1] end
    end
    redis.call(unpack(args))
    redis.call('HSET', k.p, id, redis.call('HGET', k.ap, aid) or '')
    redis.call('XDEL', k.a, aid)
    redis.call('HDEL', k.ap, aid)
    redis.call('HINCRBY', k.h, 'r:' .. reason, 1)
    out[#out + 1] = id
  end
end
return out
