-- delete.lua: delete one job that is not running: its record, its idempotency key (when the
-- key still names it) and its place in every set. A pending job (queued, scheduled, failed
-- awaiting a retry, waiting on flow parents) is withdrawn first, as cancel.lua withdraws it:
-- result waiters are told it ended and flow members waiting on it fail with reason 'deleted'.
-- A finished one (succeeded, dead, cancelled) leaves the dead set. A running job is refused:
-- cancel it first (its worker holds the lease and would write its outcome to nothing).
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] dead       ZSET id -> time of death ms
-- KEYS[4] wake       LIST holding at most one wake token
-- KEYS[5] outbox     LIST of deliveries for flow members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] id         job id
--
-- Output: integer: 1 deleted (11: and outbox entries were written; the Rust side relays them),
--         2 refused (running), or an error code
-- Errors: -2 job missing

local ready, scheduled, dead, wake, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, id = ARGV[1], ARGV[2]
local jk = prefix .. 'job:' .. id
local st = redis.call('HMGET', jk, 's', 'g', 'k')
local state = st[1]
if not state then return -2 end
if state == 'running' then return 2 end
local code = 1
if pending(state) then
  local _, now = redis_now()
  local err = cmsgpack.pack({type = 'JobDeleted', traceback = '', reason = 'deleted',
    message = 'deleted before it ran'})
  local before = redis.call('LLEN', outbox)
  withdraw(prefix, ready, scheduled, wake, outbox, id, st[2], err, now)
  if redis.call('LLEN', outbox) > before then code = 11 end
  tell_all(prefix, now)
end
redis.call('ZREM', dead, id)
if st[3] and redis.call('GET', prefix .. 'key:' .. st[3]) == id then
  redis.call('DEL', prefix .. 'key:' .. st[3])
end
redis.call('DEL', jk)
return code
