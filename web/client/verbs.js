/**
 * client/verbs.js: the protocol 1.1 verbs and events of roles,
 * moderation and read state, added to HuddleClient.
 *
 * It owns the convenience methods for `room.update`, `member.role`,
 * `member.kick`, `member.ban`, `member.unban`, `member.mute`,
 * `member.unmute`, `room.bans`, `room.close`, `room.read`, `room.mine` and
 * `room.receipts` (each a thin, documented wrapper around
 * `HuddleClient#request`), and the translation of the ephemeral 1.1 events
 * (`member.updated`, `member.removed`, `room.closed`, `read`) into client
 * events. It is kept apart from the facade so that huddle-client.js stays
 * about the connection, and because these events change what the tracker
 * follows: a removal of this user, or a closed room, stops tracking the
 * room (it must not be resumed on the next reconnect).
 *
 * @module huddle-client/verbs
 */

/**
 * The 1.1 events this module handles, by name.
 * @type {Set<string>}
 */
const EVENTS = new Set(['member.updated', 'member.removed', 'room.closed', 'read']);

/**
 * Handles a 1.1 moderation or read-state event frame; returns false for
 * every other frame (the tracker's).
 *
 * Emits:
 * - `member` `{room, user}`: a member's `role` or `muted_until` changed
 *   (`member.updated`; `user.muted_until` is absent when not muted);
 * - `removed` `{room, user, by, reason, bannedUntil, self}`: a user was
 *   kicked (`bannedUntil` null) or banned (ms, or -1 for no end); `self`
 *   when it is this client's user, whose room is then no longer tracked;
 * - `closed` `{room, by}`: the room was closed (and is no longer tracked);
 * - `read` `{room, readSeq}`: this user read the room up to `readSeq` on
 *   another connection (another tab or device).
 *
 * @param {import('../huddle-client.js').HuddleClient} client
 * @param {any} frame an `event` frame
 * @returns {boolean}
 */
export function handleEvent(client, frame) {
  if (!EVENTS.has(frame.event) || typeof frame.room !== 'string') return false;
  const room = frame.room;
  const tracker = client._tracker;
  switch (frame.event) {
    case 'member.updated':
      if (frame.user) client._emit('member', { room, user: frame.user });
      break;
    case 'member.removed': {
      if (!frame.user) break;
      const self = !!client.user && frame.user.id === client.user.id;
      if (self) tracker.rooms.delete(room);
      client._emit('removed', {
        room, user: frame.user, by: frame.by || null, reason: frame.reason ?? null,
        bannedUntil: frame.banned_until ?? null, self,
      });
      break;
    }
    case 'room.closed':
      tracker.rooms.delete(room);
      client._emit('closed', { room, by: frame.by || null });
      break;
    case 'read':
      if (typeof frame.read_seq === 'number') client._emit('read', { room, readSeq: frame.read_seq });
      break;
    default:
      return false;
  }
  return true;
}

/** Copies the fields that are set, renamed to the protocol's. */
function fieldsOf(base, extra, names) {
  const out = { ...base };
  for (const [from, to] of names) if (extra[from] != null) out[to] = extra[from];
  return out;
}

/**
 * The 1.1 methods, installed on `HuddleClient.prototype` by
 * {@link installVerbs}. Each rejects with the server's `HuddleError`
 * (`forbidden` when the role does not allow it, `not_found`, `conflict`…).
 */
const methods = {
  /**
   * Changes a room (owner, moderators): any of `name`, `maxParticipants`,
   * `private`. Every joined connection gets `room.updated` (a `room` event).
   * @param {string} roomId
   * @param {{name?: string, maxParticipants?: number, private?: boolean}} changes
   * @returns {Promise<import('../huddle-client.js').Room>}
   */
  async updateRoom(roomId, changes = {}) {
    const fields = fieldsOf({ room: roomId }, changes,
      [['name', 'name'], ['maxParticipants', 'max_participants'], ['private', 'private']]);
    return (await this.request('room.update', fields)).room;
  },

  /**
   * Gives a participant a role (owner only): `moderator`, `member`, or
   * `owner` to hand the room over (the old owner becomes a moderator).
   * @param {string} roomId @param {string} userId
   * @param {"owner"|"moderator"|"member"} role
   */
  setRole(roomId, userId, role) {
    return this.request('member.role', { room: roomId, user: userId, role });
  },

  /**
   * Removes a user from the room; they may join again.
   * @param {string} roomId @param {string} userId @param {{reason?: string}} [p]
   */
  kick(roomId, userId, { reason } = {}) {
    return this.request('member.kick', fieldsOf({ room: roomId, user: userId }, { reason }, [['reason', 'reason']]));
  },

  /**
   * Removes a user and refuses their joins for `durationMs` (none: until
   * unbanned).
   * @param {string} roomId @param {string} userId
   * @param {{durationMs?: number, reason?: string}} [p]
   */
  ban(roomId, userId, { durationMs, reason } = {}) {
    return this.request('member.ban', fieldsOf({ room: roomId, user: userId }, { durationMs, reason },
      [['durationMs', 'duration_ms'], ['reason', 'reason']]));
  },

  /** @param {string} roomId @param {string} userId */
  unban(roomId, userId) {
    return this.request('member.unban', { room: roomId, user: userId });
  },

  /**
   * Refuses the user's sends, edits and typing in the room for
   * `durationMs` (1 s – 30 days).
   * @param {string} roomId @param {string} userId @param {number} durationMs
   */
  mute(roomId, userId, durationMs) {
    return this.request('member.mute', { room: roomId, user: userId, duration_ms: durationMs });
  },

  /** @param {string} roomId @param {string} userId */
  unmute(roomId, userId) {
    return this.request('member.unmute', { room: roomId, user: userId });
  },

  /**
   * The bans in force (owner, moderators).
   * @param {string} roomId
   * @returns {Promise<{user: any, until: number, by: any, reason: string|null}[]>}
   */
  async bans(roomId) {
    return (await this.request('room.bans', { room: roomId })).bans || [];
  },

  /**
   * Closes the room for good (owner only): its history and code are gone.
   * Stops tracking it at once.
   * @param {string} roomId
   */
  async closeRoom(roomId) {
    const data = await this.request('room.close', { room: roomId });
    this._tracker.rooms.delete(roomId);
    return data;
  },

  /**
   * Marks the room read up to `seq` (the server caps it at the room's last
   * seq and never moves it back). The user's other connections get `read`.
   * @param {string} roomId @param {number} seq
   * @returns {Promise<number>} the stored read position
   */
  async markRead(roomId, seq) {
    return (await this.request('room.read', { room: roomId, seq })).read_seq;
  },

  /**
   * The rooms this user participates in, most recently active first, each
   * with `read_seq`, `unread` and `role`.
   * @param {{limit?: number}} [p]  1–200
   * @returns {Promise<any[]>}
   */
  async myRooms({ limit } = {}) {
    return (await this.request('room.mine', limit != null ? { limit } : {})).rooms || [];
  },

  /**
   * Every participant's read position (rooms of at most 100 participants).
   * @param {string} roomId
   * @returns {Promise<{user: any, read_seq: number}[]>}
   */
  async receipts(roomId) {
    return (await this.request('room.receipts', { room: roomId })).reads || [];
  },
};

/**
 * Adds the 1.1 methods to a client class.
 * @param {Function} Client `HuddleClient`
 */
export function installVerbs(Client) {
  for (const [name, fn] of Object.entries(methods)) {
    Object.defineProperty(Client.prototype, name, { value: fn, writable: true, configurable: true });
  }
}
