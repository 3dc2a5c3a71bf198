-- prelude.lua (migrations): what every migration script shares; prepended to each one at
-- build time by server/src/store/redis/schema.rs.
--
-- KEYS[1]  the schema key `<prefix>:schema`: a hash, never a TTL
--            version      the schema the store holds (an integer)
--            applied_at   when the last migration ran (Unix seconds, Redis TIME)
--            by           the floodgate version that ran it
--            applied:<N>  one history entry per migration: "<unix seconds> <name> by floodgate <version>"
-- ARGV[1]  N, the version this migration produces
-- ARGV[2]  the floodgate version running it
-- ARGV[3]  the migration's name
--
-- Contract of a migration: it runs only on a store at version N-1 (no schema key counts
-- as 0, an empty store) and writes version N in the same script, so it is atomic, and a
-- second run, or a concurrent one from another server, is a no-op.
-- Returns 1 when it applied, 0 when the store was already at N or later, and an error
-- when the store is below N-1 (an earlier migration is missing) or its schema key is not
-- one floodgate wrote.

local SCHEMA = KEYS[1]
local TARGET = tonumber(ARGV[1])

-- The version the store holds: 0 without a schema key; an error reply when unreadable.
local function schema_version()
  local kind = redis.call('TYPE', SCHEMA)['ok']
  if kind == 'none' then return 0 end
  if kind ~= 'hash' then
    return nil, redis.error_reply('ERR schema key ' .. SCHEMA .. ' is a ' .. kind .. ', not a hash')
  end
  local raw = redis.call('HGET', SCHEMA, 'version')
  local v = tonumber(raw)
  if not v or v < 0 or v ~= math.floor(v) then
    return nil, redis.error_reply('ERR schema key ' .. SCHEMA .. ' has version ' .. tostring(raw) .. ', not a whole number')
  end
  return v
end

-- nil when this migration should run now; otherwise the reply the script returns at once
-- (0: already applied; an error: the store is not at N-1).
local function schema_begin()
  local v, err = schema_version()
  if err then return err end
  if v >= TARGET then return 0 end
  if v ~= TARGET - 1 then
    return redis.error_reply(string.format(
      'ERR migration %d needs schema %d, the store holds %d; apply the missing migrations first',
      TARGET, TARGET - 1, v))
  end
  return nil
end

-- Records version N (and its history entry); returns 1.
local function schema_commit()
  local now = redis.call('TIME')[1]
  redis.call('HSET', SCHEMA,
    'version', TARGET,
    'applied_at', now,
    'by', ARGV[2],
    'applied:' .. TARGET, now .. ' ' .. ARGV[3] .. ' by floodgate ' .. ARGV[2])
  redis.call('PERSIST', SCHEMA)
  return 1
end
