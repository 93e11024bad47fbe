// huddle-client.js on its own, in Node (no DOM), against a scripted fake
// server: ordering and gap recovery, resume, backoff, close codes, rate
// limits, timeouts, and sends that must not be lost or doubled.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CloseCode, HuddleClient, chooseServer, defaultUrl } from '../../web/huddle-client.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(fn, ms = 2000, what = 'condition') {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const ROOM = 'room-1';
const roomObj = (lastSeq, extra = {}) => ({
  id: ROOM, code: 'ABC234', name: 'R', created_by: 'u1', created_at: 1, max_participants: 50,
  private: false, participant_count: 1, last_seq: lastSeq, ...extra,
});
const msg = (seq, content, user = { id: 'u1', name: 'Ann', image: null }) => ({
  id: `m${seq}`, room: ROOM, seq, user, kind: 'text', content, attachment: null,
  created_at: 1, edited_at: null, deleted: false,
});
const created = (seq, content, user) => ({ type: 'event', room: ROOM, seq, event: 'message.created', message: msg(seq, content, user) });

/** A scripted server behind a fake WebSocket class. */
class FakeServer {
  constructor() {
    this.sockets = [];
    this.frames = [];
    this.refuse = 0; // refuse this many connection attempts
    this.users = 0;
    this.handlers = {
      hello: () => ({ user: { id: `u${++this.users}`, name: 'Ann', image: null }, session: `s${this.users}`, node: 'n1', server_time: Date.now() }),
    };
    const server = this;
    this.WebSocket = class FakeWebSocket {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.sent = [];
        server.sockets.push(this);
        setTimeout(() => {
          if (server.refuse > 0) {
            server.refuse--;
            this.readyState = 3;
            this.onclose?.({ code: CloseCode.ABNORMAL, reason: '' });
          } else {
            this.readyState = 1;
            this.onopen?.({});
          }
        }, 1);
      }

      send(text) {
        const f = JSON.parse(text);
        this.sent.push(f);
        server.frames.push(f);
        setTimeout(() => server.handle(this, f), 1);
      }

      close(code = 1000) {
        if (this.readyState === 3) return;
        this.readyState = 3;
        setTimeout(() => this.onclose?.({ code, reason: '' }), 1);
      }

      /** Server → client frame. */
      push(obj) {
        if (this.readyState === 1) this.onmessage?.({ data: JSON.stringify(obj) });
      }

      /** The server closes (or the network drops) the connection. */
      drop(code = CloseCode.ABNORMAL) {
        if (this.readyState === 3) return;
        this.readyState = 3;
        this.onclose?.({ code, reason: '' });
      }
    };
  }

  get last() { return this.sockets[this.sockets.length - 1]; }

  sentOf(type) { return this.frames.filter((f) => f.type === type); }

  handle(ws, f) {
    if (ws.readyState !== 1) return;
    const h = this.handlers[f.type];
    const r = h ? h(f, ws) : {};
    if (r === undefined) return; // no reply
    if (r && r.error) ws.push({ type: 'reply', id: f.id, ok: false, error: r.error });
    else ws.push({ type: 'reply', id: f.id, ok: true, data: r });
  }
}

function makeClient(server, opts = {}) {
  return new HuddleClient({
    url: 'ws://test/ws', name: 'Ann', WebSocket: server.WebSocket,
    backoffInitialMs: 20, backoffMaxMs: 100, reconnectSpreadMs: 40, requestTimeoutMs: 500, random: () => 0.5,
    heartbeatMs: 0, ...opts,
  });
}

/** A connected client that has joined ROOM at `lastSeq`. */
async function joined(server, lastSeq = 2, opts = {}) {
  server.handlers['room.join'] ??= (f) => (f.since != null
    ? { room: roomObj(lastSeq), participants: [], events: [], complete: true }
    : { room: roomObj(lastSeq), participants: [], messages: [] });
  const c = makeClient(server, opts);
  const seen = [];
  c.on('message', (m) => seen.push(m.seq));
  await c.connect();
  await c.joinRoom({ room: ROOM });
  return { c, seen };
}

