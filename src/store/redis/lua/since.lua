-- Drops expired messages (and the events about them), then reads the
-- room's seq and the retained events after `since` consistently (both stop
-- at `visible_seq`: with replica acknowledgements, at the last published
-- event).
-- Order owned by `scripts::Since`.
-- KEYS: room, events, messages, countable
-- ARGV: since, message key prefix (`message:{R}:`, the room's hash tag)
-- Reply: {seq, {envelope...}}
trim_expired(KEYS[3], KEYS[2], ARGV[2], 1000, KEYS[4])
local seq = visible_seq(KEYS[1])
local evs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], seq)
return {seq, evs}
