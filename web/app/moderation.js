// moderation.js: roles and moderation on the page (protocol 1.1). It owns
// the member menu of the people panel (kick, ban with a duration, mute,
// unmute, make moderator or member, hand the room over), the room's
// Manage controls (rename, private or public, and the bans with Unban
// for the owner and moderators; close for the owner), the note that tells a muted user why their sends are refused,
// and the page's handlers of `member`, `removed` and `closed`: a user
// removed from a room, or whose room was closed, leaves it and is told
// who did it, why, and until when. What is offered follows the server's
// rules (rooms.js `mayModerate`); the server decides anyway.

import { dateTimeFmt, el, explain, shortTime, toast, ui } from './dom.js';
import { mayModerate, myRole, mutedUntil, roleOf, roomView, state } from './rooms.js';
import { bindActions, renderActiveRoom, renderPeople, renderRoomHead, renderRoomList } from './render.js';
import { refreshPublic, setSidebar } from './actions.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
/** [label, duration_ms or '' for none] offered for a ban. */
const BAN_DURATIONS = [['1 hour', HOUR], ['1 day', DAY], ['7 days', 7 * DAY], ['until unbanned', '']];
/** [label, duration_ms] offered for a mute (1 s – 30 days). */
const MUTE_DURATIONS = [['5 minutes', 5 * 60_000], ['1 hour', HOUR], ['1 day', DAY]];

/** Runs one moderation request, with a toast for the outcome; done, the member menu closes. */
async function act(what, run, rv = null) {
  try {
    await run();
    toast(`${what}: done.`);
    if (rv) {
      rv.openMenu = null;
      ui.peopleList.querySelectorAll('details.member-menu[open]').forEach((d) => { d.open = false; });
    }
  } catch (e) {
    toast(explain(e, `Could not ${what.toLowerCase()}`), { error: true });
  }
}

function select(options, label) {
  return el('select', { 'aria-label': label },
    ...options.map(([text, value]) => el('option', { value: String(value), text })));
}

/** The member menu for `user` in `rv`, or null when this tab may do nothing to them. */
function memberMenu(rv, user) {
  if (!state.me || user.id === state.me.id || !state.client) return null;
  const mine = myRole(rv);
  const theirs = roleOf(rv, user.id);
  const moderate = mayModerate(mine, theirs);
  const roles = mine === 'owner' && theirs !== 'owner';
  if (!moderate && !roles) return null;
  const room = rv.room.id;
  const client = state.client;
  const body = el('div', { class: 'member-actions' });
  if (moderate) {
    const reason = el('input', { class: 'member-reason', maxlength: '200', placeholder: 'Reason (optional)', 'aria-label': `Reason for removing ${user.name}` });
    if (rv.openMenu === user.id && rv.menuReason) reason.value = rv.menuReason;
    reason.addEventListener('input', () => { rv.menuReason = reason.value; });
    const why = () => reason.value.trim() || undefined;
    const banFor = select(BAN_DURATIONS, 'Ban duration');
    banFor.classList.add('ban-duration');
    const muteFor = select(MUTE_DURATIONS, 'Mute duration');
    muteFor.classList.add('mute-duration');
    const muted = mutedUntil(rv, user.id);
    body.append(
      reason,
      el('div', { class: 'row' },
        el('button', { type: 'button', class: 'small', dataset: { action: 'kick' }, text: 'Kick',
          onclick: () => act(`Remove ${user.name}`, () => client.kick(room, user.id, { reason: why() }), rv) })),
      el('div', { class: 'row' }, banFor,
        el('button', { type: 'button', class: 'small danger', dataset: { action: 'ban' }, text: 'Ban',
          onclick: () => act(`Ban ${user.name}`, () => client.ban(room, user.id, {
            durationMs: banFor.value ? Number(banFor.value) : undefined, reason: why(),
          }), rv) })),
      muted
        ? el('div', { class: 'row' },
          el('button', { type: 'button', class: 'small', dataset: { action: 'unmute' }, text: 'Unmute',
            onclick: () => act(`Unmute ${user.name}`, () => client.unmute(room, user.id), rv) }))
        : el('div', { class: 'row' }, muteFor,
          el('button', { type: 'button', class: 'small', dataset: { action: 'mute' }, text: 'Mute',
            onclick: () => act(`Mute ${user.name}`, () => client.mute(room, user.id, Number(muteFor.value)), rv) })));
  }
  if (roles) {
    const row = el('div', { class: 'row roles' });
    if (theirs === 'member') {
      row.append(el('button', { type: 'button', class: 'small', dataset: { action: 'moderator' }, text: 'Make moderator',
        onclick: () => act(`Make ${user.name} a moderator`, () => client.setRole(room, user.id, 'moderator'), rv) }));
    } else {
      row.append(el('button', { type: 'button', class: 'small', dataset: { action: 'member' }, text: 'Make member',
        onclick: () => act(`Make ${user.name} a member`, () => client.setRole(room, user.id, 'member'), rv) }));
    }
    row.append(el('button', { type: 'button', class: 'small', dataset: { action: 'owner' }, text: 'Hand over the room',
      onclick: (e) => {
        if (!confirmed(e.currentTarget, `Click again: ${user.name} becomes the owner, you a moderator`)) return;
        act(`Hand the room to ${user.name}`, () => client.setRole(room, user.id, 'owner'), rv);
      } }));
    body.append(row);
  }
  // The people list is redrawn on every join, leave and presence poll:
  // the open menu stays open.
  const menu = el('details', { class: 'member-menu', dataset: { menuFor: user.id }, open: rv.openMenu === user.id },
    el('summary', { 'aria-label': `Actions for ${user.name}`, title: `Actions for ${user.name}`, text: '⋯' }), body);
  menu.addEventListener('keydown', (e) => {
    if (e.key !== 'Escape' || !menu.open) return;
    e.preventDefault();
    e.stopPropagation();
    menu.open = false;
    menu.querySelector('summary').focus();
  });
  menu.addEventListener('toggle', () => {
    if (menu.open) {
      if (rv.openMenu !== user.id) rv.menuReason = '';
      rv.openMenu = user.id;
    } else if (rv.openMenu === user.id) rv.openMenu = null;
  });
  return menu;
}

