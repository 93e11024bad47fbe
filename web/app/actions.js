// actions.js: what the user does, from a click or a key to the server
// and back into the view model: open, create, join and leave rooms, page
// back through history, send (with the local outbox), typing, search and
// jumping to a result, refreshing presence and the public room list, and
// the composer, sidebar and people panel toggles. It registers `openRoom`
// and `sendItem` with render.js for the buttons render.js draws.

import { ERROR_TEXT, el, explain, highlighted, icon, narrow, safeUrl, shortTime, toast, ui } from './dom.js';
import { PEOPLE_MAX, isBig, roomOpened, roomView, state, upsertMessage } from './rooms.js';
import {
  bindActions, renderActiveRoom, renderHistoryEdge, renderOutbox, renderPeople, renderRoomHead, scrollToBottom,
} from './render.js';

const PAGE = 50;
const TYPING_REPEAT_MS = 3000;

export function openRoom(id, { focus = true } = {}) {
  if (!state.rooms.has(id)) return;
  if (state.editing) state.editing = null;
  stopTyping();
  state.active = id;
  const rv = state.rooms.get(id);
  rv.unread = 0;
  ui.removedNote.hidden = true;
  closeSearch();
  ui.searchInput.value = '';
  setSidebar(false);
  renderActiveRoom();
  if (rv.room.code) history.replaceState(null, '', `${location.pathname}${location.search}#${encodeURIComponent(rv.room.code)}`);
  loadMembers(rv);
  roomOpened(rv);
  if (focus) ui.input.focus();
}

/**
 * Loads the first page of the room's members (`room.members`), or with
 * `more` the next one, into the people list. Small rooms then refresh who
 * is online; in a big room every listed participant counts as online.
 */
export async function loadMembers(rv, more = false) {
  if (!rv || !state.client || (more && !rv.membersCursor)) return;
  try {
    const page = await state.client.members(rv.room.id, { cursor: more ? rv.membersCursor : null, limit: 100 });
    if (!more) rv.participants = new Map();
    for (const u of page.members) if (rv.participants.size < PEOPLE_MAX) rv.participants.set(u.id, u);
    rv.membersCursor = rv.participants.size < PEOPLE_MAX ? page.cursor : null;
    if (isBig(rv)) rv.online = new Set(rv.participants.keys());
    if (rv.room.id === state.active) renderPeople(rv);
  } catch { /* the join reply's participants stay listed */ }
  refreshPresence(rv);
}

export function adoptJoin(data) {
  const rv = roomView(data.room);
  rv.participants = new Map((data.participants || []).map((u) => [u.id, u]));
  // Participants have a joined connection: online until presence says otherwise.
  rv.online = new Set(rv.participants.keys());
  for (const m of data.messages || []) upsertMessage(rv, m);
  if (Array.isArray(data.messages)) rv.hasMore = data.messages.length >= PAGE ? null : false;
  return rv;
}

export async function createRoom(name, isPrivate) {
  const room = await state.client.createRoom({ name, private: isPrivate });
  const rv = roomView(room);
  if (state.me) { rv.participants.set(state.me.id, state.me); rv.online.add(state.me.id); }
  // The creator's join brings the "created" message; fetch the snapshot.
  try {
    const page = await state.client.history(room.id, { limit: PAGE });
    for (const m of page.messages) upsertMessage(rv, m);
    rv.hasMore = page.has_more;
  } catch { /* events will fill in */ }
  openRoom(room.id);
  refreshPublic();
}

export async function joinRoom(by) {
  const data = await state.client.joinRoom(by);
  adoptJoin(data);
  openRoom(data.room.id);
  refreshPublic();
}

