-- ack.lua: record a batch of successes. Accepted only for a 'running' job holding the token.
-- The record (and its idempotency key) then expires after result_ttl_ms. The accepted ids are
-- published on prefix .. 'done' (see `ended` in lib/common.lua). A flow member's result is
-- handed to the members waiting on it in the same call (`follow_up`): those of this queue at
-- once, those of other queues through the outbox.
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] stats      HASH lifetime counters
-- KEYS[3] ready      ZSET id -> ready score (flow members released here)
-- KEYS[4] wake       LIST holding at most one wake token
-- KEYS[5] outbox     LIST of deliveries for flow members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2..] per ack, 4 values: id, token, result, result_ttl_ms (0: keep forever)
--
-- Output: array, per ack: 1 accepted (11: and deliveries were added to the outbox), or an
--         error code
-- Errors: -1 stale token (or job not running), -2 job missing

local active, stats, ready, wake, outbox = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local t, now = redis_now()
local out, ok = {}, 0
local done = {} -- removed from the active set with one ZREM for the whole batch
local jp = prefix .. 'job:'
local told_here = watching(prefix) -- once per call; the loop tests a local

for i = 2, #ARGV, 4 do
  local id, token, ttl = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 3])
  local jk = jp .. id
  local j = redis.call('HMGET', jk, 's', 't', 'k', 'fo', 'L')
  local code = 1
  if not j[1] then
    code = -2
  elseif j[1] ~= 'running' or j[2] ~= token then
    code = -1
  else
    redis.call('HSET', jk, 's', 'succeeded', 'r', ARGV[i + 2], 'f', now)
    if j[5] then free(prefix, j[5]) end
    ok = ok + 1
    done[ok] = id
    if told_here then tell(prefix, 'succeeded', id) end
    if ttl > 0 then
      redis.call('PEXPIRE', jk, ttl)
      if j[3] then redis.call('PEXPIRE', prefix .. 'key:' .. j[3], ttl) end
    end
    if j[4] and follow_up(prefix, ready, wake, outbox, id, j[4], true, ARGV[i + 2], now) > 0 then
      code = 11
    end
  end
  out[(i + 2) / 4] = code
end

if ok > 0 then
  redis.call('ZREM', active, unpack(done))
  redis.call('HINCRBY', stats, 'succeeded', ok)
  ended(prefix, done)
end
commit_frees(prefix, now)
tell_all(prefix, now)
return out