describe('huddle-client.js', () => {
  test('works without a DOM and builds the socket URL from the page location', () => {
    assert.equal(typeof globalThis.document, 'undefined');
    assert.equal(defaultUrl({ protocol: 'http:', host: 'chat.local:8080', search: '' }), 'ws://chat.local:8080/ws');
    assert.equal(defaultUrl({ protocol: 'https:', host: 'chat.example', search: '' }), 'wss://chat.example/ws');
    assert.equal(defaultUrl({ protocol: 'http:', host: 'a', search: '?server=ws://b:9/ws' }), 'ws://a/ws', '?server= is not defaultUrl\'s business');
  });

  test('chooseServer uses ?server= only for the page\'s own /ws or an allowed server', () => {
    const page = (search, protocol = 'http:') => ({ protocol, host: 'chat.local:8080', search });
    assert.equal(chooseServer(page('')), 'ws://chat.local:8080/ws');
    assert.equal(chooseServer(page('', 'https:')), 'wss://chat.local:8080/ws');
    assert.equal(chooseServer(page('?server=ws://chat.local:8080/ws')), 'ws://chat.local:8080/ws');
    assert.equal(chooseServer(page('?server=WS://CHAT.local:8080/ws')), 'ws://chat.local:8080/ws', 'compared normalised');
    assert.equal(chooseServer(page('?server=wss://chat.local:8080/ws', 'https:')), 'wss://chat.local:8080/ws');
    const allowed = ['wss://other.example/ws', 'ws://127.0.0.1:9000/ws'];
    assert.equal(chooseServer(page('?server=wss://other.example:443/ws'), allowed), 'wss://other.example/ws');
    assert.equal(chooseServer(page('?server=ws://127.0.0.1:9000/ws'), allowed), 'ws://127.0.0.1:9000/ws');
    for (const bad of [
      'ws://evil.example/ws', // another server
      'wss://chat.local:8080/ws', // the own host, but not what an http page's node serves
      'ws://chat.local:8080/other', // another path
      'ws://chat.local:8081/ws', // another port
      'ws://127.0.0.1:9000/ws?x=1', 'ws://user@127.0.0.1:9000/ws', 'wss://other.example/ws#x',
      'javascript:alert(1)', 'http://chat.local:8080/ws', '',
    ]) {
      assert.throws(() => chooseServer(page(`?server=${encodeURIComponent(bad)}`), allowed), (e) => {
        assert.equal(e.name, 'HuddleError');
        assert.equal(e.code, 'server_not_allowed', bad);
        assert.equal(e.server, bad);
        return true;
      }, `${bad} refused`);
    }
    assert.throws(() => chooseServer(page('?server=ws://127.0.0.1:9000/ws')), /may not connect/, 'no allow-list: refused');
  });

  test('delivers each seq once, in order; a gap is filled with room.join since', async () => {
    const server = new FakeServer();
    const { c, seen } = await joined(server, 2);
    server.handlers['room.join'] = (f) => {
      assert.equal(f.since, 3);
      return { room: roomObj(5), participants: [], events: [created(4, 'd'), created(5, 'e')], complete: true };
    };
    const ws = server.last;
    ws.push(created(2, 'old')); // already in the snapshot
    ws.push(created(3, 'c'));
    ws.push(created(3, 'c')); // duplicate
    ws.push(created(5, 'e')); // gap: 4 is missing
    await until(() => seen.length === 3, 2000, 'the gap to be filled');
    ws.push(created(6, 'f'));
    await until(() => seen.length === 4);
    assert.deepEqual(seen, [3, 4, 5, 6]);
    assert.equal(c.lastSeq(ROOM), 6);
    assert.equal(server.sentOf('room.join').length, 2);
    c.close();
  });

  test('complete: false reloads the history and emits reset', async () => {
    const server = new FakeServer();
    const { c, seen } = await joined(server, 2);
    server.handlers['room.join'] = () => ({ room: roomObj(1500), participants: [], events: [], complete: false });
    server.handlers['message.history'] = (f) => {
      assert.equal(f.limit, 50);
      return { messages: [msg(1499, 'y'), msg(1500, 'z')], has_more: true };
    };
    const resets = [];
    c.on('reset', (r) => resets.push(r));
    server.last.push(created(1400, 'far ahead'));
    await until(() => resets.length === 1, 2000, 'reset');
    assert.deepEqual(resets[0].messages.map((m) => m.seq), [1499, 1500]);
    assert.equal(resets[0].has_more, true);
    server.last.push(created(1500, 'dup'));
    server.last.push(created(1501, 'next'));
    await until(() => seen.length === 1);
    assert.deepEqual(seen, [1501]);
    c.close();
  });

  test('rate_limited: waits retry_after_ms, then retries', async () => {
    const server = new FakeServer();
    let n = 0;
    server.handlers.ping = () => (++n === 1
      ? { error: { code: 'rate_limited', message: 'slow down', retry_after_ms: 150 } }
      : { server_time: 1 });
    const c = makeClient(server);
    await c.connect();
    const t0 = Date.now();
    const data = await c.ping();
    assert.deepEqual(data, { server_time: 1 });
    assert.ok(Date.now() - t0 >= 140, `retried after ${Date.now() - t0} ms`);
    assert.equal(server.sentOf('ping').length, 2);
    c.close();
  });

  test('gives up on rate_limited after maxRateRetries', async () => {
    const server = new FakeServer();
    server.handlers.ping = () => ({ error: { code: 'rate_limited', message: 'no', retry_after_ms: 5 } });
    const c = makeClient(server, { maxRateRetries: 2 });
    await c.connect();
    await assert.rejects(c.ping(), { code: 'rate_limited' });
    assert.equal(server.sentOf('ping').length, 3);
    c.close();
  });

  test('a dropped connection: a spread first try, jittered exponential backoff, then resume with since', async () => {
    const server = new FakeServer();
    const { c, seen } = await joined(server, 7, { reconnectSpreadMs: 40 });
    const delays = [];
    c.on('state', (s) => { if (s.state === 'reconnecting') delays.push(s.delayMs); });
    server.refuse = 4;
    server.last.drop();
    await until(() => c.state === 'online' && delays.length === 5, 3000, 'reconnect');
    // The first try: random() × reconnectSpreadMs = 20; then, with
    // random() = 0.5, cap × 0.75 where cap = min(100, 20 × 2^n), n from 1.
    assert.deepEqual(delays, [20, 30, 60, 75, 75]);
    const resume = server.sentOf('room.join').at(-1);
    assert.equal(resume.room, ROOM);
    assert.equal(resume.since, 7);
    server.last.push(created(8, 'after'));
    await until(() => seen.length === 1);
    c.close();
  });

  test('the jitter spreads delays between half and all of the cap', async () => {
    for (const r of [0, 0.999]) {
      const c = makeClient(new FakeServer(), { random: () => r, backoffInitialMs: 1000, backoffMaxMs: 8000 });
      const d = [0, 1, 2, 3, 4].map((n) => c._backoff(n));
      const caps = [1000, 2000, 4000, 8000, 8000];
      d.forEach((v, i) => assert.ok(v >= caps[i] / 2 && v <= caps[i], `${v} within [${caps[i] / 2}, ${caps[i]}]`));
    }
  });

  test('close 1012: reconnects at once', async () => {
    const server = new FakeServer();
    const { c } = await joined(server, 3);
    const delays = [];
    c.on('state', (s) => { if (s.state === 'reconnecting') delays.push(s.delayMs); });
    server.last.drop(CloseCode.RESTART);
    await until(() => c.state === 'online' && server.sockets.length === 2, 1000, 'reconnect');
    assert.deepEqual(delays, [0]);
    assert.equal(server.sentOf('room.join').at(-1).since, 3);
    c.close();
  });

  test('close 4001: stops and reports the auth failure', async () => {
    const server = new FakeServer();
    server.handlers.hello = (f, ws) => {
      setTimeout(() => ws.drop(CloseCode.BAD_TOKEN), 2);
      return { error: { code: 'unauthorized', message: 'bad token' } };
    };
    const c = makeClient(server, { token: 'nope' });
    const failures = [];
    c.on('auth_failed', (e) => failures.push(e.error.code));
    await assert.rejects(c.connect(), { code: 'auth_failed' });
    await sleep(150);
    assert.deepEqual(failures, ['auth_failed']);
    assert.equal(server.sockets.length, 1, 'no reconnect');
    assert.equal(c.state, 'stopped');
    assert.equal(server.sentOf('hello')[0].token, 'nope');
  });

  test('close 4001 without a reply (token expired mid-session) also stops', async () => {
    const server = new FakeServer();
    const c = makeClient(server);
    await c.connect();
    const failures = [];
    c.on('auth_failed', () => failures.push(1));
    server.last.drop(CloseCode.BAD_TOKEN);
    await sleep(100);
    assert.equal(failures.length, 1);
    assert.equal(server.sockets.length, 1);
  });

  test('close 4008: reports abuse and cools down before reconnecting', async () => {
    const server = new FakeServer();
    const c = makeClient(server, { abuseCooldownMs: 250 });
    await c.connect();
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    const t0 = Date.now();
    server.last.drop(CloseCode.ABUSE);
    await until(() => server.sockets.length === 2 && c.state === 'online', 2000, 'reconnect');
    assert.ok(Date.now() - t0 >= 240, `waited ${Date.now() - t0} ms`);
    assert.deepEqual(errors, ['abuse']);
    c.close();
  });

  test('close 1013 and 1009: reported, then reconnect with backoff', async () => {
    const server = new FakeServer();
    const c = makeClient(server);
    await c.connect();
    const errors = [];
    c.on('error', (e) => errors.push(e.code));
    server.last.drop(CloseCode.TRY_AGAIN_LATER);
    await until(() => server.sockets.length === 2 && c.state === 'online');
    server.last.drop(CloseCode.TOO_BIG);
    await until(() => server.sockets.length === 3 && c.state === 'online');
    assert.deepEqual(errors, ['slow_consumer', 'too_large']);
    c.close();
  });

  test('a request larger than max_frame_bytes fails locally (no 1009)', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    await assert.rejects(c.sendMessage(ROOM, { content: 'x'.repeat(70_000) }), { code: 'too_large' });
    assert.equal(server.sentOf('message.send').length, 0);
    assert.equal(server.sockets.length, 1);
    c.close();
  });

  test('no reply: the request times out', async () => {
    const server = new FakeServer();
    server.handlers.ping = () => undefined;
    const c = makeClient(server, { requestTimeoutMs: 80 });
    await c.connect();
    await assert.rejects(c.ping(), { code: 'timeout' });
    c.close();
  });

  test('heartbeat: a silent connection is dropped and replaced', async () => {
    const server = new FakeServer();
    server.handlers.ping = () => undefined; // half-open: nothing comes back
    const c = makeClient(server, { heartbeatMs: 100, requestTimeoutMs: 100 });
    await c.connect();
    await until(() => server.sockets.length >= 2, 3000, 'a new connection');
    c.close();
  });

  test('a send cut off by a dropped connection is sent again, same client_msg_id', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    let n = 0;
    server.handlers['message.send'] = (f, ws) => {
      if (++n === 1) { ws.drop(); return undefined; }
      return { message: msg(3, f.content) };
    };
    const m = await c.sendMessage(ROOM, { content: 'hello' });
    assert.equal(m.content, 'hello');
    const sends = server.sentOf('message.send');
    assert.equal(sends.length, 2);
    assert.equal(sends[0].client_msg_id, sends[1].client_msg_id);
    c.close();
  });

  test('a send that went through before the drop is recognised in the replay (guest gets a new id)', async () => {
    const server = new FakeServer();
    const { c, seen } = await joined(server, 2);
    let written = null;
    server.handlers['message.send'] = (f, ws) => {
      written = created(3, f.content, { id: 'u1', name: 'Ann', image: null });
      ws.drop(); // written, but the reply is lost
      return undefined;
    };
    server.handlers['room.join'] = (f) => ({ room: roomObj(3), participants: [], events: written && f.since === 2 ? [written] : [], complete: true });
    const m = await c.sendMessage(ROOM, { content: 'only once' });
    assert.equal(m.id, 'm3');
    assert.equal(c.user.id, 'u2', 'a new guest identity after the reconnect');
    assert.equal(server.sentOf('message.send').length, 1, 'not sent twice');
    assert.deepEqual(seen, [3]);
    c.close();
  });

  test('sends to one room go out in call order; offline sends wait for the connection', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    let seq = 2;
    server.handlers['message.send'] = (f) => ({ message: msg(++seq, f.content) });
    server.refuse = 2;
    server.last.drop();
    const sent = await Promise.all(['a', 'b', 'c'].map((t) => c.sendMessage(ROOM, { content: t })));
    assert.deepEqual(sent.map((m) => m.content), ['a', 'b', 'c']);
    assert.deepEqual(server.sentOf('message.send').map((f) => f.content), ['a', 'b', 'c']);
    c.close();
  });

  test('room.create is not repeated after a drop (not idempotent)', async () => {
    const server = new FakeServer();
    const c = makeClient(server);
    await c.connect();
    server.handlers['room.create'] = (f, ws) => { ws.drop(); return undefined; };
    await assert.rejects(c.createRoom({ name: 'x' }), { code: 'disconnected' });
    await until(() => c.state === 'online');
    assert.equal(server.sentOf('room.create').length, 1);
    c.close();
  });

  test('a private room is resumed by its code (a guest is a new user after reconnecting)', async () => {
    const server = new FakeServer();
    server.handlers['room.join'] = () => ({ room: roomObj(4, { private: true }), participants: [], messages: [] });
    const { c } = await joined(server, 4);
    server.handlers['room.join'] = () => ({ room: roomObj(4, { private: true }), participants: [], events: [], complete: true });
    server.last.drop();
    await until(() => c.state === 'online' && server.sockets.length === 2);
    const resume = server.sentOf('room.join').at(-1);
    assert.equal(resume.code, 'ABC234');
    assert.equal(resume.room, undefined);
    assert.equal(resume.since, 4);
    c.close();
  });

  test('a room that is gone on resume is reported as lost', async () => {
    const server = new FakeServer();
    const { c } = await joined(server, 4);
    server.handlers['room.join'] = () => ({ error: { code: 'not_found', message: 'gone' } });
    const lost = [];
    c.on('room_lost', (e) => lost.push(e.room));
    server.last.drop(CloseCode.RESTART);
    await until(() => lost.length === 1 && c.state === 'online');
    assert.deepEqual(c.trackedRooms(), []);
    c.close();
  });

  test('close() fails queued requests with stopped', async () => {
    const server = new FakeServer();
    const c = makeClient(server);
    await c.connect();
    server.refuse = 100;
    server.last.drop();
    const p = c.ping();
    await sleep(30);
    c.close();
    await assert.rejects(p, { code: 'stopped' });
  });
});

