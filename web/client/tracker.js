/**
 * client/tracker.js: the rooms a HuddleClient follows, and their order.
 *
 * It owns per-room tracking: the last durable `seq` delivered, so that
 * every message event is delivered once and in order; a gap holds live
 * events back and fills itself with `room.join` + `since`; `complete:
 * false` becomes a `message.history` reload (emitted as `reset`); events
 * of a room whose join reply is still on its way are held ("orphans")
 * until it is tracked; the latest created messages are kept so a send
 * whose reply was lost with the connection is recognised in the replay.
 * Requests go through the client (rate-gated, on the current connection);
 * events go out through the client's `emit`.
 *
 * @module huddle-client/tracker
 */

import { HuddleError } from './rpc.js';

/**
 * Per-room tracking state.
 * @typedef {object} TrackedRoom
 * @property {string} id
 * @property {any} info         latest room object seen
 * @property {number} lastSeq   last durable seq delivered
 * @property {any[]|null} buffer events held while a join/resync is in flight
 * @property {boolean} resyncing
 * @property {number} resyncFailures
 * @property {any[]} recent     the latest created messages (to recognise a
 *   send whose reply was lost with the connection)
 */

/**
 * What the tracker needs from its client.
 * @typedef {object} TrackerHost
 * @property {(type: string, payload: any) => void} emit    an event to the client's listeners
 * @property {(type: string, fields: object, timeoutMs: number) => Promise<any>} call
 *   a rate-gated request on the current connection
 * @property {() => number} gen                  the current connection generation
 * @property {(attempt: number) => number} backoff the wait before retry `attempt`
 * @property {{requestTimeoutMs: number, historyReloadLimit: number}} options
 */

/** The rooms a client follows: seq order, gaps, resumes. */
export class RoomTracker {
  /** @param {TrackerHost} host */
  constructor(host) {
    /** the client: events out, requests, generation, backoff, options */
    this._host = host;
    /** @type {Map<string, TrackedRoom>} the rooms joined, resumed on every reconnect */
    this.rooms = new Map();
    /** joins/creates in flight: message events of unknown rooms are held meanwhile */
    this.joining = 0;
    /** @type {{at: number, frame: any}[]} message events of rooms not tracked yet */
    this._orphans = [];
  }

  /**
   * Starts (or refreshes) tracking a room from a room object.
   * @returns {TrackedRoom}
   */
  track(room) {
    let t = this.rooms.get(room.id);
    if (!t) {
      t = { id: room.id, info: room, lastSeq: room.last_seq || 0, buffer: null, resyncing: false, resyncFailures: 0, recent: [] };
      this.rooms.set(room.id, t);
    } else {
      t.info = room;
      t.lastSeq = Math.max(t.lastSeq, room.last_seq || 0);
    }
    return t;
  }

  /** The connection went: resyncs in flight and held events go with it. */
  connectionLost() {
    for (const room of this.rooms.values()) { room.resyncing = false; room.buffer = null; }
  }

  /** An `event` frame from the server. */
  onEvent(frame) {
    // `room.updated` carries the room object as `room` (docs/protocol.md).
    const roomId = frame.room && typeof frame.room === 'object' ? frame.room.id : frame.room;
    const room = this.rooms.get(roomId);
    const name = frame.event;
    if (typeof name === 'string' && name.startsWith('message.')) {
      if (typeof frame.seq !== 'number') return;
      if (!room) {
        // Possibly a room whose join reply is still on its way: hold it.
        if (this.joining > 0) {
          const now = Date.now();
          this._orphans = this._orphans.filter((o) => now - o.at < 10_000).slice(-500);
          this._orphans.push({ at: now, frame });
        }
        return;
      }
      this.deliver(room, frame, false);
      return;
    }
    if (!room) return;
    if (name === 'participant.joined' || name === 'participant.left') {
      this._host.emit('participant', { room: roomId, event: name, user: frame.user });
    } else if (name === 'participants.changed') {
      this._host.emit('participants', {
        room: frame.room,
        count: frame.participant_count,
        joined: frame.joined || [],
        left: frame.left || [],
      });
    } else if (name === 'typing') {
      this._host.emit('typing', { room: frame.room, user: frame.user, active: !!frame.active });
    } else if (name === 'room.updated' && frame.room && typeof frame.room === 'object') {
      room.info = frame.room;
      this._host.emit('room', { room: frame.room });
    }
  }

  /** Delivers events that arrived before the join reply. */
  adoptOrphans(room) {
    const mine = this._orphans.filter((o) => o.frame.room === room.id);
    if (!mine.length) return;
    this._orphans = this._orphans.filter((o) => o.frame.room !== room.id);
    for (const o of mine) if (this.rooms.get(room.id) === room) this.deliver(room, o.frame, false);
  }

