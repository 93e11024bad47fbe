-- Coalesces a big room's membership changes into at most one
-- `participants.changed` per window, across nodes. Order owned by
-- `scripts::Changes`.
-- KEYS: changes, changes_gate, members
-- ARGV: window_ms, keep (changes kept waiting at most), change… ('j' or
--       'l' followed by the user's JSON)
-- The caller's changes are appended to the room's waiting list (its newest
-- `keep` are kept; it expires if nobody comes back for it). If anything is
-- waiting and nobody took the gate within the window, the caller takes it
-- and gets everything waiting, to publish.
-- Replies: {'none'} | {'wait', ms until the gate opens} |
--          {'publish', participant count, {change…}}
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
if #ARGV > 2 then
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[1], 60000)
end
if redis.call('LLEN', KEYS[1]) == 0 then return {'none'} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return {'wait', redis.call('PTTL', KEYS[2])}
end
local waiting = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return {'publish', redis.call('HLEN', KEYS[3]), waiting}
