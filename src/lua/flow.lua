-- flow.lua: write the members of a flow (chain, group, chord) that live in this queue. A member
-- with parents is written 'waiting' and joins no set: it is released into the ready set once
-- every parent has delivered (see `deliver` in lib/common.lua). A member without parents is
-- ready (or scheduled) at once, as enqueue.lua writes a job. A member whose id already has a
-- record is not written (created 0), so a producer may resend the flow.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] seq        STRING per-queue FIFO counter
-- KEYS[4] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] max_prio   MAX_PRIORITY
-- ARGV[3..] per member, 13 values: the 10 of enqueue.lua, then parents (how many; 0: none),
--           mode ('one' or 'list': how the parents' results reach it), follow-ups ('fo'
--           lines: the edges to the members waiting on this one; '' for none)
--
-- Output: flat array, per member: id, created (1 new, 0 the id had a record)
-- Errors: none (arguments are validated by the caller)

local ready, scheduled, seqkey, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, maxprio = ARGV[1], tonumber(ARGV[2])
local t, now = redis_now()
local out, woken = {}, false

for i = 3, #ARGV, 13 do
  local id = ARGV[i]
  local jk = prefix .. 'job:' .. id
  if redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local seq = redis.call('INCR', seqkey)
    local rs, due, g = new_job(prefix, now, maxprio, seq, ARGV, i)
    local parents, fo = tonumber(ARGV[i + 10]), ARGV[i + 12]
    if fo ~= '' then redis.call('HSET', jk, 'fo', fo) end
    if parents > 0 then
      redis.call('HSET', jk, 's', 'waiting', 'wn', parents, 'wm', ARGV[i + 11])
      redis.call('HDEL', jk, 'd')
      tell(prefix, 'waiting', id)
    elseif due > now then
      redis.call('ZADD', scheduled, due, id)
      woken = true
      tell(prefix, 'scheduled', id)
    else
      to_ready(prefix, id, rs, g)
      woken = true
      tell(prefix, 'queued', id)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end

if woken then push_wake(wake) end
tell_all(prefix, now)
return out
