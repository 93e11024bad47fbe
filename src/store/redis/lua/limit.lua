-- A fixed-window counter of the abuse limits.
-- KEYS[1] limit:NAME
-- ARGV[1] "count" (add one; the first count starts a window of ARGV[2] ms)
--         or "peek" (read only)
-- ARGV[2] window, ms
-- Returns {count, ms until the window ends}; {0, 0} when there is none.
local n
if ARGV[1] == 'count' then
  n = redis.call('INCR', KEYS[1])
  if n == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = 0
end
return {n, ttl}
