-- 0001_initial.lua: schema 1, the key layout in migrations/README.md ("Schema 1").
--
-- Schema 1 changes no data: every limit, lease and request key is created on first use
-- and expires when idle, so a store that floodgate used before the schema was versioned
-- already holds schema 1 and only lacks the record. This migration writes that record,
-- and is what `floodgate serve` runs to initialise an empty store (also one whose Redis
-- restarted empty while the server ran).
--
-- Assembled after prelude.lua: KEYS[1] the schema key; ARGV[1] = 1, ARGV[2] the floodgate
-- version, ARGV[3] = "initial".
local skip = schema_begin()
if skip then return skip end
return schema_commit()
