-- reap.lua: recover expired leases, promote due scheduled jobs, trim old dead letters.
-- An expired lease always gets its token bumped (the old holder's ack/fail is refused) and its
-- stall count (field 'sl') incremented. On reaching max_stalls the job goes dead with reason
-- 'lease_expired', else back to ready at its original position. Stalls are counted apart from
-- retries so a crash re-runs even a job with no retries. Work per call is bounded (1000 per set); callers reap periodically.
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] scheduled  ZSET id -> due ms
-- KEYS[4] dead       ZSET id -> time of death ms
-- KEYS[5] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q}:'
-- ARGV[2] dead_ttl_ms  dead records and dead-set entries older than this go (0: keep forever)
-- ARGV[3] max_stalls   lease expiries after which the job is dead-lettered
--
-- Output: array: requeued, dead
-- Errors: none (ids whose job hash vanished are dropped from the sets)

local active, ready, scheduled, dead, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, ttl, max_stalls = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local requeued, died = 0, 0

local expired = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 'a', 'rs', 't')
  if j[1] then
    local token = tonumber(j[3]) + 1
    local stalls = redis.call('HINCRBY', jk, 'sl', 1)
    if stalls >= max_stalls then
      local err = cmsgpack.pack({type = 'LeaseExpired', traceback = '', reason = 'lease_expired',
        message = 'lease expired ' .. stalls .. ' times: the worker stopped heartbeating'})
      redis.call('HSET', jk, 's', 'dead', 't', token, 'x', err, 'f', now)
      redis.call('ZADD', dead, now, id)
      if ttl > 0 then redis.call('PEXPIRE', jk, ttl) end
      died = died + 1
    else
      redis.call('HSET', jk, 's', 'queued', 't', token)
      redis.call('ZADD', ready, j[2], id)
      requeued = requeued + 1
    end
  end
end
if #expired > 0 then redis.call('ZREM', active, unpack(expired)) end

local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  local jk = prefix .. 'job:' .. id
  local rs = redis.call('HGET', jk, 'rs')
  if rs then
    redis.call('ZADD', ready, rs, id)
    redis.call('HSET', jk, 's', 'queued')
  end
end
if #due > 0 then redis.call('ZREM', scheduled, unpack(due)) end

if ttl > 0 then
  local old = redis.call('ZRANGEBYSCORE', dead, '-inf', now - ttl, 'LIMIT', 0, 1000)
  for _, id in ipairs(old) do redis.call('DEL', prefix .. 'job:' .. id) end
  if #old > 0 then redis.call('ZREM', dead, unpack(old)) end
end

if requeued + #due > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return {requeued, died}
