-- reap.lua: recover expired leases, promote due scheduled jobs, trim old dead letters.
-- An expired lease always gets its token bumped (the old holder's ack/fail is refused) and its
-- stall count (field 'sl') incremented. On reaching max_stalls the job goes dead with reason
-- 'lease_expired', else back to ready at its original position. Stalls are counted apart from
-- retries so a crash re-runs even a job with no retries. Work per call is bounded (1000 per set); callers reap periodically.
-- A record whose token, stall count or (when requeued or promoted) ready score cannot be read
-- (missing, or not a whole number) is dead-lettered with reason 'corrupt_record' and counted in
-- `dead`; its fields are checked before anything is written for it. Dead-lettered ids are
-- published as ended (see `ended` in lib/common.lua); a dead-lettered flow member tells the
-- members waiting on it (`follow_up`).
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] scheduled  ZSET id -> due ms
-- KEYS[4] dead       ZSET id -> time of death ms
-- KEYS[5] wake       LIST holding at most one wake token
-- KEYS[6] claim      STRING: who reaps this partition now (set NX with an expiry)
-- KEYS[7] outbox     LIST of deliveries for flow members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] dead_ttl_ms  dead records and dead-set entries older than this go (0: keep forever)
-- ARGV[3] max_stalls   lease expiries after which the job is dead-lettered
-- ARGV[4] claim_ms     > 0: reap only if no claim is held, then hold it this long, so N workers
--                      ticking every claim_ms reap the partition about once per claim_ms between
--                      them; 0: reap unconditionally (admin calls, tests)
-- ARGV[5] claimant     stored in the claim (a worker id), for inspection
--
-- Output: array: requeued, dead, ran (0 when another claim was held and nothing was done)
-- Errors: none (ids whose job hash vanished are dropped from the sets; corrupt records are
--         dead-lettered, see above)

local active, ready, scheduled, dead, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, ttl, max_stalls = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local claim_ms = tonumber(ARGV[4])
if claim_ms > 0 and not redis.call('SET', KEYS[6], ARGV[5], 'NX', 'PX', claim_ms) then
  return {0, 0, 0}
end
local t, now = redis_now()
local requeued, died = 0, 0
local buried = {} -- dead-lettered here, published as ended

-- Dead-letter a job: `err` is its error record, `fields` what else its record gets.
local function bury(jk, id, err, fields)
  redis.call('HSET', jk, 's', 'dead', 'x', err, 'f', now, unpack(fields))
  redis.call('ZADD', dead, now, id)
  if ttl > 0 then redis.call('PEXPIRE', jk, ttl) end
  died = died + 1
  buried[died] = id
  tell(prefix, 'dead', id)
  local fo = redis.call('HGET', jk, 'fo')
  if fo then follow_up(prefix, ready, wake, KEYS[7], id, fo, false, err, now) end
end

local expired = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 'rs', 't', 'sl', 'g', 'L')
  local token, stalls = whole(j[2]), 0
  -- The run is over, whatever comes of the job: its limiter slots are free.
  if j[5] then free(prefix, j[5]) end
  if j[3] then stalls = whole(j[3]) end
  if not (j[1] or j[2] or j[3] or j[4]) and redis.call('EXISTS', jk) == 0 then
    -- The record vanished: only its set entry goes.
  elseif not token then
    bury(jk, id, corrupt('t', j[2]), {})
  elseif not stalls then
    bury(jk, id, corrupt('sl', j[3]), {})
  else
    token, stalls = token + 1, stalls + 1
    if stalls >= max_stalls then
      local err = cmsgpack.pack({type = 'LeaseExpired', traceback = '', reason = 'lease_expired',
        message = 'lease expired ' .. stalls .. ' times: the worker stopped heartbeating'})
      bury(jk, id, err, {'t', token, 'sl', stalls})
    elseif not whole(j[1]) then
      bury(jk, id, corrupt('rs', j[1]), {'t', token, 'sl', stalls})
    else
      redis.call('HSET', jk, 's', 'queued', 't', token, 'sl', stalls)
      to_ready(prefix, id, j[1], j[4])
      requeued = requeued + 1
      tell(prefix, 'queued', id)
    end
  end
end
if #expired > 0 then redis.call('ZREM', active, unpack(expired)) end

local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local jk = prefix .. 'job:' .. id
  local v = redis.call('HMGET', jk, 'rs', 'g')
  local rs = v[1]
  if whole(rs) then
    to_ready(prefix, id, rs, v[2])
    redis.call('HSET', jk, 's', 'queued')
    tell(prefix, 'queued', id)
  elseif redis.call('EXISTS', jk) == 1 then
    bury(jk, id, corrupt('rs', rs), {})
  end
end
if #due > 0 then redis.call('ZREM', scheduled, unpack(due)) end

if ttl > 0 then
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now - ttl, 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do redis.call('DEL', prefix .. 'job:' .. id) end
  if #old > 0 then redis.call('ZREM', dead, unpack(old)) end
end

commit_frees(prefix, now)
ended(prefix, buried)
if requeued + #due > 0 then push_wake(wake) end
tell_all(prefix, now)
return {requeued, died, 1}
