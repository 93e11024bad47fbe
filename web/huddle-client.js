/**
 * huddle-client.js: a small, dependency-free client for the Huddle chat
 * protocol, version 1 (see docs/protocol.md and docs/web-client.md).
 *
 * It owns everything between "a WebSocket URL" and "a stream of in-order
 * room events", so a front end only renders:
 *
 * - the connection and the `hello` handshake (guest name or JWT);
 * - requests and replies matched by `id`, each with a timeout;
 * - event subscription (`client.on("message", …)` and friends);
 * - per-room tracking of the last durable `seq`: duplicates are dropped, a
 *   gap triggers `room.join` with `since`, and `complete: false` triggers a
 *   `message.history` reload (emitted as `reset`);
 * - reconnection with jittered exponential backoff (at once after close
 *   1012, "service restart"), resuming every joined room with `since`;
 * - `rate_limited`: waits `retry_after_ms`, then retries (bounded);
 * - close 4001 (bad token): stops and reports `auth_failed`;
 * - close 1009 / 1013 / 4008: reported as an `error`, then reconnects
 *   (after a cool-down for 4008).
 *
 * This file is the module's facade: {@link HuddleClient} (the public API,
 * the connection's life cycle and its events), and the re-exported
 * {@link defaultUrl}, {@link chooseServer}, {@link CloseCode} and
 * {@link HuddleError}. Behind it:
 *
 * - `client/transport.js`: the WebSocket and its generations;
 * - `client/reconnect.js`: when to try again (backoff, jitter, spread);
 * - `client/rpc.js`: requests and replies, timeouts, the rate gate;
 * - `client/tracker.js`: tracked rooms, seq order, gaps and resumes;
 * - `client/servers.js`: which WebSocket URL a page may use;
 * - `client/verbs.js`: the 1.1 moderation and read-state verbs and events
 *   (installed on {@link HuddleClient}).
 *
 * It is an ES module with no dependencies and no DOM access: it needs only a
 * WebSocket constructor (the browser's, or any object with the same
 * interface passed as `options.WebSocket`), timers, `JSON` and
 * `TextEncoder`.
 *
 * @module huddle-client
 */

import { CloseCode, Transport } from './client/transport.js';
import { backoffDelay, reconnectDelay } from './client/reconnect.js';
import { HuddleError, Rpc } from './client/rpc.js';
import { RoomTracker } from './client/tracker.js';
import { handleEvent, installVerbs } from './client/verbs.js';
import { chooseServer, defaultUrl } from './client/servers.js';

export { CloseCode, HuddleError, chooseServer, defaultUrl };


/**
 * Connection states, in the order a healthy client goes through them.
 * `online` means: `hello` answered and every tracked room resumed.
 * @typedef {"idle"|"connecting"|"online"|"reconnecting"|"stopped"} ConnectionState
 */

/**
 * @typedef {object} User
 * @property {string} id
 * @property {string} name
 * @property {string|null} image
 */

/**
 * @typedef {object} Room
 * @property {string} id
 * @property {string} code
 * @property {string} name
 * @property {string} created_by
 * @property {number} created_at
 * @property {number} max_participants
 * @property {boolean} private
 * @property {number} participant_count
 * @property {number} last_seq
 */

/**
 * @typedef {object} Attachment
 * @property {string} url  http(s) URL
 * @property {string} [name]
 * @property {number|null} [size]
 * @property {string|null} [mime]
 */

/**
 * @typedef {object} Message
 * @property {string} id
 * @property {string} room
 * @property {number} seq   creation seq (an edit keeps it)
 * @property {User} user
 * @property {"text"|"image"|"file"|"system"} kind
 * @property {string} content
 * @property {Attachment|null} attachment
 * @property {number} created_at
 * @property {number|null} edited_at
 * @property {boolean} deleted
 */


/** Verbs that must not be sent again after a dropped connection. */
const UNSAFE_TO_REPEAT = new Set(['room.create']);

