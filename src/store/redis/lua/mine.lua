-- One room of `room.mine`, as its participant `user` sees it: drops expired
-- messages first (at most 100 a call, so they stop counting), then counts
-- the countable messages after the user's read position, up to the last
-- seq readers may see: one ZCOUNT, no history scan.
-- Order owned by `scripts::reads::Mine`.
-- KEYS: room, members, reads, countable, roles, messages, events
-- ARGV: user, message key prefix (`message:{R}:`, the room's hash tag)
-- Replies: {'gone'} (no room, or the user is not a participant) |
--          {'ok', room fields (HGETALL), participant count, read_seq,
--           unread, moderator (1 or 0)}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'gone'} end
trim_expired(KEYS[6], KEYS[7], ARGV[2], 100, KEYS[4])
local upto = visible_seq(KEYS[1])
-- A send moves its author's position before replicas confirm it (with
-- acknowledgements on): never show a position past what readers may see.
local read = math.min(tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0'), upto)
local unread = 0
if upto > read then unread = redis.call('ZCOUNT', KEYS[4], '(' .. read, upto) end
local moderator = 0
if redis.call('HGET', KEYS[5], ARGV[1]) == 'moderator' then moderator = 1 end
return {'ok', redis.call('HGETALL', KEYS[1]), redis.call('HLEN', KEYS[2]), read, unread,
  moderator}
