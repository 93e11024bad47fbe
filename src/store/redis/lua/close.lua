-- Deletes an idle room nobody is connected to. Order owned by
-- `scripts::Close`.
-- KEYS: room, members, messages, events, presence, member_ids, changes,
--       changes_gate, roles, bans, mutes, reads, countable
-- ARGV: member_conns key prefix (`member_conns:{R}:`, the room's hash tag),
--       idle-before ms
-- The member connection sets it deletes are found here (one per member in
-- KEYS[2]) as prefix .. user id: they share the room's hash tag and slot.
-- Replies: {'gone'} | {'busy'} | {'ok', code}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('ZCARD', KEYS[5]) > 0 then return {'busy'} end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_activity') or '0')
if last >= tonumber(ARGV[2]) then return {'busy'} end
local code = redis.call('HGET', KEYS[1], 'code') or ''
for _, u in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('DEL', ARGV[1] .. u) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
  KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13])
return {'ok', code}