const DEFAULTS = Object.freeze({
  requestTimeoutMs: 10_000,
  queueTimeoutMs: 20_000,
  sendQueueTimeoutMs: 120_000,
  connectTimeoutMs: 10_000,
  heartbeatMs: 30_000,
  backoffInitialMs: 500,
  backoffMaxMs: 15_000,
  backoffFactor: 2,
  reconnectSpreadMs: 2_000,
  abuseCooldownMs: 30_000,
  maxRateRetries: 6,
  maxRetryAfterMs: 60_000,
  maxFrameBytes: 65_536,
  historyReloadLimit: 50,
});

/**
 * @typedef {object} HuddleClientOptions
 * @property {string} url  WebSocket URL, e.g. `ws://localhost:8080/ws`
 *   (see {@link chooseServer}).
 * @property {string} [name]   guest name (1–64 characters; guest mode)
 * @property {string} [image]  avatar URL (http(s))
 * @property {string} [token]  JWT (when the server requires one)
 * @property {any} [WebSocket] WebSocket constructor; defaults to
 *   `globalThis.WebSocket`.
 * @property {number} [requestTimeoutMs=10000] wait for one reply
 * @property {number} [queueTimeoutMs=20000] how long a request made while
 *   offline waits for the connection before failing with `offline`
 * @property {number} [sendQueueTimeoutMs=120000] the same for `sendMessage`
 * @property {number} [connectTimeoutMs=10000] WebSocket opening handshake
 * @property {number} [heartbeatMs=30000] after this long without a frame from
 *   the server, send a `ping`; no answer within `requestTimeoutMs` drops the
 *   connection and reconnects. 0 disables.
 * @property {number} [backoffInitialMs=500]
 * @property {number} [backoffMaxMs=15000]
 * @property {number} [backoffFactor=2]
 * @property {number} [reconnectSpreadMs=2000] the first try after an open
 *   connection dropped (its node died: all its clients come back at once)
 *   waits a uniformly random time up to this long
 * @property {number} [abuseCooldownMs=30000] minimum wait after close 4008
 * @property {number} [maxRateRetries=6] `rate_limited` retries per request
 * @property {number} [maxFrameBytes=65536] larger requests fail locally with
 *   `too_large` instead of getting the connection closed (1009)
 * @property {number} [historyReloadLimit=50] messages loaded by a `reset`
 * @property {() => number} [random] for tests
 */

