-- member.role: permission check and the role change; handing the room over
-- (`owner`) makes the old owner (the actor: only the owner may) a
-- moderator and lifts the new owner's mute (nobody may unmute an owner).
-- Order owned by `scripts::moderation::SetRole`.
-- KEYS: room, roles, members, mutes
-- ARGV: actor, target, role, deadline
-- Replies: {'no_room'} | {'forbidden', actor role, target role} |
--          {'not_participant'} | {'ok'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
local target = role_of(KEYS[1], KEYS[2], ARGV[2])
if not allowed('role', actor, target) then return {'forbidden', actor, target} end
if ARGV[3] ~= 'member' and redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then
  return {'not_participant'}
end
if ARGV[3] == 'owner' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], 'moderator')
elseif ARGV[3] == 'moderator' then
  redis.call('HSET', KEYS[2], ARGV[2], 'moderator')
else
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return {'ok'}
