-- dlq.lua: a dead-letter queue on Redis Streams (twin of core/src/dead_letters.rs).
-- Functions only; the entry scripts dlq_publish, dlq_claim, dlq_ack, dlq_nack, dlq_archive,
-- dlq_restore, dlq_purge_archived and dlq_stats are assembled after this file.
--
-- One queue is eight keys under one hash tag, passed as KEYS[1..8]:
--   k.s   stream  the queue: fields r (reason), ec (error class), src (source), att
--                 (attempts), md (metadata, JSON), tid (trace id), ff (first failed, us),
--                 pub (published, us), ik (idempotency key), sz (payload bytes); ids are
--                 <ms>-<seq> taken from the clock, never going back (last id in k.h 'last')
--                 and never reused by the archive (see dlq_new_id)
--   k.p   hash    payloads by entry id (so listing never reads them)
--   k.a   stream  the archive: the entry's fields plus oid (queue id), dc (deliveries),
--                 aat (archived at, us); ids from k.h 'alast'
--   k.ap  hash    archived payloads by archive id
--   k.h   hash    counters: r:<reason> (entries by reason), ta / tl (trimmed by age /
--                 length), pt (published), dt (duplicates), last, alast
--   k.v   zset    claimed entries -> when they are claimable again (us)
--   k.d   hash    delivery counts by entry id
--   k.m   hash    publishes per minute (minute since the epoch), the last 60
-- plus, for Publish, the idempotency key KEYS[9]: "<id>|<expiry us>".
-- The consumer group 'floodgate' on k.s tracks which entries were ever delivered.

local DLQ_GROUP = 'floodgate'
local DLQ_BATCH = 1000

local function dlq_keys()
  return {s = KEYS[1], p = KEYS[2], a = KEYS[3], ap = KEYS[4], h = KEYS[5], v = KEYS[6],
    d = KEYS[7], m = KEYS[8]}
end

local function dlq_ensure_group(k)
  redis.pcall('XGROUP', 'CREATE', k.s, DLQ_GROUP, '0', 'MKSTREAM')
end

-- The id after `last` (or none) for the clock reading `now` (us).
local function dlq_next_id(last, now)
  local ms = math.floor(now / 1000)
  if last then
    local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
    lms, lseq = tonumber(lms), tonumber(lseq)
    if ms <= lms then return fmt(lms) .. '-' .. fmt(lseq + 1) end
  end
  return fmt(ms) .. '-0'
end

-- True when id a sorts before id b (both canonical '<ms>-<seq>').
local function dlq_id_less(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then return ams < bms end
  return tonumber(aseq) < tonumber(bseq)
end

-- A fresh id for the queue (field 'last') or the archive ('alast'), after every id either
-- has given out, so one id names one entry across both (Get looks in both); recorded in
-- k.h under `field`. Twin of Queue::new_id in core.
local function dlq_new_id(k, field, now)
  local newest = redis.call('HGET', k.h, 'last')
  local alast = redis.call('HGET', k.h, 'alast')
  if alast and (not newest or dlq_id_less(newest, alast)) then newest = alast end
  local id = dlq_next_id(newest, now)
  redis.call('HSET', k.h, field, id)
  return id
end

local function dlq_id_ms(id)
  return tonumber(string.match(id, '^(%d+)-'))
end

local function dlq_field(flat, name)
  for i = 1, #flat, 2 do
    if flat[i] == name then return flat[i + 1] end
  end
  return nil
end

-- Removes one entry from the queue with everything beside it; returns its fields or nil.
local function dlq_forget(k, id)
  local e = redis.call('XRANGE', k.s, id, id)
  if #e == 0 then return nil end
  local reason = dlq_field(e[1][2], 'r') or ''
  redis.pcall('XACK', k.s, DLQ_GROUP, id)
  redis.call('XDEL', k.s, id)
  redis.call('HDEL', k.p, id)
  redis.call('ZREM', k.v, id)
  redis.call('HDEL', k.d, id)
  if redis.call('HINCRBY', k.h, 'r:' .. reason, -1) <= 0 then
    redis.call('HDEL', k.h, 'r:' .. reason)
  end
  return e[1][2]
end

-- Moves one entry to the archive; true when it was in the queue.
local function dlq_archive_entry(k, id, now)
  local dc = redis.call('HGET', k.d, id) or '0'
  local payload = redis.call('HGET', k.p, id) or ''
  local fields = dlq_forget(k, id)
  if not fields then return false end
  local aid = dlq_new_id(k, 'alast', now)
  local args = {'XADD', k.a, aid}
  for _, v in ipairs(fields) do args[#args + 1] = v end
  for _, v in ipairs({'oid', id, 'dc', dc, 'aat', fmt(now)}) do args[#args + 1] = v end
  redis.call(unpack(args))
  redis.call('HSET', k.ap, aid, payload)
  return true
end

-- One entry as a reply: {id, fields, payload, delivery count}.
local function dlq_reply_entry(k, id, fields)
  return {id, fields, redis.call('HGET', k.p, id) or '', tonumber(redis.call('HGET', k.d, id) or '0')}
end

-- An id spelled as the stream spells it, read as core reads it ('<ms>' is '<ms>-0', leading
-- zeros and a '+' before the sequence dropped): the hashes and the zset are keyed by that
-- exact text, while XRANGE and XDEL would also take another spelling of it.
local function dlq_canon(id)
  local ms, seq = string.match(id, '^(%d+)-%+?(%d+)$')
  if not ms then ms, seq = string.match(id, '^(%d+)$'), '0' end
  if not ms then return id end
  return (string.gsub(ms, '^0+(%d)', '%1')) .. '-' .. (string.gsub(seq, '^0+(%d)', '%1'))
end

-- The ids given as ARGV[from..], canonical.
local function dlq_ids(from)
  local ids = {}
  for i = from, #ARGV do ids[#ids + 1] = dlq_canon(ARGV[i]) end
  return ids
end
