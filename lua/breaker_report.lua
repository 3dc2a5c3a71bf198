-- breaker_report.lua: record one breaker's reported outcomes (CircuitBreakers.Report).
-- Assembled after prelude.lua and breaker.lua.
--
-- KEYS[1..4]  the breaker's state, window, reporters and events keys (breaker.lua)
-- ARGV[1]     explicit now in microseconds (tests only) or '' for Redis TIME
-- ARGV[2..4]  namespace, breaker name, events channel
-- ARGV[5]     jitter draw, 0..999999 (the server's random number)
-- ARGV[6..17] the breaker's 12 settings
-- ARGV[18..]  calls, failures, slow calls, released permits, generation (0: current),
--             reporter
-- returns {accepted (0/1), state, generation, then the transitions made}
local now = clock(ARGV[1])
local ctx = {ns = ARGV[2], name = ARGV[3], channel = ARGV[4]}
local k = br_keys(KEYS, 1)
local cfg = br_cfg(ARGV, 5)
local a = 6 + BR_CFG_ARGS
local b, accepted = br_report(br_load(k), k, cfg, now,
  tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]),
  tonumber(ARGV[a + 4]), ARGV[a + 5], tonumber(ARGV[5]), ctx)
br_save(b, k, now)
return br_events_reply({accepted, b.st, b.g})