export async function loadOlder() {
  const rv = state.active && state.rooms.get(state.active);
  if (!rv || rv.loadingOlder) return false;
  const first = rv.sorted[0];
  rv.loadingOlder = true;
  ui.loadOlder.disabled = true;
  ui.loadOlder.textContent = 'Loading…';
  try {
    const page = await state.client.history(rv.room.id, { before: first ? first.seq : undefined, limit: PAGE });
    const t = ui.timeline;
    const fromBottom = t.scrollHeight - t.scrollTop;
    for (const m of page.messages) upsertMessage(rv, m);
    rv.hasMore = page.has_more;
    t.scrollTop = t.scrollHeight - fromBottom;
    return page.messages.length > 0;
  } catch (e) {
    toast(explain(e, 'Could not load older messages'), { error: true });
    return false;
  } finally {
    rv.loadingOlder = false;
    ui.loadOlder.disabled = false;
    ui.loadOlder.textContent = 'Load older messages';
    renderHistoryEdge(rv);
  }
}

export function sendItem(roomId, item) {
  const rv = roomView(roomId);
  item.failed = null;
  rv.outbox.set(item.localId, item);
  if (roomId === state.active) { renderOutbox(); scrollToBottom(); }
  state.client.sendMessage(roomId, {
    kind: item.kind, content: item.content, attachment: item.attachment, clientMsgId: item.clientMsgId,
  }).then((m) => {
    rv.outbox.delete(item.localId);
    upsertMessage(rv, m);
    if (roomId === state.active) renderOutbox();
  }, (e) => {
    item.failed = ERROR_TEXT[e.code] || e.message;
    // A mute (1.1) is `forbidden` with its end in the message: say so.
    const muted = e.code === 'forbidden' && /muted .*until (\d+)/.exec(e.message || '');
    if (muted) {
      rv.mutedUntil = Number(muted[1]);
      item.failed = `you are muted in this room until ${shortTime(rv.mutedUntil)}`;
      if (roomId === state.active) renderRoomHead(rv);
    }
    if (roomId === state.active) renderOutbox();
  });
}

