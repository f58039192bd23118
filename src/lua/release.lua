-- release.lua: hand a batch of leased jobs back to ready at their original position without
-- counting the attempt (attempts - 1); the token is bumped so the old lease is dead.
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- KEYS[2] ready      ZSET id -> ready score
-- KEYS[3] wake       LIST holding at most one wake token
-- ARGV[1] prefix     'asyncq:{q}:'
-- ARGV[2..] per lease, 2 values: id, token
--
-- Output: array, per lease: 1 released, or an error code
-- Errors: -1 stale token (or job not running), -2 job missing

local active, ready, wake = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local out, released = {}, 0

for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local jk = prefix .. 'job:' .. id
  local j = redis.call('HMGET', jk, 's', 't', 'a', 'rs')
  if not j[1] then
    out[#out + 1] = -2
  elseif j[1] ~= 'running' or j[2] ~= token then
    out[#out + 1] = -1
  else
    redis.call('HSET', jk, 's', 'queued', 'a', math.max(0, tonumber(j[3]) - 1), 't', tonumber(j[2]) + 1)
    redis.call('ZREM', active, id)
    redis.call('ZADD', ready, j[4], id)
    out[#out + 1] = 1
    released = released + 1
  end
end

if released > 0 and redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, 1) end
return out
