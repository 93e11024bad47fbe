-- Shared by every script that appends a durable event or trims the log.
-- Prefixed by a header from `scripts::Publish` that sets three locals:
--   PUBLISH_VERB  'PUBLISH' (one Redis), 'SPUBLISH' (a cluster: the channel
--                 shares the room's hash tag, so the room's slot), or false
--                 (replica acknowledgements: publish.lua publishes later);
--   RELEASE_VERB  the verb publish.lua uses;
--   DEFERRED      true when events are published only after replicas
--                 confirmed them; the room's `published` field then marks
--                 the last event readers may see.
--
-- append_event(room_key, events_key, channel, tail, log_len, now):
--   increments the room's `seq`, builds the envelope
--   `0x01 || seq (u64 BE) || tail` (see `crate::codec`), adds it to the
--   event log scored by seq, trims the log to `log_len`, sets
--   `last_activity` and publishes the envelope on `channel` (unless
--   DEFERRED: then it starts the room's `published` mark at the event
--   before, if the room has none yet).
-- visible_seq(room_key): the last seq readers may see: `seq`, or the
--   `published` mark when DEFERRED.
-- write_message(msg_key, messages_key, msg_id, seq, env, ttl):
--   stores the envelope as the message's state with its TTL and indexes
--   the id by seq.
-- trim_expired(messages_key, events_key, msg_prefix, max_remove, countable_key):
--   drops expired messages from the index (and from `countable:{R}`, the
--   messages unread counts count) and every event older than the
--   oldest message still alive. It looks at the oldest message alone
--   first, then in batches of 100. The message keys it reads are found here,
--   `msg_prefix .. id`: the prefix is the room's `message:{R}:`, so they
--   share the room's hash tag (and slot) with the declared KEYS.
-- newest_users(presence_key, limit): the users of the newest presence
--   entries (`USER:CONN` by join time), at most `limit` distinct, reading
--   at most 4 × limit entries, so a user with many connections cannot make
--   it read more. The roster of a room above `limit` participants.
local function newest_users(presence_key, limit)
  local ids, seen, start = {}, {}, 0
  while #ids < limit and start < 4 * limit do
    local batch = redis.call('ZREVRANGE', presence_key, start, start + limit - 1)
    if #batch == 0 then break end
    for _, entry in ipairs(batch) do
      local user = string.match(entry, '^(.*):[^:]*$')
      if user and not seen[user] and #ids < limit then
        seen[user] = true
        ids[#ids + 1] = user
      end
    end
    start = start + limit
  end
  return ids
end

local function be64(n)
  local out = {}
  for i = 8, 1, -1 do
    local b = n % 256
    out[i] = string.char(b)
    n = (n - b) / 256
  end
  return table.concat(out)
end
local function append_event(room_key, events_key, channel, tail, log_len, now)
  local seq = redis.call('HINCRBY', room_key, 'seq', 1)
  local env = string.char(1) .. be64(seq) .. tail
  redis.call('ZADD', events_key, seq, env)
  redis.call('ZREMRANGEBYRANK', events_key, 0, -(tonumber(log_len) + 1))
  redis.call('HSET', room_key, 'last_activity', now)
  if DEFERRED then
    redis.call('HSETNX', room_key, 'published', seq - 1)
  else
    redis.call('HDEL', room_key, 'published')
    redis.call(PUBLISH_VERB, channel, env)
  end
  return seq, env
end
local function visible_seq(room_key)
  local seq = tonumber(redis.call('HGET', room_key, 'seq') or '0')
  if DEFERRED then
    local published = redis.call('HGET', room_key, 'published')
    if published then return math.min(seq, tonumber(published)) end
  end
  return seq
end
local function write_message(msg_key, messages_key, msg_id, seq, env, ttl)
  redis.call('SET', msg_key, env, 'PX', ttl)
  redis.call('ZADD', messages_key, seq, msg_id)
end
local function trim_expired(messages_key, events_key, msg_prefix, max_remove, countable_key)
  local removed = 0
  -- The oldest message is read alone first: it is alive almost always (on
  -- every resume and send), and then it is all there is to read.
  local size = 1
  while removed < max_remove do
    local batch = redis.call('ZRANGE', messages_key, 0, size - 1, 'WITHSCORES')
    size = 100
    if #batch == 0 then
      redis.call('DEL', events_key, countable_key)
      return removed
    end
    for i = 1, #batch, 2 do
      if redis.call('EXISTS', msg_prefix .. batch[i]) == 1 then
        redis.call('ZREMRANGEBYSCORE', events_key, '-inf', '(' .. batch[i + 1])
        return removed
      end
      redis.call('ZREM', messages_key, batch[i])
      redis.call('ZREM', countable_key, batch[i])
      removed = removed + 1
    end
  end
  return removed
end