describe('huddle-client.js: the 1.1 verbs and events', () => {
  test('each verb sends its protocol fields and resolves with the reply\'s part', async () => {
    const server = new FakeServer();
    server.handlers['room.update'] = (f) => ({ room: roomObj(2, { name: f.name }) });
    server.handlers['room.bans'] = () => ({ bans: [{ user: { id: 'u9' }, until: -1, by: { id: 'u1' }, reason: null }] });
    server.handlers['room.read'] = (f) => ({ read_seq: f.seq - 1 });
    server.handlers['room.mine'] = () => ({ rooms: [roomObj(5, { read_seq: 3, unread: 2, role: 'owner' })] });
    server.handlers['room.receipts'] = () => ({ reads: [{ user: { id: 'u1' }, read_seq: 4 }] });
    const { c } = await joined(server);
    assert.equal((await c.updateRoom(ROOM, { name: 'New', maxParticipants: 9 })).name, 'New');
    await c.setRole(ROOM, 'u2', 'moderator');
    await c.kick(ROOM, 'u2', { reason: 'why' });
    await c.ban(ROOM, 'u3', { durationMs: 60_000 });
    await c.unban(ROOM, 'u3');
    await c.mute(ROOM, 'u4', 5000);
    await c.unmute(ROOM, 'u4');
    assert.equal((await c.bans(ROOM))[0].until, -1);
    assert.equal(await c.markRead(ROOM, 7), 6);
    assert.equal((await c.myRooms({ limit: 10 }))[0].unread, 2);
    assert.equal((await c.receipts(ROOM))[0].read_seq, 4);
    const strip = (f) => { const { id, ...rest } = f; return rest; };
    const sent = server.frames.filter((f) => !['hello', 'room.join'].includes(f.type)).map(strip);
    assert.deepEqual(sent, [
      { type: 'room.update', room: ROOM, name: 'New', max_participants: 9 },
      { type: 'member.role', room: ROOM, user: 'u2', role: 'moderator' },
      { type: 'member.kick', room: ROOM, user: 'u2', reason: 'why' },
      { type: 'member.ban', room: ROOM, user: 'u3', duration_ms: 60_000 },
      { type: 'member.unban', room: ROOM, user: 'u3' },
      { type: 'member.mute', room: ROOM, user: 'u4', duration_ms: 5000 },
      { type: 'member.unmute', room: ROOM, user: 'u4' },
      { type: 'room.bans', room: ROOM },
      { type: 'room.read', room: ROOM, seq: 7 },
      { type: 'room.mine', limit: 10 },
      { type: 'room.receipts', room: ROOM },
    ]);
    c.close();
  });

  test('room.updated (the room as an object) reaches the page as a room event', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    const rooms = [];
    c.on('room', ({ room }) => rooms.push(room.name));
    server.last.push({ type: 'event', room: roomObj(2, { name: 'Renamed' }), event: 'room.updated' });
    await until(() => rooms.length === 1, 500, 'the room event');
    assert.deepEqual(rooms, ['Renamed']);
    c.close();
  });

  test('member.updated, read, and a removal of someone else are reported; the room stays tracked', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    const seen = [];
    for (const t of ['member', 'removed', 'read']) c.on(t, (p) => seen.push([t, p]));
    const other = { id: 'u7', name: 'Bob', image: null };
    server.last.push({ type: 'event', room: ROOM, event: 'member.updated', user: { ...other, role: 'member', muted_until: 99 } });
    server.last.push({ type: 'event', room: ROOM, event: 'read', read_seq: 2 });
    server.last.push({ type: 'event', room: ROOM, event: 'member.removed', user: other, by: c.user, reason: null, banned_until: null });
    await until(() => seen.length === 3, 500, 'three events');
    assert.equal(seen[0][1].user.muted_until, 99);
    assert.deepEqual(seen[1], ['read', { room: ROOM, readSeq: 2 }]);
    assert.equal(seen[2][1].self, false);
    assert.deepEqual(c.trackedRooms(), [ROOM]);
    c.close();
  });

  test('removed or closed: the room is no longer tracked, so a reconnect does not rejoin it', async () => {
    const server = new FakeServer();
    const { c } = await joined(server);
    const removed = [];
    c.on('removed', (p) => removed.push(p));
    const by = { id: 'u9', name: 'Mod', image: null };
    server.last.push({ type: 'event', room: ROOM, event: 'member.removed', user: c.user, by, reason: 'spam', banned_until: -1 });
    await until(() => removed.length === 1, 500, 'the removal');
    assert.deepEqual(removed[0], { room: ROOM, user: c.user, by, reason: 'spam', bannedUntil: -1, self: true });
    assert.deepEqual(c.trackedRooms(), []);
    const joins = server.sentOf('room.join').length;
    server.last.drop();
    await until(() => c.state === 'online' && server.sockets.length === 2, 2000, 'the reconnect');
    await sleep(20);
    assert.equal(server.sentOf('room.join').length, joins, 'no resume of a room the user was removed from');

    // A closed room likewise.
    await c.joinRoom({ room: ROOM });
    const closed = [];
    c.on('closed', (p) => closed.push(p));
    server.last.push({ type: 'event', room: ROOM, event: 'room.closed', by });
    await until(() => closed.length === 1, 500, 'the close');
    assert.deepEqual(closed[0], { room: ROOM, by });
    assert.deepEqual(c.trackedRooms(), []);
    c.close();
  });
});
