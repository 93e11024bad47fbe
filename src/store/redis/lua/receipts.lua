-- Every participant's read position (`room.receipts`), for a participant,
-- in rooms of at most `max` participants (reads nothing proportional to a
-- bigger room). Order owned by `scripts::reads::Receipts`.
-- KEYS: room, members, reads
-- ARGV: user, max
-- Replies: {'no_room'} | {'not_member'} | {'too_big', participant count} |
--          {'ok', {user JSON...}, {read_seq or false...}} (in the same order)
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
local n = redis.call('HLEN', KEYS[2])
if n > tonumber(ARGV[2]) then return {'too_big', n} end
local all = redis.call('HGETALL', KEYS[2])
local ids, users = {}, {}
for i = 1, #all, 2 do
  ids[#ids + 1] = all[i]
  users[#users + 1] = all[i + 1]
end
if #ids == 0 then return {'ok', users, {}} end
local reads = redis.call('HMGET', KEYS[3], unpack(ids))
-- Capped at what readers may see (a send moves its author's position
-- before replicas confirm it, with acknowledgements on).
local upto = visible_seq(KEYS[1])
for i = 1, #reads do
  reads[i] = tostring(math.min(tonumber(reads[i] or '0'), upto))
end
return {'ok', users, reads}
