-- member.mute (until ms) and member.unmute (until ''). Order owned by
-- `scripts::moderation::Mute`.
-- KEYS: room, roles, mutes
-- ARGV: actor, target, until, deadline
-- Replies: {'no_room'} | {'forbidden', actor role, target role} | {'ok'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
local target = role_of(KEYS[1], KEYS[2], ARGV[2])
local action = 'unmute'
if ARGV[3] ~= '' then action = 'mute' end
if not allowed(action, actor, target) then return {'forbidden', actor, target} end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[3], ARGV[2])
else
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
end
return {'ok'}
