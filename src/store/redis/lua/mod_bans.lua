-- room.bans: the bans in force, at most ARGV[3] of them (the ones ending
-- soonest, bans without an end last, ties by user id; see
-- `store::moderation::MAX_BANS_LISTED`); expired ones are removed here.
-- Order owned by `scripts::moderation::Bans`.
-- KEYS: room, roles, bans
-- ARGV: actor, now, most listed
-- Replies: {'no_room'} | {'forbidden', actor role, 'member'} |
--          {'ok', record...}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local actor = role_of(KEYS[1], KEYS[2], ARGV[1])
if not allowed('bans', actor, nil) then return {'forbidden', actor, 'member'} end
local held = {}
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if ban_holds(all[i + 1], ARGV[2]) then
    held[#held + 1] = {all[i], ban_until(all[i + 1]), all[i + 1]}
  else
    redis.call('HDEL', KEYS[3], all[i])
  end
end
local function sooner(a, b)
  local ao, bo = a[2] < 0, b[2] < 0
  if ao ~= bo then return bo end
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[1] < b[1]
end
local most = tonumber(ARGV[3])
if #held > most then table.sort(held, sooner) end
local out = {'ok'}
for i = 1, math.min(#held, most) do
  out[#out + 1] = held[i][3]
end
return out
