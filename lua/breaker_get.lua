-- breaker_get.lua: read one breaker (CircuitBreakers.Get and List). Writes only the lazy
-- steps (OPEN past its wait becomes HALF_OPEN, expired trial permits are dropped), and
-- nothing at all for a breaker without state.
-- Assembled after prelude.lua and breaker.lua.
--
-- KEYS[1..4]  the breaker's state, window, reporters and events keys (breaker.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..4]  namespace, breaker name, events channel
-- ARGV[5..16] the breaker's 12 settings
-- returns br_info's 10 values, then the transitions made
local now = clock(ARGV[1])
local ctx = {ns = ARGV[2], name = ARGV[3], channel = ARGV[4]}
local k = br_keys(KEYS, 1)
local cfg = br_cfg(ARGV, 4)
local b = br_load(k)
if b then
  br_advance(b, k, cfg, now, ctx)
  br_save(b, k, now)
end
return br_events_reply(br_info(b, k, cfg, now))
