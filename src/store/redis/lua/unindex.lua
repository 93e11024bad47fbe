-- Drops rooms from a user's room index unless they were joined again
-- since. Order owned by `scripts::Unindex`.
-- KEYS: user_rooms:{U}
-- ARGV: room id, bound, room id, bound, ...: each room goes only while its
--       score (the join time, ms) is below its bound.
-- Reply: how many rooms were dropped.
local dropped = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) < tonumber(ARGV[i + 1]) then
    dropped = dropped + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return dropped
