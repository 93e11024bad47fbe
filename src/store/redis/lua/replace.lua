-- Compare-and-set of a message's state, appending its event.
-- Order owned by `scripts::Replace`.
-- An edit names its author (`muted_user`): muted in the room (`mutes:{R}`,
-- 1.1, until > now), the edit is refused. A deletion names nobody ('').
-- A delete takes the message out of `countable:{R}` (unread counts).
-- KEYS: room, events, message, mutes, countable
-- ARGV: expected, tail, log_len, now, channel, muted_user, msg_id,
--       deleting (1 or 0), deadline
-- A room that is gone (closed by its owner or the idle sweep; its message
-- records are left to expire) is 'gone' too: appending would recreate a
-- partial room hash.
-- Replies: {'gone'} | {'changed'} | {'muted', until} | {'ok', seq}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
local cur = redis.call('GET', KEYS[3])
if not cur then return {'gone'} end
if cur ~= ARGV[1] then return {'changed'} end
if ARGV[6] ~= '' then
  local muted = tonumber(redis.call('HGET', KEYS[4], ARGV[6]) or '0')
  if muted > tonumber(ARGV[4]) then return {'muted', muted} end
end
local seq, env = append_event(KEYS[1], KEYS[2], ARGV[5], ARGV[2], ARGV[3], ARGV[4])
redis.call('SET', KEYS[3], env, 'KEEPTTL')
if ARGV[8] == '1' then redis.call('ZREM', KEYS[5], ARGV[7]) end
return {'ok', seq}
