-- Deletes a join code if it still names the room. Order owned by
-- `scripts::ReleaseCode`.
-- KEYS: room_code
-- ARGV: room id
-- Reply: how many keys were deleted (0 or 1).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
