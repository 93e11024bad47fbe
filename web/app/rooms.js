// rooms.js: the page's view model. It owns `state` (the client, who we
// are, the open room, the typing and toast bookkeeping) and one RoomView
// per room: its messages by id in creation order, participants, who is
// online or typing, unread count and the sends still in flight. It never
// touches the page: render.js registers, with `watchRooms`, what to redraw
// when a room is added or a message stored.

/**
 * @typedef {object} RoomView
 * @property {any} room                          latest room object
 * @property {Map<string, any>} messages         id → message
 * @property {{id: string, seq: number}[]} sorted ids by creation seq
 * @property {Map<string, any>} participants     id → user (in a big room: the pages loaded so far)
 * @property {string|null} membersCursor         where the next page of room.members starts (null: none)
 * @property {Set<string>} online                user ids online
 * @property {Map<string, {user: any, timer: any}>} typing
 * @property {boolean|null} hasMore              older history exists (null: unknown)
 * @property {number} unread
 * @property {Map<string, any>} outbox           local id → pending send
 */

/** Above this many participants a room is big: paged member list, counts, no presence polling. */
export const BIG_ROOM = 100;
/** Users kept in a room's people list at most (more are paged in on demand). */
export const PEOPLE_MAX = 500;

/** Whether a room is big (protocol 1.1 "Big rooms"). */
export function isBig(rv) {
  return (rv.room.participant_count || 0) > BIG_ROOM;
}

export const state = {
  /** @type {import('../huddle-client.js').HuddleClient|null} */
  client: null,
  me: null,
  /** every user id this tab has had (a guest gets a new one per connection) */
  myIds: new Set(),
  /** @type {Map<string, RoomView>} */
  rooms: new Map(),
  active: null,
  signedIn: false,
  editing: null, // {id, draft}
  typingSentAt: 0,
  typingRoom: null,
  presenceTimer: null,
  lastRateToast: 0,
  nextLocalId: 1,
};

/** What the page does when the model changes (set by render.js). */
const watchers = {
  /** a RoomView was created (the room list shows it) */
  roomAdded: () => {},
  /** @type {(rv: RoomView, m: any, had: any, at: number|undefined) => void} a message was stored */
  messageStored: () => {},
  /** @type {(rv: RoomView) => void} a room was opened (reads.js marks it read) */
  roomOpened: () => {},
};

/** Tells the watchers a room was opened. */
export function roomOpened(rv) {
  watchers.roomOpened(rv);
}

/** Registers the page's reactions to model changes (see `watchers`). */
export function watchRooms(w) {
  Object.assign(watchers, w);
}

/** Whether a user is this tab (under any of the ids it has had). */
export function isMine(user) {
  return !!user && state.myIds.has(user.id);
}

/** The RoomView of a room (created on first sight); a room object refreshes it. */
export function roomView(roomOrId) {
  const id = typeof roomOrId === 'string' ? roomOrId : roomOrId.id;
  let rv = state.rooms.get(id);
  if (!rv) {
    rv = {
      room: typeof roomOrId === 'string' ? { id, name: '…', code: '' } : roomOrId,
      messages: new Map(), sorted: [], participants: new Map(), online: new Set(),
      typing: new Map(), hasMore: null, unread: 0, outbox: new Map(),
      membersCursor: null,
    };
    state.rooms.set(id, rv);
    watchers.roomAdded();
  } else if (typeof roomOrId !== 'string') {
    rv.room = roomOrId;
  }
  return rv;
}

function indexFor(rv, seq) {
  let lo = 0;
  let hi = rv.sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (rv.sorted[mid].seq < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Adds or replaces a message in a room's view (and on screen if active). */
export function upsertMessage(rv, m) {
  const had = rv.messages.get(m.id);
  // Never go back to an older version (a replay re-sends a message's
  // creation before its edits; a late reply may trail its event).
  if (had && had.edited_at && (!m.edited_at || m.edited_at < had.edited_at) && !m.deleted) return;
  if (had && had.deleted && !m.deleted) return; // a tombstone is final
  rv.messages.set(m.id, m);
  let at;
  if (!had) {
    at = indexFor(rv, m.seq);
    rv.sorted.splice(at, 0, { id: m.id, seq: m.seq });
  }
  watchers.messageStored(rv, m, had, at);
}

// ------------------------------------------------------------ roles (1.1)

/**
 * A user's role in a room: from the participant lists (`role`, 1.1), else
 * `owner` for the creator and `member` for anyone else (a 1.0 server).
 * @returns {"owner"|"moderator"|"member"}
 */
export function roleOf(rv, userId) {
  const u = rv.participants.get(userId);
  if (u && u.role) return u.role;
  if (state.me && userId === state.me.id && rv.role) return rv.role;
  return userId === rv.room.created_by ? 'owner' : 'member';
}

/** This tab's role in a room. */
export function myRole(rv) {
  return state.me ? roleOf(rv, state.me.id) : 'member';
}

/**
 * Whether `actor` may kick, ban, mute, unban or unmute `target` (the
 * server's rule, docs/protocol.md "Roles and moderation"): nobody acts on
 * the owner, the owner on everyone else, a moderator on members only.
 */
export function mayModerate(actor, target) {
  if (target === 'owner') return false;
  if (actor === 'owner') return true;
  return actor === 'moderator' && target === 'member';
}

/** When a user's mute in a room ends (ms), or 0 when not muted now. */
export function mutedUntil(rv, userId) {
  const u = rv.participants.get(userId);
  const until = (u && u.muted_until) || (state.me && userId === state.me.id ? rv.mutedUntil || 0 : 0);
  return until > Date.now() ? until : 0;
}
