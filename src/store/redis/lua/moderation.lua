-- Shared by the moderation scripts (mod_*.lua), after the generated
-- permission table (`store::moderation::lua_permission_table`, which
-- defines `allowed(action, actor_role, target_role)`).
--
-- role_of(room_key, roles_key, user): 'owner' (the room's `owner` field,
--   or `created_by` for rooms made before 1.1), 'moderator' (listed in
--   `roles:{R}`) or 'member'.
-- ban_until(record): the `until` of a ban record (JSON), -1 for no end.
-- ban_holds(record, now): whether a ban record holds at `now` (ms).
local function role_of(room_key, roles_key, user)
  local owner = redis.call('HGET', room_key, 'owner') or redis.call('HGET', room_key, 'created_by')
  if user == owner then return 'owner' end
  if redis.call('HGET', roles_key, user) == 'moderator' then return 'moderator' end
  return 'member'
end
local function ban_until(record)
  local ok, rec = pcall(cjson.decode, record)
  if not ok or type(rec) ~= 'table' then return -1 end
  return tonumber(rec['until']) or -1
end
local function ban_holds(record, now)
  local u = ban_until(record)
  return u < 0 or u > tonumber(now)
end
