-- heartbeat.lua: extend a batch of leases to now + lease_ms. Only a 'running' job holding the
-- token is extended; the reply also says whether its cancellation was requested.
--
-- KEYS[1] active     ZSET id -> lease deadline ms
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] lease_ms   new lease length from now
-- ARGV[3..] per lease, 2 values: id, token
--
-- Output: array, per lease: 1 extended, 2 extended and cancellation requested, 0 not extended
--         because the run already ended under this token (its holder's outcome came first:
--         fetch, release and reap bump the token, so a final state under it is that outcome's),
--         or an error code
-- Errors: -1 stale token (another holder, or released or reaped since), -2 job missing

local active = KEYS[1]
local prefix, lease = ARGV[1], tonumber(ARGV[2])
local t, now = redis_now()
local out = {}

for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local j = redis.call('HMGET', prefix .. 'job:' .. id, 's', 't', 'c')
  if not j[1] then
    out[#out + 1] = -2
  elseif j[2] ~= token then
    out[#out + 1] = -1
  elseif j[1] ~= 'running' then
    out[#out + 1] = 0
  else
    redis.call('ZADD', active, 'XX', now + lease, id)
    if j[3] == '1' then out[#out + 1] = 2 else out[#out + 1] = 1 end
  end
end
return out
