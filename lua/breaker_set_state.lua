-- breaker_set_state.lua: an operator moves one breaker to a state (CircuitBreakers.SetState).
-- Creates the breaker when it has no state. Assembled after prelude.lua and breaker.lua.
--
-- KEYS[1..4]  the breaker's state, window, reporters and events keys (breaker.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..4]  namespace, breaker name, events channel
-- ARGV[5]     jitter draw, 0..999999
-- ARGV[6..17] the breaker's 12 settings
-- ARGV[18]    the state: closed, open, half_open, forced_open, disabled or metrics_only
-- returns br_info's 10 values after the change, then the transitions made
local now = clock(ARGV[1])
local ctx = {ns = ARGV[2], name = ARGV[3], channel = ARGV[4]}
local k = br_keys(KEYS, 1)
local cfg = br_cfg(ARGV, 5)
local b = br_load(k)
if b == nil then b = br_fresh(k, cfg) end
br_advance(b, k, cfg, now, ctx)
br_transition(b, k, cfg, now, ARGV[6 + BR_CFG_ARGS], 'set_state', tonumber(ARGV[5]), ctx)
br_save(b, k, now)
return br_events_reply(br_info(b, k, cfg, now))
