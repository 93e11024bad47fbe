-- Prepended to every script that writes on a client's behalf. Its last ARGV
-- is a deadline in Redis time (ms): a call that reaches Redis after its
-- caller has given up (answered `unavailable`) must not be applied later,
-- so it is refused with `late` before anything is written.
if redis.replicate_commands then redis.replicate_commands() end
local now_t = redis.call('TIME')
if tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return {'late'}
end
