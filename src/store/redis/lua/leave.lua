-- Removes a connection from a room; the user's last one removes the
-- participant and writes the system message, unless the room was big (more
-- than BIG_ROOM participants with this user). Order owned by
-- `scripts::Leave`.
-- KEYS: room, members, member_conns, presence, messages, events, message,
--       member_ids
-- ARGV: user_id, conn, presence_member, now, msg_id, tail, ttl_ms, log_len,
--       channel, announcement, deadline
-- The announcement (the `participant.left` envelope, or empty) is
-- published right after the system message, unless DEFERRED (the caller
-- publishes it after the replicas confirm), as in `join.lua`.
-- Replies: {'not_joined'} | {'ok', 0} | {'ok', 1} (last, room gone) |
--          {'ok', 1, seq of the system message} | {'quiet', participant count}
redis.call('ZREM', KEYS[4], ARGV[3])
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return {'not_joined'} end
if redis.call('SCARD', KEYS[3]) > 0 then return {'ok', 0} end
local before = redis.call('HLEN', KEYS[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[8], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  if before > BIG_ROOM then
    redis.call('HSET', KEYS[1], 'last_activity', ARGV[4])
    return {'quiet', redis.call('HLEN', KEYS[2])}
  end
  local seq, env = append_event(KEYS[1], KEYS[6], ARGV[9], ARGV[6], ARGV[8], ARGV[4])
  write_message(KEYS[7], KEYS[5], ARGV[5], seq, env, ARGV[7])
  if PUBLISH_VERB and ARGV[10] ~= '' then redis.call(PUBLISH_VERB, ARGV[9], ARGV[10]) end
  return {'ok', 1, seq}
end
return {'ok', 1}
