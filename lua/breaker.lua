-- breaker.lua: the shared circuit breaker's state machine (twin of core/src/breaker).
-- Functions only; the entry scripts (acquire, breaker_report, breaker_get,
-- breaker_set_state) are assembled after this file at build time.
--
-- One breaker is four keys under one hash tag, passed as a table k:
--   k.s  hash    the state: st (state name), g (generation), ou (open until, us), op
--                (consecutive opens), ws (window signature "count:N" | "time:N"), c f s
--                (window totals: calls, failures, slow), pos fil (count ring position and
--                fill), hd (time window head second), tc tf ts (half-open trial outcomes),
--                pm (trial permit expiries, ascending, comma-separated)
--   k.w  string  count window: one char per call, '0' + (failure) + 2 * (slow)
--        hash    time window: field (second % N) = "second:calls:failures:slow"
--   k.r  zset    reporters of failures or slow calls -> time of their last such report
--                (only while minimum_reporters > 1)
--   k.e  stream  the transitions, about the last 1,000 (the audit trail)
-- A breaker with no state reads as CLOSED, generation 1; only a report or an operator's
-- SetState creates it. Every transition bumps the generation, starts a fresh window, is
-- appended to k.e and PUBLISHed on the events channel, and is collected in BR_EVENTS for
-- the script's reply.

-- Settings, 12 ARGV values from index b + 1 (see server/src/store/redis/scripts.rs).
local BR_CFG_ARGS = 12
local function br_cfg(argv, b)
  return {
    window = argv[b + 1], size = tonumber(argv[b + 2]), min_calls = tonumber(argv[b + 3]),
    fthr = tonumber(argv[b + 4]), sthr = tonumber(argv[b + 5]), wait = tonumber(argv[b + 6]),
    mult = tonumber(argv[b + 7]), wmax = tonumber(argv[b + 8]), jitter = tonumber(argv[b + 9]),
    hoc = tonumber(argv[b + 10]), homw = tonumber(argv[b + 11]), minrep = tonumber(argv[b + 12]),
  }
end

local BR_NUMBERS = {'g', 'ou', 'op', 'c', 'f', 's', 'pos', 'fil', 'hd', 'tc', 'tf', 'ts'}
local BR_KEEP_MS = 7 * 24 * 3600 * 1000   -- state left alone this long is forgotten
local BR_EVENTS = {}                      -- transitions made by this script call

local function br_keys(keys, first)
  return {s = keys[first], w = keys[first + 1], r = keys[first + 2], e = keys[first + 3]}
end

