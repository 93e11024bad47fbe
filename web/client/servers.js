/**
 * client/servers.js: which WebSocket server a page connects to.
 *
 * It owns the choice between the node that served the page and a
 * `?server=` named in the page's URL, which is used only when the serving
 * node allows it (`--web-servers`): connecting elsewhere would hand that
 * server the user's name and token. Re-exported by huddle-client.js.
 *
 * @module huddle-client/servers
 */

import { HuddleError } from './rpc.js';

/**
 * The WebSocket URL of the node that served the page: the page's own host,
 * `/ws`, `wss:` under https. It ignores `?server=`; see {@link chooseServer}.
 * @param {{protocol: string, host: string}} loc `location`
 * @returns {string}
 */
export function defaultUrl(loc) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/**
 * The WebSocket URL a page should connect to: {@link defaultUrl}, unless
 * the page URL's `?server=` names another. That one is used only when it is
 * the page's own `/ws` or one of `allowed` (the serving node's
 * `--web-servers`, compared after `new URL()` normalises both); anything
 * else throws a `HuddleError` with code `server_not_allowed` and the
 * refused URL as `server`, because connecting would hand that server the
 * user's name and token.
 * @param {{protocol: string, host: string, search?: string}} loc `location`
 * @param {string[]} [allowed] other servers the page may use
 * @returns {string}
 */
export function chooseServer(loc, allowed = []) {
  const own = defaultUrl(loc);
  const asked = new URLSearchParams(loc.search || '').get('server');
  if (asked === null) return own;
  const wanted = plainSocketUrl(asked);
  if (wanted !== null && (wanted === plainSocketUrl(own) || allowed.some((a) => plainSocketUrl(a) === wanted))) {
    return wanted;
  }
  const error = new HuddleError('server_not_allowed', `the page may not connect to ${asked || 'an empty server'}`);
  error.server = asked;
  throw error;
}

/**
 * `text` normalised by `new URL()` when it is a `ws:`/`wss:` URL without
 * user info, query or fragment (what `--web-servers` accepts); else null.
 * @param {string} text
 * @returns {string|null}
 */
function plainSocketUrl(text) {
  let u;
  try { u = new URL(text); } catch { return null; }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') return null;
  if (u.username || u.password || u.search || u.hash || text.includes('#')) return null;
  return u.href;
}
