-- prelude.lua: helpers shared by every floodgate script (prepended at build time).
--
-- Times are integer microseconds held in Lua doubles (exact below 2^53, i.e. for ~285
-- years since 1970). Numbers are written to Redis with fmt() so they never turn into
-- exponent notation. The clock is Redis TIME; an explicit `now` comes only from tests,
-- and then every TTL gets 60 s of slack so a key never expires before the test's clock
-- says it should.

local function fmt(n)
  return string.format('%.0f', n)
end

local TTL_SLACK_MS = 0

-- The fleet's clock: Redis TIME, or the explicit test clock when `given` is not empty.
local function clock(given)
  if given ~= nil and given ~= '' then
    TTL_SLACK_MS = 60000
    return tonumber(given)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Expire `key` `us` microseconds from now (rounded up to whole milliseconds, at least 1).
local function expire_in(key, us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then ms = 1 end
  redis.call('PEXPIRE', key, fmt(ms + TTL_SLACK_MS))
end
