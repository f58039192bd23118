-- limits.lua: write the settings of limiter families (docs/flow-control.md, "Limits"), and
-- wake the groups waiting on the family's limiters so the new settings apply at once.
-- Workers declare their tasks' and queues' limits at start ('declare'); `asyncq limits set`
-- overrides them at run time ('set', kept under '!<family>', part by part over the declared
-- settings) and `asyncq limits clear` drops an override ('clear'). A 'set' merges into the
-- override there is: each `k=v` of its text sets part k (v = -1: that limit off, whatever was
-- declared), `k=-` drops part k from the override; an override left empty is dropped.
--
-- KEYS[1] limits     HASH family -> declared settings, '!' .. family -> override
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] op         'declare', 'set', 'clear', or 'show' (read only: every family's state)
-- ARGV[3..] per family, 2 values: family, settings ('c=<n> r=<n> p=<ms> b=<n>'; for 'set'
--           the parts to change, `k=-` to drop one; ignored by 'clear'); none for 'show'
--
-- Output: integer: how many families changed; for 'show', a flat array, per family in name
--         order, 6 values: family, declared settings|'', override|'', jobs running under its
--         limiter without a key (0 for keyed families), groups waiting on that limiter,
--         limiters of the family (one per key value) with groups waiting
-- Errors: none (the caller checks the settings)

local limits, prefix, op = KEYS[1], ARGV[1], ARGV[2]
local _, now = redis_now()
local changed = 0

if op == 'show' then
  local flat = redis.call('HGETALL', limits)
  local seen, order = {}, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    local fam = f
    if string.sub(f, 1, 1) == '!' then fam = string.sub(f, 2) end
    if not seen[fam] then
      seen[fam] = {d = '', o = ''}
      order[#order + 1] = fam
    end
    if fam == f then seen[fam].d = flat[i + 1] else seen[fam].o = flat[i + 1] end
  end
  table.sort(order)
  local out = {}
  for _, fam in ipairs(order) do
    local n = tonumber(redis.call('HGET', prefix .. 'lim:' .. fam, 'n')) or 0
    out[#out + 1] = fam
    out[#out + 1] = seen[fam].d
    out[#out + 1] = seen[fam].o
    out[#out + 1] = n
    out[#out + 1] = redis.call('LLEN', prefix .. 'lw:' .. fam)
    out[#out + 1] = redis.call('SCARD', prefix .. 'lwf:' .. fam)
  end
  return out
end

-- Settings text as parts, and back (c, r, p, b first, as workers write them).
local RANK = {c = 1, r = 2, p = 3, b = 4}
local function parts_of(text)
  local t = {}
  for k, v in string.gmatch(text or '', '(%a+)=(%S+)') do t[k] = v end
  return t
end
local function text_of(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b)
    local ra, rb = RANK[a] or 9, RANK[b] or 9
    if ra ~= rb then return ra < rb end
    return a < b
  end)
  local out = {}
  for _, k in ipairs(ks) do out[#out + 1] = k .. '=' .. t[k] end
  return table.concat(out, ' ')
end

for i = 3, #ARGV, 2 do
  local fam, text = ARGV[i], ARGV[i + 1]
  local field = fam
  if op ~= 'declare' then field = '!' .. fam end
  local before = redis.call('HGET', limits, field)
  if op == 'set' then
    local cur = parts_of(before)
    for k, v in pairs(parts_of(text)) do
      if v == '-' then cur[k] = nil else cur[k] = v end
    end
    text = text_of(cur)
  end
  local after = text
  if op == 'clear' or text == '' then
    redis.call('HDEL', limits, field)
    after = false
  else
    redis.call('HSET', limits, field, text)
  end
  if before ~= after then
    changed = changed + 1
    -- Every limiter of the family with waiters gets its first waiter woken (fetch settles it).
    for _, inst in ipairs(redis.call('SMEMBERS', prefix .. 'lwf:' .. fam)) do
      redis.call('ZADD', prefix .. 'limdue', now, inst)
    end
  end
end
if changed > 0 then wake_one(prefix) end
return changed
