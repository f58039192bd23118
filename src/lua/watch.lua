-- watch.lua: mark a queue watched for `ttl_ms`: while the key lives, the scripts that change a
-- job's state publish each change on the queue's 'events' channel (`tell` in lib/common.lua).
-- Event readers call this when they start and again before the TTL runs out; a reader that dies
-- stops costing anything once the key expires.
--
-- KEYS[1] watch      STRING, 'asyncq:{q#0}:watch'
-- ARGV[1] ttl_ms     how long the mark lasts
--
-- Output: 1
-- Errors: none

redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
return 1
