-- room.bans: the ban records in force; expired ones are removed here.
-- Order owned by `scripts::moderation::Bans`.
-- KEYS: room, roles, bans
-- ARGV: actor, now
-- Replies: {'no_room'} | {'forbidden', actor role, 'member'} |
--          {'ok', record...}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
if not allowed('bans', actor, nil) then return {'forbidden', actor, 'member'} end
local out = {'ok'}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if ban_holds(all[i + 1], ARGV[2]) then
    out[#out + 1] = all[i + 1]
  else
    redis.call('HDEL', KEYS[3], all[i])
  end
end
return out
