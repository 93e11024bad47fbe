// events.js: how the page follows the client. It owns one handler per
// HuddleClient event (connection state, session, messages, participants,
// typing, room updates, resumes, resets, lost rooms, errors, rate limits)
// and `subscribe`, which attaches them to a client. `auth_failed` is the
// session's business (session.js).

import { avatar, explain, toast, ui } from './dom.js';
import { PEOPLE_MAX, isMine, roomView, state, upsertMessage } from './rooms.js';
import { renderActiveRoom, renderOutbox, renderPeople, renderRoomHead, renderRoomList, renderTyping } from './render.js';
import { loadMembers, refreshPresence, refreshPublic, setSidebar } from './actions.js';

const TYPING_LAPSE_MS = 6000;

export const STATE_TEXT = {
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
  const had = rv.participants.has(user.id);
  if (event === 'participant.joined') { rv.participants.set(user.id, user); rv.online.add(user.id); }
  else { rv.participants.delete(user.id); rv.online.delete(user.id); }
  if (had !== rv.participants.has(user.id) && rv.room.participant_count != null) {
    rv.room = { ...rv.room, participant_count: rv.room.participant_count + (had ? -1 : 1) };
  }
  if (room === state.active) { renderRoomHead(rv); renderPeople(rv); }
  refreshPresence(rv, 300);
}

/** A big room's coalesced joins and leaves: the exact count, and who. */
function onParticipants({ room, count, joined, left }) {
  const rv = roomView(room);
  rv.room = { ...rv.room, participant_count: count };
  for (const u of left) { rv.participants.delete(u.id); rv.online.delete(u.id); }
  for (const u of joined) {
    if (rv.participants.size >= PEOPLE_MAX) break;
    rv.participants.set(u.id, u);
    rv.online.add(u.id);
  }
  if (room === state.active) { renderRoomHead(rv); renderPeople(rv); }
  renderRoomList();
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
  rv.membersCursor = null;
  if (room === state.active) { renderPeople(rv); renderTyping(rv); }
  loadMembers(rv);
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

/** Attaches the page's handlers to `client` (all but `auth_failed`). */
export function subscribe(client) {
  client.on('state', onState);
  client.on('session', onSession);
  client.on('message', onMessage);
  client.on('participant', onParticipant);
  client.on('participants', onParticipants);
  client.on('typing', onTyping);
  client.on('room', onRoom);
  client.on('resumed', onResumed);
  client.on('reset', onReset);
  client.on('room_lost', onRoomLost);
  client.on('error', onClientError);
  client.on('rate_limited', onRateLimited);
}
