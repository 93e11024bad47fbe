-- Drops expired messages from the index and the events about them.
-- Order owned by `scripts::Trim`.
-- KEYS: messages, events, countable
-- ARGV: message key prefix (`message:{R}:`, the room's hash tag)
-- Reply: how many were dropped (at most 1000 a call).
return trim_expired(KEYS[1], KEYS[2], ARGV[1], 1000, KEYS[3])
