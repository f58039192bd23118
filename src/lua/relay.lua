-- relay.lua: take deliveries out of this queue's outbox for the relay (Rust, calls::relay),
-- under a claim so that one relay at a time works on an outbox. 'take' claims the outbox for
-- claim_ms and returns its first `max` entries without removing them; 'done' removes the first
-- `n` entries if the claim is still the caller's, and drops the claim. A relay that dies between
-- the two leaves the entries in place: once its claim expires another relay delivers them again,
-- which `deliver` absorbs.
--
-- KEYS[1] outbox     LIST of entries: queue, child id, parent index, kind, parent id, value
--                    (tab separated; the value, last, may hold any byte)
-- KEYS[2] claim      STRING naming the relay that works on the outbox; expires
-- ARGV[1] op         'take' or 'done'
-- ARGV[2] claimant   who relays
-- ARGV[3] number     take: claim_ms; done: n (entries delivered)
-- ARGV[4] max        take: most entries to return ('' for done)
--
-- Output: take: the entries (empty when the outbox is empty or another relay holds the claim);
--         done: 1 removed, 0 the claim was lost (nothing removed)
-- Errors: an unknown op

local outbox, claim = KEYS[1], KEYS[2]
local op, claimant, number = ARGV[1], ARGV[2], tonumber(ARGV[3])

if op == 'take' then
  if redis.call('LLEN', outbox) == 0 then return {} end
  local holder = redis.call('GET', claim)
  if holder and holder ~= claimant then return {} end
  redis.call('SET', claim, claimant, 'PX', number)
  return redis.call('LRANGE', outbox, 0, tonumber(ARGV[4]) - 1)
elseif op == 'done' then
  if redis.call('GET', claim) ~= claimant then return 0 end
  redis.call('LTRIM', outbox, number, -1)
  redis.call('DEL', claim)
  return 1
end
return redis.error_reply('relay.lua: unknown op ' .. tostring(op))
