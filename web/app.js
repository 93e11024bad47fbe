// The Huddle web chat page. All protocol work is in huddle-client.js; this
// file keeps a view model per room and renders it. Every piece of user
// content (names, messages, captions, attachment names, room names) goes
// into the page through textContent or attributes, never as HTML.

import { HuddleClient, defaultUrl } from './huddle-client.js';

const $ = (id) => document.getElementById(id);

const ui = {
  conn: $('conn'), connText: $('conn-text'), connNode: $('conn-node'),
  me: $('me'), meName: $('me-name'), meAvatar: $('me-avatar'), signOut: $('sign-out'),
  roomsToggle: $('rooms-toggle'),
  signin: $('signin'), signinForm: $('signin-form'), signinName: $('signin-name'),
  signinToken: $('signin-token'), signinImage: $('signin-image'), signinMore: $('signin-more'),
  signinError: $('signin-error'), signinSubmit: $('signin-submit'),
  chat: $('chat'), sidebar: $('sidebar'),
  roomList: $('room-list'), noRooms: $('no-rooms'),
  createForm: $('create-form'), createName: $('create-name'), createPrivate: $('create-private'),
  joinForm: $('join-form'), joinCode: $('join-code'),
  publicList: $('public-list'), noPublic: $('no-public'), publicRefresh: $('public-refresh'),
  room: $('room'), empty: $('empty'),
  roomTitle: $('room-title'), roomCode: $('room-code'), roomPrivate: $('room-private'),
  copyCode: $('copy-code'), peopleToggle: $('people-toggle'), peopleCount: $('people-count'),
  leaveRoom: $('leave-room'),
  searchForm: $('search-form'), searchInput: $('search-input'), searchPanel: $('search-panel'),
  searchClose: $('search-close'), searchSummary: $('search-summary'), searchResults: $('search-results'),
  roomBody: document.querySelector('.room-body'), timeline: $('timeline'),
  loadOlder: $('load-older'), historyStart: $('history-start'),
  messages: $('messages'), outbox: $('outbox'),
  people: $('people'), peopleList: $('people-list'), peopleClose: $('people-close'),
  typing: $('typing'),
  composer: $('composer'), input: $('composer-input'), send: $('send'),
  attachToggle: $('attach-toggle'), attachFields: $('attach-fields'),
  attachKind: $('attach-kind'), attachUrl: $('attach-url'), attachName: $('attach-name'),
  toasts: $('toasts'),
};

const narrow = window.matchMedia('(max-width: 760px)');
const PAGE = 50;
const TYPING_REPEAT_MS = 3000;
const TYPING_LAPSE_MS = 6000;

/**
 * @typedef {object} RoomView
 * @property {any} room                          latest room object
 * @property {Map<string, any>} messages         id → message
 * @property {{id: string, seq: number}[]} sorted ids by creation seq
 * @property {Map<string, any>} participants     id → user
 * @property {Set<string>} online                user ids online
 * @property {Map<string, {user: any, timer: any}>} typing
 * @property {boolean|null} hasMore              older history exists (null: unknown)
 * @property {number} unread
 * @property {Map<string, any>} outbox           local id → pending send
 */

const state = {
  /** @type {HuddleClient|null} */
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

// ------------------------------------------------------------------ helpers

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, '');
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
const ICONS = {
  file: 'M6 2h8l6 6v14H6z M14 2v6h6',
  lock: 'M7 11V8a5 5 0 0 1 10 0v3 M5 11h14v10H5z',
  hash: 'M9 3 7 21 M17 3l-2 18 M4 9h17 M3 15h17',
  person: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8z M4 21a8 8 0 0 1 16 0',
};

/** A small stroke icon (decorative: hidden from assistive technology). */
function icon(name) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

/** An http(s) URL or null: nothing else becomes a link or an image. */
function safeUrl(raw) {
  try {
    const u = new URL(raw);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
function shortTime(ms) {
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

function formatSize(n) {
  if (typeof n !== 'number') return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).filter(Boolean);
  const chars = parts.slice(0, 2).map((p) => [...p][0]);
  return (chars.join('') || '?').toUpperCase();
}

function avatar(user, small = false) {
  const box = el('span', { class: small ? 'avatar sm' : 'avatar', 'aria-hidden': 'true' });
  const url = user && user.image ? safeUrl(user.image) : null;
  if (url) {
    box.append(el('img', { src: url, alt: '', loading: 'lazy', referrerpolicy: 'no-referrer' }));
  } else {
    box.textContent = initials(user && user.name);
    box.style.background = `hsl(${hue((user && user.id) || '')} 55% 45%)`;
  }
  return box;
}

/** Text with http(s) URLs turned into links, as DOM nodes. */
function linkified(text) {
  const frag = document.createDocumentFragment();
  const re = /\bhttps?:\/\/[^\s<>"']+/gi;
  let last = 0;
  for (const m of text.matchAll(re)) {
    let url = m[0];
    const trail = url.match(/[.,;:!?)\]]+$/);
    if (trail) url = url.slice(0, -trail[0].length);
    const href = safeUrl(url);
    if (!href) continue;
    frag.append(text.slice(last, m.index));
    frag.append(el('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow', text: url }));
    last = m.index + url.length;
  }
  frag.append(text.slice(last));
  return frag;
}

