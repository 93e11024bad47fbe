-- Sets or clears a user's typing indicator in a room; whether to tell the room.
-- Order owned by `scripts::Typing`.
-- KEYS: typing:{R}:USER (holds when the room was last told, Redis ms)
-- ARGV: active (1 or 0), ttl ms, repeat ms
-- Reply: 1 tell the room, 0 an indicator told less than `repeat` ago was
-- only extended.
if ARGV[1] == '0' then
  redis.call('DEL', KEYS[1])
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local told = tonumber(redis.call('GET', KEYS[1]) or '0')
if told and told > 0 and now - told < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 0
end
redis.call('SET', KEYS[1], now, 'PX', ARGV[2])
return 1
