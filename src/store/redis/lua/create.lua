-- Creates a room with its creator joined and its system message written.
-- Order owned by `scripts::Create`.
-- KEYS: room, members, member_conns, presence, messages, events, message,
--       member_ids
-- ARGV: id, code, name, created_by, created_at, max, private, user_id,
--       user_json, conn, presence_member, msg_id, tail, ttl_ms, log_len, now,
--       channel, deadline
-- Replies: {'exists'} | {'ok', seq}
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'code', ARGV[2], 'name', ARGV[3],
  'created_by', ARGV[4], 'created_at', ARGV[5], 'max_participants', ARGV[6],
  'private', ARGV[7], 'seq', 0, 'last_activity', ARGV[16], 'owner', ARGV[4])
redis.call('HSET', KEYS[2], ARGV[8], ARGV[9])
redis.call('ZADD', KEYS[8], 0, ARGV[8])
redis.call('SADD', KEYS[3], ARGV[10])
redis.call('ZADD', KEYS[4], ARGV[16], ARGV[11])
local seq, env = append_event(KEYS[1], KEYS[6], ARGV[17], ARGV[13], ARGV[15], ARGV[16])
write_message(KEYS[7], KEYS[5], ARGV[12], seq, env, ARGV[14])
return {'ok', seq}
