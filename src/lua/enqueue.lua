-- enqueue.lua: write a batch of jobs in one call (ready now, or scheduled when due later).
-- A job whose idempotency key still lives is not written; the existing job's id is returned.
-- A job whose id already has a record is not written either (created 0): the id is the unit of
-- idempotency, so a producer may resend a batch whose reply it never saw.
-- The per-queue sequence is advanced once for the batch; ready score = band * 2^40 + seq, so
-- order is priority first and FIFO within one priority. Idle waiters are woken.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] seq        STRING per-queue FIFO counter
-- KEYS[4] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q#0}:' (job and idempotency keys are built from it)
-- ARGV[2] count      number of jobs in the batch
-- ARGV[3] max_prio   MAX_PRIORITY (priority bands are counted down from it)
-- ARGV[4..] per job, 11 values: id, payload, priority, delay_ms|'', eta_ms|'', max_attempts,
--           idempotency key|'', key_ttl_ms (0: the key never expires), executor ('thread',
--           'process', or '' for async: see fetch.lua), key mode ('' plain, 'start',
--           'success', 'throttle', 'debounce'; see `free_key` in lib/common.lua), max_wait_ms|''
--           (debounce: latest start, counted from the pending job's enqueue)
--
-- A debounce key that names a job still pending (scheduled or queued) does not create a job:
-- the pending one takes the new payload and waits again, until now + delay_ms, but not past
-- its enqueue time + max_wait_ms (created 0, its id returned).
--
-- Output: flat array, per job: id, created (1 new; 0 when the idempotency key matched an
--         existing job, whose id is returned, or a record with this id exists already)
-- Errors: none (arguments are validated by the caller; the only record fields read, a pending
--         debounce job's 's' and 'e', are checked before use)
-- The record itself is written by `new_job` (lib/common.lua), which fire.lua shares.

local ready, scheduled, seqkey, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, count, maxprio = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t, now = redis_now()
local seq = redis.call('INCRBY', seqkey, count) - count
local out, created = {}, 0
-- Set entries are gathered and added with one ZADD per set: one command instead of one per job.
local now_ready, later = {}, {}

-- Debounce: the pending job `pid` takes the new payload `p` and waits again; false when `pid`
-- is not pending any more (then a new job is written).
local function debounce(pid, p, delay, max_wait)
  local pk = prefix .. 'job:' .. pid
  local j = redis.call('HMGET', pk, 's', 'e')
  if j[1] ~= 'scheduled' and j[1] ~= 'queued' then return false end
  local due = now + (tonumber(delay) or 0)
  local e = tonumber(j[2])
  if max_wait ~= '' and e then due = math.max(now, math.min(due, e + tonumber(max_wait))) end
  redis.call('HSET', pk, 'p', p, 's', 'scheduled', 'd', due)
  redis.call('ZREM', ready, pid)
  redis.call('ZADD', scheduled, due, pid)
  tell(prefix, 'scheduled', pid)
  return true
end

for i = 4, #ARGV, 11 do
  local id, key, mode = ARGV[i], ARGV[i + 6], ARGV[i + 9]
  local jk = prefix .. 'job:' .. id
  local existing = false
  if key ~= '' then
    -- pcall: a key of another type (written by someone else) must not abort the batch half-way
    -- through its writes; it holds no job id and is overwritten below.
    existing = redis.pcall('GET', prefix .. 'key:' .. key)
    if type(existing) == 'table' then existing = false end
    if existing and mode == 'debounce' and
        not debounce(existing, ARGV[i + 1], ARGV[i + 3], ARGV[i + 10]) then
      existing = false
    end
  end
  -- One EXISTS per job, inside this call: a resent job is never written twice.
  if not existing and redis.call('EXISTS', jk) == 1 then existing = id end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    seq = seq + 1
    local rs, due = new_job(prefix, now, maxprio, seq, ARGV, i)
    if mode ~= '' then redis.call('HSET', jk, 'km', mode) end
    if due > now then
      later[#later + 1] = due
      later[#later + 1] = id
      tell(prefix, 'scheduled', id)
    else
      now_ready[#now_ready + 1] = rs
      now_ready[#now_ready + 1] = id
      tell(prefix, 'queued', id)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
    created = created + 1
  end
end

if #now_ready > 0 then redis.call('ZADD', ready, unpack(now_ready)) end
if #later > 0 then redis.call('ZADD', scheduled, unpack(later)) end

-- Wake even for scheduled jobs: a waiter may be sleeping past the new job's due time.
if created > 0 and redis.call('LLEN', wake) == 0 then
  redis.call('RPUSH', wake, 1)
end
tell_all(prefix, now)
return out
