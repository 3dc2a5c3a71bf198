-- acquire.lua: decide every check of one Acquire (or Status) together, all-or-nothing.
-- Assembled at build time after prelude.lua and the algorithm files.
--
-- KEYS[1..n]  the checks' state keys (one per check, all distinct)
-- KEYS[n+1]   the request record (written only when the Acquire is admitted), when ARGV[3] ~= '0'
-- ARGV[1]     'acquire' (consume when every non-shadow check allows), 'status' (never
--             write; remaining and reset_after then describe each limit as it is), or
--             'reserve' (Redis Cluster: one slot's share of an Acquire; decides and writes
--             exactly as 'acquire', takes no request record, and prefixes the reply with
--             'reserved' and its clock, so a later refund.lua knows when it consumed)
-- ARGV[2]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[3]     request record TTL in ms, '0' when the request has no request_id
-- ARGV[4]     n
-- then per check 6 values: algorithm code (tb sw sl fw cc), cost, shadow ('1'/'0'),
--             and the algorithm's parameters p1, p2, p3:
--               tb: interval, capacity   sw/sl/fw: limit, period   cc: limit, ttl, member
-- then m (breakers), the namespace and the events channel, and per breaker its name and
--             its 12 settings (breaker.lua); the breakers' 4 keys each follow the record key
--             (or the checks' keys when there is no record)
-- returns {allowed, then per check: allowed, limit, remaining, reset_after, retry_after,
--          lease member ('' unless a lease was taken), then per breaker: allowed, state,
--          retry_after, generation, then the transitions made (br_events_reply)}; when the
--          Acquire is denied, every check reports remaining and reset_after of the limit as
--          it is (nothing consumed) and no breaker's trial permit is taken
--   or {'replay', record} when the request record exists (the first answer, as stored);
--   'reserve' returns {'reserved', now, ...the same values}.
local ALGORITHMS = {
  tb = token_bucket,
  sw = sliding_window,
  sl = sliding_log,
  fw = fixed_window,
  cc = concurrency,
}

local mode = ARGV[1]
local peek = mode == 'status'
-- 'reserve' consumes exactly as 'acquire' does
local consume = mode == 'acquire' or mode == 'reserve'
local now = clock(ARGV[2])
local n = tonumber(ARGV[4])
local record_key = nil
if ARGV[3] ~= '0' and mode ~= 'reserve' then
  record_key = KEYS[n + 1]
  local stored = redis.call('GET', record_key)
  if stored then return {'replay', stored} end
end

local results, commits = {}, {}
local allowed = 1
for i = 1, n do
  local b = 4 + (i - 1) * 6
  local algorithm = ALGORITHMS[ARGV[b + 1]]
  local cost = tonumber(ARGV[b + 2])
  local r, commit = algorithm(KEYS[i], now, cost, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], peek)
  results[i] = r
  commits[i] = commit
  if r[1] == 0 and ARGV[b + 3] ~= '1' then allowed = 0 end
end

-- breakers: each must admit too; an admitted HALF_OPEN call takes its permit only below
local bb = 4 + n * 6
local m = tonumber(ARGV[bb + 1] or '0')
local ctx = {ns = ARGV[bb + 2], channel = ARGV[bb + 3]}
local first_key = n + 1
if record_key then first_key = n + 2 end
local breakers = {}
for j = 1, m do
  local a = bb + 3 + (j - 1) * (1 + BR_CFG_ARGS)
  local k = br_keys(KEYS, first_key + (j - 1) * 4)
  local cfg = br_cfg(ARGV, a + 1)
  ctx.name = ARGV[a + 1]
  local br = br_load(k)
  if br then br_advance(br, k, cfg, now, ctx) end
  local ok, retry = br_admit(br, cfg, now)
  breakers[j] = {br = br, k = k, cfg = cfg, ok = ok, retry = retry}
  if ok == 0 then allowed = 0 end
end

local out = {allowed}
for i = 1, n do
  local b = 4 + (i - 1) * 6
  local r = results[i]
  local member = ''
  if consume and allowed == 0 and r[1] == 1 then
    -- this check would pass but the Acquire is denied, so nothing was consumed: report the
    -- limit as it is, not as it would be after this request
    local algorithm = ALGORITHMS[ARGV[b + 1]]
    local now_r = algorithm(KEYS[i], now, tonumber(ARGV[b + 2]), ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], true)
    r = {r[1], r[2], now_r[3], now_r[4], r[5]}
  end
  if consume and allowed == 1 and commits[i] ~= nil then
    commits[i]()
    if ARGV[b + 1] == 'cc' then member = ARGV[b + 6] end
  end
  for j = 1, 5 do out[#out + 1] = r[j] end
  out[#out + 1] = member
end
for _, x in ipairs(breakers) do
  if consume and allowed == 1 then br_commit(x.br, x.cfg, now) end
  if x.br then br_save(x.br, x.k, now) end
  local st, g = 'closed', 1
  if x.br then st, g = x.br.st, x.br.g end
  out[#out + 1] = x.ok
  out[#out + 1] = st
  out[#out + 1] = x.retry
  out[#out + 1] = g
end

-- only an admitted answer is recorded: a denial consumed nothing, so deciding its retry
-- afresh can never consume twice, and a client that waited retry_after gets in
if mode == 'acquire' and record_key and allowed == 1 then
  local parts = {}
  for i, v in ipairs(out) do
    if type(v) == 'number' then parts[i] = fmt(v) else parts[i] = v end
  end
  redis.call('SET', record_key, table.concat(parts, ','), 'PX', ARGV[3])
end
local reply = br_events_reply(out)
if mode == 'reserve' then
  table.insert(reply, 1, now)
  table.insert(reply, 1, 'reserved')
end
return reply
