/**
 * client/rpc.js: requests and their replies on a HuddleClient's connection.
 *
 * It owns the request side of the protocol: numbering requests, matching
 * each `reply` frame to its request by `id`, the per-request timeout, the
 * local frame-size limit, failing every pending request when the
 * connection goes, and the rate gate (`rate_limited` closes it for
 * `retry_after_ms`; requests wait for it and are retried a bounded number
 * of times). It also defines {@link HuddleError}, the error every request
 * rejects with. Queueing while offline and resending after a reconnect are
 * the client's (huddle-client.js), which knows the connection's state.
 *
 * @module huddle-client/rpc
 */

/**
 * An error reply, or a failure of the client itself.
 *
 * `code` is one of the protocol's codes (`bad_request`, `unauthorized`,
 * `forbidden`, `not_found`, `conflict`, `rate_limited`, `too_large`,
 * `unavailable`, `internal`) or one of the client's own:
 * `timeout` (no reply in time), `disconnected` (the connection dropped
 * before the reply and the request is not safe to repeat), `offline` (no
 * connection came up in time), `stopped` (`close()` was called),
 * `auth_failed`, `slow_consumer` (close 1013), `abuse` (close 4008).
 */
export class HuddleError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{retryAfterMs?: number, closeCode?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'HuddleError';
    /** @type {string} */
    this.code = code;
    /** @type {number|undefined} for `rate_limited` */
    this.retryAfterMs = extra.retryAfterMs;
    /** @type {number|undefined} for errors caused by a close */
    this.closeCode = extra.closeCode;
  }
}

/** Requests in flight on the current connection, and the rate gate. */
export class Rpc {
  /**
   * @param {import('./transport.js').Transport} transport  where requests go
   * @param {{maxFrameBytes: number, maxRetryAfterMs: number, maxRateRetries: number}} options
   *   the client's options (read at each use)
   * @param {(info: {type: string|null, retryAfterMs: number|undefined}) => void} onRateLimited
   *   told before each wait for the rate gate
   */
  constructor(transport, options, onRateLimited) {
    /** the socket requests are written to */
    this._transport = transport;
    /** limits: frame size, longest wait, retries */
    this._options = options;
    /** reports a `rate_limited` retry (the client emits it) */
    this._onRateLimited = onRateLimited;
    /** the next request id */
    this._nextId = 1;
    /** @type {Map<number, {resolve: Function, reject: Function, timer: any}>} requests waiting for their reply, by id */
    this._pending = new Map();
    /** no rate-gated request goes out before this time, ms (the server said to wait) */
    this.gateUntil = 0;
  }

  /**
   * Sends one frame with an id on the current socket and waits for its
   * reply. No queueing, no retries.
   * @param {string} type @param {object} fields @param {number} timeoutMs
   * @returns {Promise<any>} the reply's `data`
   */
  exchange(type, fields, timeoutMs) {
    return new Promise((resolve, reject) => {
      const transport = this._transport;
      if (!transport.ready) {
        reject(new HuddleError('disconnected', 'not connected'));
        return;
      }
      const id = this._nextId++;
      const text = JSON.stringify({ ...fields, type, id });
      if (new TextEncoder().encode(text).length > this._options.maxFrameBytes) {
        reject(new HuddleError('too_large', `request is larger than ${this._options.maxFrameBytes} bytes`));
        return;
      }
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new HuddleError('timeout', `no reply to ${type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      try {
        transport.send(text);
      } catch (e) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(new HuddleError('disconnected', String(e && e.message || e)));
      }
    });
  }

  /**
   * Settles the request a `reply` frame answers (an unknown id is ignored).
   * @param {any} frame
   */
  settle(frame) {
    const p = this._pending.get(frame.id);
    if (!p) return;
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.ok) {
      p.resolve(frame.data ?? {});
    } else {
      const e = frame.error || {};
      p.reject(new HuddleError(e.code || 'internal', e.message || 'request failed', { retryAfterMs: e.retry_after_ms }));
    }
  }

  /**
   * Rejects every request still waiting for a reply with `err`.
   * @param {HuddleError} err
   */
  failAll(err) {
    for (const [, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this._pending.clear();
  }

  /**
   * Holds rate-gated requests back for `ms` (bounded by `maxRetryAfterMs`).
   * @param {number|undefined} ms
   */
  closeGate(ms) {
    const wait = Math.min(Math.max(Number(ms) || 100, 1), this._options.maxRetryAfterMs);
    this.gateUntil = Math.max(this.gateUntil, Date.now() + wait);
  }

  /** Resolves once the rate gate is open. */
  async waitGate() {
    for (;;) {
      const wait = this.gateUntil - Date.now();
      if (wait <= 0) return;
      await new Promise((r) => setTimeout(r, wait));
    }
  }

  /**
   * {@link Rpc#exchange} that honours the rate gate and retries
   * `rate_limited` after `retry_after_ms` (up to `maxRateRetries` times).
   * @param {string} type @param {object} fields @param {number} timeoutMs
   * @returns {Promise<any>}
   */
  async call(type, fields, timeoutMs) {
    for (let attempt = 0; ; attempt++) {
      await this.waitGate();
      try {
        return await this.exchange(type, fields, timeoutMs);
      } catch (e) {
        if (e.code === 'rate_limited' && attempt < this._options.maxRateRetries) {
          this.closeGate(e.retryAfterMs);
          this._onRateLimited({ type, retryAfterMs: e.retryAfterMs });
          continue;
        }
        throw e;
      }
    }
  }
}