/** Text with every query word marked. */
function highlighted(text, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const frag = document.createDocumentFragment();
  if (!words.length) { frag.append(text); return frag; }
  const lower = text.toLowerCase();
  let i = 0;
  while (i < text.length) {
    let best = -1;
    let len = 0;
    for (const w of words) {
      const at = lower.indexOf(w, i);
      if (at !== -1 && (best === -1 || at < best)) { best = at; len = w.length; }
    }
    if (best === -1) break;
    frag.append(text.slice(i, best), el('mark', { text: text.slice(best, best + len) }));
    i = best + len;
  }
  frag.append(text.slice(i));
  return frag;
}

function toast(text, { error = false } = {}) {
  const t = el('div', { class: error ? 'toast error' : 'toast', text });
  ui.toasts.append(t);
  setTimeout(() => t.remove(), error ? 7000 : 4000);
}

const ERROR_TEXT = {
  forbidden: 'You are not allowed to do that.',
  not_found: 'That no longer exists.',
  conflict: 'That is not possible right now.',
  rate_limited: 'Slow down a little.',
  too_large: 'That is too long.',
  unavailable: 'The server is busy; try again in a moment.',
  timeout: 'The server did not answer in time.',
  offline: 'No connection to the server.',
  disconnected: 'The connection dropped; try again.',
};

function explain(err, what) {
  const reason = (err && err.message) || ERROR_TEXT[err && err.code] || 'Something went wrong.';
  return what ? `${what}: ${reason}` : reason;
}

function isMine(user) {
  return !!user && state.myIds.has(user.id);
}

// ---------------------------------------------------------------- room views

