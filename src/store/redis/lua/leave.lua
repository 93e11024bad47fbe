-- Removes a connection from a room; the user's last one removes the
-- participant and writes the system message. Order owned by `scripts::Leave`.
-- KEYS: room, members, member_conns, presence, messages, events, message
-- ARGV: user_id, conn, presence_member, now, msg_id, tail, ttl_ms, log_len,
--       channel, deadline
-- Replies: {'not_joined'} | {'ok', 0} | {'ok', 1} (last, room gone) |
--          {'ok', 1, seq of the system message}
redis.call('ZREM', KEYS[4], ARGV[3])
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return {'not_joined'} end
if redis.call('SCARD', KEYS[3]) > 0 then return {'ok', 0} end
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local seq, env = append_event(KEYS[1], KEYS[6], ARGV[9], ARGV[6], ARGV[8], ARGV[4])
  write_message(KEYS[7], KEYS[5], ARGV[5], seq, env, ARGV[7])
  return {'ok', 1, seq}
end
return {'ok', 1}
