// dom.js: the page's elements and the building blocks every view uses.
// It owns the element lookups (`ui`), the narrow-screen media query, safe
// element construction (`el`, `icon`, avatars, linkified and highlighted
// text), time and size formatting, toasts and the wording of errors. It
// imports nothing: every other module of the page builds on it. User
// content only ever enters the page through textContent or attributes.

const $ = (id) => document.getElementById(id);

/** The page's fixed elements, by role. */
export const ui = {
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
  roomAdmin: $('room-admin'), renameForm: $('rename-form'), renameInput: $('rename-input'),
  closeRoom: $('close-room'), privateToggle: $('private-toggle'), bansLoad: $('bans-load'), bansList: $('bans-list'), mutedNote: $('muted-note'), removedNote: $('removed-note'),
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

/** Phone-sized screens: the room list and people become panels. */
export const narrow = window.matchMedia('(max-width: 760px)');

/**
 * A new element: `class`, `text` (as textContent), `dataset`, `on…`
 * listeners and other attributes from `props`; `children` appended.
 */
export function el(tag, props = {}, ...children) {
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
export function icon(name) {
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
export function safeUrl(raw) {
  try {
    const u = new URL(raw);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
export const dateTimeFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
/** A time today, a date and time otherwise. */
export function shortTime(ms) {
  const d = new Date(ms);
  const today = new Date();
  return d.toDateString() === today.toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
}

/** A byte count for people (B, KB, MB). */
export function formatSize(n) {
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

/** A user's picture, or initials on a colour of their id. */
export function avatar(user, small = false) {
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
export function linkified(text) {
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
export function highlighted(text, query) {
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

/** A short notice in the corner (longer for errors). */
export function toast(text, { error = false } = {}) {
  const t = el('div', { class: error ? 'toast error' : 'toast', text });
  ui.toasts.append(t);
  setTimeout(() => t.remove(), error ? 7000 : 4000);
}

/** What a HuddleError code means, in words. */
export const ERROR_TEXT = {
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

/** An error for a toast: the server's message, or the code's words. */
export function explain(err, what) {
  let reason = (err && err.message) || ERROR_TEXT[err && err.code] || 'Something went wrong.';
  // Mutes and bans (1.1) name their end as "until N (Unix ms)": show a date.
  reason = reason.replace(/until (\d{10,}) \(Unix ms\)/, (_, ms) => `until ${dateTimeFmt.format(new Date(Number(ms)))}`);
  return what ? `${what}: ${reason}` : reason;
}
