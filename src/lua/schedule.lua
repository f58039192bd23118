-- schedule.lua: keep the periodic schedules of one queue (the fire times are taken by fire.lua).
-- A schedule is the hash prefix .. 'cron:' .. name, its name a member of the queue's set of
-- schedules. Its 'last' fire time starts at the moment it is first stored, so a new schedule
-- does not catch up on fire times from before it existed.
--
-- KEYS[1] crons      SET of the queue's schedule names
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] op         'sync' | 'pause' | 'resume' | 'remove' | 'list'
-- ARGV[3] name       the schedule (not used by 'list')
-- ARGV[4] def        'sync' only: the definition (JSON written by the Python side), stored as is
--
-- Output: 'sync': {last, paused (1/0)}; 'pause', 'resume', 'remove': 1 done, 0 no such
--         schedule; 'list': flat array, per schedule 7 values: name, def, last, job|'',
--         paused (1/0), fired, skipped (schedules are listed in name order)
-- Errors: an unknown op

local crons, prefix, op, name = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local cron = prefix .. 'cron:' .. (name or '')

if op == 'sync' then
  local t, now = redis_now()
  redis.call('HSET', cron, 'def', ARGV[4])
  redis.call('HSETNX', cron, 'last', now)
  redis.call('HSETNX', cron, 'created', now)
  redis.call('SADD', crons, name)
  local st = redis.call('HMGET', cron, 'last', 'paused')
  return {tonumber(st[1]), st[2] == '1' and 1 or 0}
elseif op == 'pause' or op == 'resume' then
  if redis.call('EXISTS', cron) == 0 then return 0 end
  if op == 'pause' then
    redis.call('HSET', cron, 'paused', '1')
  else
    redis.call('HDEL', cron, 'paused')
  end
  return 1
elseif op == 'remove' then
  redis.call('SREM', crons, name)
  return redis.call('DEL', cron)
elseif op == 'list' then
  local names = redis.call('SMEMBERS', crons)
  table.sort(names)
  local out = {}
  for _, n in ipairs(names) do
    local st = redis.call('HMGET', prefix .. 'cron:' .. n, 'def', 'last', 'job', 'paused', 'fired',
      'skipped')
    if st[1] then
      out[#out + 1] = n
      out[#out + 1] = st[1]
      out[#out + 1] = tonumber(st[2]) or 0
      out[#out + 1] = st[3] or ''
      out[#out + 1] = st[4] == '1' and 1 or 0
      out[#out + 1] = tonumber(st[5]) or 0
      out[#out + 1] = tonumber(st[6]) or 0
    end
  end
  return out
end
return redis.error_reply('schedule.lua: unknown op ' .. tostring(op))
