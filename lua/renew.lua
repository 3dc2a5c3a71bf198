-- renew.lua: extend a live concurrency lease. Twin of core::concurrency::renew.
-- Assembled after prelude.lua and concurrency.lua.
--
-- KEYS[1]  the lease set
-- ARGV[1]  lease member "<cost>~<id>"
-- ARGV[2]  explicit now (tests only) or ''
-- ARGV[3]  new lifetime from now, microseconds
-- returns the lifetime granted, or -1 when the lease had expired or never existed
local now = clock(ARGV[2])
local ttl = tonumber(ARGV[3])
refresh_leases(KEYS[1], now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return -1 end
redis.call('ZADD', KEYS[1], 'XX', fmt(now + ttl), ARGV[1])
refresh_leases(KEYS[1], now)
return ttl
