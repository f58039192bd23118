-- lib/common.lua: fragments every script may use, written once. scripts.rs joins this file in
-- front of each script at build time (the SHA and EVAL cover the joined text), so the
-- functions below are locals of every script; none touches KEYS or ARGV.

-- Redis time: the table TIME returns, and unix milliseconds. The call's time in µs is kept
-- too, for the rate limiters (a rate above 1000/s needs finer steps than a millisecond).
local clock_us = 0
local function redis_now()
  local t = redis.call('TIME')
  clock_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return t, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job record field as a whole number >= 0, or nil when it is missing or corrupt.
local function whole(v)
  local n = tonumber(v)
  if n and n >= 0 and n < 2 ^ 53 and n == math.floor(n) then return n end
end

-- Tell whoever waits for a result that the jobs `ids` ended (succeeded, dead or cancelled):
-- one PUBLISH per call on the queue's 'done' channel, the ids separated by spaces (job ids
-- hold no spaces). Costs about a microsecond when nobody listens.
local function ended(prefix, ids)
  if #ids > 0 then redis.call('PUBLISH', prefix .. 'done', table.concat(ids, ' ')) end
end

-- ---- Events (docs/events.md) ---------------------------------------------------------------
-- While anyone watches a queue (its key prefix .. 'watch' lives: event readers set it with a
-- TTL and renew it), every state change a script makes is told on the queue's 'events'
-- channel: `tell` collects them and `tell_all` publishes them, one PUBLISH per call:
-- 's <ms>' then one line '<state> <id>' per change. Unwatched, a call pays one EXISTS.
local told, watched = {}, nil
local function watching(prefix)
  if watched == nil then watched = redis.call('EXISTS', prefix .. 'watch') == 1 end
  return watched
