-- One page of a room's members by user id. Order owned by
-- `scripts::Members`.
-- KEYS: members, member_ids
-- ARGV: after (a user id, or '' for the first page), limit
-- `member_ids` is kept next to `room_members` by create, join, leave and
-- close. A room written before it existed (or whose index is otherwise out
-- of step, which the two counts tell) has it rebuilt here, once.
-- Replies: {more (0|1), {user_id…}, {user_json or false…}}
local n = redis.call('HLEN', KEYS[1])
if redis.call('ZCARD', KEYS[2]) ~= n then
  redis.call('DEL', KEYS[2])
  local ids = redis.call('HKEYS', KEYS[1])
  for i = 1, #ids, 500 do
    local batch = {}
    for j = i, math.min(i + 499, #ids) do
      batch[#batch + 1] = 0
      batch[#batch + 1] = ids[j]
    end
    redis.call('ZADD', KEYS[2], unpack(batch))
  end
end
local limit = tonumber(ARGV[2])
local from = '-'
if ARGV[1] ~= '' then from = '(' .. ARGV[1] end
local ids = redis.call('ZRANGEBYLEX', KEYS[2], from, '+', 'LIMIT', 0, limit + 1)
local more = 0
if #ids > limit then
  more = 1
  ids[#ids] = nil
end
if #ids == 0 then return {0, {}, {}} end
return {more, ids, redis.call('HMGET', KEYS[1], unpack(ids))}
