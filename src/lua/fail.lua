-- fail.lua: record a batch of failures. With a retry delay and attempts left the job waits in
-- the scheduled set (state 'failed'); otherwise it is dead-lettered and its record expires after
-- dead_ttl_ms. Either way the lifetime 'failed' counter grows. A retry decision needs the
-- record's attempt counts: when one cannot be read (missing, or not a whole number) the job is
-- dead-lettered instead, with reason 'corrupt_record' (reply 2); nothing is written before the
-- fields are checked. Ids that end here (dead or cancelled) are published as ended, and a flow
-- member that ends here tells the members waiting on it (`follow_up` in lib/common.lua).
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] dead       ZSET id -> time of death ms
-- KEYS[4] stats      HASH lifetime counters
-- KEYS[5] wake       LIST holding at most one wake token
-- KEYS[6] ready      ZSET id -> ready score (flow members released here)
-- KEYS[7] outbox     LIST of deliveries for flow members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2..] per failure, 6 values: id, token, error record, retry_delay_ms|'' (none: dead now),
--           dead_ttl_ms (0: keep forever), cancelled (1: the run was cancelled on request; the
--           job ends 'cancelled', outside the dead set, and expires after dead_ttl_ms)
--
-- Output: array, per failure: 1 retrying, 2 dead, 3 cancelled (12, 13: dead or cancelled, and
--         deliveries were added to the outbox), or an error code
-- Errors: -1 stale token (or job not running), -2 job missing

local active, scheduled, dead, stats, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ready, outbox = KEYS[6], KEYS[7]
local prefix = ARGV[1]
local t, now = redis_now()
local out, failed, retrying = {}, 0, 0
local over = {} -- ids that ended here (dead or cancelled), published once

for i = 2, #ARGV, 6 do
  local id, token, err, delay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'a', 'm', 'fo', 'g', 'L', 'rs')
  if not j[1] then
    out[#out + 1] = -2
  elseif j[1] ~= 'running' or j[2] ~= token then
    out[#out + 1] = -1
  else
    -- Decide first (reading the counts only when a retry is possible), write after.
    local retry = false
    if ARGV[i + 5] ~= '1' and delay ~= '' then
      local a, m = whole(j[3]), whole(j[4])
      if not a then
        err = corrupt('a', j[3])
      elseif not m then
        err = corrupt('m', j[4])
      else
        retry = a < m
      end
    end
    redis.call('ZREM', active, id)
    local ttl = tonumber(ARGV[i + 4])
    -- An ordered key's job waiting to retry keeps its key: it goes back to its group, first
    -- in line, and the key's limiter holds the group until the retry is due.
    local ordered = retry and j[6] and whole(j[8]) and ordered_limiter(j[6])
    if ordered then hold(prefix, ordered, now + tonumber(delay), now) end
    free(prefix, j[7])
    if ARGV[i + 5] == '1' then
      redis.call('HSET', jk, 's', 'cancelled', 'x', err, 'f', now)
      if ttl > 0 then redis.call('PEXPIRE', jk, ttl) end
      out[#out + 1] = 3
      over[#over + 1] = id
      tell(prefix, 'cancelled', id)
    elseif ordered then
      redis.call('HSET', jk, 's', 'failed', 'x', err, 'd', now + tonumber(delay))
      to_ready(prefix, id, j[8], j[6])
      out[#out + 1] = 1
      retrying = retrying + 1
      tell(prefix, 'failed', id)
    elseif retry then
      local due = now + tonumber(delay)
      redis.call('HSET', jk, 's', 'failed', 'x', err, 'd', due)
      redis.call('ZADD', scheduled, due, id)
      out[#out + 1] = 1
      retrying = retrying + 1
      tell(prefix, 'failed', id)
    else
      redis.call('HSET', jk, 's', 'dead', 'x', err, 'f', now)
      redis.call('ZADD', dead, now, id)
      if ttl > 0 then redis.call('PEXPIRE', jk, ttl) end
      out[#out + 1] = 2
      over[#over + 1] = id
      tell(prefix, 'dead', id)
    end
    if j[5] and not retry and follow_up(prefix, ready, wake, outbox, id, j[5], false, err, now) > 0
    then
      out[#out] = out[#out] + 10
    end
    failed = failed + 1
  end
end

if failed > 0 then redis.call('HINCRBY', stats, 'failed', failed) end
commit_frees(prefix, now)
ended(prefix, over)
-- A retry may be due before a sleeping waiter's timeout: wake it to recompute.
if retrying > 0 then push_wake(wake) end
tell_all(prefix, now)
return out