/** A random id for `client_msg_id` (≤ 64 characters). */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}-${Math.random().toString(36).slice(2)}`;
}


/**
 * A Huddle connection that survives reconnects.
 *
 * Events (subscribe with {@link HuddleClient#on}):
 * - `state` `{state, attempt, delayMs?, closeCode?, reason?}`
 * - `session` `{user, session, node, server_time, resumed}` after each hello
 * - `message` `{room, seq, event, message, replayed}`: `event` is
 *   `message.created`, `message.updated` or `message.deleted`; delivered once
 *   per seq, in seq order per room
 * - `participant` `{room, event, user}` (`participant.joined` / `.left`)
 * - `participants` `{room, count, joined, left}` (a big room's `participants.changed`)
 * - `typing` `{room, user, active}`
 * - `room` `{room}`: a room object changed (`room.updated`, a join or resume)
 * - `resumed` `{room, participants, complete}` after a room was resumed
 * - `reset` `{room, messages, has_more}`: the gap could not be filled
 *   (`complete: false`); replace the room's messages with these
 * - `room_lost` `{room, error}`: a tracked room could not be resumed
 * - `auth_failed` `{error}`: the token or name was refused; the client stopped
 * - `error` `HuddleError`: an `error` frame or a connection-level problem
 * - `member`, `removed`, `closed`, `read`: the 1.1 events (client/verbs.js)
 */
export class HuddleClient {
  /** @param {HuddleClientOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== 'string') {
      throw new TypeError('HuddleClient: options.url is required');
    }
    this.options = { ...DEFAULTS, ...options };
    const WS = options.WebSocket || globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('HuddleClient: no WebSocket constructor (pass options.WebSocket)');
    }
    /** the backoff's jitter (tests pass their own) */
    this._random = options.random || Math.random;
    /** @type {Map<string, Set<Function>>} event listeners by type */
    this._listeners = new Map();
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** @type {User|null} the current session's user */
    this.user = null;
    /** @type {string|null} the current session (connection) id */
    this.session = null;
    /** @type {string|null} the node that answered the current hello */
    this.node = null;
    /** server clock minus local clock, ms (from the hello reply) */
    this.clockOffsetMs = 0;
    /** the socket of the moment, its generation and last frame time */
    this._transport = new Transport(WS, this.options, {
      onOpen: (gen) => this._handshake(gen),
      onFrame: (data) => this._onFrame(data),
      onClose: (gen, code, reason) => this._handleClose(gen, code, reason),
      onConnectTimeout: () => this._dropSocket(CloseCode.ABNORMAL, 'connect timeout'),
    });
    /** requests in flight and the rate gate */
    this._rpc = new Rpc(this._transport, this.options,
      (info) => this._emit('rate_limited', info));
    /** the rooms followed, resumed on every reconnect */
    this._tracker = new RoomTracker({
      emit: (type, payload) => this._emit(type, payload),
      call: (type, fields, timeoutMs) => this._rpc.call(type, fields, timeoutMs),
      gen: () => this._transport.gen,
      backoff: (attempt) => this._backoff(attempt),
      options: this.options,
    });
    /** reconnect attempts since the last time online (drives the backoff) */
    this._attempt = 0;
    /** not running: before `connect()`, after `close()` or a refused sign-in (no reconnect) */
    this._stopped = true;
    /** the pending reconnect (cleared by `reconnectNow` and `close`) */
    this._reconnectTimer = null;
    /** pings a quiet connection to notice a half-open one */
    this._heartbeatTimer = null;
    /** @type {Set<{resolve: Function, reject: Function, timer: any}>} requests waiting for the connection */
    this._onlineWaiters = new Set();
    /** @type {Map<string, Promise<any>>} per-room chain keeping sends in order */
    this._sendChains = new Map();
    /** what `connect()` returned; a second call while running gets the same */
    this._connectPromise = null;
    /** online at least once since `connect()`: the next hellos are resumes */
    this._everOnline = false;
  }

  // ---------------------------------------------------------------- events

  /**
   * Subscribes to an event. Returns a function that unsubscribes.
   * @param {string} type
   * @param {(payload: any) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** @param {string} type @param {Function} fn */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /** @private */
  _emit(type, payload) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (e) {
        // A listener's bug must not break the protocol loop; surface it.
        setTimeout(() => { throw e; }, 0);
      }
    }
  }

  /** @private */
  _setState(state, extra = {}) {
    this.state = state;
    this._emit('state', { state, attempt: this._attempt, ...extra });
  }

  // ------------------------------------------------------------ lifecycle

  /**
   * Connects (and keeps reconnecting until {@link HuddleClient#close}).
   * Resolves with the first session (`hello` reply data); rejects with an
   * `auth_failed` error when the server refuses the token or name, or with
   * `stopped` if closed first. Later reconnects are reported by events.
   * @returns {Promise<{user: User, session: string, node: string, server_time: number}>}
   */
  connect() {
    if (this._connectPromise && !this._stopped) return this._connectPromise;
    this._stopped = false;
    this._everOnline = false;
    this._connectPromise = new Promise((resolve, reject) => {
      this._firstSession = { resolve, reject };
    });
    this._connectPromise.catch(() => {}); // avoid unhandled rejections if unused
    this._open();
    return this._connectPromise;
  }

  /**
   * Closes the connection for good: pending and queued requests fail with
   * `stopped`; no reconnect.
   */
  close() {
    this._stopped = true;
    this._clearReconnect();
    const err = new HuddleError('stopped', 'the client was closed');
    this._dropSocket(CloseCode.NORMAL, 'client closed', { final: true });
    for (const w of this._onlineWaiters) { clearTimeout(w.timer); w.reject(err); }
    this._onlineWaiters.clear();
    if (this._firstSession) { this._firstSession.reject(err); this._firstSession = null; }
    if (this.state !== 'stopped') this._setState('stopped', { reason: 'closed' });
  }

  /**
   * Drops the current connection attempt or backoff wait and connects now
   * (e.g. when the browser reports it is back online).
   */
  reconnectNow() {
    if (this._stopped) return;
    if (this.state === 'online') return;
    this._clearReconnect();
    this._dropSocket(CloseCode.NORMAL, 'reconnect now', { final: true });
    this._open();
  }

  /**
   * Checks that the connection still answers (e.g. when a tab becomes
   * visible again after the laptop slept): a `ping` with a short timeout;
   * no answer drops the connection and reconnects. While waiting to
   * reconnect, skips the wait. Resolves whether the connection was alive.
   * @param {number} [timeoutMs=5000]
   * @returns {Promise<boolean>}
   */
  async checkConnection(timeoutMs = 5000) {
    if (this._stopped) return false;
    if (this.state === 'reconnecting') { this.reconnectNow(); return false; }
    if (this.state !== 'online') return false;
    const gen = this._transport.gen;
    try {
      await this._rpc.exchange('ping', {}, timeoutMs);
      return true;
    } catch (e) {
      if (gen === this._transport.gen && e.code === 'timeout') this._dropSocket(CloseCode.ABNORMAL, 'no answer to ping');
      return false;
    }
  }

  /**
   * Resolves when the client is online (hello answered, rooms resumed).
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  whenOnline(timeoutMs = this.options.queueTimeoutMs) {
    if (this.state === 'online') return Promise.resolve();
    if (this._stopped) return Promise.reject(new HuddleError('stopped', 'the client is not connected'));
    return new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        this._onlineWaiters.delete(w);
        reject(new HuddleError('offline', 'no connection to the server'));
      }, Math.max(0, timeoutMs));
      this._onlineWaiters.add(w);
    });
  }

  /** @private */
  _open() {
    this._clearReconnect();
    const gen = this._transport.next();
    this._setState('connecting');
    this._transport.open(gen);
  }

  /**
   * Forgets the current socket at once (its late events are ignored) and
   * runs the close logic; `final` skips the reconnect logic.
   * @private
   */
  _dropSocket(code, reason, { final = false } = {}) {
    const gen = this._transport.gen;
    this._transport.detach(code, reason);
    if (final) {
      this._transport.next();
      this._forgetConnection(new HuddleError(this._stopped ? 'stopped' : 'disconnected', reason));
      return;
    }
    this._handleClose(gen, code, reason);
  }

  /** Per-connection state goes with the connection. @private */
  _forgetConnection(err) {
    this._transport.forget();
    this._stopHeartbeat();
    this._rpc.failAll(err);
    this._tracker.connectionLost();
  }

  /** @private */
  _handleClose(gen, code, reason) {
    if (gen !== this._transport.gen) return;
    this._transport.next();
    const opened = this._transport.opened;
    this._forgetConnection(new HuddleError('disconnected', `connection closed (${code})`, { closeCode: code }));
    if (this._stopped) return;

    if (code === CloseCode.BAD_TOKEN) {
      this._authFailed(new HuddleError('auth_failed', reason || 'the server refused the token', { closeCode: code }));
      return;
    }
    const next = reconnectDelay({ code, opened, attempt: this._attempt }, this.options, this._random);
    const delay = next.delay;
    this._attempt = next.attempt;
    if (code === CloseCode.ABUSE) {
      this._emit('error', new HuddleError('abuse', 'closed for sending too fast (4008)', { closeCode: code }));
    } else if (code === CloseCode.TOO_BIG) {
      this._emit('error', new HuddleError('too_large', 'a frame was too large (1009)', { closeCode: code }));
    } else if (code === CloseCode.TRY_AGAIN_LATER) {
      this._emit('error', new HuddleError('slow_consumer', 'the server dropped a slow connection (1013)', { closeCode: code }));
    }
    this._setState('reconnecting', { delayMs: delay, closeCode: code, reason });
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._stopped) this._open();
    }, delay);
  }

  /** Jittered exponential backoff (see `backoffDelay`). @private */
  _backoff(attempt) {
    return backoffDelay(attempt, this.options, this._random);
  }

  /** @private */
  _clearReconnect() {
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }

  /** @private */
  _authFailed(err) {
    this._stopped = true;
    this._clearReconnect();
    this._setState('stopped', { reason: err.message, closeCode: err.closeCode });
    this._emit('auth_failed', { error: err });
    for (const w of this._onlineWaiters) { clearTimeout(w.timer); w.reject(err); }
    this._onlineWaiters.clear();
    if (this._firstSession) { this._firstSession.reject(err); this._firstSession = null; }
  }

  /** hello, then resume every tracked room. @private */
  async _handshake(gen) {
    const o = this.options;
    const hello = {};
    if (o.token) hello.token = o.token;
    if (o.name) hello.name = o.name;
    if (o.image) hello.image = o.image;
    let data;
    try {
      data = await this._rpc.exchange('hello', hello, o.requestTimeoutMs);
    } catch (e) {
      if (gen !== this._transport.gen) return;
      if (['unauthorized', 'bad_request', 'too_large'].includes(e.code)) {
        this._authFailed(new HuddleError('auth_failed', e.message));
        this._dropSocket(CloseCode.NORMAL, 'auth failed', { final: true });
      } else if (e.code !== 'disconnected') {
        // rate_limited, unavailable, timeout, internal…: try again later.
        this._dropSocket(CloseCode.ABNORMAL, `hello failed: ${e.code}`);
      }
      return; // 'disconnected': the close handler already runs
    }
    if (gen !== this._transport.gen) return;
    const previousUser = this.user;
    this.user = data.user;
    this.session = data.session;
    this.node = data.node;
    if (typeof data.server_time === 'number') this.clockOffsetMs = data.server_time - Date.now();
    this._emit('session', { ...data, resumed: this._everOnline, previousUser });

    const tracker = this._tracker;
    const failed = [];
    for (const room of [...tracker.rooms.values()]) {
      if (gen !== this._transport.gen) return;
      if (!(await tracker.resume(room, gen))) failed.push(room);
    }
    if (gen !== this._transport.gen) return;
    for (const room of failed) if (tracker.rooms.has(room.id)) setTimeout(() => tracker.resync(room), this._backoff(1));
    this._attempt = 0;
    this._everOnline = true;
    this._setState('online', { node: this.node });
    this._startHeartbeat(gen);
    const waiters = [...this._onlineWaiters];
    this._onlineWaiters.clear();
    for (const w of waiters) { clearTimeout(w.timer); w.resolve(); }
    if (this._firstSession) { this._firstSession.resolve(data); this._firstSession = null; }
  }

  /** @private */
  _startHeartbeat(gen) {
    this._stopHeartbeat();
    const every = this.options.heartbeatMs;
    if (!every) return;
    this._heartbeatTimer = setInterval(async () => {
      if (gen !== this._transport.gen || this.state !== 'online') return;
      if (Date.now() - this._transport.lastFrameAt < every) return;
      try {
        await this._rpc.exchange('ping', {}, this.options.requestTimeoutMs);
      } catch (e) {
        if (gen === this._transport.gen && e.code === 'timeout') {
          this._dropSocket(CloseCode.ABNORMAL, 'no answer to ping');
        }
      }
    }, Math.max(1000, Math.floor(every / 3)));
  }

  /** @private */
  _stopHeartbeat() {
    if (this._heartbeatTimer) clearInterval(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  // --------------------------------------------------------------- frames

  /** A frame from the server: replies to the rpc, events to the tracker. @private */
  _onFrame(text) {
    if (typeof text !== 'string') return; // the server only sends text
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object') return;
    if (frame.type === 'reply') {
      this._rpc.settle(frame);
    } else if (frame.type === 'error') {
      const e = frame.error || {};
      if (e.code === 'rate_limited') {
        // Sent alongside the reply of the limited request (if it had an id).
        this._rpc.closeGate(e.retry_after_ms);
        this._emit('rate_limited', { type: null, retryAfterMs: e.retry_after_ms });
        return;
      }
      this._emit('error', new HuddleError(e.code || 'internal', e.message || 'error', { retryAfterMs: e.retry_after_ms }));
    } else if (frame.type === 'event') {
      if (!handleEvent(this, frame)) this._tracker.onEvent(frame);
    }
  }

  // ------------------------------------------------------------- requests

  /**
   * Sends a request and resolves with the reply's `data`; rejects with a
   * {@link HuddleError}. A request made while offline waits for the
   * connection (up to `queueTimeoutMs`); a request whose connection drops
   * before the reply is sent again after the reconnect, except `room.create`
   * (fails with `disconnected`). `rate_limited` replies are retried after
   * `retry_after_ms`.
   * @param {string} type   the verb, e.g. `"room.get"`
   * @param {object} [fields]
   * @param {{timeoutMs?: number, queueTimeoutMs?: number}} [opts]
   * @returns {Promise<any>}
   */
  async request(type, fields = {}, opts = {}) {
    const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
    const deadline = Date.now() + (opts.queueTimeoutMs ?? this.options.queueTimeoutMs);
    const sentAs = new Set();
    let seqAtSend = 0;
    for (;;) {
      if (this.state !== 'online') await this.whenOnline(deadline - Date.now());
      if (type === 'message.send') {
        if (sentAs.size && !sentAs.has(this.user && this.user.id)) {
          // Sent under an identity we no longer have (a guest gets a new id
          // per hello, so client_msg_id cannot dedupe it): if the resume
          // showed it was written, it is done.
          const found = this._tracker.findSent(fields, sentAs, seqAtSend);
          if (found) return { message: found };
        }
        if (!sentAs.size) seqAtSend = this.lastSeq(fields.room) ?? 0;
      }
      if (this.user) sentAs.add(this.user.id);
      try {
        return await this._rpc.call(type, fields, timeoutMs);
      } catch (e) {
        if (e.code === 'disconnected' && !UNSAFE_TO_REPEAT.has(type) && !this._stopped) continue;
        throw e;
      }
    }
  }

  // ---------------------------------------------------------- convenience

  /**
   * Creates a room; the creator has joined it and its events follow.
   * @param {{name: string, maxParticipants?: number, private?: boolean}} p
   * @returns {Promise<Room>}
   */
  async createRoom({ name, maxParticipants, private: isPrivate } = {}) {
    const fields = { name };
    if (maxParticipants != null) fields.max_participants = maxParticipants;
    if (isPrivate != null) fields.private = !!isPrivate;
    const data = await this._joinLike('room.create', fields);
    const t = this._tracker.track(data.room);
    this._emit('room', { room: data.room });
    this._tracker.adoptOrphans(t);
    return data.room;
  }

  /** A request that subscribes this connection to a room. @private */
  async _joinLike(type, fields) {
    this._tracker.joining++;
    try {
      return await this.request(type, fields);
    } finally {
      this._tracker.joining--;
    }
  }

  /**
   * Joins a room by id or code. The reply's `messages` are the latest 50;
   * later events arrive as `message` events.
   * @param {{room?: string, code?: string}} p
   * @returns {Promise<{room: Room, participants: User[], messages: Message[]}>}
   */
  async joinRoom({ room, code } = {}) {
    const fields = room ? { room } : { code };
    const data = await this._joinLike('room.join', fields);
    const t = this._tracker.track(data.room);
    for (const m of data.messages || []) this._tracker.remember(t, m);
    this._emit('room', { room: data.room });
    setTimeout(() => this._tracker.adoptOrphans(t), 0); // after the caller rendered the snapshot
    return data;
  }

  /**
   * Leaves a room and stops tracking it.
   * @param {string} roomId
   */
  async leaveRoom(roomId) {
    const data = await this.request('room.leave', { room: roomId });
    this._tracker.rooms.delete(roomId);
    return data;
  }

  /** @param {string} roomId @returns {Promise<{room: Room, participants: User[]}>} */
  getRoom(roomId) {
    return this.request('room.get', { room: roomId });
  }

  /** Public rooms, most recently active first. @param {number} [limit] @returns {Promise<Room[]>} */
  async listRooms(limit) {
    const data = await this.request('room.list', limit ? { limit } : {});
    return data.rooms || [];
  }

  /**
   * Sends a message. Sends to one room go out one after the other, in call
   * order; each carries a `client_msg_id` so a retry after a reconnect does
   * not duplicate it. Waits for the connection up to `sendQueueTimeoutMs`.
   * @param {string} roomId
   * @param {{kind?: "text"|"image"|"file", content?: string, attachment?: Attachment, clientMsgId?: string}} msg
   * @returns {Promise<Message>}
   */
  sendMessage(roomId, { kind = 'text', content, attachment, clientMsgId } = {}) {
    const fields = { room: roomId, kind, client_msg_id: clientMsgId || randomId() };
    if (content != null && content !== '') fields.content = content;
    if (attachment) fields.attachment = attachment;
    const prev = this._sendChains.get(roomId) || Promise.resolve();
    const run = prev.catch(() => {}).then(() =>
      this.request('message.send', fields, { queueTimeoutMs: this.options.sendQueueTimeoutMs }));
    const tail = run.catch(() => {});
    this._sendChains.set(roomId, tail);
    tail.then(() => { if (this._sendChains.get(roomId) === tail) this._sendChains.delete(roomId); });
    return run.then((d) => d.message);
  }

  /** @param {string} roomId @param {string} messageId @param {string} content @returns {Promise<Message>} */
  async editMessage(roomId, messageId, content) {
    return (await this.request('message.edit', { room: roomId, message: messageId, content })).message;
  }

  /** @param {string} roomId @param {string} messageId @returns {Promise<Message>} the tombstone */
  async deleteMessage(roomId, messageId) {
    return (await this.request('message.delete', { room: roomId, message: messageId })).message;
  }

  /**
   * Older messages, ascending by seq.
   * @param {string} roomId
   * @param {{before?: number, limit?: number}} [p]
   * @returns {Promise<{messages: Message[], has_more: boolean}>}
   */
  history(roomId, { before, limit } = {}) {
    const fields = { room: roomId };
    if (before != null) fields.before = before;
    if (limit != null) fields.limit = limit;
    return this.request('message.history', fields);
  }

  /**
   * Messages containing every word of `query`, newest first.
   * @param {string} roomId @param {string} query @param {{limit?: number}} [p]
   * @returns {Promise<Message[]>}
   */
  async search(roomId, query, { limit } = {}) {
    const fields = { room: roomId, query };
    if (limit != null) fields.limit = limit;
    return (await this.request('message.search', fields)).messages || [];
  }

  /**
   * One page of a room's members by user id; pass `cursor` back for the next (`null` after the last).
   * @param {string} roomId @param {{cursor?: string|null, limit?: number}} [p]  `limit` 1–500
   * @returns {Promise<{members: User[], cursor: string|null}>}
   */
  async members(roomId, { cursor, limit } = {}) {
    const page = await this.request('room.members', { room: roomId, ...(cursor != null && { cursor }), ...(limit != null && { limit }) });
    return { members: page.members || [], cursor: page.cursor ?? null };
  }

  /**
   * Users online in a room (on any node).
   * @param {string} roomId @returns {Promise<User[]>}
   */
  async presence(roomId) {
    return (await this.request('presence', { room: roomId })).online || [];
  }

  /**
   * Tells the room this user is (or stopped) typing. Best effort: dropped
   * while offline or rate limited, never queued. Repeat every few seconds
   * while typing (an indicator lapses after 5 s).
   * @param {string} roomId @param {boolean} active
   */
  setTyping(roomId, active) {
    if (this.state !== 'online' || Date.now() < this._rpc.gateUntil || !this._tracker.rooms.has(roomId)) return;
    this._rpc.exchange('typing', { room: roomId, active: !!active }, this.options.requestTimeoutMs).catch((e) => {
      if (e.code === 'rate_limited') this._rpc.closeGate(e.retryAfterMs);
    });
  }

  /** Round trip to the server. @returns {Promise<{server_time: number}>} */
  ping() {
    return this.request('ping');
  }

  /**
   * The last durable seq delivered for a room (undefined when not tracked).
   * @param {string} roomId @returns {number|undefined}
   */
  lastSeq(roomId) {
    return this._tracker.rooms.get(roomId)?.lastSeq;
  }

  /** Ids of the rooms this client tracks (joined, resumed on reconnect). @returns {string[]} */
  trackedRooms() {
    return [...this._tracker.rooms.keys()];
  }

  /** The server's clock now, ms (local clock corrected by the hello reply). */
  serverNow() {
    return Date.now() + this.clockOffsetMs;
  }
}

installVerbs(HuddleClient);