/**
 * A second click confirms: the first one arms `button` for 5 s and says
 * what the next click does (no blocking dialog). Returns whether to go on.
 */
function confirmed(button, text) {
  if (button.dataset.armed === '1') {
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
    return true;
  }
  button.dataset.label = button.textContent;
  button.dataset.armed = '1';
  button.textContent = text;
  setTimeout(() => {
    if (button.dataset.armed !== '1') return;
    delete button.dataset.armed;
    button.textContent = button.dataset.label;
  }, 5000);
  return false;
}

/** The room's Manage controls and this user's mute note, for the open room. */
function roomControls(rv) {
  if (rv.room.id !== state.active) return;
  const mine = myRole(rv);
  ui.roomAdmin.hidden = mine === 'member';
  ui.closeRoom.hidden = mine !== 'owner';
  ui.privateToggle.checked = !!rv.room.private;
  if (ui.bansList.dataset.room !== rv.room.id) { ui.bansList.replaceChildren(); ui.bansList.dataset.room = rv.room.id; }
  const until = state.me ? mutedUntil(rv, state.me.id) : 0;
  ui.mutedNote.hidden = !until;
  ui.mutedNote.textContent = until ? `You are muted in this room until ${shortTime(until)}: you can read, but not send.` : '';
  clearTimeout(rv.muteTimer);
  // When the mute lapses by itself: the note goes, and the people list's mark.
  if (until) {
    rv.muteTimer = setTimeout(() => {
      if (rv.room.id === state.active) { roomControls(rv); renderPeople(rv); }
    }, Math.min(until - Date.now() + 50, 2 ** 31 - 1));
  }
}

/** Leaves a room this user can no longer see, and says why on the page. */
function dropRoom(room, why) {
  const rv = state.rooms.get(room);
  if (rv) clearTimeout(rv.muteTimer);
  state.rooms.delete(room);
  if (state.active === room) {
    state.active = null;
    history.replaceState(null, '', `${location.pathname}${location.search}`);
    setSidebar(false);
    // Shown where the room was, until another room opens.
    ui.removedNote.textContent = why;
    ui.removedNote.hidden = false;
  }
  toast(why, { error: true });
  renderActiveRoom();
  refreshPublic();
}

