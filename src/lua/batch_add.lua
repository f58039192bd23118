-- batch_add.lua: make room in a batch's callbacks for `count` more jobs. Each callback is a flow
-- member waiting on the batch's jobs (see flow.lua); it is released when every job it waits on
-- has delivered. Adding first raises how many it waits on, so the new jobs (written after this
-- call, with follow-up edges at the position returned) can never be outrun by the callback. A
-- callback no longer waiting (released, cancelled, or failed: on_success after a failed job)
-- is left alone; when none is waiting the batch is over and nothing changes.
--
-- KEYS[1] ready      ZSET id -> ready score (unused; keeps the call in the callbacks' slot)
-- ARGV[1] prefix     'asyncq:{q#0}:'
-- ARGV[2] count      jobs to add
-- ARGV[3..] the callbacks' ids
--
-- Output: the position of the first new job (the same for every waiting callback), or -1 when
--         no callback is waiting any more (nothing changed)
-- Errors: none

local prefix, count = ARGV[1], tonumber(ARGV[2])
local waiting, first = {}, -1
for i = 3, #ARGV do
  local jk = prefix .. 'job:' .. ARGV[i]
  local st = redis.call('HMGET', jk, 's', 'wn')
  if st[1] == 'waiting' then
    waiting[#waiting + 1] = jk
    first = math.max(first, tonumber(st[2]) or 0)
  end
end
for _, jk in ipairs(waiting) do redis.call('HINCRBY', jk, 'wn', count) end
return first
