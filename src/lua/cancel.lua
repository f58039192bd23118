-- cancel.lua: cancel one job. Waiting jobs (queued, scheduled, failed awaiting retry) become
-- 'cancelled' and leave every set; a running job gets a cancel flag, and its id is published on
-- prefix .. 'cancel' so its worker asks at once (the flag itself is what counts: a worker that
-- missed the message sees it at its next heartbeat); finished jobs are left alone. A job
-- cancelled here is published as ended.
--
-- A flow member waiting on its parents is cancelled the same way, and a cancelled flow member
-- tells the members waiting on it (`follow_up`: under policy 'fail' they are not run either).
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] wake       LIST holding at most one wake token
-- KEYS[4] outbox     LIST of deliveries for flow members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] id         job id
-- ARGV[3] ttl_ms     how long a cancelled record is kept
--
-- Output: integer: 1 cancelled, 2 cancellation requested, 3 already finished, or an error code
-- Errors: -2 job missing

local ready, scheduled, wake, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local jk = prefix .. 'job:' .. id
local st = redis.call('HMGET', jk, 's', 'g')
local state = st[1]
if not state then return -2 end
if pending(state) then
  local _, now = redis_now()
  local err = cmsgpack.pack({type = 'JobCancelled', traceback = '', reason = 'cancelled',
    message = 'cancelled before it ran'})
  redis.call('HSET', jk, 's', 'cancelled', 'f', now)
  redis.call('PEXPIRE', jk, ttl)
  withdraw(prefix, ready, scheduled, wake, outbox, id, st[2], err, now)
  tell(prefix, 'cancelled', id)
  tell_all(prefix, now)
  return 1
end
if state == 'running' then
  redis.call('HSET', jk, 'c', 1)
  redis.call('PUBLISH', prefix .. 'cancel', id)
  return 2
end
return 3
