-- member.kick and member.ban: permission check; the ban recorded (a banned
-- moderator loses the role); every connection of the target removed from
-- the room (members, member ids, presence, its connection set, typing);
-- `member.removed` published on the room's channel (RELEASE_VERB: at once,
-- also with replica acknowledgements: it is ephemeral) before the "left"
-- system message, so the target's nodes detach it before that. A big room
-- (more than BIG_ROOM participants with the target) gets no system message.
-- Order owned by `scripts::moderation::Remove`.
-- KEYS: room, roles, bans, members, member_ids, presence, member_conns of the
--       target, typing of the target, messages, events, message (note)
-- ARGV: actor, target, action ('kick'|'ban'), ban record ('' for a kick),
--       removed envelope, channel, now, note id, note tail, ttl ms, log len,
--       deadline
-- Replies: {'no_room'} | {'forbidden', actor role, target role} |
--          {'absent'} | {'quiet', participant count} | {'ok', seq}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
local target = role_of(KEYS[1], KEYS[2], ARGV[2])
if not allowed(ARGV[3], actor, target) then return {'forbidden', actor, target} end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
for _, conn in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  redis.call('ZREM', KEYS[6], ARGV[2] .. ':' .. conn)
end
redis.call('DEL', KEYS[7], KEYS[8])
local before = redis.call('HLEN', KEYS[4])
if redis.call('HDEL', KEYS[4], ARGV[2]) == 0 then
  if ARGV[4] ~= '' then redis.call(RELEASE_VERB, ARGV[6], ARGV[5]) end
  return {'absent'}
end
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call(RELEASE_VERB, ARGV[6], ARGV[5])
if before > BIG_ROOM then
  redis.call('HSET', KEYS[1], 'last_activity', ARGV[7])
  return {'quiet', before - 1}
end
local seq, env = append_event(KEYS[1], KEYS[10], ARGV[6], ARGV[9], ARGV[11], ARGV[7])
write_message(KEYS[11], KEYS[9], ARGV[8], seq, env, ARGV[10])
return {'ok', seq}
