// render.js: draws the view model (rooms.js) into the page. It owns every
// view of a room: its messages (with their inline Edit and Delete
// controls, which change one message in place), the sends still in
// flight, the room list, the room's header, people, typing line and
// history edge. Buttons that open a room or resend a message call the
// actions that actions.js registers with `bindActions`, so this module
// does not import it.

import {
  avatar, dateTimeFmt, el, explain, formatSize, icon, linkified, safeUrl, shortTime, toast, ui,
} from './dom.js';
import { isMine, mutedUntil, roleOf, roomView, state, upsertMessage, watchRooms } from './rooms.js';

/** The user actions a view's buttons start (registered by actions.js). */
const handlers = {
  /** @type {(id: string) => void} */
  openRoom: () => {},
  /** @type {(roomId: string, item: any) => void} */
  sendItem: () => {},
  /** @type {(rv: any) => void} loads the next page of a room's members */
  moreMembers: () => {},
  /** @type {(rv: any, user: any) => Node|null} a member's moderation menu (moderation.js) */
  memberMenu: () => null,
  /** @type {(rv: any) => void} shows the room's manage controls and mute note (moderation.js) */
  roomControls: () => {},
};

/** Registers the user actions a view's buttons start (see `handlers`). */
export function bindActions(a) {
  Object.assign(handlers, a);
}

/** Puts a stored message on screen when its room is open (see rooms.js). */
function showMessage(rv, m, had, at) {
  if (rv.room.id !== state.active) return;
  const stick = nearBottom();
  const node = renderMessage(rv, m);
  const old = ui.messages.querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
  if (old) {
    const active = document.activeElement;
    const hadFocus = old.contains(active);
    // A message re-rendered while its edit box has focus (its own event
    // arriving after the send's reply) keeps the caret where it was: a new
    // textarea would take focus with the caret at the start.
    const caret = hadFocus && active instanceof HTMLTextAreaElement
      ? [active.selectionStart, active.selectionEnd] : null;
    old.replaceWith(node);
    if (hadFocus) {
      const target = node.querySelector('button, textarea');
      target?.focus();
      if (caret && target instanceof HTMLTextAreaElement) target.setSelectionRange(caret[0], caret[1]);
    }
  } else {
    const next = rv.sorted[at + 1];
    const nextNode = next && ui.messages.querySelector(`li[data-id="${CSS.escape(next.id)}"]`);
    ui.messages.insertBefore(node, nextNode || null);
  }
  if (!had && (stick || isMine(m.user))) scrollToBottom();
}

export function nearBottom() {
  const t = ui.timeline;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 120;
}

export function scrollToBottom() {
  ui.timeline.scrollTop = ui.timeline.scrollHeight;
}

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
  // The owner and moderators delete any message (1.1).
  const owner = roleOf(rv, state.me.id) !== 'member';
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

export function startEdit(rv, id) {
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
      el('button', { type: 'button', class: 'ghost small', text: 'Retry', onclick: () => handlers.sendItem(item.room, item) }),
      el('button', { type: 'button', class: 'ghost small', text: 'Discard', onclick: () => { roomView(item.room).outbox.delete(item.localId); renderOutbox(); } })));
  }
  const body = el('div', { class: 'msg-body' });
  if (item.content) body.append(item.content);
  if (item.attachment) body.append(el('div', { class: 'attachment muted' }, icon('file'), ` ${item.attachment.name || item.attachment.url}`));
  li.append(avatar(state.me), head, body);
  return li;
}

export function renderOutbox() {
  ui.outbox.replaceChildren();
  const rv = state.active && state.rooms.get(state.active);
  if (!rv) return;
  for (const item of rv.outbox.values()) ui.outbox.append(renderOutboxItem(item));
}

export function renderRoomList() {
  ui.roomList.replaceChildren();
  for (const rv of state.rooms.values()) {
    const active = rv.room.id === state.active;
    const btn = el('button', { type: 'button', 'aria-current': active ? 'true' : 'false', onclick: () => handlers.openRoom(rv.room.id) },
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

export function renderRoomHead(rv) {
  ui.room.dataset.roomId = rv.room.id;
  ui.roomTitle.textContent = rv.room.name;
  ui.roomTitle.title = rv.room.name;
  ui.roomCode.textContent = rv.room.code;
  ui.roomPrivate.hidden = !rv.room.private;
  ui.peopleCount.textContent = String(peopleCount(rv) || '');
  handlers.roomControls(rv);
}

export function renderPeople(rv) {
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
    const role = roleOf(rv, u.id);
    if (role !== 'member') li.append(el('span', { class: `tag role-${role}`, text: role }));
    const muted = mutedUntil(rv, u.id);
    if (muted) li.append(el('span', { class: 'tag muted-mark', text: 'muted', title: `muted until ${shortTime(muted)}` }));
    const menu = handlers.memberMenu(rv, u);
    if (menu) { li.classList.add('has-menu'); li.append(menu); }
    ui.peopleList.append(li);
  }
  const count = peopleCount(rv);
  if (rv.membersCursor || count > rv.participants.size) {
    const more = el('li', { class: 'people-more' });
    if (rv.membersCursor) {
      const btn = el('button', { type: 'button', class: 'ghost small', id: 'people-more' },
        `Show more (${count - rv.participants.size} not listed)`);
      btn.addEventListener('click', () => handlers.moreMembers(rv));
      more.append(btn);
    } else {
      more.append(el('span', { class: 'meta', text: `and ${count - rv.participants.size} more` }));
    }
    ui.peopleList.append(more);
  }
  ui.peopleCount.textContent = String(count);
}

/** The room's participant count: the server's exact one when known. */
function peopleCount(rv) {
  return Math.max(rv.room.participant_count ?? 0, rv.participants.size);
}

export function renderTyping(rv) {
  const names = [...rv.typing.values()].map((t) => t.user.name);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = `${names.length} people are typing…`;
  ui.typing.textContent = text;
}

export function renderHistoryEdge(rv) {
  const first = rv.sorted[0];
  const more = rv.hasMore ?? (!!first && first.seq > 1);
  ui.loadOlder.hidden = !more;
  ui.historyStart.hidden = more || !first;
}

export function renderActiveRoom() {
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

watchRooms({ roomAdded: renderRoomList, messageStored: showMessage });
