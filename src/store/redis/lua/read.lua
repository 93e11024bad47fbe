-- Moves a participant's read position up (`room.read`), capped at the last
-- seq readers may see (`visible_seq`); a lower value changes nothing.
-- Order owned by `scripts::reads::MarkRead`.
-- KEYS: room, members, reads
-- ARGV: user, seq
-- Replies: {'no_room'} | {'not_member'} | {'ok', read_seq, moved (1 or 0)}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
local want = math.min(tonumber(ARGV[2]), visible_seq(KEYS[1]))
local cur = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if want > cur then
  redis.call('HSET', KEYS[3], ARGV[1], want)
  return {'ok', want, 1}
end
return {'ok', cur, 0}