  /**
   * Delivers one durable event exactly once and in order, or starts a
   * resync on a gap.
   */
  deliver(room, frame, replayed) {
    if (room.buffer) {
      room.buffer.push(frame);
      return;
    }
    if (frame.seq <= room.lastSeq) return; // already seen
    if (frame.seq > room.lastSeq + 1 && !replayed) {
      room.buffer = [frame];
      this.resync(room);
      return;
    }
    room.lastSeq = frame.seq;
    if (frame.event === 'message.created' && frame.message) this.remember(room, frame.message);
    this._host.emit('message', {
      room: room.id,
      seq: frame.seq,
      event: frame.event,
      message: frame.message,
      replayed,
    });
  }

  /** Keeps a created message among the room's recent ones. */
  remember(room, message) {
    room.recent.push(message);
    if (room.recent.length > 200) room.recent.splice(0, room.recent.length - 200);
  }

  /** Fills a gap seen on a live connection. */
  async resync(room) {
    if (room.resyncing) return;
    room.resyncing = true;
    const gen = this._host.gen();
    const ok = await this.resume(room, gen);
    if (gen !== this._host.gen() || !this.rooms.has(room.id)) return;
    room.resyncing = false;
    if (!ok) {
      // Try again after a pause; live events stay buffered meanwhile.
      room.resyncFailures++;
      setTimeout(() => {
        if (gen === this._host.gen() && this.rooms.has(room.id) && room.buffer) this.resync(room);
      }, this._host.backoff(room.resyncFailures));
    }
  }

  /**
   * `room.join` with `since`; replays the missed events, or reloads the
   * history when the server no longer holds them. Buffered live events are
   * delivered afterwards. Returns whether it worked.
   * @param {TrackedRoom} room @param {number} gen the connection it runs on
   * @returns {Promise<boolean>}
   */
  async resume(room, gen) {
    const host = this._host;
    if (!room.buffer) room.buffer = [];
    const req = { since: room.lastSeq };
    // A private room admits a new identity (guests get a fresh id on every
    // hello) only by its code.
    if (room.info && room.info.private && room.info.code) req.code = room.info.code;
    else req.room = room.id;
    let data;
    try {
      data = await host.call('room.join', req, host.options.requestTimeoutMs);
    } catch (e) {
      if (gen !== host.gen()) return false;
      if (e.code === 'not_found' || e.code === 'forbidden' || e.code === 'conflict') {
        this.rooms.delete(room.id);
        host.emit('room_lost', { room: room.id, error: e });
        return true;
      }
      if (e.code === 'disconnected') return false;
      host.emit('error', e);
      return false;
    }
    if (gen !== host.gen()) return false;
    if (data.room && data.room.id !== room.id) {
      // The code now names another room: ours is gone.
      this.rooms.delete(room.id);
      host.call('room.leave', { room: data.room.id }, host.options.requestTimeoutMs).catch(() => {});
      host.emit('room_lost', { room: room.id, error: new HuddleError('not_found', 'the room no longer exists') });
      return true;
    }
    room.info = data.room;
    room.resyncFailures = 0;
    const events = Array.isArray(data.events) ? data.events : [];
    host.emit('room', { room: data.room });
    const complete = data.complete !== false;
    if (!complete) {
      // The server no longer holds every missed event: reload the latest
      // page. Live events stay buffered until the page is out, so none is
      // lost between the history read and the reset.
      const top = events.reduce((m, ev) => Math.max(m, ev.seq || 0), data.room.last_seq || 0);
      room.lastSeq = Math.max(room.lastSeq, top);
      let page = { messages: [], has_more: false };
      try {
        page = await host.call('message.history',
          { room: room.id, limit: host.options.historyReloadLimit }, host.options.requestTimeoutMs);
      } catch (e) {
        if (gen !== host.gen()) return false;
        host.emit('error', e);
      }
      if (gen !== host.gen()) return false;
      for (const m of page.messages || []) this.remember(room, m);
      host.emit('reset', { room: room.id, messages: page.messages || [], has_more: !!page.has_more });
    }
    const held = room.buffer || [];
    room.buffer = null;
    if (complete) for (const ev of events) this.deliver(room, ev, true);
    host.emit('resumed', { room: room.id, participants: data.participants || [], complete });
    for (const ev of held) this.deliver(room, ev, false);
    return true;
  }

  /**
   * A message this client sent as one of `userIds`, written after `afterSeq`,
   * matching `fields`: the send went through although its reply was lost.
   */
  findSent(fields, userIds, afterSeq) {
    const room = this.rooms.get(fields.room);
    if (!room) return null;
    for (const m of room.recent) {
      if (m.seq <= afterSeq || !userIds.has(m.user && m.user.id)) continue;
      if ((m.kind || 'text') !== (fields.kind || 'text')) continue;
      if ((m.content || '') !== (fields.content || '').trim()) continue;
      if (fields.attachment && (!m.attachment || m.attachment.url !== fields.attachment.url)) continue;
      return m;
    }
    return null;
  }
}
