-- room.close by its owner: publishes `room.closed` on the room's channel
-- (RELEASE_VERB, at once), then deletes the room and every key of it. The
-- member connection sets and typing keys it deletes are found here (one per
-- member in KEYS[2]) as prefix .. user id: they share the room's hash tag
-- and slot. Message records (`message:{R}:M`) are left to expire, as after
-- the idle sweep: nothing reaches them once the room is gone. The caller
-- releases the code and drops the room from the index.
-- Order owned by `scripts::moderation::CloseRoom`.
-- KEYS: room, members, messages, events, presence, member_ids, changes,
--       changes_gate, roles, bans, mutes, reads, countable
-- ARGV: actor, closed envelope, channel, member_conns prefix, typing prefix,
--       deadline
-- Replies: {'no_room'} | {'forbidden', actor role, 'member'} | {'ok', code}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[9], ARGV[1])
if not allowed('close', actor, nil) then return {'forbidden', actor, 'member'} end
local code = redis.call('HGET', KEYS[1], 'code') or ''
redis.call(RELEASE_VERB, ARGV[3], ARGV[2])
for _, u in ipairs(redis.call('HKEYS', KEYS[2])) do
  redis.call('DEL', ARGV[4] .. u, ARGV[5] .. u)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13])
return {'ok', code}
