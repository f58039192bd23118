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
local function new_job(prefix, now, maxprio, seq, argv, i)
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
    fields[#fields + 1] = 'k'
    fields[#fields + 1] = key
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