export function submitComposer() {
  const rv = state.active && state.rooms.get(state.active);
  if (!rv) return;
  const content = ui.input.value.trim();
  let attachment = null;
  let kind = 'text';
  if (!ui.attachFields.hidden && ui.attachUrl.value.trim()) {
    const url = safeUrl(ui.attachUrl.value.trim());
    if (!url) { toast('The attachment URL must start with http:// or https://', { error: true }); ui.attachUrl.focus(); return; }
    kind = ui.attachKind.value === 'file' ? 'file' : 'image';
    attachment = { url };
    const name = ui.attachName.value.trim();
    if (name) attachment.name = name;
  }
  if (!content && !attachment) return;
  const item = {
    localId: state.nextLocalId++, room: rv.room.id, kind, content, attachment,
    clientMsgId: crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`,
  };
  ui.input.value = '';
  autosize();
  if (attachment) {
    ui.attachUrl.value = '';
    ui.attachName.value = '';
    toggleAttach(false);
  }
  stopTyping();
  sendItem(rv.room.id, item);
  ui.input.focus();
}

export function stopTyping() {
  if (state.typingRoom && state.client) state.client.setTyping(state.typingRoom, false);
  state.typingRoom = null;
  state.typingSentAt = 0;
}

export function onComposerInput() {
  autosize();
  const rv = state.active;
  if (!rv || !state.client) return;
  if (!ui.input.value.trim()) { stopTyping(); return; }
  const now = Date.now();
  if (state.typingRoom !== rv || now - state.typingSentAt > TYPING_REPEAT_MS) {
    if (state.typingRoom && state.typingRoom !== rv) stopTyping();
    state.client.setTyping(rv, true);
    state.typingRoom = rv;
    state.typingSentAt = now;
  }
}

function autosize() {
  if (!ui.input.value) { ui.input.style.height = ''; return; }
  ui.input.style.height = 'auto';
  ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 180)}px`;
}

export function toggleAttach(show = ui.attachFields.hidden) {
  ui.attachFields.hidden = !show;
  ui.attachToggle.setAttribute('aria-expanded', String(show));
  if (show) ui.attachUrl.focus();
}

export function setSidebar(open) {
  ui.chat.classList.toggle('show-sidebar', open || (narrow.matches && !state.active));
  ui.roomsToggle.setAttribute('aria-expanded', String(ui.chat.classList.contains('show-sidebar')));
}

export function setPeople(open) {
  ui.roomBody.classList.toggle('no-people', !open);
  ui.peopleToggle.setAttribute('aria-expanded', String(open));
}

export function refreshPresence(rv, delay = 0) {
  if (!rv) return;
  clearTimeout(rv.presenceTimer);
  rv.presenceTimer = setTimeout(async () => {
    if (isBig(rv)) {
      // Presence lists every online user: not worth it for a big room.
      rv.online = new Set(rv.participants.keys());
      if (rv.room.id === state.active) renderPeople(rv);
      return;
    }
    try {
      const online = await state.client.presence(rv.room.id);
      rv.online = new Set(online.map((u) => u.id));
      for (const u of online) if (!rv.participants.has(u.id)) rv.participants.set(u.id, u);
      if (rv.room.id === state.active) renderPeople(rv);
    } catch { /* shown as offline until the next refresh */ }
  }, delay);
}

export async function refreshPublic() {
  if (!state.client) return;
  try {
    const rooms = await state.client.listRooms(30);
    ui.publicList.replaceChildren();
    for (const r of rooms) {
      // Listed is not joined: a room from room.mine (reads.js) may not be tracked by this tab.
      const joined = state.rooms.has(r.id) && state.client.trackedRooms().includes(r.id);
      const btn = el('button', {
        type: 'button',
        'aria-label': `${joined ? 'Open' : 'Join'} ${r.name}, ${r.participant_count} ${r.participant_count === 1 ? 'person' : 'people'}`,
        onclick: () => (joined ? openRoom(r.id) : joinRoom({ room: r.id }).catch((e) => toast(explain(e, 'Could not join'), { error: true }))),
      }, icon('hash'), el('span', { class: 'name', text: r.name }),
      el('span', { class: 'meta', 'aria-hidden': 'true' }, String(r.participant_count), icon('person')));
      ui.publicList.append(el('li', {}, btn));
    }
    ui.noPublic.hidden = rooms.length > 0;
  } catch { /* keep the old list */ }
}

async function jumpTo(id, seq) {
  const rv = state.active && state.rooms.get(state.active);
  if (!rv) return;
  for (let i = 0; i < 20 && !rv.messages.has(id) && rv.sorted.length && rv.sorted[0].seq > seq; i++) {
    if (!(await loadOlder())) break;
  }
  const node = ui.messages.querySelector(`li[data-id="${CSS.escape(id)}"]`);
  if (!node) { toast('That message is no longer in the history.'); return; }
  node.scrollIntoView({ block: 'center' });
  node.classList.remove('highlight');
  void node.offsetWidth;
  node.classList.add('highlight');
  node.setAttribute('tabindex', '-1');
  node.focus({ preventScroll: true });
}

export async function runSearch(query) {
  const rv = state.active && state.rooms.get(state.active);
  if (!rv || !query) return;
  ui.searchPanel.hidden = false;
  ui.searchSummary.textContent = 'Searching…';
  ui.searchResults.replaceChildren();
  try {
    const found = await state.client.search(rv.room.id, query, { limit: 50 });
    ui.searchSummary.textContent = found.length
      ? `${found.length} ${found.length === 1 ? 'message matches' : 'messages match'} “${query}”.`
      : `No messages match “${query}”.`;
    for (const m of found) {
      const text = m.content || (m.attachment && m.attachment.name) || '';
      ui.searchResults.append(el('li', {},
        el('button', { type: 'button', onclick: () => jumpTo(m.id, m.seq) },
          el('span', { class: 'msg-author', text: m.user.name }), ' ',
          el('span', { class: 'msg-time', text: shortTime(m.created_at) }),
          el('div', { class: 'msg-body' }, highlighted(text, query)))));
    }
  } catch (e) {
    ui.searchSummary.textContent = explain(e, 'Search failed');
  }
}

export function closeSearch() {
  ui.searchPanel.hidden = true;
  ui.searchResults.replaceChildren();
}

bindActions({ openRoom, sendItem, moreMembers: (rv) => loadMembers(rv, true) });
