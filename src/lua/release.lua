-- release.lua: hand a batch of leased jobs back without counting the attempt (attempts - 1); the
-- token is bumped so the old lease is dead. A lease without a delay goes back to ready at its
-- original position (a graceful shutdown); one with a delay waits in scheduled until now + delay,
-- state 'scheduled' (a task that snoozed: `raise asyncq.Snooze(seconds)`), and keeps its ready
-- score for when it is promoted.
-- A record whose attempts or ready score cannot be read (missing, or not a whole number) cannot
-- be put back: it is dead-lettered with reason 'corrupt_record' instead (reply 2); the fields are
-- checked before anything is written. Such a dead letter is trimmed by reap after dead_ttl_ms.
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] wake       LIST holding at most one wake token
-- KEYS[4] dead       ZSET id -> time of death ms
-- KEYS[5] scheduled  ZSET id -> due ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2..] per lease, 4 values: id, token, delay_ms ('' for none: back to ready now),
--           push key ('1': `current_job().rate_limited(delay)`: instead of waiting alone, the
--           job goes back to its group, first in line, and its key's limiters hold every
--           job of the key for delay_ms; a job without limiters just waits as for a snooze)
--
-- Output: array, per lease: 1 released, 2 dead-lettered (corrupt record), or an error code
-- Errors: -1 stale token (or job not running), -2 job missing

local active, ready, wake, dead, scheduled = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local out, released = {}, 0
local _, now = redis_now()

-- Dead-letter a record whose `field` cannot be read (`value`: what it holds, false if absent).
local function dead_letter(jk, id, field, value)
  redis.call('HSET', jk, 's', 'dead', 'x', corrupt(field, value), 'f', now)
  redis.call('ZREM', active, id)
  redis.call('ZADD', dead, now, id)
  tell(prefix, 'dead', id)
end

for i = 2, #ARGV, 4 do
  local id, token, delay, push_key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3] == '1'
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'a', 'rs', 'g', 'L')
  local a, rs = whole(j[3]), whole(j[4])
  if not j[1] then
    out[#out + 1] = -2
  elseif j[1] ~= 'running' or j[2] ~= token then
    out[#out + 1] = -1
  elseif not a then
    dead_letter(jk, id, 'a', j[3])
    free(prefix, j[6])
    out[#out + 1] = 2
  elseif not rs then
    dead_letter(jk, id, 'rs', j[4])
    free(prefix, j[6])
    out[#out + 1] = 2
  else
    -- The token matched ours, a decimal number, so it is safe to bump.
    local back = {'a', math.max(0, a - 1), 't', tonumber(j[2]) + 1}
    redis.call('ZREM', active, id)
    free(prefix, j[6])
    local held = {}
    if delay ~= '' and push_key and j[5] then held = key_limiters(j[5]) end
    if #held > 0 then
      -- The key is pushed back: its limiters hold every job of it (this one first in line).
      -- A job with no limiter to hold (a fair key alone, a queue's limit) snoozes instead.
      for _, inst in ipairs(held) do
        hold(prefix, inst, now + tonumber(delay), now)
      end
      redis.call('HSET', jk, 's', 'queued', unpack(back))
      to_ready(prefix, id, j[4], j[5])
      tell(prefix, 'queued', id)
    elseif delay ~= '' then
      local due = now + tonumber(delay)
      redis.call('HSET', jk, 's', 'scheduled', 'd', due, unpack(back))
      redis.call('ZADD', scheduled, due, id)
      tell(prefix, 'scheduled', id)
    else
      redis.call('HSET', jk, 's', 'queued', unpack(back))
      to_ready(prefix, id, j[4], j[5])
      tell(prefix, 'queued', id)
    end
    out[#out + 1] = 1
    released = released + 1
  end
end

commit_frees(prefix, now)
-- Woken for a snooze too: a waiter may be sleeping past its due time.
if released > 0 then push_wake(wake) end
tell_all(prefix, now)
return out
