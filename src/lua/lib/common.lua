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

