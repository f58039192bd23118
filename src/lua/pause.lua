-- pause.lua: pause or resume a queue. While its `paused` key exists, fetch leases nothing
-- from the queue (jobs are still enqueued, and due ones still promoted by reap); running jobs
-- run on. Resuming wakes the queue's waiters, so idle workers take up its jobs at once.
--
-- KEYS[1] paused     STRING that exists while the queue is paused (value: since when, ms)
-- KEYS[2] wake       LIST holding at most one wake token
-- ARGV[1] op         'pause' | 'resume'
--
-- Output: integer: 1 changed, 0 already so
-- Errors: unknown op

local paused, wake, op = KEYS[1], KEYS[2], ARGV[1]
if op == 'pause' then
  local _, now = redis_now()
  if redis.call('SET', paused, now, 'NX') then return 1 end
  return 0
elseif op == 'resume' then
  if redis.call('DEL', paused) == 0 then return 0 end
  push_wake(wake)
  return 1
end
return redis.error_reply('unknown op ' .. tostring(op))