function roomView(roomOrId) {
  const id = typeof roomOrId === 'string' ? roomOrId : roomOrId.id;
  let rv = state.rooms.get(id);
  if (!rv) {
    rv = {
      room: typeof roomOrId === 'string' ? { id, name: '…', code: '' } : roomOrId,
      messages: new Map(), sorted: [], participants: new Map(), online: new Set(),
      typing: new Map(), hasMore: null, unread: 0, outbox: new Map(),
    };
    state.rooms.set(id, rv);
    renderRoomList();
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
function upsertMessage(rv, m) {
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
  if (rv.room.id !== state.active) return;
  const stick = nearBottom();
  const node = renderMessage(rv, m);
  const old = ui.messages.querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
  if (old) {
    const hadFocus = old.contains(document.activeElement);
    old.replaceWith(node);
    if (hadFocus) node.querySelector('button, textarea')?.focus();
  } else {
    const next = rv.sorted[at + 1];
    const nextNode = next && ui.messages.querySelector(`li[data-id="${CSS.escape(next.id)}"]`);
    ui.messages.insertBefore(node, nextNode || null);
  }
  if (!had && (stick || isMine(m.user))) scrollToBottom();
}

function nearBottom() {
  const t = ui.timeline;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 120;
}

function scrollToBottom() {
  ui.timeline.scrollTop = ui.timeline.scrollHeight;
}

// --------------------------------------------------------------- rendering

function renderMessage(rv, m) {
  const data = { id: m.id, seq: String(m.seq) };
  if (m.kind === 'system') {
    return el('li', { class: 'msg system', dataset: data },
      el('span', { text: m.content }), ' · ',
      el('time', { datetime: new Date(m.created_at).toISOString(), text: shortTime(m.created_at) }));
  }
  const mine = isMine(m.user);
  const classes = ['msg', `kind-${m.kind}`];
  if (mine) classes.push('mine');
  if (m.deleted) classes.push('deleted');
  const li = el('li', { class: classes.join(' '), dataset: data });

  const head = el('div', { class: 'msg-head' },
    el('span', { class: 'msg-author', text: m.user.name }),
    el('time', { class: 'msg-time', datetime: new Date(m.created_at).toISOString(), title: dateTimeFmt.format(new Date(m.created_at)), text: shortTime(m.created_at) }),
    m.edited_at && !m.deleted ? el('span', { class: 'msg-edited', title: `edited ${dateTimeFmt.format(new Date(m.edited_at))}`, text: '(edited)' }) : null,
  );
  const actions = messageActions(rv, m);
  if (actions) head.append(actions);
  li.append(avatar(m.user), head);

  const body = el('div', { class: 'msg-body' });
  if (m.deleted) {
    body.textContent = 'This message was deleted.';
  } else if (state.editing && state.editing.id === m.id) {
    body.append(editForm(rv, m));
  } else {
    if (m.content) body.append(linkified(m.content));
    if (m.attachment) body.append(attachmentView(m));
  }
  li.append(body); // grid: avatar | head over body
  return li;
}

function attachmentView(m) {
  const a = m.attachment;
  const href = safeUrl(a.url);
  const name = a.name || 'attachment';
  const box = el('div', { class: 'attachment' });
  if (!href) {
    box.append(el('span', { class: 'muted', text: `${name} (link not shown: not http or https)` }));
    return box;
  }
  if (m.kind === 'image') {
    box.append(el('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow', title: name },
      el('img', { src: href, alt: name, loading: 'lazy', referrerpolicy: 'no-referrer', decoding: 'async' })));
  } else {
    const meta = [a.mime, formatSize(a.size)].filter(Boolean).join(' · ');
    box.append(el('a', { class: 'file-card', href, target: '_blank', rel: 'noopener noreferrer nofollow', download: '' },
      icon('file'),
      el('span', {}, el('span', { class: 'fname', text: name }), meta ? el('span', { class: 'fmeta', text: ` ${meta}` }) : null)));
  }
  return box;
}

function snippet(m) {
  const text = m.content || (m.attachment && m.attachment.name) || m.kind;
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}

function messageActions(rv, m) {
  if (m.deleted || m.kind === 'system' || !state.me) return null;
  const own = m.user.id === state.me.id;
  const owner = rv.room.created_by === state.me.id;
  if (!own && !owner) return null;
  const box = el('span', { class: 'msg-actions' });
  if (own) {
    box.append(el('button', {
      type: 'button', class: 'ghost small', text: 'Edit',
      'aria-label': `Edit your message “${snippet(m)}”`,
      onclick: () => startEdit(rv, m.id),
    }));
  }
  const del = el('button', {
    type: 'button', class: 'ghost small danger', text: 'Delete',
    'aria-label': `Delete the message “${snippet(m)}”`,
  });
  del.addEventListener('click', () => confirmDelete(rv, m, box, del));
  box.append(del);
  return box;
}

function confirmDelete(rv, m, box, del) {
  const yes = el('button', { type: 'button', class: 'small danger', text: 'Yes, delete' });
  const no = el('button', { type: 'button', class: 'ghost small', text: 'Cancel' });
  const prompt = el('span', { class: 'msg-actions confirm', role: 'group', 'aria-label': 'Delete this message?' },
    el('span', { class: 'small', text: 'Delete?' }), yes, no);
  box.replaceWith(prompt);
  prompt.style.opacity = '1';
  yes.focus();
  no.addEventListener('click', () => { prompt.replaceWith(box); del.focus(); });
  prompt.addEventListener('keydown', (e) => { if (e.key === 'Escape') { e.stopPropagation(); no.click(); } });
  yes.addEventListener('click', async () => {
    yes.disabled = true;
    try {
      const tomb = await state.client.deleteMessage(rv.room.id, m.id);
      upsertMessage(rv, tomb);
      ui.input.focus();
    } catch (e) {
      toast(explain(e, 'Could not delete'), { error: true });
      if (prompt.isConnected) { prompt.replaceWith(box); del.focus(); }
    }
  });
}

function startEdit(rv, id) {
  const m = rv.messages.get(id);
  if (!m || m.deleted) return;
  state.editing = { id, draft: m.content };
  upsertMessage(rv, m);
  const ta = ui.messages.querySelector(`li[data-id="${CSS.escape(id)}"] textarea`);
  if (ta) { ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length); }
}

function stopEdit(rv, id, focusComposer = true) {
  state.editing = null;
  const m = rv.messages.get(id);
  if (m) upsertMessage(rv, m);
  if (focusComposer) ui.input.focus();
}

