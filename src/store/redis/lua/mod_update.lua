-- room.update: permission check and the new fields. Order owned by
-- `scripts::moderation::Update`.
-- KEYS: room, roles, members
-- ARGV: actor, name ('' keep), max ('' keep), private ('' keep, '0', '1'),
--       deadline
-- Replies: {'no_room'} | {'forbidden', actor role, 'member'} |
--          {'too_small', participant count} | {'ok'}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
if not allowed('update', actor, nil) then return {'forbidden', actor, 'member'} end
if ARGV[3] ~= '' then
  local count = redis.call('HLEN', KEYS[3])
  if tonumber(ARGV[3]) < count then return {'too_small', count} end
  redis.call('HSET', KEYS[1], 'max_participants', ARGV[3])
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'name', ARGV[2]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'private', ARGV[4]) end
return {'ok'}
