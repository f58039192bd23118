-- deliver.lua: hand members of this queue what their parents in other queues delivered (the
-- entries the relay took from those queues' outboxes; see relay.lua). Each entry is applied by
-- `deliver` in lib/common.lua: a member takes each parent's delivery once (a duplicate is
-- absorbed), is released when all have come in, and fails when a parent failed under policy
-- 'fail' (then its own children are told, here or through this queue's outbox).
--
-- KEYS[1] ready      ZSET id -> ready score
-- KEYS[2] wake       LIST holding at most one wake token
-- KEYS[3] outbox     LIST of deliveries for members of other queues
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2..] per entry, 5 values: child id, parent index, kind ('v' value, 's' skip, 'f'
--           failed), parent id, value (encoded result or error record; '' for a skip)
--
-- Output: number of entries added to this queue's outbox (children of members failed here)
-- Errors: none

local ready, wake, outbox = KEYS[1], KEYS[2], KEYS[3]
local prefix = ARGV[1]
local t, now = redis_now()
local queued = 0

for i = 2, #ARGV, 5 do
  local child, parent = ARGV[i], ARGV[i + 3]
  local more = deliver(prefix, ready, wake, child, ARGV[i + 1], ARGV[i + 2], ARGV[i + 4], parent,
    now)
  if more then
    queued = queued + follow_up(prefix, ready, wake, outbox, more[1], more[2], false, more[3], now)
  end
end
tell_all(prefix, now)
return queued