function editForm(rv, m) {
  const ta = el('textarea', { 'aria-label': 'Edit message', maxlength: '4000', rows: '2' });
  ta.value = state.editing.draft;
  const save = el('button', { type: 'submit', class: 'primary small', text: 'Save' });
  const cancel = el('button', { type: 'button', class: 'ghost small', text: 'Cancel' });
  const form = el('form', { class: 'edit-form' }, ta,
    el('div', { class: 'row' }, save, cancel, el('span', { class: 'muted small', text: 'Enter saves · Esc cancels' })));
  ta.addEventListener('input', () => { if (state.editing) state.editing.draft = ta.value; });
  ta.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
    if (e.key === 'Escape') { e.preventDefault(); e.stopPropagation(); stopEdit(rv, m.id); }
  });
  cancel.addEventListener('click', () => stopEdit(rv, m.id));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = ta.value.trim();
    if (!text && m.kind === 'text') { toast('A message cannot be empty; delete it instead.', { error: true }); return; }
    if (text === m.content) { stopEdit(rv, m.id); return; }
    save.disabled = true;
    try {
      const updated = await state.client.editMessage(rv.room.id, m.id, text);
      state.editing = null;
      upsertMessage(rv, updated);
      ui.input.focus();
    } catch (err) {
      save.disabled = false;
      const msg = err.code === 'conflict' ? 'Could not edit: the edit window has passed or the message changed.' : explain(err, 'Could not edit');
      toast(msg, { error: true });
    }
  });
  return form;
}

function renderOutboxItem(item) {
  const li = el('li', { class: `msg mine pending${item.failed ? ' failed' : ''}`, dataset: { local: String(item.localId) } });
  const status = item.failed ? `Not sent: ${item.failed}` : (state.client && state.client.state === 'online' ? 'Sending…' : 'Waiting for the connection…');
  const head = el('div', { class: 'msg-head' },
    el('span', { class: 'msg-author', text: state.me ? state.me.name : '' }),
    el('span', { class: 'msg-time', text: status }));
  if (item.failed) {
    head.append(el('span', { class: 'msg-actions' },
      el('button', { type: 'button', class: 'ghost small', text: 'Retry', onclick: () => sendItem(item.room, item) }),
      el('button', { type: 'button', class: 'ghost small', text: 'Discard', onclick: () => { roomView(item.room).outbox.delete(item.localId); renderOutbox(); } })));
  }
  const body = el('div', { class: 'msg-body' });
  if (item.content) body.append(item.content);
  if (item.attachment) body.append(el('div', { class: 'attachment muted' }, icon('file'), ` ${item.attachment.name || item.attachment.url}`));
  li.append(avatar(state.me), head, body);
  return li;
}

function renderOutbox() {
  ui.outbox.replaceChildren();
  const rv = state.active && state.rooms.get(state.active);
  if (!rv) return;
  for (const item of rv.outbox.values()) ui.outbox.append(renderOutboxItem(item));
}

function renderRoomList() {
  ui.roomList.replaceChildren();
  for (const rv of state.rooms.values()) {
    const active = rv.room.id === state.active;
    const btn = el('button', { type: 'button', 'aria-current': active ? 'true' : 'false', onclick: () => openRoom(rv.room.id) },
      icon(rv.room.private ? 'lock' : 'hash'),
      el('span', { class: 'name', text: rv.room.name }));
    if (rv.unread && !active) {
      btn.append(el('span', { class: 'unread', text: String(rv.unread) }));
      btn.setAttribute('aria-label', `${rv.room.name}, ${rv.unread} unread`);
    }
    ui.roomList.append(el('li', {}, btn));
  }
  ui.noRooms.hidden = state.rooms.size > 0;
  const unread = [...state.rooms.values()].reduce((n, rv) => n + (rv.room.id === state.active ? 0 : rv.unread), 0);
  document.title = unread ? `(${unread}) Huddle` : (state.active ? `${state.rooms.get(state.active)?.room.name} · Huddle` : 'Huddle');
}

function renderRoomHead(rv) {
  ui.room.dataset.roomId = rv.room.id;
  ui.roomTitle.textContent = rv.room.name;
  ui.roomTitle.title = rv.room.name;
  ui.roomCode.textContent = rv.room.code;
  ui.roomPrivate.hidden = !rv.room.private;
  ui.peopleCount.textContent = String(rv.participants.size || rv.room.participant_count || '');
}

function renderPeople(rv) {
  const people = [...rv.participants.values()].sort((a, b) => a.name.localeCompare(b.name));
  ui.peopleList.replaceChildren();
  for (const u of people) {
    const on = rv.online.has(u.id);
    const li = el('li', { dataset: { user: u.id } },
      el('span', { class: on ? 'presence-dot online' : 'presence-dot', 'aria-hidden': 'true' }),
      avatar(u, true),
      el('span', { class: 'pname', text: u.name }),
      el('span', { class: 'visually-hidden', text: on ? ', online' : ', offline' }));
    li.title = on ? 'online' : 'offline';
    if (state.me && u.id === state.me.id) li.append(el('span', { class: 'tag', text: 'you' }));
    if (u.id === rv.room.created_by) li.append(el('span', { class: 'tag', text: 'owner' }));
    ui.peopleList.append(li);
  }
  ui.peopleCount.textContent = String(rv.participants.size);
}

