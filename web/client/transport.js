/**
 * client/transport.js: the WebSocket under a HuddleClient, one at a time.
 *
 * It owns the socket itself: opening it with a connect timeout, the
 * connection generation that makes a dead socket's late callbacks
 * harmless, and closing and forgetting it.
 * What a close means (reconnect now, later, or stop) is the client's
 * decision (huddle-client.js, with the policy in reconnect.js); this
 * module only reports opens, frames and closes to the handlers it was
 * given.
 *
 * @module huddle-client/transport
 */

/** Close codes the server uses (docs/protocol.md, "Connections"). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  /** The connection dropped without a close frame (browser-side code). */
  ABNORMAL: 1006,
  TOO_BIG: 1009,
  RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  BAD_TOKEN: 4001,
  ABUSE: 4008,
});

/**
 * @typedef {object} TransportHandlers
 * @property {(gen: number) => void} onOpen          the socket of `gen` opened
 * @property {(data: any) => void} onFrame           a frame on the current socket
 * @property {(gen: number, code: number, reason: string) => void} onClose
 *   the socket of `gen` closed (or could not be created)
 * @property {() => void} onConnectTimeout          the current socket did not open in time
 */

/** One WebSocket at a time, each with its own generation. */
export class Transport {
  /**
   * @param {any} WebSocket  the WebSocket constructor
   * @param {{url: string, connectTimeoutMs: number}} options  the client's
   *   options (read at each open)
   * @param {TransportHandlers} handlers
   */
  constructor(WebSocket, options, handlers) {
    /** the WebSocket constructor (the browser's or one passed in) */
    this._WS = WebSocket;
    /** where sockets connect, and how long one may take to open */
    this._options = options;
    /** where opens, frames and closes are reported */
    this._handlers = handlers;
    /** the current socket, or null between connections */
    this.ws = null;
    /** increments per socket; stale callbacks compare it */
    this.gen = 0;
    /** whether the current socket reached `open` (close 1012 reconnects at once only then) */
    this.opened = false;
    /** when the last frame arrived, ms (the heartbeat reads it) */
    this.lastFrameAt = 0;
  }

  /**
   * Starts a new generation: callbacks of older sockets are ignored from
   * now on. Returns it.
   * @returns {number}
   */
  next() {
    return ++this.gen;
  }

  /**
   * Opens the socket of generation `gen` (from {@link Transport#next}). A
   * constructor failure is reported as a close.
   * @param {number} gen
   */
  open(gen) {
    let ws;
    try {
      ws = new this._WS(this._options.url);
    } catch (e) {
      this._handlers.onClose(gen, CloseCode.ABNORMAL, String(e && e.message || e));
      return;
    }
    this.ws = ws;
    const connectTimer = setTimeout(() => {
      if (gen === this.gen && ws.readyState !== 1) this._handlers.onConnectTimeout();
    }, this._options.connectTimeoutMs);
    ws.onopen = () => {
      clearTimeout(connectTimer);
      if (gen !== this.gen) return;
      this.opened = true;
      this.lastFrameAt = Date.now();
      this._handlers.onOpen(gen);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastFrameAt = Date.now();
      this._handlers.onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      clearTimeout(connectTimer);
      this._handlers.onClose(gen, ev.code || CloseCode.ABNORMAL, ev.reason || '');
    };
    ws.onerror = () => { /* a close event follows */ };
  }

  /** Whether a frame can be sent now. */
  get ready() {
    return !!this.ws && this.ws.readyState === 1;
  }

  /**
   * Sends one text frame on the current socket (throws when it cannot).
   * @param {string} text
   */
  send(text) {
    this.ws.send(text);
  }

  /**
   * Silences the current socket (its late events are ignored) and closes
   * it: 1000 for a normal close, 4000 otherwise.
   * @param {number} code
   * @param {string} reason
   */
  detach(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try { ws.close(code === CloseCode.NORMAL ? 1000 : 4000, reason.slice(0, 100)); } catch { /* already closed */ }
  }

  /** Forgets the current socket once it is closed. */
  forget() {
    this.ws = null;
    this.opened = false;
  }
}
