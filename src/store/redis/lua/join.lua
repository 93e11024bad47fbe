-- Adds a connection to a room; the user's first one checks capacity and
-- writes the system message, unless the room is big (more than BIG_ROOM
-- participants with this user: then nothing proportional to the room is
-- written, and the caller coalesces the change). Order owned by
-- `scripts::Join`.
-- A user banned from the room (`bans:{R}`, 1.1) is refused, on every join,
-- first or not; an expired ban is removed. The ban's end is compared with
-- ARGV now.
-- KEYS: room, members, member_conns, presence, messages, events, message,
--       member_ids, bans
-- ARGV: user_id, user_json, conn, presence_member, now, msg_id, tail, ttl_ms,
--       log_len, channel, by_id ('1': a private room refuses a newcomer),
--       announcement, deadline
-- The announcement (the `participant.joined` envelope, or empty) is
-- published right after the system message, unless DEFERRED (the caller
-- publishes it after the replicas confirm): both reach every node in the
-- same read, so a connection gets them in one write.
-- Replies: {'no_room'} | {'banned', until (ms, -1 none)} | {'private'} | {'full'} |
--          {'ok', 1, seq of the system message} | {'ok', 0} | {'quiet', participant count}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
local ban = redis.call('HGET', KEYS[9], ARGV[1])
if ban then
  local ok, rec = pcall(cjson.decode, ban)
  local until_ms = -1
  if ok and type(rec) == 'table' then until_ms = tonumber(rec['until']) or -1 end
  if until_ms < 0 or until_ms > tonumber(ARGV[5]) then return {'banned', until_ms} end
  redis.call('HDEL', KEYS[9], ARGV[1])
end
local first = redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
local count = 0
if first then
  if ARGV[11] == '1' and redis.call('HGET', KEYS[1], 'private') == '1' then return {'private'} end
  local max = tonumber(redis.call('HGET', KEYS[1], 'max_participants'))
  count = redis.call('HLEN', KEYS[2])
  if count >= max then return {'full'} end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[8], 0, ARGV[1])
  count = count + 1
end
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
if first then
  if count > BIG_ROOM then
    redis.call('HSET', KEYS[1], 'last_activity', ARGV[5])
    return {'quiet', count}
  end
  local seq, env = append_event(KEYS[1], KEYS[6], ARGV[10], ARGV[7], ARGV[9], ARGV[5])
  write_message(KEYS[7], KEYS[5], ARGV[6], seq, env, ARGV[8])
  if PUBLISH_VERB and ARGV[12] ~= '' then redis.call(PUBLISH_VERB, ARGV[10], ARGV[12]) end
  return {'ok', 1, seq}
end
return {'ok', 0}