function renderTyping(rv) {
  const names = [...rv.typing.values()].map((t) => t.user.name);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  ui.typing.textContent = text;
}

function renderHistoryEdge(rv) {
  const first = rv.sorted[0];
  const more = rv.hasMore ?? (!!first && first.seq > 1);
  ui.loadOlder.hidden = !more;
  ui.historyStart.hidden = more || !first;
}

function renderActiveRoom() {
  const rv = state.active && state.rooms.get(state.active);
  ui.room.hidden = !rv;
  ui.empty.hidden = !!rv;
  if (!rv) { renderRoomList(); return; }
  renderRoomHead(rv);
  ui.messages.replaceChildren(...rv.sorted.map(({ id }) => renderMessage(rv, rv.messages.get(id))));
  renderOutbox();
  renderPeople(rv);
  renderTyping(rv);
  renderHistoryEdge(rv);
  renderRoomList();
  scrollToBottom();
}

// ------------------------------------------------------------------ actions

function openRoom(id, { focus = true } = {}) {
  if (!state.rooms.has(id)) return;
  if (state.editing) state.editing = null;
  stopTyping();
  state.active = id;
  const rv = state.rooms.get(id);
  rv.unread = 0;
  closeSearch();
  ui.searchInput.value = '';
  setSidebar(false);
  renderActiveRoom();
  if (rv.room.code) history.replaceState(null, '', `${location.pathname}${location.search}#${encodeURIComponent(rv.room.code)}`);
  refreshPresence(rv);
  if (focus) ui.input.focus();
}

function adoptJoin(data) {
  const rv = roomView(data.room);
  rv.participants = new Map((data.participants || []).map((u) => [u.id, u]));
  // Participants have a joined connection: online until presence says otherwise.
  rv.online = new Set(rv.participants.keys());
  for (const m of data.messages || []) upsertMessage(rv, m);
  if (Array.isArray(data.messages)) rv.hasMore = data.messages.length >= PAGE ? null : false;
  return rv;
}

async function createRoom(name, isPrivate) {
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

async function joinRoom(by) {
  const data = await state.client.joinRoom(by);
  adoptJoin(data);
  openRoom(data.room.id);
  refreshPublic();
}

async function loadOlder() {
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

function sendItem(roomId, item) {
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
    if (roomId === state.active) renderOutbox();
  });
}

