-- purge.lua: delete up to `limit` jobs from each of the ready, scheduled and dead sets, with
-- their records and idempotency keys. Running jobs are untouched. Callers loop while the reply
-- says jobs remain.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] dead       ZSET id -> time of death ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] limit      most jobs taken from each set in this call
--
-- Output: array: deleted (set entries removed), remaining (entries left in the three sets)
-- Errors: none

local prefix, limit = ARGV[1], tonumber(ARGV[2])
local deleted, remaining = 0, 0

for _, set in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  local ids = redis.call('ZRANGE', set, 0, limit - 1)
  for _, id in ipairs(ids) do
    local jk = prefix .. 'job:' .. id
    local key = redis.call('HGET', jk, 'k')
    if key then redis.call('DEL', prefix .. 'key:' .. key) end
    redis.call('DEL', jk)
  end
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
  deleted = deleted + #ids
  remaining = remaining + redis.call('ZCARD', set)
end
return {deleted, remaining}
