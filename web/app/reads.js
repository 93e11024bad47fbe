// reads.js: read state on the page (protocol 1.1 "Read state"). It owns
// the unread badges' sync with the server: the room list is filled from
// `room.mine` (every room the user participates in, with its `unread`
// count and `role`, so rooms joined on another device or tab show up),
// the open room is marked read (`room.read`) while its messages are on a
// visible page, the list is re-read every 30 s (rooms not joined here send
// no events), and a `read` event (the same user read a room on another
// tab or device) clears or recounts that room's badge. Against a server
// without read state (a `bad_request` for the verb) it turns itself off
// and the page counts unread messages locally as before.

import { roomView, state, watchRooms } from './rooms.js';
import { bindActions, renderRoomList } from './render.js';
import { joinRoom, openRoom } from './actions.js';
import { explain, toast } from './dom.js';

/** Wait before marking read, so a burst of messages costs one `room.read`. */
const READ_DEBOUNCE_MS = 250;
/** Wait before re-reading `room.mine` after `read` events. */
const MINE_DEBOUNCE_MS = 300;
/**
 * How often a visible page re-reads `room.mine`: rooms this tab has not
 * joined (joined on another device) send it no events, so their counts
 * are refreshed by polling.
 */
const MINE_POLL_MS = 30_000;

/** Whether the server has read state (false after a `bad_request`). */
let supported = true;
let mineTimer = null;

function unsupported(e) {
  if (e && e.code === 'bad_request') supported = false;
}

/** Re-reads the user's rooms and their unread counts (`room.mine`). */
export async function refreshMine() {
  const client = state.client;
  if (!supported || !client || client.state !== 'online') return;
  let rooms;
  try {
    rooms = await client.myRooms({ limit: 200 });
  } catch (e) {
    unsupported(e);
    return;
  }
  if (client !== state.client) return;
  for (const room of rooms) {
    const known = state.rooms.get(room.id);
    const rv = roomView(known ? { ...known.room, ...room } : room);
    if (room.role) rv.role = room.role;
    rv.readSeq = Math.max(rv.readSeq || 0, room.read_seq || 0);
    rv.unread = room.id === state.active ? 0 : room.unread || 0;
  }
  renderRoomList();
  markRead();
}

function refreshMineSoon() {
  clearTimeout(mineTimer);
  mineTimer = setTimeout(refreshMine, MINE_DEBOUNCE_MS);
}

/** The last seq this page knows of a room. */
function lastSeqOf(rv) {
  return Math.max(state.client?.lastSeq(rv.room.id) ?? 0, rv.room.last_seq || 0);
}

/** Marks the open room read up to its last seq, when the page is visible. */
export function markRead() {
  const rv = state.active && state.rooms.get(state.active);
  if (!supported || !rv || document.hidden || !state.client) return;
  clearTimeout(rv.readTimer);
  rv.readTimer = setTimeout(async () => {
    const seq = lastSeqOf(rv);
    if (!seq || seq <= (rv.readSeq || 0) || rv.room.id !== state.active || document.hidden) return;
    try {
      const stored = await state.client.markRead(rv.room.id, seq);
      rv.readSeq = Math.max(rv.readSeq || 0, stored ?? seq);
    } catch (e) {
      unsupported(e);
    }
  }, READ_DEBOUNCE_MS);
}

function onRead({ room, readSeq }) {
  const rv = state.rooms.get(room);
  if (!rv) { refreshMineSoon(); return; }
  rv.readSeq = Math.max(rv.readSeq || 0, readSeq);
  if (readSeq >= lastSeqOf(rv)) rv.unread = 0;
  else refreshMineSoon();
  renderRoomList();
}

/** Opens a room from the list: one known from `room.mine` but not joined on this tab is joined first. */
async function openListed(id) {
  if (!state.client || state.client.trackedRooms().includes(id)) { openRoom(id); return; }
  try {
    await joinRoom({ room: id });
  } catch (e) {
    toast(explain(e, 'Could not open the room'), { error: true });
  }
}

/** Attaches the read-state handlers to `client`. */
export function subscribeReads(client) {
  supported = true;
  client.on('read', onRead);
  client.on('message', ({ room }) => { if (room === state.active) markRead(); });
  client.on('state', ({ state: s }) => { if (s === 'online') refreshMine(); });
}

bindActions({ openRoom: openListed });
watchRooms({ roomOpened: () => markRead() });
document.addEventListener('visibilitychange', () => { if (!document.hidden) markRead(); });
setInterval(() => { if (!document.hidden) refreshMine(); }, MINE_POLL_MS);
