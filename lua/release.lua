-- release.lua: end a concurrency lease early. Twin of core::concurrency::release.
-- Assembled after prelude.lua and concurrency.lua.
--
-- KEYS[1]  the lease set
-- ARGV[1]  lease member "<cost>~<id>"
-- ARGV[2]  explicit now (tests only) or ''
-- returns 1 when the lease was live, 0 when it had expired or never existed
local now = clock(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
refresh_leases(KEYS[1], now)
if score and tonumber(score) > now then return 1 end
return 0
