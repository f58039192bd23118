-- progress.lua: record what running jobs report of their progress (`current_job().progress()`).
-- A report is accepted only for a 'running' job holding the token, so a run whose lease was
-- lost cannot overwrite the progress of the run that replaced it. Each job keeps its last `keep`
-- reports in its record's field 'pg' (a msgpack array of strings '<ms> <fraction> <message>',
-- oldest first), so they expire with the record. While the queue is watched (see `watching` in
-- lib/common.lua) each accepted report is published on the queue's 'events' channel as
-- 'p <id> <ms> <fraction> <message>'.
--
-- KEYS[1] active     ZSET (routing only: names the queue's slot)
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] keep       most reports kept per job
-- ARGV[3..] per report, 4 values: id, token, fraction (decimal text in [0, 1]), message ('' none)
--
-- Output: array, per report: 1 recorded, or an error code
-- Errors: -1 stale token (or job not running), -2 job missing (a 'pg' field that does not decode
--         is replaced, never raised on)

local prefix, keep = ARGV[1], tonumber(ARGV[2])
local _, now = redis_now()
local out = {}

for i = 3, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'pg')
  if not j[1] then
    out[#out + 1] = -2
  elseif j[1] ~= 'running' or j[2] ~= token then
    out[#out + 1] = -1
  else
    local entry = now .. ' ' .. ARGV[i + 2] .. ' ' .. ARGV[i + 3]
    local log = {}
    if j[3] then
      local ok, t = pcall(cmsgpack.unpack, j[3])
      if ok and type(t) == 'table' then log = t end
    end
    log[#log + 1] = entry
    while #log > keep do table.remove(log, 1) end
    redis.call('HSET', jk, 'pg', cmsgpack.pack(log))
    if watching(prefix) then redis.call('PUBLISH', prefix .. 'events', 'p ' .. id .. ' ' .. entry) end
    out[#out + 1] = 1
  end
end
return out
