-- fire.lua: take one fire time of a periodic schedule: enqueue its job, or record why not.
-- Any number of schedulers may call this for the same fire time; the schedule's 'last' field
-- (the latest fire time taken, in ms) only moves forward, so each fire time is taken at most
-- once: the first call for it enqueues (or records a pass), every later one is told 'taken'.
-- A fire time is never taken before it is due by Redis' clock. While the schedule is paused a
-- due fire time is passed over (no catch-up of the pause). With mode 'skip' (overlap="skip")
-- the job is not enqueued while the schedule's previous job is still waiting or running
-- (queued, scheduled, running, or failed and waiting to retry).
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] seq        STRING per-queue FIFO counter
-- KEYS[4] wake       LIST holding at most one wake token
-- KEYS[5] cron       HASH of the schedule: def, last, job, paused, fired, skipped, created
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] max_prio   MAX_PRIORITY
-- ARGV[3] fire_ms    the fire time taken (unix ms)
-- ARGV[4] mode       'allow': enqueue; 'skip': enqueue unless the previous job is unfinished;
--                    'pass': take the fire time without enqueuing (a catch-up policy skipped it)
-- ARGV[5..14] the job: 10 values laid out as in enqueue.lua (its id names schedule and time)
--
-- Output: {code, ms}: 1 enqueued, 2 taken already (ms: the schedule's last fire time), 3 passed
--         over because paused, 4 passed over because the previous job is unfinished, 5 passed
--         (mode 'pass'), 0 not due yet (ms: Redis now), -2 no such schedule (removed); for
--         codes 1, 3, 4 and 5, ms is the fire time.
-- Errors: none

local ready, scheduled, seqkey, wake, cron = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, maxprio, fire, mode = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local t, now = redis_now()

if fire > now then return {0, now} end
local st = redis.call('HMGET', cron, 'last', 'paused', 'job', 'def')
if not st[4] then return {-2, 0} end
local last = tonumber(st[1]) or -1
if last >= fire then return {2, last} end

-- From here on the fire time is taken, whatever becomes of it.
local function taken(code, counter)
  redis.call('HSET', cron, 'last', fire)
  redis.call('HINCRBY', cron, counter, 1)
  return {code, fire}
end

if st[2] == '1' then return taken(3, 'skipped') end
if mode == 'pass' then return taken(5, 'skipped') end
if mode == 'skip' and st[3] then
  local s = redis.call('HGET', prefix .. 'job:' .. st[3], 's')
  if s == 'queued' or s == 'scheduled' or s == 'running' or s == 'failed' then
    return taken(4, 'skipped')
  end
end

local id = ARGV[5]
-- The id names the schedule and the fire time, and 'last' had not reached it: a record with it
-- exists only if it was written by someone else's enqueue; then it is not overwritten.
if redis.call('EXISTS', prefix .. 'job:' .. id) == 0 then
  local seq = redis.call('INCR', seqkey)
  local rs, due, g = new_job(prefix, now, maxprio, seq, ARGV, 5)
  if due > now then
    redis.call('ZADD', scheduled, due, id)
    tell(prefix, 'scheduled', id)
  else
    to_ready(prefix, id, rs, g)
    tell(prefix, 'queued', id)
  end
  push_wake(wake)
  tell_all(prefix, now)
end
redis.call('HSET', cron, 'job', id)
return taken(1, 'fired')
