-- lib/common.lua: fragments every script may use, written once. scripts.rs joins this file in
-- front of each script at build time (the SHA and EVAL cover the joined text), so the
-- functions below are locals of every script; none touches KEYS or ARGV.

-- Redis time: the table TIME returns, and unix milliseconds.
local function redis_now()
  local t = redis.call('TIME')
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


-- Write the record of a new job from the 9 job values at `argv[i..i+8]` (the layout enqueue.lua
-- documents: id, payload, priority, delay_ms|'', eta_ms|'', max_attempts, idempotency key|'',
-- key_ttl_ms, executor|''), taking `seq` as its FIFO number; reserve its idempotency key.
-- Returns its ready score and due time (ms): the caller adds the id to the ready set (due <=
-- now) or to the scheduled set (later), so a batch can do that with one ZADD per set.
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
  fields[#fields + 1] = 's'
  if due > now then
    fields[#fields + 1] = 'scheduled'
    fields[#fields + 1] = 'd'
    fields[#fields + 1] = due
  else
    fields[#fields + 1] = 'queued'
  end
  redis.call('HSET', prefix .. 'job:' .. id, unpack(fields))
  return rs, due
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
  local c = redis.call('HMGET', ck, 's', 'wn', 'wm', 'rs', 'fo')
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
  redis.call('ZADD', ready, c[4], child)
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
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
