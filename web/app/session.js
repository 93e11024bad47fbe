// session.js: signing in and out. It owns the sign-in form's flow (the
// saved name, avatar and token, the client's creation and first connect,
// the switch to the chat view, joining the room named in the URL's
// #fragment), a refused sign-in, and signing out (back to an empty sign-in
// page). It also decides which server the page talks to: its own node,
// unless `?server=` names one the node allows (its `--web-servers`, read
// from /web-config.json); any other `?server=` is refused on the page and
// nothing is sent anywhere.

import { HuddleClient, chooseServer } from '../huddle-client.js';
import { el, explain, narrow, safeUrl, toast, ui } from './dom.js';
import { state } from './rooms.js';
import { renderActiveRoom } from './render.js';
import { joinRoom, refreshPublic, setPeople, setSidebar } from './actions.js';
import { STATE_TEXT, subscribe } from './events.js';
import { subscribeModeration } from './moderation.js';
import { subscribeReads } from './reads.js';

export async function signIn() {
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
  const server = await pageServer();
  if (server.error) {
    showServerRefused(server.error);
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
    url: server.url,
    name: name || undefined,
    token: token || undefined,
    image: image || undefined,
  });
  state.client = client;
  subscribe(client);
  subscribeModeration(client);
  subscribeReads(client);
  client.on('auth_failed', onAuthFailed);

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

export function signOut({ keepError = false } = {}) {
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

function onAuthFailed({ error }) {
  const wasIn = state.signedIn;
  signOut({ keepError: true });
  ui.signinError.textContent = `The server refused the sign-in: ${error.message}.`
    + (ui.signinToken.value.trim() ? '' : ' If it needs a token, paste one under “Use a token”.');
  if (!wasIn) ui.signinMore.open = true;
}

/** @type {Promise<{url?: string, error?: Error}>|null} read once per page */
let serverChoice = null;

/**
 * The WebSocket URL the page may use (`{url}`), or why the page URL's
 * `?server=` is refused (`{error}`). The node's allow-list is fetched only
 * when there is a `?server=`; without it (an old node, a failed fetch) only
 * the page's own node is allowed.
 * @returns {Promise<{url?: string, error?: Error}>}
 */
export function pageServer() {
  serverChoice ??= (async () => {
    let allowed = [];
    if (new URLSearchParams(location.search).has('server')) {
      try {
        const res = await fetch('/web-config.json', { cache: 'no-store', credentials: 'omit' });
        const config = res.ok ? await res.json() : null;
        if (config && Array.isArray(config.servers)) {
          allowed = config.servers.filter((s) => typeof s === 'string');
        }
      } catch { /* no allow-list: only the page's own node */ }
    }
    try {
      return { url: chooseServer(location, allowed) };
    } catch (error) {
      return { error };
    }
  })();
  return serverChoice;
}

/**
 * Says on the sign-in form that the link's `?server=` is not used, and why,
 * with a link to the same page without it; sign-in stays disabled.
 */
export function showServerRefused(error) {
  const asked = error.server ? `“${error.server}”` : 'an empty server';
  const own = `${location.origin}${location.pathname}${location.hash}`;
  ui.signinError.replaceChildren(
    `This link asks the page to connect to ${asked}, which this site does not allow, `
      + 'so the page will not connect there or send your name or token to it. ',
    el('a', { href: own, text: 'Chat on this site instead' }),
    '.',
  );
  ui.signinSubmit.disabled = true;
  document.body.dataset.serverRefused = 'true';
}
