-- Compare-and-set of a message's state, appending its event.
-- Order owned by `scripts::Replace`.
-- KEYS: room, events, message, countable
-- ARGV: expected, tail, log_len, now, channel, msg_id, deleting (1 or 0),
--       deadline
-- A delete takes the message out of `countable:{R}` (unread counts).
-- Replies: {'gone'} | {'changed'} | {'ok', seq}
local cur = redis.call('GET', KEYS[3])
if not cur then return {'gone'} end
if cur ~= ARGV[1] then return {'changed'} end
local seq, env = append_event(KEYS[1], KEYS[2], ARGV[5], ARGV[2], ARGV[3], ARGV[4])
redis.call('SET', KEYS[3], env, 'KEEPTTL')
if ARGV[7] == '1' then redis.call('ZREM', KEYS[4], ARGV[6]) end
return {'ok', seq}
