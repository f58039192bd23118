-- fetch.lua: promote due scheduled jobs, then lease up to `max` ready jobs in ready order.
-- Each leased job gets attempts + 1, a fresh fencing token (token + 1), state 'running', its
-- start time, its worker and a lease deadline in the active set. A job that stalled before
-- (field 'sl' > 0: a worker died running it) is leased in a batch of its own, so a job that
-- kills its worker cannot take a batch of good jobs down with it; the rest of the popped
-- jobs go back with their scores.
-- A job that runs in a thread or a child process (field 'ex') is leased only while the budget
-- of its kind lasts: one beyond it goes back with its score (it stays first in line for a
-- worker with a slot free) and is reported as held, while the async jobs behind it are still
-- leased (up to 16 jobs are passed over per call; the rest of the batch then goes back too).
-- A worker thus never holds a sync job it cannot start, and a busy thread pool does not hold
-- up the async jobs of the same queue.
-- A member '~<gid>' of ready is a group (lib/common.lua, "Groups and limiters"): its jobs are
-- leased in order while each of its limiters has room, counted against them, and the group
-- goes to the back of its priority band (round-robin between groups), or waits on a full
-- limiter (parked: it leaves ready and costs nothing until woken). Limiters whose time came
-- (limdue) wake their waiters first; next_due counts their times too.
-- Every field is checked before anything is written for the job: a corrupt record (a field
-- missing, or not a whole number where one is expected) is dead-lettered with reason
-- 'corrupt_record' and the rest of the batch proceeds; such a dead letter has no TTL of its
-- own and is trimmed by reap after dead_ttl_ms like any other.
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] scheduled  ZSET id -> due ms
-- KEYS[3] active     ZSET id -> lease deadline ms
-- KEYS[4] wake       LIST holding at most one wake token
-- KEYS[5] dead       ZSET id -> time of death ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] max        most jobs to lease (0: only promote and report next_due)
-- ARGV[3] lease_ms   lease length
-- ARGV[4] worker     id of the leasing worker
-- ARGV[5] threads    most jobs of executor 'thread' to lease ('': no bound)
-- ARGV[6] processes  most jobs of executor 'process' to lease ('': no bound)
--
-- Output: flat array: next_due (MICROseconds until the earliest scheduled job is due, -1: none;
--         microseconds so the worker's timer is not rounded to a whole ms), held (1: a job
--         was passed over for want of a slot of its kind, 0: none), then per leased job 8 values:
--         id, payload, attempt, max_attempts, token, enqueued_ms, input (a flow member's
--         parents' results, encoded, or nil), waited_ms (now minus the later of its enqueue
--         and due times, by Redis' clock)
-- Errors: none (ids in ready or scheduled whose job hash vanished are dropped silently;
--         corrupt records are dead-lettered, see above)

local ready, scheduled, active, wake, dead = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix, max, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
-- Slots left per executor kind; a kind absent here (async) is not bounded.
local slots = {thread = tonumber(ARGV[5]), process = tonumber(ARGV[6])}
local t, now = redis_now()

-- A paused queue (pause.lua) leases nothing, and does not pass the wake-up on.
if redis.call('EXISTS', prefix .. 'paused') == 1 then return {-1, 0} end

-- Dead-letter a record whose `field` cannot be read (`value`: what it holds, false if absent).
local function dead_letter(jk, id, field, value)
  redis.call('HSET', jk, 's', 'dead', 'x', corrupt(field, value), 'f', now)
  redis.call('ZADD', dead, now, id)
  tell(prefix, 'dead', id)
end

-- Promote in bounded chunks so one call never blocks Redis for long; the rest goes next call.
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
    dead_letter(jk, id, 'rs', rs)
  end
end
if #due > 0 then redis.call('ZREM', scheduled, unpack(due)) end

-- Limiters whose time came (a rate's next start, a hold's end): wake their first waiters.
local limdue = prefix .. 'limdue'
local due_lims = redis.call('ZRANGEBYSCORE', limdue, '-inf', now, 'LIMIT', 0, 100)
if #due_lims > 0 then
  redis.call('ZREM', limdue, unpack(due_lims))
  for _, inst in ipairs(due_lims) do settle(prefix, inst, now) end
end

local out, n = {-1, 0}, 2
local leased, m = {}, 0
local deadline = now + lease
local back, nb = {}, 0 -- popped but not leased: score, id pairs to put back
-- Jobs passed over for want of a slot, and how many one call may pass over: each costs a
-- record read, so a queue of mostly sync jobs is not read through for every freed thread.
local passed, PASS_OVER = 0, 16
local jp = prefix .. 'job:'
local names = {'p', 'a', 'm', 'e', 't', 'sl'} -- 'ex' (executor) needs no check
-- Asked once, before the hot loop, which then tests a local: no call per job when unwatched.
local told_here = watching(prefix)

-- Lease job `id`; `L`: the counting limiters it runs under (a grouped job), or nil. Returns
-- 'ok', 'last' (leased, and the batch ends with it: a job that stalled before), 'held' (no
-- slot of its kind: it goes back, first in line), 'stop' (a job that stalled before, behind
-- others: it goes back and the batch ends) or 'gone' (vanished, or dead-lettered).
-- Two commands per job; tables are filled by index (no `#` per append).
local function lease_job(id, L)
  local jk = jp .. id
  local j = redis.call('HMGET', jk, 'p', 'a', 'm', 'e', 't', 'sl', 'ex', 'in', 'd')
  local num = {true, whole(j[2]), whole(j[3]), whole(j[4]), whole(j[5]), 0}
  if j[6] then num[6] = whole(j[6]) end
  local bad = nil
  if not j[1] then bad = 1 end
  for k = 2, 6 do
    if not bad and not num[k] then bad = k end
  end
  if bad then
    -- No payload and no hash at all: the record vanished, drop the id (nothing to keep).
    if j[1] or redis.call('EXISTS', jk) == 1 then dead_letter(jk, id, names[bad], j[bad]) end
    return 'gone'
  end
  local suspect = num[6] > 0
  if suspect and m > 0 then return 'stop' end
  local left = j[7] and slots[j[7]]
  if left and left < 1 then
    out[2] = 1
    return 'held'
  end
  if left then slots[j[7]] = left - 1 end
  local attempt, token = num[2] + 1, num[5] + 1
  if L then
    redis.call('HSET', jk, 's', 'running', 'a', attempt, 't', token, 'st', now, 'w', worker,
      'L', L)
  else
    redis.call('HSET', jk, 's', 'running', 'a', attempt, 't', token, 'st', now, 'w', worker)
  end
  if told_here then tell(prefix, 'running', id) end
  leased[m + 1], leased[m + 2] = deadline, id
  m = m + 2
  out[n + 1], out[n + 2], out[n + 3] = id, j[1], attempt
  out[n + 4], out[n + 5], out[n + 6] = num[3], token, num[4]
  out[n + 7] = j[8] -- a flow member's input (false: none, a nil reply)
  -- How long it waited: since it was enqueued, or since it fell due (a delay, a retry).
  local since = num[4]
  local d = tonumber(j[9])
  if d and d > since then since = d end
  out[n + 8] = math.max(0, now - since)
  n = n + 8
  if suspect then return 'last' end
  return 'ok'
end

-- Serve group `gid`, popped from ready with `score`: lease its jobs in order while each of
-- its limiters has room, up to its quota and the batch. Then the group goes to the back of
-- its band (its turn is over), or parks on the limiter that is full, or (a job held for want
-- of a slot) back to `score`, first in line. Returns the lease code that ends the batch
-- ('last', 'stop'), or nil.
local gstat = prefix .. 'gstat'
local function serve_group(gid, score)
  redis.call('HINCRBY', gstat, 'ready', -1)
  local g = redis.call('HGET', prefix .. 'grp:' .. gid, 'sp')
  if not g then return nil end -- a stale member: its group is gone
  local grp = group_of(g)
  local gq = prefix .. 'gq:' .. gid
  local counting = {}
  for _, inst in ipairs(grp.insts) do
    if lim_settings(prefix, family(inst)).c then counting[#counting + 1] = inst end
  end
  local L = table.concat(counting, '\t')
  local took, quota, placed, ends = 0, grp.quota or max, false, nil
  local popped_jobs = 0 -- taken out of the group's set: counted once, below
  while took < quota and m < 2 * max do
    -- As many jobs as every limiter has room for, popped at once.
    local cap = math.min(quota - took, max - m / 2)
    local blocked, when = nil, nil
    for _, inst in ipairs(grp.insts) do
      local ok, w = room(prefix, inst, now)
      if not ok then
        blocked, when = inst, w
        break
      end
      cap = math.min(cap, starts_left(prefix, inst))
    end
    if blocked then
      -- A group with no job left parks nowhere (it is forgotten below).
      if redis.call('ZCARD', gq) > 0 then
        park(prefix, gid, blocked, when)
        placed = true
      end
      break
    end
    local heads = redis.call('ZPOPMIN', gq, cap)
    if #heads == 0 then break end
    popped_jobs = popped_jobs + #heads / 2
    local rest = nil -- where the jobs not leased start, when the turn ends early
    for h = 1, #heads, 2 do
      local r = lease_job(heads[h], L)
      if r == 'ok' or r == 'last' then
        for _, inst in ipairs(grp.insts) do take(prefix, inst) end
        took = took + 1
        if r == 'last' then
          ends, rest = r, h + 2
          break
        end
      elseif r == 'held' or r == 'stop' then
        -- This job keeps its place (first in line) and so does the group.
        redis.call('ZADD', ready, score, '~' .. gid)
        redis.call('HINCRBY', gstat, 'ready', 1)
        placed, rest = true, h
        if r == 'stop' then ends = r end
        break
      end
    end
    if rest then
      local back_jobs = {}
      for h = rest, #heads, 2 do
        back_jobs[#back_jobs + 1] = heads[h + 1]
        back_jobs[#back_jobs + 1] = heads[h]
      end
      if #back_jobs > 0 then
        redis.call('ZADD', gq, unpack(back_jobs))
        popped_jobs = popped_jobs - #back_jobs / 2
      end
      break
    end
    if #heads < 2 * cap then break end -- the group's set is empty
  end
  if popped_jobs > 0 then redis.call('HINCRBY', gstat, 'jobs', -popped_jobs) end
  if not placed then group_ready(prefix, gid) end
  -- Room left in a limiter passes to its next waiter.
  for _, inst in ipairs(grp.insts) do settle(prefix, inst, now) end
  return ends
end

-- A group leases at most its quota per turn, so a batch of groups may come up short: pop
-- again (the served groups are back at the end of their bands: the next turn of the
-- round-robin), a bounded number of rounds, while groups keep leasing.
for round = 1, 8 do
  local popped = {}
  local want = max - m / 2
  if want > 0 then popped = redis.call('ZPOPMIN', ready, want) end
  local stop, from_groups, ended = #popped + 1, 0, false
  for i = 1, #popped, 2 do
    local id = popped[i]
    if m >= 2 * max then -- a group's jobs filled the batch
      stop = i
      break
    end
    if string.byte(id, 1) == 126 then -- '~': a group
      local before = m
      local r = serve_group(string.sub(id, 2), popped[i + 1])
      if m > before then from_groups = from_groups + 1 end
      if r then
        stop = i + 2
        ended = true
        break
      end
    else
      local r = lease_job(id, nil)
      if r == 'held' then
        back[nb + 1], back[nb + 2] = popped[i + 1], id
        nb = nb + 2
        passed = passed + 1
        if passed == PASS_OVER then
          stop = i + 2
          break
        end
      elseif r == 'stop' then
        stop = i
        ended = true
        break
      elseif r == 'last' then
        stop = i + 2
        ended = true
        break
      end
    end
  end
  for i = stop, #popped, 2 do
    back[nb + 1], back[nb + 2] = popped[i + 1], popped[i]
    nb = nb + 2
  end
  if ended or from_groups == 0 or m >= 2 * max or passed == PASS_OVER then break end
end
if nb > 0 then redis.call('ZADD', ready, unpack(back)) end
commit_takes(prefix, now)
if m > 0 then redis.call('ZADD', active, unpack(leased)) end

local first = redis.call('ZRANGE', scheduled, 0, 0, 'WITHSCORES')
local lfirst = redis.call('ZRANGE', limdue, 0, 0, 'WITHSCORES')
if lfirst[1] and (not first[1] or tonumber(lfirst[2]) < tonumber(first[2])) then first = lfirst end
if first[1] then
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local wait = tonumber(first[2]) * 1000 - now_us
  -- A score of +inf (never due) would not convert to an integer reply: report none.
  if wait < 2 ^ 53 then out[1] = math.max(0, wait) end
end
-- Jobs remain: pass the wake-up on so another idle worker takes them.
if redis.call('ZCARD', ready) > 0 then push_wake(wake) end
tell_all(prefix, now)
return out
