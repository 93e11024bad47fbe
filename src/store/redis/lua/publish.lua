-- Publishes, in seq order, every event of the room up to `upto` that is
-- not published yet, and moves the room's `published` mark to it. Runs
-- after `WAIT` confirmed that replicas hold the event `upto` (and so, the
-- replication stream being ordered, every event before it).
-- Order owned by `scripts::Release`.
-- KEYS: room, events
-- ARGV: channel, upto
-- Reply: how many events it published.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local published = tonumber(redis.call('HGET', KEYS[1], 'published') or '0')
local upto = tonumber(ARGV[2])
if published >= upto then return 0 end
local evs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. published, upto)
for _, env in ipairs(evs) do redis.call(RELEASE_VERB, ARGV[1], env) end
redis.call('HSET', KEYS[1], 'published', upto)
return #evs
