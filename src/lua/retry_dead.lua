-- retry_dead.lua: move dead jobs back to ready at their original position with attempts reset
-- to 0, token bumped, record made persistent again. Either the given ids, or (none given) the
-- `limit` oldest dead jobs; callers loop until a call processes fewer than `limit`, or keeps
-- every entry it looked at. A dead record whose token or ready score cannot be read (missing,
-- or not a whole number) cannot be requeued safely: it stays dead, in the dead set, and is
-- counted in `kept` (fix the field or purge it). Attempts and stalls are reset, so a record
-- dead-lettered for a corrupt one of those is repaired by a retry.
--
-- KEYS[1] dead       ZSET id -> time of death ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] limit      how many of the oldest dead jobs to take when no ids are given
-- ARGV[3..] ids      explicit job ids (optional)
--
-- Output: array: moved, processed (dead-set entries looked at), kept (corrupt, left dead)
-- Errors: none (ids that are not dead are skipped)

local dead, ready, wake = KEYS[1], KEYS[2], KEYS[3]
local prefix, limit = ARGV[1], tonumber(ARGV[2])
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then ids = redis.call('ZRANGE', dead, 0, limit - 1) end
local moved, kept = 0, 0

for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'rs', 'g')
  local token = whole(j[2])
  if j[1] == 'dead' and not (token and whole(j[3])) then
    kept = kept + 1
  elseif j[1] == 'dead' then
    redis.call('HSET', jk, 's', 'queued', 'a', 0, 'sl', 0, 't', token + 1, 'c', 0)
    redis.call('PERSIST', jk)
    to_ready(prefix, id, j[3], j[4])
    redis.call('ZREM', dead, id)
    moved = moved + 1
    tell(prefix, 'queued', id)
  elseif not j[1] then
    -- The record already expired: drop the entry, so the dead set cannot leak.
    redis.call('ZREM', dead, id)
  end
end

if moved > 0 then push_wake(wake) end
if moved > 0 then
  local _, now = redis_now()
  tell_all(prefix, now)
end
return {moved, #ids, kept}
