-- retry_dead.lua: move dead jobs back to ready at their original position with attempts reset
-- to 0, token bumped, record made persistent again. Either the given ids, or (none given) the
-- `limit` oldest dead jobs; callers loop until a call processes fewer than `limit`.
--
-- KEYS[1] dead       ZSET id -> time of death ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q}:'
-- ARGV[2] limit      how many of the oldest dead jobs to take when no ids are given
-- ARGV[3..] ids      explicit job ids (optional)
--
-- Output: array: moved, processed (dead-set entries looked at)
-- Errors: none (ids that are not dead are skipped)

local dead, ready, wake = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', dead, 0, limit - 1) end
local moved = 0

for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'rs')
  if j[1] == 'dead' then
    redis.call('HSET', jk, 's', 'queued', 'a', 0, 'sl', 0, 't', tonumber(j[2]) + 1, 'c', 0)
    redis.call('PERSIST', jk)
    redis.call('ZADD', ready, j[3], id)
    moved = moved + 1
  end
  -- Also drops entries whose record already expired, so the dead set cannot leak.
  if j[1] == 'dead' or not j[1] then redis.call('ZREM', dead, id) end
end

if moved > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return {moved, #ids}