function onMember({ room, user }) {
  const rv = state.rooms.get(room);
  if (!rv) return;
  const had = rv.participants.get(user.id);
  const next = { ...(had || {}), ...user };
  if (!user.muted_until) delete next.muted_until;
  if (had || rv.participants.size < 500) rv.participants.set(user.id, next);
  let roleChanged = false;
  if (state.me && user.id === state.me.id) {
    roleChanged = rv.role !== user.role;
    rv.role = user.role;
    rv.mutedUntil = user.muted_until || 0;
  }
  if (room !== state.active) return;
  if (roleChanged) renderActiveRoom(); // who may delete which message changed
  else { renderRoomHead(rv); renderPeople(rv); }
}

function onRemoved({ room, user, by, reason, bannedUntil, self }) {
  const rv = state.rooms.get(room);
  const name = rv ? rv.room.name : 'a room';
  if (self || (state.me && user.id === state.me.id)) {
    let why = `${by ? by.name : 'A moderator'} removed you from ${name}`;
    why += reason ? `: “${reason}”.` : '.';
    if (bannedUntil === -1) why += ' You are banned from the room.';
    else if (bannedUntil != null) why += ` You are banned until ${dateTimeFmt.format(new Date(bannedUntil))}.`;
    dropRoom(room, why);
    return;
  }
  // Someone else: the room also gets `participant.left` (or a big room's
  // `participants.changed`), which updates the list and the count.
}

function onClosed({ room, by }) {
  const rv = state.rooms.get(room);
  if (!rv) return;
  const who = by && state.me && by.id === state.me.id ? 'You' : by ? by.name : 'The owner';
  dropRoom(room, `${who} closed ${rv.room.name}; its messages are gone.`);
}

/** Lists the room's bans in force (`room.bans`), each with Unban. */
async function showBans() {
  const rv = state.active && state.rooms.get(state.active);
  if (!rv || !state.client) return;
  let bans;
  try {
    bans = await state.client.bans(rv.room.id);
  } catch (e) {
    toast(explain(e, 'Could not list the bans'), { error: true });
    return;
  }
  ui.bansList.replaceChildren();
  if (!bans.length) ui.bansList.append(el('li', { class: 'muted small', text: 'Nobody is banned.' }));
  for (const b of bans) {
    const until = b.until === -1 ? 'until unbanned' : `until ${dateTimeFmt.format(new Date(b.until))}`;
    const by = b.by ? ` by ${b.by.name}` : '';
    ui.bansList.append(el('li', { dataset: { user: b.user.id } },
      el('span', { class: 'pname', text: b.user.name }),
      el('span', { class: 'muted small', text: `${until}${by}${b.reason ? `: ${b.reason}` : ''}` }),
      el('button', { type: 'button', class: 'small', dataset: { action: 'unban' }, text: 'Unban',
        onclick: () => act(`Unban ${b.user.name}`, async () => {
          await state.client.unban(rv.room.id, b.user.id);
          await showBans();
        }) })));
  }
}

function wire() {
  ui.bansLoad.addEventListener('click', showBans);
  ui.renameForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const rv = state.active && state.rooms.get(state.active);
    const name = ui.renameInput.value.trim();
    if (!rv || !name) return;
    await act('Rename the room', async () => {
      const room = await state.client.updateRoom(rv.room.id, { name });
      roomView(room);
      ui.renameInput.value = '';
      ui.roomAdmin.open = false;
      renderRoomHead(rv);
      renderRoomList();
    });
  });
  ui.privateToggle.addEventListener('change', async () => {
    const rv = state.active && state.rooms.get(state.active);
    if (!rv) return;
    const want = ui.privateToggle.checked;
    await act(want ? 'Make the room private' : 'Make the room public', async () => {
      roomView(await state.client.updateRoom(rv.room.id, { private: want }));
      renderRoomHead(rv);
      renderRoomList();
    });
    ui.privateToggle.checked = !!rv.room.private; // the server's answer, whatever happened
  });
  ui.closeRoom.addEventListener('click', async () => {
    const rv = state.active && state.rooms.get(state.active);
    if (!rv || !confirmed(ui.closeRoom, 'Click again to close it: every message is deleted')) return;
    await act('Close the room', () => state.client.closeRoom(rv.room.id));
  });
}

/** Attaches the moderation handlers to `client`. */
export function subscribeModeration(client) {
  client.on('member', onMember);
  client.on('removed', onRemoved);
  client.on('closed', onClosed);
}

bindActions({ memberMenu, roomControls });
wire();
