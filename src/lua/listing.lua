-- listing.lua: one page of a queue's queued jobs, read only, in the order they are leased as
-- far as it is fixed: the ready set with each group member expanded into its group's jobs
-- (lib/common.lua, "Groups and limiters"), then the jobs of groups parked on a limiter. A
-- page at a deep offset walks the members before it (an operator's listing, not a hot path).
--
-- KEYS[1] ready      ZSET id -> ready score
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] offset     jobs to skip
-- ARGV[3] count      most jobs to return
--
-- Output: array of job ids
-- Errors: none

local ready, prefix = KEYS[1], ARGV[1]
local skip, count = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}

-- Take the jobs of group `gid` this page needs.
local function from_group(gid)
  local gq = prefix .. 'gq:' .. gid
  local n = redis.call('ZCARD', gq)
  if skip >= n then
    skip = skip - n
    return
  end
  for _, id in ipairs(redis.call('ZRANGE', gq, skip, skip + count - #out - 1)) do
    out[#out + 1] = id
  end
  skip = 0
end

-- Walk `key` (a sorted set) in chunks, giving each member to `visit`, until the page is full.
local function walk(key, visit)
  local at = 0
  while #out < count do
    local chunk = redis.call('ZRANGE', key, at, at + 499)
    if #chunk == 0 then return end
    for _, member in ipairs(chunk) do
      visit(member)
      if #out >= count then return end
    end
    at = at + #chunk
  end
end

walk(ready, function(member)
  if string.byte(member, 1) == 126 then -- '~<gid>'
    from_group(string.sub(member, 2))
  elseif skip > 0 then
    skip = skip - 1
  else
    out[#out + 1] = member
  end
end)
walk(prefix .. 'gset', function(gid)
  if redis.call('HGET', prefix .. 'grp:' .. gid, 'st') == 'p' then from_group(gid) end
end)
return out
