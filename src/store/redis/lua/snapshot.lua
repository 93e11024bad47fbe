-- The join snapshot in one call, read after the join itself (and after the
-- caller subscribed to the room's events, so nothing after it is missed):
-- the room's hash and participant count; at most `limit` participants
-- (as roster.lua: everyone in a room of at most `limit`, else the users of
-- the newest presence entries, reading at most 4 × limit of them) with the
-- moderators and mutes among them; and, given `since`, the retained events
-- after it (as since.lua, after the same expiry trim, up to `visible_seq`);
-- without, the newest `newest` messages up to `visible_seq` (as a history
-- page: expired ones met are trimmed, then skipped).
-- Order owned by `scripts::Snapshot`.
-- KEYS: room, members, presence, roles, mutes, events, messages, countable
-- ARGV: limit, since (-1: no replay), message key prefix (`message:{R}:`,
--       the room's hash tag), newest (messages, without `since`)
-- Replies: {} (no room) |
--          {{field, value…}, count, partial (0/1), {user_json or false…},
--           {moderator id…}, {muted id, until…}, seq, {envelope…},
--           {message state…, newest first}}
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {} end
local limit = tonumber(ARGV[1])
local since = tonumber(ARGV[2])
if since >= 0 then trim_expired(KEYS[7], KEYS[6], ARGV[3], 1000, KEYS[8]) end
local count = redis.call('HLEN', KEYS[2])
local ids, users, partial = {}, {}, 0
if count <= limit then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    ids[#ids + 1] = all[i]
    users[#users + 1] = all[i + 1]
  end
else
  partial = 1
  ids = newest_users(KEYS[3], limit)
  if #ids > 0 then users = redis.call('HMGET', KEYS[2], unpack(ids)) end
end
local moderators, muted = {}, {}
if #ids > 0 then
  local roles = redis.call('HMGET', KEYS[4], unpack(ids))
  local mutes = redis.call('HMGET', KEYS[5], unpack(ids))
  for i = 1, #ids do
    if roles[i] == 'moderator' then moderators[#moderators + 1] = ids[i] end
    if mutes[i] then
      muted[#muted + 1] = ids[i]
      muted[#muted + 1] = mutes[i]
    end
  end
end
local seq = visible_seq(KEYS[1])
local evs, msgs = {}, {}
if since >= 0 then
  evs = redis.call('ZRANGEBYSCORE', KEYS[6], '(' .. ARGV[2], seq)
elseif tonumber(ARGV[4]) > 0 then
  -- The states of the newest messages; false when one has expired. One
  -- MGET: a GET per message from Lua cost ten times as much, and a script
  -- holds Redis for all of it.
  local function newest()
    local ids = redis.call('ZREVRANGEBYSCORE', KEYS[7], seq, '-inf', 'LIMIT', 0, ARGV[4])
    if #ids == 0 then return {}, true end
    local keys = {}
    for i, id in ipairs(ids) do keys[i] = ARGV[3] .. id end
    local found = redis.call('MGET', unpack(keys))
    local states, whole = {}, true
    for i = 1, #ids do
      if found[i] then states[#states + 1] = found[i] else whole = false end
    end
    return states, whole
  end
  local whole
  msgs, whole = newest()
  if not whole then
    trim_expired(KEYS[7], KEYS[6], ARGV[3], 1000, KEYS[8])
    msgs = newest()
  end
end
return {fields, count, partial, users, moderators, muted, seq, evs, msgs}
