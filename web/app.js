// The Huddle web chat page, the entry module index.html loads. All
// protocol work is in huddle-client.js; the page's modules, each building
// only on the ones before it:
//
//   app/dom.js      element lookups and safe DOM building blocks
//   app/rooms.js    the view model: state and one RoomView per room
//   app/render.js   draws the view model into the page
//   app/actions.js  what the user does (rooms, history, sending, search)
//   app/events.js   the page's handlers of the client's events
//   app/session.js  signing in and out
//
// This file wires the page's controls to them. Every piece of user content
// (names, messages, captions, attachment names, room names) goes into the
// page through textContent or attributes, never as HTML.

import { explain, narrow, toast, ui } from './app/dom.js';
import { state } from './app/rooms.js';
import { renderActiveRoom, startEdit } from './app/render.js';
import {
  closeSearch, createRoom, joinRoom, loadOlder, onComposerInput, refreshPresence, refreshPublic,
  runSearch, setPeople, setSidebar, stopTyping, submitComposer, toggleAttach,
} from './app/actions.js';
import { pageServer, showServerRefused, signIn, signOut } from './app/session.js';

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
// A link whose ?server= the page will not use says so at once, before the
// user types a name or token.
pageServer().then(({ error }) => { if (error) showServerRefused(error); });
