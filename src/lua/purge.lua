-- purge.lua: delete up to `limit` jobs from each of the ready, scheduled and dead sets, and up
-- to `limit` jobs of grouped jobs waiting in their groups' sets, with their records and
-- idempotency keys. Running jobs are untouched. Callers loop while the reply says jobs remain.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] dead       ZSET id -> time of death ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] limit      most jobs taken from each set in this call
--
-- Output: array: deleted (jobs removed), remaining (jobs left in the sets)
-- Errors: none

local prefix, limit = ARGV[1], tonumber(ARGV[2])
local deleted, remaining = 0, 0

local function drop(ids)
  for _, id in ipairs(ids) do
    local jk = prefix .. 'job:' .. id
    local key = redis.call('HGET', jk, 'k')
    if key then redis.call('DEL', prefix .. 'key:' .. key) end
    redis.call('DEL', jk)
  end
end

for _, set in ipairs({KEYS[1], KEYS[2], KEYS[3]}) do
  local ids = redis.call('ZRANGE', set, 0, limit - 1)
  local jobs = {}
  for _, id in ipairs(ids) do
    if string.byte(id, 1) ~= 126 then jobs[#jobs + 1] = id end -- '~<gid>': a group, below
  end
  drop(jobs)
  if #jobs > 0 then redis.call('ZREM', set, unpack(jobs)) end
  deleted = deleted + #jobs
  remaining = remaining + redis.call('ZCARD', set)
end

-- Grouped jobs. A group left empty is forgotten; if it was parked, its entry in the limiter's
-- waiting list is found stale when woken (lib/common.lua, `group_ready`).
local gstat = prefix .. 'gstat'
local budget = limit
for _, gid in ipairs(redis.call('ZRANGE', prefix .. 'gset', 0, limit - 1)) do
  local gq = prefix .. 'gq:' .. gid
  local ids = {}
  if budget > 0 then ids = redis.call('ZRANGE', gq, 0, budget - 1) end
  drop(ids)
  if #ids > 0 then
    redis.call('ZREM', gq, unpack(ids))
    redis.call('HINCRBY', gstat, 'jobs', -#ids)
    budget = budget - #ids
    deleted = deleted + #ids
  end
  if redis.call('ZCARD', gq) == 0 then
    if redis.call('ZREM', KEYS[1], '~' .. gid) == 1 then
      redis.call('HINCRBY', gstat, 'ready', -1)
      remaining = remaining - 1
    end
    redis.call('DEL', prefix .. 'grp:' .. gid)
    redis.call('ZREM', prefix .. 'gset', gid)
  end
end
remaining = remaining + (tonumber(redis.call('HGET', gstat, 'jobs')) or 0)
return {deleted, math.max(0, remaining)}
