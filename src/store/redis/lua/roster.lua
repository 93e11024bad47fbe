-- At most `limit` participants, reading nothing proportional to the room.
-- Order owned by `scripts::Roster`.
-- KEYS: members, presence
-- ARGV: limit
-- A room of at most `limit` participants answers all of them (HVALS of at
-- most `limit` fields). A bigger one answers the users of the newest
-- presence entries (`USER:CONN` by join time), reading at most 4 × limit
-- entries, so a user with many connections cannot make it read more.
-- Replies: {0, {user_json…}} (everyone) | {1, {user_json or false…}}
--          (newest first)
local limit = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) <= limit then
  return {0, redis.call('HVALS', KEYS[1])}
end
local ids = newest_users(KEYS[2], limit)
if #ids == 0 then return {1, {}} end
return {1, redis.call('HMGET', KEYS[1], unpack(ids))}