-- The stored breaker, or nil when it has no state.
local function br_load(k)
  local raw = redis.call('HGETALL', k.s)
  if #raw == 0 then return nil end
  local b = {}
  for i = 1, #raw, 2 do b[raw[i]] = raw[i + 1] end
  for _, f in ipairs(BR_NUMBERS) do b[f] = tonumber(b[f] or '0') end
  b.permits = {}
  if b.pm and b.pm ~= '' then
    for e in string.gmatch(b.pm, '[^,]+') do b.permits[#b.permits + 1] = tonumber(e) end
  end
  b.dirty = false
  return b
end

local function br_sig(cfg) return cfg.window .. ':' .. cfg.size end

local function br_reset_window(b, k, cfg)
  redis.call('DEL', k.w, k.r)
  b.ws = br_sig(cfg)
  b.c, b.f, b.s, b.pos, b.fil, b.hd = 0, 0, 0, 0, 0, 0
end

local function br_fresh(k, cfg)
  local b = {st = 'closed', g = 1, ou = 0, op = 0, tc = 0, tf = 0, ts = 0, permits = {}, dirty = true}
  br_reset_window(b, k, cfg)
  return b
end

local function br_save(b, k, now)
  if not b.dirty then return end
  local pm = {}
  for i, e in ipairs(b.permits) do pm[i] = fmt(e) end
  redis.call('HSET', k.s, 'st', b.st, 'ws', b.ws, 'pm', table.concat(pm, ','),
    'g', fmt(b.g), 'ou', fmt(b.ou), 'op', fmt(b.op), 'c', fmt(b.c), 'f', fmt(b.f),
    's', fmt(b.s), 'pos', fmt(b.pos), 'fil', fmt(b.fil), 'hd', fmt(b.hd),
    'tc', fmt(b.tc), 'tf', fmt(b.tf), 'ts', fmt(b.ts))
  if b.st == 'forced_open' or b.st == 'disabled' or b.st == 'metrics_only' then
    -- an operator's decision stays until an operator changes it
    redis.call('PERSIST', k.s)
    redis.call('PERSIST', k.w)
    redis.call('PERSIST', k.r)
  else
    local ms = BR_KEEP_MS
    if b.st == 'open' and (b.ou - now) / 1000 + BR_KEEP_MS > ms then
      ms = math.ceil((b.ou - now) / 1000) + BR_KEEP_MS
    end
    for _, key in ipairs({k.s, k.w, k.r}) do redis.call('PEXPIRE', key, fmt(ms + TTL_SLACK_MS)) end
  end
end

-- The wait of the opens-th consecutive open, with jitter (draw in 0..999999).
local function br_wait(cfg, opens, draw)
  local grown = cfg.wait * (cfg.mult ^ (math.max(opens, 1) - 1))
  local base
  if grown >= cfg.wmax then base = cfg.wmax else base = math.floor(grown) end
  return base + math.floor(base * cfg.jitter * draw / 1e6)
end

-- ctx: {ns, name, channel} for the event.
local function br_transition(b, k, cfg, now, to, reason, draw, ctx)
  local from = b.st
  b.st = to
  b.g = b.g + 1
  br_reset_window(b, k, cfg)
  b.permits = {}
  b.tc, b.tf, b.ts = 0, 0, 0
  local retry = 0
  if to == 'open' then
    b.op = b.op + 1
    retry = br_wait(cfg, b.op, draw)
    b.ou = now + retry
  elseif to == 'closed' then
    b.op = 0
  end
  b.dirty = true
  redis.call('XADD', k.e, 'MAXLEN', '~', '1000', '*', 'from', from, 'to', to,
    'at', fmt(now), 'reason', reason, 'generation', fmt(b.g), 'retry_after', fmt(retry))
  redis.call('PUBLISH', ctx.channel, cjson.encode({
    ns = ctx.ns, breaker = ctx.name, from = from, to = to, at = fmt(now), reason = reason,
    generation = fmt(b.g), retry_after = fmt(retry)}))
  BR_EVENTS[#BR_EVENTS + 1] = {ctx.name, from, to, reason}
end

-- OPEN past its wait becomes HALF_OPEN; expired trial permits are dropped.
local function br_advance(b, k, cfg, now, ctx)
  if b.st == 'open' and now >= b.ou then
    br_transition(b, k, cfg, now, 'half_open', 'wait_elapsed', 0, ctx)
  end
  if b.st == 'half_open' then
    local live = {}
    for _, e in ipairs(b.permits) do
      if e > now then live[#live + 1] = e end
    end
    if #live ~= #b.permits then
      b.permits = live
      b.dirty = true
    end
  end
end

-- Admission after br_advance: returns allowed (0/1), retry_after. Takes nothing.
local function br_admit(b, cfg, now)
  if b == nil then return 1, 0 end
  local st = b.st
  if st == 'closed' or st == 'disabled' or st == 'metrics_only' then return 1, 0 end
  if st == 'open' then return 0, b.ou - now end
  if st == 'forced_open' then return 0, cfg.wait end
  -- half_open
  if #b.permits + b.tc < cfg.hoc then return 1, 0 end
  if #b.permits > 0 then return 0, b.permits[1] - now end
  return 0, 0
end

-- Takes the trial permit of an admitted HALF_OPEN call.
local function br_commit(b, cfg, now)
  if b == nil or b.st ~= 'half_open' then return end
  local expiry = now + cfg.homw
  local at = #b.permits + 1
  for i, e in ipairs(b.permits) do
    if e > expiry then at = i; break end
  end
  table.insert(b.permits, at, expiry)
  b.dirty = true
end

-- Count window: the last kk calls of a block of n calls with f failures and s slow calls,
-- failures and slow calls spread evenly over the block, written at the ring's position.
local function br_count_add(b, k, cfg, n, f, s)
  local size = cfg.size
  local kk = math.min(n, size)
  local chars = {}
  for j = 0, kk - 1 do
    local i = n - kk + j
    local code = 0
    if math.floor((i + 1) * f / n) > math.floor(i * f / n) then code = 1 end
    if math.floor((i + 1) * s / n) > math.floor(i * s / n) then code = code + 2 end
    chars[j + 1] = string.char(48 + code)
  end
  local j = 0
  while j < kk do
    local idx = (b.pos + j) % size
    local len = math.min(kk - j, size - idx)
    -- the calls these positions held leave the window
    local old = redis.call('GETRANGE', k.w, idx, idx + len - 1)
    for t = 1, #old do
      local code = string.byte(old, t) - 48
      b.c = b.c - 1
      b.f = b.f - code % 2
      b.s = b.s - math.floor(code / 2)
    end
    local chunk = table.concat(chars, '', j + 1, j + len)
    redis.call('SETRANGE', k.w, idx, chunk)
    for t = 1, len do
      local code = string.byte(chunk, t) - 48
      b.c = b.c + 1
      b.f = b.f + code % 2
      b.s = b.s + math.floor(code / 2)
    end
    j = j + len
  end
  b.pos = (b.pos + kk) % size
  b.fil = math.min(b.fil + kk, size)
end

local function br_bucket(v)
  local ep, c, f, s = string.match(v, '^(%d+):(%d+):(%d+):(%d+)$')
  return tonumber(ep), tonumber(c), tonumber(f), tonumber(s)
end

-- Time window: totals after moving the head to now's second (writes them when `write`).
local function br_time_advance(b, k, cfg, now, write)
  local e = math.floor(now / 1000000)
  local c, f, s = b.c, b.f, b.s
  if e > b.hd then
    if e - b.hd >= cfg.size then
      c, f, s = 0, 0, 0
    else
      for ep = b.hd + 1, e do
        local v = redis.call('HGET', k.w, tostring(ep % cfg.size))
        if v then
          local bep, bc, bf, bs = br_bucket(v)
          if bep + cfg.size == ep then c, f, s = c - bc, f - bf, s - bs end
        end
      end
    end
    if write then b.c, b.f, b.s, b.hd = c, f, s, e end
  end
  return c, f, s
end

local function br_time_add(b, k, cfg, now, n, f, s)
  local e = math.floor(now / 1000000)
  local field = tostring(e % cfg.size)
  local v = redis.call('HGET', k.w, field)
  local c0, f0, s0 = 0, 0, 0
  if v then
    local bep, bc, bf, bs = br_bucket(v)
    if bep == e then c0, f0, s0 = bc, bf, bs end
  end
  redis.call('HSET', k.w, field, fmt(e) .. ':' .. fmt(c0 + n) .. ':' .. fmt(f0 + f) .. ':' .. fmt(s0 + s))
  b.c, b.f, b.s = b.c + n, b.f + f, b.s + s
end

local function br_reached(part, threshold, whole)
  return part * 100 >= threshold * whole
end

-- Reporters of failures or slow calls (only kept while minimum_reporters > 1).
local function br_track_reporter(k, cfg, now, reporter, f, s)
  if f > 0 or s > 0 then redis.call('ZADD', k.r, fmt(now), reporter) end
  if cfg.window == 'time' then
    redis.call('ZREMRANGEBYSCORE', k.r, '-inf', fmt(now - cfg.size * 1000000))
  end
  local card = redis.call('ZCARD', k.r)
  if card > 256 then redis.call('ZREMRANGEBYRANK', k.r, 0, card - 257) end
  return redis.call('ZCARD', k.r)
end

-- Records n calls (f failed, s slow), `released` permits handed back, reported in
-- generation `gen` (0: current) by `reporter`. Returns the breaker and accepted (0/1).
local function br_report(b, k, cfg, now, n, f, s, released, gen, reporter, draw, ctx)
  if b == nil then b = br_fresh(k, cfg) end
  br_advance(b, k, cfg, now, ctx)
  if gen ~= 0 and gen ~= b.g then return b, 0 end
  local st = b.st
  if st == 'closed' or st == 'metrics_only' then
    if b.ws ~= br_sig(cfg) then br_reset_window(b, k, cfg) end
    if cfg.window == 'time' then
      br_time_advance(b, k, cfg, now, true)
      if n > 0 then br_time_add(b, k, cfg, now, n, f, s) end
    elseif n > 0 then
      br_count_add(b, k, cfg, n, f, s)
    end
    b.dirty = true
    local reporters = 0
    if cfg.minrep > 1 then reporters = br_track_reporter(k, cfg, now, reporter, f, s) end
    if st == 'closed' and b.c >= cfg.min_calls then
      local reason = nil
      if br_reached(b.f, cfg.fthr, b.c) then
        reason = 'failure_rate'
      elseif br_reached(b.s, cfg.sthr, b.c) then
        reason = 'slow_call_rate'
      end
      if reason and (cfg.minrep <= 1 or reporters >= cfg.minrep) then
        br_transition(b, k, cfg, now, 'open', reason, draw, ctx)
      end
    end
  elseif st == 'half_open' then
    local drop = math.min(released, #b.permits)
    drop = drop + math.min(n, #b.permits - drop)
    if drop > 0 then
      local rest = {}
      for i = drop + 1, #b.permits do rest[#rest + 1] = b.permits[i] end
      b.permits = rest
    end
    b.tc, b.tf, b.ts = b.tc + n, b.tf + f, b.ts + s
    b.dirty = true
    local whole = math.max(cfg.hoc, b.tc)
    local left = math.max(cfg.hoc - b.tc, 0)
    if br_reached(b.tf, cfg.fthr, whole) then
      br_transition(b, k, cfg, now, 'open', 'trial_failures', draw, ctx)
    elseif br_reached(b.ts, cfg.sthr, whole) then
      br_transition(b, k, cfg, now, 'open', 'trial_slow_calls', draw, ctx)
    elseif not br_reached(b.tf + left, cfg.fthr, whole) and not br_reached(b.ts + left, cfg.sthr, whole) then
      br_transition(b, k, cfg, now, 'closed', 'trial_success', draw, ctx)
    end
  end
  return b, 1
end

-- The breaker as read: {exists, state, generation, calls, failures, slow, retry_after,
-- permits in flight, consecutive opens, failing reporters}.
local function br_info(b, k, cfg, now)
  if b == nil then return {0, 'closed', 1, 0, 0, 0, 0, 0, 0, 0} end
  local c, f, s = 0, 0, 0
  if b.st == 'half_open' then
    c, f, s = b.tc, b.tf, b.ts
  elseif b.ws == br_sig(cfg) then
    if cfg.window == 'time' then
      c, f, s = br_time_advance(b, k, cfg, now, false)
    else
      c, f, s = b.c, b.f, b.s
    end
  end
  local retry = 0
  if b.st == 'open' then
    retry = math.max(b.ou - now, 0)
  elseif b.st == 'half_open' and #b.permits + b.tc >= cfg.hoc and #b.permits > 0 then
    retry = math.max(b.permits[1] - now, 0)
  end
  local reporters
  if cfg.window == 'time' then
    reporters = redis.call('ZCOUNT', k.r, '(' .. fmt(now - cfg.size * 1000000), '+inf')
  else
    reporters = redis.call('ZCARD', k.r)
  end
  return {1, b.st, b.g, c, f, s, retry, #b.permits, b.op, reporters}
end

-- BR_EVENTS flattened for a reply: count, then breaker, from, to, reason per transition.
local function br_events_reply(out)
  out[#out + 1] = #BR_EVENTS
  for _, ev in ipairs(BR_EVENTS) do
    for _, v in ipairs(ev) do out[#out + 1] = v end
  end
  return out
end
