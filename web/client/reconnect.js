/**
 * client/reconnect.js: when a HuddleClient tries again after its
 * connection closed.
 *
 * It owns the reconnect policy and nothing else: the jittered exponential
 * backoff curve, the spread of the first try after an open connection
 * dropped (every client of a dead node drops at the same moment), the
 * immediate retry after close 1012 (a node draining on purpose) and the
 * cool-down after close 4008. It is pure: the client passes the close, its
 * attempt counter, its options and its random source, and gets back the
 * delay and the next attempt count; timers and state stay in
 * huddle-client.js.
 *
 * @module huddle-client/reconnect
 */

import { CloseCode } from './transport.js';

/**
 * Jittered exponential backoff ("equal jitter"): the wait before reconnect
 * attempt `attempt`, between half and all of
 * `min(backoffMaxMs, backoffInitialMs × backoffFactor^attempt)`.
 * @param {number} attempt
 * @param {{backoffInitialMs: number, backoffMaxMs: number, backoffFactor: number}} options
 * @param {() => number} random
 * @returns {number}
 */
export function backoffDelay(attempt, { backoffInitialMs, backoffMaxMs, backoffFactor }, random) {
  const cap = Math.min(backoffMaxMs, backoffInitialMs * backoffFactor ** Math.min(attempt, 30));
  return Math.round(cap / 2 + random() * cap / 2);
}

/**
 * The wait before the next connection attempt after a close.
 *
 * - close 1012 of an open connection (the node is shutting down on
 *   purpose; the load balancer already routes elsewhere): at once, and the
 *   attempt count starts over;
 * - the first try after an open connection dropped: a uniformly random
 *   time up to `reconnectSpreadMs` ("full jitter"), not the backoff's
 *   narrow first step, so a dead node's clients do not all arrive at the
 *   other nodes in the same quarter second;
 * - otherwise {@link backoffDelay} of the attempt count;
 * - after close 4008 (abuse) at least `abuseCooldownMs`.
 *
 * @param {{code: number, opened: boolean, attempt: number}} close
 * @param {{reconnectSpreadMs: number, abuseCooldownMs: number, backoffInitialMs: number, backoffMaxMs: number, backoffFactor: number}} options
 * @param {() => number} random
 * @returns {{delay: number, attempt: number}} the wait, and the attempt
 *   count to keep
 */
export function reconnectDelay({ code, opened, attempt }, options, random) {
  let delay;
  if (code === CloseCode.RESTART && opened) {
    delay = 0;
    attempt = 0;
  } else if (opened && attempt === 0) {
    delay = Math.round(random() * options.reconnectSpreadMs);
    attempt++;
  } else {
    delay = backoffDelay(attempt, options, random);
    attempt++;
  }
  if (code === CloseCode.ABUSE) delay = Math.max(delay, options.abuseCooldownMs);
  return { delay, attempt };
}
