-- Drops expired messages (and the events about them), then reads the
-- room's seq and the retained events after `since` consistently.
-- Order owned by `scripts::Since`.
-- KEYS: room, events, messages
-- ARGV: since, message key prefix (`message:{R}:`, the room's hash tag)
-- Reply: {seq, {envelope...}}
trim_expired(KEYS[3], KEYS[2], ARGV[2], 1000)
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local evs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
return {seq, evs}
