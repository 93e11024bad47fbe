-- Appends a message. Order owned by `scripts::Send`.
-- A muted author (`mutes:{R}`, 1.1, until > now) is refused before
-- anything is written, unless the send is a retry of one stored already
-- (the duplicate answer comes first).
-- KEYS: room, members, messages, events, message, dedupe, mutes, countable,
--       reads
-- ARGV: user, msg_id, tail, ttl_ms, log_len, now, channel, dedupe_mode,
--       dedupe_ttl_ms, deadline
-- dedupe_mode: 0 none, 1 check then remember, 2 remember (the original expired)
-- Replies: {'no_room'} | {'not_member'} | {'muted', until} | {'duplicate', prior_id} | {'ok', seq}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'no_room'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member'} end
if ARGV[8] == '1' then
  local prior = redis.call('GET', KEYS[6])
  if prior then
    -- With replica acknowledgements the caller WAITs before answering: a
    -- write here moves this connection's replication offset past the
    -- original's, so that WAIT covers the original too.
    if DEFERRED then redis.call('PEXPIRE', KEYS[6], ARGV[9]) end
    return {'duplicate', prior}
  end
end
-- After the duplicate branch: a retry of a send stored before the mute
-- gets the stored message, as any retry does.
local muted = tonumber(redis.call('HGET', KEYS[7], ARGV[1]) or '0')
if muted > tonumber(ARGV[6]) then return {'muted', muted} end
local seq, env = append_event(KEYS[1], KEYS[4], ARGV[7], ARGV[3], ARGV[5], ARGV[6])
write_message(KEYS[5], KEYS[3], ARGV[2], seq, env, ARGV[4])
-- Read state: a sent message counts as unread for others, and its author
-- has read the room up to it (so their own messages never count for them).
redis.call('ZADD', KEYS[8], seq, ARGV[2])
redis.call('HSET', KEYS[9], ARGV[1], seq)
if ARGV[8] ~= '0' then redis.call('SET', KEYS[6], ARGV[2], 'PX', ARGV[9]) end
return {'ok', seq}
