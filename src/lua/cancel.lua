-- cancel.lua: cancel one job. Waiting jobs (queued, scheduled, failed awaiting retry) become
-- 'cancelled' and leave every set; a running job gets a cancel flag, and its id is published on
-- prefix .. 'cancel' so its worker asks at once (the flag itself is what counts: a worker that
-- missed the message sees it at its next heartbeat); finished jobs are left alone. A job
-- cancelled here is published as ended.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] id         job id
-- ARGV[3] ttl_ms     how long a cancelled record is kept
--
-- Output: integer: 1 cancelled, 2 cancellation requested, 3 already finished, or an error code
-- Errors: -2 job missing

local ready, scheduled = KEYS[1], KEYS[2]
local prefix, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local jk = prefix .. 'job:' .. id
local state = redis.call('HGET', jk, 's')
if not state then return -2 end
if state == 'queued' or state == 'scheduled' or state == 'failed' then
  local _, now = redis_now()
  redis.call('HSET', jk, 's', 'cancelled', 'f', now)
  redis.call('ZREM', ready, id)
  redis.call('ZREM', scheduled, id)
  redis.call('PEXPIRE', jk, ttl)
  ended(prefix, {id})
  return 1
end
if state == 'running' then
  redis.call('HSET', jk, 'c', 1)
  redis.call('PUBLISH', prefix .. 'cancel', id)
  return 2
end
return 3
