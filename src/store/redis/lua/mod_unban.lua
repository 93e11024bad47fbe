-- member.unban. Order owned by `scripts::moderation::Unban`.
-- KEYS: room, roles, bans
-- ARGV: actor, target, now, deadline
-- Replies: {'no_room'} | {'forbidden', actor role, target role} |
--          {'ok', 1 a ban in force was lifted | 0}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
local target = role_of(KEYS[1], KEYS[2], ARGV[2])
if not allowed('unban', actor, target) then return {'forbidden', actor, target} end
local rec = redis.call('HGET', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
if rec and ban_holds(rec, ARGV[3]) then return {'ok', 1} end
return {'ok', 0}