end
local function tell(prefix, state, id)
  if watching(prefix) then told[#told + 1] = state .. ' ' .. id end
end
local function tell_all(prefix, now)
  if #told > 0 then
    redis.call('PUBLISH', prefix .. 'events', 's ' .. now .. '\n' .. table.concat(told, '\n'))
    told = {}
  end
end

-- The error record of a job whose record `field` cannot be read (`value` false if absent).
local function corrupt(field, value)
  local what = 'is missing'
  if value then
    local shown = string.gsub(string.sub(value, 1, 40), '[^%w%p ]', '?')
    what = 'is not a whole number >= 0: "' .. shown .. '"'
  end
  return cmsgpack.pack({type = 'CorruptRecord', traceback = '', reason = 'corrupt_record',
    message = "job record field '" .. field .. "' " .. what})
end


-- Write the record of a new job from the 10 job values at `argv[i..i+9]` (the layout enqueue.lua
-- documents: id, payload, priority, delay_ms|'', eta_ms|'', max_attempts, idempotency key|'',
-- key_ttl_ms, executor|'', group spec|''), taking `seq` as its FIFO number; reserve its
-- idempotency key. Returns its ready score, due time (ms) and group spec (false: none): the
-- caller makes it ready (`to_ready`; ungrouped jobs of a batch with one ZADD) when due <= now,
-- or adds it to the scheduled set.
-- `unowned` true: the key is reserved but the record does not keep it as 'k' (a throttle key:
-- ack then leaves its period alone, see enqueue.lua).
local function new_job(prefix, now, maxprio, seq, argv, i, unowned)
  local id, key = argv[i], argv[i + 6]
  local prio = tonumber(argv[i + 2])
  local rs = (maxprio - prio) * 1099511627776 + seq
  local due = now
  if argv[i + 4] ~= '' then
    due = tonumber(argv[i + 4])
  elseif argv[i + 3] ~= '' then
    due = now + tonumber(argv[i + 3])
  end
  local fields = {'p', argv[i + 1], 'a', 0, 'm', argv[i + 5], 'pr', prio, 'rs', rs, 'e', now, 't', 0}
  if key ~= '' then
    local ttl = tonumber(argv[i + 7])
    if ttl > 0 then
      redis.call('SET', prefix .. 'key:' .. key, id, 'PX', ttl)
    else
      redis.call('SET', prefix .. 'key:' .. key, id)
    end
    if not unowned then
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = key
    end
  end
  if argv[i + 8] ~= '' then
    fields[#fields + 1] = 'ex'
    fields[#fields + 1] = argv[i + 8]
  end
  local g = argv[i + 9]
  if g ~= '' then
    fields[#fields + 1] = 'g'
    fields[#fields + 1] = g
  else
    g = false
  end
  fields[#fields + 1] = 's'
  if due > now then
    fields[#fields + 1] = 'scheduled'
    fields[#fields + 1] = 'd'
    fields[#fields + 1] = due
  else
    fields[#fields + 1] = 'queued'
  end
  redis.call('HSET', prefix .. 'job:' .. id, unpack(fields))
  return rs, due, g
end

-- ---- Groups and limiters (docs/flow-control.md, "Limits and fairness") --------------------
-- A job of a task with limits, a fair key or an ordered key belongs to a group, named at
-- enqueue from the task and its key values. The record's field 'g' is the group's spec:
--   '<gid>\t<quota>\t<limiter>\t<limiter>...'
-- quota: how many jobs one turn of the group may lease ('' no bound; a fair key's weight);
-- each limiter is an instance name, '<family>' or '<family>=<key value>'. A grouped job that
-- is ready waits in its group's sorted set 'gq:<gid>' (ready scores), and the group takes one
-- place in ready, as the member '~<gid>' (no job id starts with '~'), while it has jobs there:
-- 'grp:<gid>' holds 'sp' (the spec) and 'st': 'r' in ready, 'p' parked in the waiting list
-- 'lw:<limiter>' of a limiter without room. Nothing else marks a group: no jobs, no hash.
-- 'gset' (a sorted set, score 0) lists the groups that have a hash, for purge; 'gstat' counts
-- the jobs in group sets ('jobs') and the groups in ready ('ready'), for counts.
-- A limiter 'lim:<inst>' holds 'n' (jobs running under it), 'tat' (GCRA: the theoretical
-- start time of the next job, unix µs) and 'hold' (no start before this unix ms). Its
-- settings are the queue's hash 'limits' under its family, with '!<family>' (set at run time)
-- overriding field by field: 'c=<most running> r=<starts> p=<per period, ms> b=<burst>'
-- (a value of -1 turns that part off). A limiter that has waiters and room only later (rate
-- or hold) is due in 'limdue' (score: ms); fetch promotes due limiters.
local BAND = 1099511627776 -- 2^40: a ready score is band * BAND + seq
local IDLE_MS = 60000 -- a limiter's state outlives its last use by this much

local specs = {} -- per call: limiter family -> settings
local function lim_settings(prefix, fam)
  local s = specs[fam]
  if s then return s end
  local v = redis.call('HMGET', prefix .. 'limits', fam, '!' .. fam)
  s = {}
  for _, text in ipairs({v[1] or '', v[2] or ''}) do
    for k, n in string.gmatch(text, '(%a+)=(%-?%d+)') do s[k] = tonumber(n) end
  end
  if s.c and s.c < 0 then s.c = nil end
  if s.r and s.r > 0 and s.p and s.p > 0 then
    s.T = math.ceil(s.p * 1000 / s.r) -- µs between starts; rounded up, never over the rate
    s.tau = s.T * math.max(0, s.b or 0)
  end
  specs[fam] = s
  return s
end

local families = {} -- per call: limiter instance -> its family
local function family(inst)
  local f = families[inst]
  if not f then
    f = string.match(inst, '^[^=]*')
    families[inst] = f
  end
  return f
end

-- A whole number of µs as a string (tostring would switch to exponents past 14 digits).
local function us_text(v) return string.format('%.0f', v) end

local parsed = {} -- per call: group spec -> {gid, quota (nil: no bound), limiters}
local function group_of(g)
  local p = parsed[g]
  if p then return p end
  local parts, i = {}, 1
  while true do
    local j = string.find(g, '\t', i, true)
    parts[#parts + 1] = string.sub(g, i, (j or 0) - 1)
    if not j then break end
    i = j + 1
  end
  local insts = {}
  for k = 3, #parts do
    if parts[k] ~= '' then insts[#insts + 1] = parts[k] end
  end
  p = {gid = parts[1], quota = tonumber(parts[2] or ''), insts = insts}
  parsed[g] = p
  return p
end

-- A limiter's state as this call knows it: {n, tat, hold} (numbers, 0 when unset), read once
-- and kept up to date by `take`; `free` and `hold` drop it (they write through commands that
-- return no state).
local lstate = {}
local function lim_state(prefix, inst)
  local st = lstate[inst]
  if not st then
    local v = redis.call('HMGET', prefix .. 'lim:' .. inst, 'n', 'tat', 'hold')
    st = {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0}
    lstate[inst] = st
  end
  return st
end

-- Whether limiter `inst` lets one more job start now: true, or false and the unix ms from
-- which it may (nil: once a running job's slot frees).
local function room(prefix, inst, now)
  local s = lim_settings(prefix, family(inst))
  local st = lim_state(prefix, inst)
  if st[3] > now then return false, st[3] end
  if s.c and st[1] >= s.c then return false, nil end
  if s.T and st[2] - clock_us > s.tau then
    return false, math.ceil((st[2] - s.tau) / 1000)
  end
  return true
end

-- How many starts limiter `inst` allows at once now, given it has room (`room`).
local function starts_left(prefix, inst)
  local s, st = lim_settings(prefix, family(inst)), lim_state(prefix, inst)
  local left = math.huge
  if s.c then left = s.c - st[1] end
  if s.T then
    left = math.min(left, math.floor((clock_us + s.tau - math.max(st[2], clock_us)) / s.T) + 1)
  end
  return math.max(1, left)
end

-- Let limiter `inst`'s state expire once it no longer matters (nothing running under it,
-- its next start time and hold past). While runs hold slots it never expires.
local function expire_idle(lk, now)
  local v = redis.call('HMGET', lk, 'tat', 'hold', 'n')
  if (tonumber(v[3]) or 0) > 0 then
    redis.call('PERSIST', lk)
    return
  end
  local upto = math.max(now, math.ceil((tonumber(v[1]) or 0) / 1000), tonumber(v[2]) or 0)
  redis.call('PEXPIRE', lk, upto - now + IDLE_MS)
end

-- Count a start against limiter `inst`, in this call's state; `commit_takes` writes it, once
-- per limiter for the whole call.
local taken = {}
local function take(prefix, inst)
  local s = lim_settings(prefix, family(inst))
  local st = lim_state(prefix, inst)
  if s.T then st[2] = math.max(st[2], clock_us) + s.T end
  if s.c then st[1] = st[1] + 1 end
  taken[inst] = true
end

-- Write the starts `take` counted (a script that takes must call this before it returns).
local function commit_takes(prefix, now)
  for inst in pairs(taken) do
    local s, st = lim_settings(prefix, family(inst)), lstate[inst]
    local lk = prefix .. 'lim:' .. inst
    if s.T then redis.call('HSET', lk, 'tat', us_text(st[2])) end
    if s.c then
      redis.call('HSET', lk, 'n', st[1])
      -- The state must outlive the runs (an idle limiter expires: `expire_idle`).
      redis.call('PERSIST', lk)
    else
      expire_idle(lk, now)
    end
  end
  taken = {}
end

-- Limiter `inst` may start a waiter at `when` (ms): make it due then, unless due sooner.
local function due_at(prefix, inst, when)
  local k = prefix .. 'limdue'
  local cur = tonumber(redis.call('ZSCORE', k, inst))
  if not cur or when < cur then redis.call('ZADD', k, when, inst) end
end

-- The one way a queue's waiters are woken. A token goes in the wake list (at most one: an
-- idle worker's BLPOP takes it, or the fetch that finds jobs left puts it back), and a note
-- goes out on the shard channel of the same name, for workers on a Redis Cluster: a BLPOP
-- there must keep to one slot, so they hear every queue of a node on one subscription and
-- then race for the token with LPOP. SPUBLISH costs nothing without subscribers; a server
-- older than 7.0 refuses it, which pcall keeps from failing the script.
local function push_wake(wake)
  if redis.call('LLEN', wake) == 0 then
    redis.call('RPUSH', wake, 1)
    redis.pcall('SPUBLISH', wake, 1)
  end
end

local function wake_one(prefix)
  push_wake(prefix .. 'wake')
end

-- Put group `gid` in ready, behind everything in its first job's priority band (a fresh
-- seq: this is the round-robin between groups), or forget it when it has no jobs left.
local function group_ready(prefix, gid)
  local gk = prefix .. 'grp:' .. gid
  local head = redis.call('ZRANGE', prefix .. 'gq:' .. gid, 0, 0, 'WITHSCORES')
  if not head[1] then
    redis.call('DEL', gk)
    redis.call('ZREM', prefix .. 'gset', gid)
    return
  end
  local band = math.floor(tonumber(head[2]) / BAND)
  local seq = redis.call('INCR', prefix .. 'seq')
  if redis.call('ZADD', prefix .. 'ready', band * BAND + seq, '~' .. gid) == 1 then
    redis.call('HINCRBY', prefix .. 'gstat', 'ready', 1)
  end
  redis.call('HSET', gk, 'st', 'r')
  wake_one(prefix)
end

-- The one way a job becomes ready (enqueue, promotion, requeue, release, retry, fire, flow
-- delivery): job `id` with ready score `rs` and group spec `g` (false or '': none) goes into
-- the ready set, or into its group's set, the group into ready unless it is there or parked.
local function to_ready(prefix, id, rs, g)
  if not g or g == '' then
    redis.call('ZADD', prefix .. 'ready', rs, id)
    return
  end
  local gid = group_of(g).gid
  local gk = prefix .. 'grp:' .. gid
  if redis.call('ZADD', prefix .. 'gq:' .. gid, rs, id) == 1 then
    redis.call('HINCRBY', prefix .. 'gstat', 'jobs', 1)
  end
  local st = redis.call('HGET', gk, 'st')
  redis.call('HSET', gk, 'sp', g) -- the latest job's spec: a changed task definition wins
  if st == 'r' then
    -- A job of a higher band than the group's place moves the group up to that band.
    local m = '~' .. gid
    local score = tonumber(redis.call('ZSCORE', prefix .. 'ready', m))
    local band = math.floor(tonumber(rs) / BAND)
    if score and band < math.floor(score / BAND) then
      redis.call('ZADD', prefix .. 'ready', band * BAND + score % BAND, m)
    end
  elseif st ~= 'p' then
    redis.call('ZADD', prefix .. 'gset', 0, gid)
    group_ready(prefix, gid)
  end
end

-- Take job `id` (group spec `g`) out of wherever it waits to be leased. A group left empty
-- goes lazily: fetch drops it from ready, a waiting list's wake-up finds it empty.
local function unready(prefix, id, g)
  if g and g ~= '' then
    if redis.call('ZREM', prefix .. 'gq:' .. group_of(g).gid, id) == 1 then
      redis.call('HINCRBY', prefix .. 'gstat', 'jobs', -1)
    end
  else
    redis.call('ZREM', prefix .. 'ready', id)
  end
end

-- Park group `gid` on limiter `inst`, which has no room until `when` (ms; nil: a slot frees).
local function park(prefix, gid, inst, when)
  redis.call('RPUSH', prefix .. 'lw:' .. inst, gid)
  redis.call('HSET', prefix .. 'grp:' .. gid, 'st', 'p')
  redis.call('SADD', prefix .. 'lwf:' .. family(inst), inst)
  if when then due_at(prefix, inst, when) end
end

-- Limiter `inst` may have room: wake the first group waiting on it (true when one was woken).
-- One per call: a woken group that leaves the limiter room passes it on (fetch settles each
-- limiter of a group it served), and each freed slot settles once. A limiter with room only
-- later becomes due.
local function settle(prefix, inst, now)
  local lw = prefix .. 'lw:' .. inst
  if redis.call('LLEN', lw) == 0 then return end
  local ok, when = room(prefix, inst, now)
  if ok then
    local gid = redis.call('LPOP', lw)
    if redis.call('LLEN', lw) == 0 then redis.call('SREM', prefix .. 'lwf:' .. family(inst), inst) end
    group_ready(prefix, gid)
    return true
  elseif when then
    due_at(prefix, inst, when)
  end
  return false
end

-- A run ended (ack, fail, release, lease expiry): free its slot in each limiter of `L` (the
-- record's field: the counting limiters its lease took, tab separated). Counted here and
-- written by `commit_frees`, once per limiter for the whole call.
local freeing = {}
local function free(prefix, L)
  if not L or L == '' then return end
  for inst in string.gmatch(L, '[^\t]+') do freeing[inst] = (freeing[inst] or 0) + 1 end
end

-- Write the slots `free` counted, and settle each limiter once per freed slot while it has
-- waiters (a script that frees must call this before it returns).
local function commit_frees(prefix, now)
  for inst, k in pairs(freeing) do
    local lk = prefix .. 'lim:' .. inst
    lstate[inst] = nil
    if redis.call('HINCRBY', lk, 'n', -k) <= 0 then
      redis.call('HSET', lk, 'n', 0)
      expire_idle(lk, now)
    end
    for _ = 1, k do
      if not settle(prefix, inst, now) then break end
    end
  end
  freeing = {}
end

-- No job starts under limiter `inst` before `upto_ms` (a key pushed back, an ordered key's
-- retry): its waiters are woken then.
local function hold(prefix, inst, upto_ms, now)
  local lk = prefix .. 'lim:' .. inst
  lstate[inst] = nil
  local cur = tonumber(redis.call('HGET', lk, 'hold')) or 0
  if upto_ms > cur then redis.call('HSET', lk, 'hold', upto_ms) end
  expire_idle(lk, now)
  due_at(prefix, inst, upto_ms)
end

-- The limiters a pushed-back key holds: the group's per-key limiters, or when it has none
-- its task-wide ones (never the queue's: family '@').
local function key_limiters(g)
  local keyed, wide = {}, {}
  for _, inst in ipairs(group_of(g).insts) do
    if string.find(inst, '=', 1, true) then
      keyed[#keyed + 1] = inst
    elseif string.sub(inst, 1, 1) ~= '@' then
      wide[#wide + 1] = inst
    end
  end
  if #keyed > 0 then return keyed end
  return wide
end

-- The ordered-key limiter of group spec `g` (family 'o:...'), or nil.
local function ordered_limiter(g)
  for _, inst in ipairs(group_of(g).insts) do
    if string.sub(inst, 1, 2) == 'o:' then return inst end
  end
end

-- ---- Flows (chains, groups, chords; see docs/workflows.md) ----------------------------------
-- A flow member written 'waiting' runs once every parent it waits on has ended. Its record holds
-- 'wn' (how many parents) and 'wm' (how their results reach it: 'one', the single parent's
-- result as its first argument; 'list', the results in parent order as a list). What has come in
-- so far is the hash prefix .. 'in:' .. id (parent index -> 'v' .. value, or 's' for a parent
-- whose failure is ignored): setting a field once absorbs a duplicate delivery. A member others
-- wait on holds 'fo', its follow-up edges, one line each: child prefix, child queue, child id,
-- parent index, policy ('fail', 'continue' or 'ignore'), tab separated.

-- How long the record of a member that never ran (a parent failed) is kept: CANCELLED_TTL_MS.
local NEVER_RAN_TTL = 604800000

-- A msgpack array header for `n` elements (the elements follow, already encoded).
local function array_header(n)
  if n < 16 then return string.char(0x90 + n) end
  if n < 65536 then
    return string.char(0xdc, math.floor(n / 256), n % 256)
  end
  return string.char(0xdd, math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
    math.floor(n / 256) % 256, n % 256)
end

-- The fields of an error record (msgpack map), or an empty table when it cannot be read.
local function error_fields(rec)
  local ok, t = pcall(cmsgpack.unpack, rec)
  if ok and type(t) == 'table' then return t end
  return {}
end

-- What a failed parent hands a child whose policy is 'continue': a map the worker turns into
-- an asyncq.Failed value.
local function failed_value(parent, err)
  local e = error_fields(err)
  return cmsgpack.pack({__asyncq_failed__ = true, job_id = parent, type = e.type or 'Error',
    message = e.message or '', reason = e.reason or ''})
end

-- Hand child `child` of this slot (`prefix`, its queue's `ready` and `wake` keys) what parent
-- `parent` delivered at index `idx`: kind 'v' (value `v`), 's' (skip: an ignored failure) or
-- 'f' (the parent failed: `v` its error record, and the child will never run). A child no
-- longer waiting (released, cancelled, failed) takes nothing. Returns the child's follow-up
-- edges and error record when it failed in turn (its own children are told next), else nil.
local function deliver(prefix, ready, wake, child, idx, kind, v, parent, now)
  local ck = prefix .. 'job:' .. child
  local c = redis.call('HMGET', ck, 's', 'wn', 'wm', 'rs', 'fo', 'g')
  if c[1] ~= 'waiting' then return nil end
  local ik = prefix .. 'in:' .. child
  if kind == 'f' then
    local e = error_fields(v)
    local err = cmsgpack.pack({type = 'UpstreamFailed', reason = 'upstream_failed',
      traceback = '', message = 'flow member ' .. parent .. ' failed: ' ..
      tostring(e.type or 'Error') .. ': ' .. tostring(e.message or '')})
    redis.call('HSET', ck, 's', 'dead', 'x', err, 'f', now)
    redis.call('PEXPIRE', ck, NEVER_RAN_TTL)
    redis.call('DEL', ik)
    ended(prefix, {child})
    tell(prefix, 'dead', child)
    if c[5] then return {child, c[5], err} end
    return nil
  end
  redis.call('HSETNX', ik, idx, kind .. v)
  local wn = tonumber(c[2]) or 1
  if redis.call('HLEN', ik) < wn then return nil end
  local got = {}
  local flat = redis.call('HGETALL', ik)
  for i = 1, #flat, 2 do got[tonumber(flat[i])] = flat[i + 1] end
  local input
  if c[3] == 'list' then
    local parts, k = {}, 0
    for i = 0, wn - 1 do
      local g = got[i]
      if g and string.sub(g, 1, 1) == 'v' then
        k = k + 1
        parts[k] = string.sub(g, 2)
      end
    end
    input = array_header(k) .. table.concat(parts)
  else
    local g = got[0]
    input = (g and string.sub(g, 1, 1) == 'v') and string.sub(g, 2) or '\192' -- msgpack nil
  end
  redis.call('HSET', ck, 's', 'queued', 'in', input)
  tell(prefix, 'queued', child)
  to_ready(prefix, child, c[4], c[6])
  push_wake(wake)
  redis.call('DEL', ik)
  return nil
end

-- Parent `id` of this slot ended: `ok` with `value` its encoded result, or failed with `value`
-- its error record. Tell each child on its follow-up edges `fo`: one of this queue here and at
-- once (and, when that child fails in turn, its own children), one of another queue through
-- this queue's outbox (a list the relay delivers from; see relay.lua and deliver.lua).
-- Returns how many outbox entries were added.
local function follow_up(prefix, ready, wake, outbox, id, fo, ok, value, now)
  local work, queued = {{id, fo, ok, value}}, 0
  while #work > 0 do
    local item = table.remove(work)
    for line in string.gmatch(item[2], '[^\n]+') do
      local cp, q, child, idx, policy =
        string.match(line, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$')
      if cp then
        local kind, v = 'v', item[4]
        if not item[3] then
          if policy == 'continue' then
            v = failed_value(item[1], item[4])
          elseif policy == 'ignore' then
            kind, v = 's', ''
          else
            kind = 'f'
          end
        end
        if cp == prefix then
          local more = deliver(prefix, ready, wake, child, idx, kind, v, item[1], now)
          if more then work[#work + 1] = {more[1], more[2], false, more[3]} end
        else
          redis.call('RPUSH', outbox, q .. '\t' .. child .. '\t' .. idx .. '\t' .. kind .. '\t' ..
            item[1] .. '\t' .. v)
          queued = queued + 1
        end
      end
    end
  end
  return queued
end

-- Take pending job `id` (queued, scheduled, failed awaiting a retry, or waiting on its flow
-- parents; `g` its group spec) out of every set, and tell whoever waits on it that it ended:
-- result waiters, and the flow members waiting on it, with error record `err` (under policy
-- 'fail' they do not run either). The caller records what it became (cancel.lua) or deletes
-- it (delete.lua).
local function withdraw(prefix, ready, scheduled, wake, outbox, id, g, err, now)
  unready(prefix, id, g)
  redis.call('ZREM', scheduled, id)
  redis.call('DEL', prefix .. 'in:' .. id)
  ended(prefix, {id})
  local fo = redis.call('HGET', prefix .. 'job:' .. id, 'fo')
  if fo then follow_up(prefix, ready, wake, outbox, id, fo, false, err, now) end
end

-- Whether `state` is one of a job that has not run yet or waits to run again.
local function pending(state)
  return state == 'queued' or state == 'scheduled' or state == 'failed' or state == 'waiting'
end