function submitComposer() {
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

function stopTyping() {
  if (state.typingRoom && state.client) state.client.setTyping(state.typingRoom, false);
  state.typingRoom = null;
  state.typingSentAt = 0;
}

function onComposerInput() {
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

function toggleAttach(show = ui.attachFields.hidden) {
  ui.attachFields.hidden = !show;
  ui.attachToggle.setAttribute('aria-expanded', String(show));
  if (show) ui.attachUrl.focus();
}

function setSidebar(open) {
  ui.chat.classList.toggle('show-sidebar', open || (narrow.matches && !state.active));
  ui.roomsToggle.setAttribute('aria-expanded', String(ui.chat.classList.contains('show-sidebar')));
}

function setPeople(open) {
  ui.roomBody.classList.toggle('no-people', !open);
  ui.peopleToggle.setAttribute('aria-expanded', String(open));
}

function refreshPresence(rv, delay = 0) {
  if (!rv) return;
  clearTimeout(rv.presenceTimer);
  rv.presenceTimer = setTimeout(async () => {
    try {
      const online = await state.client.presence(rv.room.id);
      rv.online = new Set(online.map((u) => u.id));
      for (const u of online) if (!rv.participants.has(u.id)) rv.participants.set(u.id, u);
      if (rv.room.id === state.active) renderPeople(rv);
    } catch { /* shown as offline until the next refresh */ }
  }, delay);
}

async function refreshPublic() {
  if (!state.client) return;
  try {
    const rooms = await state.client.listRooms(30);
    ui.publicList.replaceChildren();
    for (const r of rooms) {
      const joined = state.rooms.has(r.id);
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

async function runSearch(query) {
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

function closeSearch() {
  ui.searchPanel.hidden = true;
  ui.searchResults.replaceChildren();
}

// ------------------------------------------------------------ client events

const STATE_TEXT = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  online: 'Connected',
  stopped: 'Disconnected',
};

function onState(ev) {
  ui.conn.dataset.state = ev.state;
  let text = STATE_TEXT[ev.state] || ev.state;
  ui.connNode.textContent = '';
  if (ev.state === 'online' && state.client.node) {
    ui.connNode.textContent = ` · node ${state.client.node}`;
    ui.conn.dataset.node = state.client.node;
  }
  if (ev.state === 'reconnecting') {
    text = ev.delayMs >= 1000 ? `Reconnecting in ${Math.round(ev.delayMs / 1000)} s…` : 'Reconnecting…';
    delete ui.conn.dataset.node;
  }
  ui.connText.textContent = text;
  ui.input.setAttribute('aria-busy', String(ev.state !== 'online'));
  if (!state.signedIn && ev.state === 'reconnecting') {
    ui.signinError.textContent = 'Cannot reach the server yet; still trying…';
    ui.signinSubmit.disabled = false;
    ui.signinSubmit.textContent = 'Try again now';
  }
  if (state.signedIn) renderOutbox(); // "Sending…" or "Waiting for the connection…"
  if (ev.state === 'online' && state.signedIn) refreshPublic();
}

function onSession(data) {
  state.me = data.user;
  state.myIds.add(data.user.id);
  ui.meName.textContent = data.user.name;
  ui.meAvatar.replaceChildren(avatar(data.user, true));
  if (data.resumed && state.active) renderActiveRoom();
}

function onMessage({ room, event, message }) {
  const rv = roomView(room);
  upsertMessage(rv, message);
  if (event === 'message.created') {
    if (rv.typing.has(message.user.id)) {
      clearTimeout(rv.typing.get(message.user.id).timer);
      rv.typing.delete(message.user.id);
      if (room === state.active) renderTyping(rv);
    }
    if (room !== state.active && message.kind !== 'system' && !isMine(message.user)) {
      rv.unread++;
      renderRoomList();
    }
  }
}

function onParticipant({ room, event, user }) {
  const rv = roomView(room);
  if (event === 'participant.joined') { rv.participants.set(user.id, user); rv.online.add(user.id); }
  else { rv.participants.delete(user.id); rv.online.delete(user.id); }
  if (room === state.active) renderPeople(rv);
  refreshPresence(rv, 300);
}

function onTyping({ room, user, active }) {
  if (isMine(user)) return;
  const rv = roomView(room);
  const had = rv.typing.get(user.id);
  if (had) clearTimeout(had.timer);
  if (active) {
    rv.typing.set(user.id, {
      user,
      timer: setTimeout(() => { rv.typing.delete(user.id); if (room === state.active) renderTyping(rv); }, TYPING_LAPSE_MS),
    });
  } else {
    rv.typing.delete(user.id);
  }
  if (room === state.active) renderTyping(rv);
}

function onRoom({ room }) {
  const rv = roomView(room);
  if (room.id === state.active) renderRoomHead(rv);
  renderRoomList();
}

function onResumed({ room, participants }) {
  const rv = roomView(room);
  rv.participants = new Map(participants.map((u) => [u.id, u]));
  if (state.me) rv.participants.set(state.me.id, state.me);
  rv.online = new Set(rv.participants.keys());
  for (const t of rv.typing.values()) clearTimeout(t.timer);
  rv.typing.clear();
  if (room === state.active) { renderPeople(rv); renderTyping(rv); }
  refreshPresence(rv, 200);
}

function onReset({ room, messages, has_more: hasMore }) {
  const rv = roomView(room);
  rv.messages.clear();
  rv.sorted = [];
  for (const m of messages) upsertMessage(rv, m);
  rv.hasMore = hasMore;
  if (room === state.active) renderActiveRoom();
  toast(`Some of ${rv.room.name}'s history was too old to replay; reloaded the latest messages.`);
}

function onRoomLost({ room }) {
  const rv = state.rooms.get(room);
  state.rooms.delete(room);
  toast(`${rv ? rv.room.name : 'A room'} is no longer available.`, { error: true });
  if (state.active === room) { state.active = null; setSidebar(false); }
  renderActiveRoom();
}

function onAuthFailed({ error }) {
  const wasIn = state.signedIn;
  signOut({ keepError: true });
  ui.signinError.textContent = `The server refused the sign-in: ${error.message}.`
    + (ui.signinToken.value.trim() ? '' : ' If it needs a token, paste one under “Use a token”.');
  if (!wasIn) ui.signinMore.open = true;
}

function onClientError(e) {
  if (e.code === 'abuse') toast('Disconnected for sending too fast; reconnecting shortly.', { error: true });
  else if (e.code === 'slow_consumer') toast('The connection fell behind; reconnecting.');
  else toast(explain(e), { error: true });
}

function onRateLimited() {
  const now = Date.now();
  if (now - state.lastRateToast > 5000) {
    state.lastRateToast = now;
    toast('Sending too fast; the rest goes out in a moment.');
  }
}

// ------------------------------------------------------------------ session

async function signIn() {
  const name = ui.signinName.value.trim();
  const token = ui.signinToken.value.trim();
  const image = ui.signinImage.value.trim();
  ui.signinError.textContent = '';
  if (!name && !token) {
    ui.signinError.textContent = 'Enter a name (or paste a token).';
    ui.signinName.focus();
    return;
  }
  if (image && !safeUrl(image)) {
    ui.signinError.textContent = 'The avatar URL must start with http:// or https://.';
    ui.signinImage.focus();
    return;
  }
  try {
    localStorage.setItem('huddle.name', name);
    localStorage.setItem('huddle.image', image);
  } catch { /* private mode */ }
  try { sessionStorage.setItem('huddle.token', token); } catch { /* private mode */ }

  if (state.client) { // a previous attempt still trying to connect
    state.client.close();
    state.client = null;
  }
  const client = new HuddleClient({
    url: defaultUrl(location),
    name: name || undefined,
    token: token || undefined,
    image: image || undefined,
  });
  state.client = client;
  client.on('state', onState);
  client.on('session', onSession);
  client.on('message', onMessage);
  client.on('participant', onParticipant);
  client.on('typing', onTyping);
  client.on('room', onRoom);
  client.on('resumed', onResumed);
  client.on('reset', onReset);
  client.on('room_lost', onRoomLost);
  client.on('auth_failed', onAuthFailed);
  client.on('error', onClientError);
  client.on('rate_limited', onRateLimited);

  ui.signinSubmit.disabled = true;
  ui.signinSubmit.textContent = 'Connecting…';
  try {
    await client.connect();
  } catch {
    return; // auth_failed already showed why
  } finally {
    if (state.client === client || !state.client) {
      ui.signinSubmit.disabled = false;
      ui.signinSubmit.textContent = 'Start chatting';
    }
  }
  if (state.client !== client) return;
  state.signedIn = true;
  document.body.classList.add('signed-in');
  ui.signinError.textContent = '';
  ui.signin.hidden = true;
  ui.chat.hidden = false;
  ui.me.hidden = false;
  ui.roomsToggle.hidden = false;
  setPeople(!narrow.matches);
  setSidebar(false);
  renderActiveRoom();
  refreshPublic();
  const code = decodeURIComponent(location.hash.slice(1));
  if (/^[A-Za-z0-9]{4,16}$/.test(code)) {
    joinRoom({ code }).catch((e) => {
      toast(explain(e, `Could not join ${code}`), { error: true });
      ui.createName.focus();
    });
  } else {
    ui.createName.focus();
  }
}

function signOut({ keepError = false } = {}) {
  const client = state.client;
  state.client = null;
  if (client) client.close();
  state.signedIn = false;
  document.body.classList.remove('signed-in');
  state.rooms.clear();
  state.active = null;
  state.me = null;
  state.editing = null;
  ui.chat.hidden = true;
  ui.me.hidden = true;
  ui.roomsToggle.hidden = true;
  ui.signin.hidden = false;
  ui.conn.dataset.state = 'idle';
  delete ui.conn.dataset.node;
  ui.connText.textContent = STATE_TEXT.idle;
  ui.connNode.textContent = '';
  if (!keepError) ui.signinError.textContent = '';
  ui.messages.replaceChildren();
  ui.outbox.replaceChildren();
  history.replaceState(null, '', `${location.pathname}${location.search}`);
  ui.signinName.focus();
}

// -------------------------------------------------------------------- wiring

function wire() {
  try {
    ui.signinName.value = localStorage.getItem('huddle.name') || '';
    ui.signinImage.value = localStorage.getItem('huddle.image') || '';
    ui.signinToken.value = sessionStorage.getItem('huddle.token') || '';
  } catch { /* storage disabled */ }

  // The skip link focuses the message box (or the first field) without
  // touching the URL's #fragment, which holds the open room's code.
  document.querySelector('.skip-link').addEventListener('click', (e) => {
    e.preventDefault();
    const target = !ui.room.hidden && !ui.chat.hidden ? ui.input
      : !ui.chat.hidden ? ui.createName : ui.signinName;
    target.focus();
  });
  ui.signinForm.addEventListener('submit', (e) => { e.preventDefault(); signIn(); });
  ui.signOut.addEventListener('click', () => signOut());

  ui.createForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = ui.createName.value.trim();
    if (!name) { ui.createName.focus(); return; }
    const btn = ui.createForm.querySelector('button[type="submit"]');
    btn.disabled = true;
    try {
      await createRoom(name, ui.createPrivate.checked);
      ui.createName.value = '';
      ui.createPrivate.checked = false;
    } catch (err) {
      toast(explain(err, 'Could not create the room'), { error: true });
    } finally {
      btn.disabled = false;
    }
  });

  ui.joinForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const code = ui.joinCode.value.trim();
    if (!code) { ui.joinCode.focus(); return; }
    const btn = ui.joinForm.querySelector('button[type="submit"]');
    btn.disabled = true;
    try {
      await joinRoom({ code });
      ui.joinCode.value = '';
    } catch (err) {
      const msg = err.code === 'not_found' ? `No room has the code ${code}.`
        : err.code === 'conflict' ? 'That room is full.' : explain(err, 'Could not join');
      toast(msg, { error: true });
      ui.joinCode.focus();
    } finally {
      btn.disabled = false;
    }
  });

  ui.publicRefresh.addEventListener('click', refreshPublic);

  ui.composer.addEventListener('submit', (e) => { e.preventDefault(); submitComposer(); });
  ui.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submitComposer();
    } else if (e.key === 'ArrowUp' && !ui.input.value && state.active && state.me) {
      const rv = state.rooms.get(state.active);
      const last = [...rv.sorted].reverse().map(({ id }) => rv.messages.get(id))
        .find((m) => m.user.id === state.me.id && !m.deleted && m.kind !== 'system');
      if (last) { e.preventDefault(); startEdit(rv, last.id); }
    }
  });
  ui.input.addEventListener('input', onComposerInput);
  ui.input.addEventListener('blur', () => { if (!ui.input.value.trim()) stopTyping(); });
  ui.attachToggle.addEventListener('click', () => toggleAttach());
  ui.attachFields.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.target.tagName === 'INPUT') { e.preventDefault(); submitComposer(); }
    if (e.key === 'Escape') { e.preventDefault(); toggleAttach(false); ui.attachToggle.focus(); }
  });

  ui.loadOlder.addEventListener('click', loadOlder);
  ui.searchForm.addEventListener('submit', (e) => { e.preventDefault(); runSearch(ui.searchInput.value.trim()); });
  ui.searchClose.addEventListener('click', () => { closeSearch(); ui.searchInput.focus(); });
  ui.searchPanel.addEventListener('keydown', (e) => { if (e.key === 'Escape') { closeSearch(); ui.searchInput.focus(); } });
  ui.searchInput.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !ui.searchPanel.hidden) { e.preventDefault(); closeSearch(); } });

  ui.copyCode.addEventListener('click', async () => {
    const rv = state.active && state.rooms.get(state.active);
    if (!rv) return;
    const link = `${location.origin}${location.pathname}${location.search}#${encodeURIComponent(rv.room.code)}`;
    try {
      await navigator.clipboard.writeText(link);
      toast('Invite link copied.');
    } catch {
      toast(`Invite link: ${link}`);
    }
  });

  ui.leaveRoom.addEventListener('click', async () => {
    const id = state.active;
    if (!id) return;
    try {
      await state.client.leaveRoom(id);
    } catch (e) {
      toast(explain(e, 'Could not leave'), { error: true });
      return;
    }
    state.rooms.delete(id);
    state.active = null;
    history.replaceState(null, '', `${location.pathname}${location.search}`);
    setSidebar(false);
    renderActiveRoom();
    refreshPublic();
    ui.createName.focus();
  });

  ui.peopleToggle.addEventListener('click', () => {
    const open = ui.roomBody.classList.contains('no-people');
    setPeople(open);
    if (open && narrow.matches) ui.peopleClose.focus();
  });
  ui.peopleClose.addEventListener('click', () => { setPeople(false); ui.peopleToggle.focus(); });
  ui.people.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && narrow.matches) { setPeople(false); ui.peopleToggle.focus(); }
  });
  ui.roomsToggle.addEventListener('click', () => {
    const open = !ui.chat.classList.contains('show-sidebar');
    setSidebar(open);
    if (open) (ui.roomList.querySelector('button') || ui.createName).focus();
  });
  ui.sidebar.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && narrow.matches && state.active) { setSidebar(false); ui.roomsToggle.focus(); }
  });
  narrow.addEventListener('change', () => { setSidebar(false); setPeople(!narrow.matches); });

  window.addEventListener('online', () => state.client && state.client.reconnectNow());
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.client) state.client.checkConnection();
  });
  setInterval(() => {
    const rv = state.active && state.rooms.get(state.active);
    if (rv && state.client && state.client.state === 'online' && !document.hidden) {
      refreshPresence(rv);
      refreshPublic();
    }
  }, 30_000);
}

wire();
