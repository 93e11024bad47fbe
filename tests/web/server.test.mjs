// The page's `?server=` cannot hand the user's name or token to a server the
// node does not allow. A crafted link to the genuine page naming another
// WebSocket server is refused on the page, and nothing reaches that server
// (a tiny WebSocket listener here records every connection and frame); the
// page's CSP blocks such a socket even when a script opens it directly. A
// server the node lists in `--web-servers`, and the node's own `/ws`, work.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { freePort, launchBrowser, screenshot, startNode } from './helpers/cluster.mjs';
import { createRoom, newPage, nodeOf, sendText } from './helpers/page.mjs';

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.the-users-secret-signature';

/**
 * A WebSocket server that records what reaches it: every TCP connection,
 * every upgrade request and every text frame (enough of RFC 6455 to finish
 * the handshake and unmask client frames; it never answers a frame, so a
 * page that connects would sit in "Connecting…" after sending `hello`).
 */
async function startListener() {
  const seen = { connections: 0, upgrades: [], frames: [] };
  const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
  const sockets = new Set();
  server.on('connection', (socket) => {
    seen.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (req, socket) => {
    seen.upgrades.push({ url: req.url, origin: req.headers.origin });
    socket.on('error', () => {});
    const accept = crypto.createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        const masked = (buf[1] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2); at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2)); at = 10;
        }
        const mask = at;
        if (masked) at += 4;
        if (buf.length < at + len) return;
        const payload = Buffer.from(buf.subarray(at, at + len));
        if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[mask + (i % 4)];
        buf = buf.subarray(at + len);
        if (opcode === 1) seen.frames.push(payload.toString('utf8'));
        if (opcode === 8) { socket.end(); return; }
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  return {
    seen,
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** The `connect-src` directive of the page `base` serves. */
async function connectSrc(base) {
  const res = await fetch(`${base}/`);
  const csp = res.headers.get('content-security-policy') || '';
  return csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('connect-src'));
}

/** Opens `url`, types a name (and a token), and submits the sign-in form. */
async function tryToSignIn(page, url, { name = 'Ann', token } = {}) {
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.fill('#signin-name', name);
  if (token) {
    await page.click('#signin-more summary');
    await page.fill('#signin-token', token);
  }
  // Submit even when the page has disabled its button: the refusal must
  // hold however the form is sent.
  await page.evaluate(() => document.getElementById('signin-form').requestSubmit());
}

/** Waits until the page says it refuses `server`, then asserts it did not sign in. */
async function assertRefused(page, server) {
  await page.waitForFunction(
    (s) => document.querySelector('#signin-error')?.textContent.includes(`connect to “${s}”, which this site does not allow`),
    server,
  );
  assert.equal(await page.getAttribute('#signin-submit', 'disabled'), '', 'sign-in is disabled');
  assert.ok(await page.isHidden('#chat'), 'still on the sign-in form');
  assert.notEqual(await page.getAttribute('#conn', 'data-state'), 'online');
  const back = await page.getAttribute('#signin-error a', 'href');
  assert.ok(back && !back.includes('server='), `a link to the page without ?server=: ${back}`);
}

describe('?server= in the page URL', { timeout: 60_000 }, () => {
  let listener; let solo; let home; let other; let browser;

  before(async () => {
    listener = await startListener();
    const [homePort, otherPort] = [await freePort(), await freePort()];
    [solo, other, home] = await Promise.all([
      startNode({ nodeId: 'solo' }), // no --web-servers
      startNode({ nodeId: 'other', port: otherPort, args: ['--allowed-origins', `http://127.0.0.1:${homePort}`] }),
      startNode({ nodeId: 'home', port: homePort, args: ['--web-servers', `ws://127.0.0.1:${otherPort}/ws`] }),
    ]);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await Promise.allSettled([solo?.kill(), home?.kill(), other?.kill(), listener?.close()]);
  });

  test('a crafted link to another server is refused: no connection, no hello, no token', async () => {
    const page = await newPage(browser);
    await tryToSignIn(page, `${solo.base}/?server=${encodeURIComponent(listener.url)}`, { token: TOKEN });
    await assertRefused(page, listener.url).catch((e) => {
      // Not refused: say first what the other server received.
      assert.deepEqual(listener.seen.frames, [], 'no hello, no token');
      throw e;
    });
    await page.waitForTimeout(1500); // time for any connection attempt to land
    await screenshot(page, 'server-refused');
    assert.equal(listener.seen.connections, 0, 'nothing connected to the other server');
    assert.deepEqual(listener.seen.upgrades, []);
    assert.deepEqual(listener.seen.frames, [], 'no hello, no token');
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page.dialogs, []);
    await page.context().close();
  });

  test('the CSP allows sockets to the own host only, so a fooled script cannot reach another', async () => {
    assert.equal(await connectSrc(solo.base), "connect-src 'self'");
    const page = await newPage(browser);
    await page.goto(`${solo.base}/`, { waitUntil: 'domcontentloaded' });
    const outcome = await page.evaluate((url) => new Promise((resolve) => {
      let ws;
      try { ws = new WebSocket(url); } catch (e) { resolve(`threw ${e.name}`); return; }
      ws.onopen = () => { ws.send('{"type":"hello","token":"leaked"}'); resolve('open'); };
      ws.onerror = () => resolve('error');
      setTimeout(() => resolve('pending'), 3000);
    }), listener.url);
    assert.notEqual(outcome, 'open');
    await page.waitForTimeout(300);
    assert.equal(listener.seen.connections, 0, `the browser blocked the socket (${outcome})`);
    assert.deepEqual(listener.seen.frames, []);
    assert.ok(page.errors.some((e) => /Content Security Policy/i.test(e) && e.includes(listener.url)), page.errors.join('\n'));
    await page.context().close();
  });

  test('a server in --web-servers works, as does the page\'s own /ws', async () => {
    const otherUrl = `ws://127.0.0.1:${other.port}/ws`;
    assert.equal(await connectSrc(home.base), `connect-src 'self' ${otherUrl}`);
    const page = await newPage(browser);
    await tryToSignIn(page, `${home.base}/?server=${encodeURIComponent(otherUrl)}`, { name: 'Bea' });
    await page.waitForSelector('#conn[data-state="online"]');
    await page.waitForSelector('#chat:not([hidden])');
    assert.equal(await nodeOf(page), 'other');
    await createRoom(page, 'Elsewhere');
    await sendText(page, 'hello from the allowed server');

    const own = await newPage(browser);
    await tryToSignIn(own, `${home.base}/?server=${encodeURIComponent(`ws://127.0.0.1:${home.port}/ws`)}`, { name: 'Cy' });
    await own.waitForSelector('#conn[data-state="online"]');
    assert.equal(await nodeOf(own), 'home');

    // The allow-list is exact: the listener is not on it.
    const crafted = await newPage(browser);
    await tryToSignIn(crafted, `${home.base}/?server=${encodeURIComponent(listener.url)}`, { token: TOKEN });
    await assertRefused(crafted, listener.url);
    await crafted.waitForTimeout(1000);
    assert.equal(listener.seen.connections, 0);
    assert.deepEqual(listener.seen.frames, []);

    for (const p of [page, own, crafted]) {
      assert.deepEqual(p.errors, []);
      assert.deepEqual(p.dialogs, []);
    }
  });
});
