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
-- ARGV[4..] per job, 12 values: id, payload, priority, delay_ms|'', eta_ms|'', max_attempts,
--           idempotency key|'', key_ttl_ms (0: the key never expires), executor ('thread',
--           'process', or '' for async: see fetch.lua), group spec|'' (a job under limits or
--           a fair or ordered key: see "Groups and limiters" in lib/common.lua), key mode
--           (see below), max_wait_ms|'' (debounce: latest start, counted from the pending
--           job's enqueue)
--
-- Key modes (docs/flow-control.md). A key that lives names the job that took it; whether it
-- still holds is decided here, from that job's state, so no other script frees keys:
--   ''          plain idempotency key: holds while it lives (ack sets its TTL to the result's)
--   'throttle'  holds while it lives (its TTL is the period; the record keeps no 'k', so
--               ack leaves it alone)
--   'start'     holds while the job waits to start: waiting, scheduled, queued
--   'success'   holds until the job ends: anything but succeeded, dead, cancelled or gone
--   'debounce'  while the job is pending (scheduled or queued) it takes the new payload and
--               waits again, until now + delay_ms but not past its enqueue time + max_wait_ms
-- A key that holds returns the named job's id (created 0); one that does not is taken by the
-- new job.
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

local WAITS = {waiting = true, scheduled = true, queued = true}
local ENDED = {succeeded = true, dead = true, cancelled = true}

-- Whether a key of mode `mode` that names job `held` still holds it, for a new job with
-- payload `p`, delay and max_wait (a debounce merges into the held job here).
local function holds(mode, held, p, delay, max_wait)
  if mode == '' or mode == 'throttle' then return true end
  local pk = prefix .. 'job:' .. held
  local j = redis.call('HMGET', pk, 's', 'e', 'g')
  local s = j[1]
  if mode == 'start' then return WAITS[s] == true end
  if mode == 'success' then return s ~= false and not ENDED[s] end
  if s ~= 'scheduled' and s ~= 'queued' then return false end -- debounce: not pending
  local due = now + (tonumber(delay) or 0)
  local e = tonumber(j[2])
  if max_wait ~= '' and e then due = math.max(now, math.min(due, e + tonumber(max_wait))) end
  redis.call('HSET', pk, 'p', p, 's', 'scheduled', 'd', due)
  unready(prefix, held, j[3])
  redis.call('ZADD', scheduled, due, held)
  tell(prefix, 'scheduled', held)
  return true
end

for i = 4, #ARGV, 12 do
  local id, key, mode = ARGV[i], ARGV[i + 6], ARGV[i + 10]
  local jk = prefix .. 'job:' .. id
  local existing = false
  if key ~= '' then
    -- pcall: a key of another type (written by someone else) must not abort the batch half-way
    -- through its writes; it holds no job id and is overwritten below.
    existing = redis.pcall('GET', prefix .. 'key:' .. key)
    if type(existing) == 'table' then existing = false end
    if existing and not holds(mode, existing, ARGV[i + 1], ARGV[i + 3], ARGV[i + 11]) then
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
    local rs, due, g = new_job(prefix, now, maxprio, seq, ARGV, i, mode == 'throttle')
    if due > now then
      later[#later + 1] = due
      later[#later + 1] = id
      tell(prefix, 'scheduled', id)
    elseif g then
      to_ready(prefix, id, rs, g)
      tell(prefix, 'queued', id)
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
if created > 0 then push_wake(wake) end
tell_all(prefix, now)
return out
