// Driving the Huddle page (and a scripted "bot" client) in Chromium.

import assert from 'node:assert/strict';
import { waitFor } from './cluster.mjs';

const T = 10_000; // default bound for one UI step

/**
 * A new browser context and page. Dialogs (alert/confirm) are recorded and
 * dismissed, page errors recorded: tests assert on both.
 */
export async function newPage(browser, { viewport = { width: 1280, height: 800 }, mobile = false, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({
    viewport,
    colorScheme,
    isMobile: mobile,
    hasTouch: mobile,
    deviceScaleFactor: mobile ? 2 : 1,
  });
  context.setDefaultTimeout(T);
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.on('dialog', (d) => { page.dialogs.push(`${d.type()}: ${d.message()}`); d.dismiss().catch(() => {}); });
  page.on('pageerror', (e) => page.errors.push(String(e)));
  // CSP violations are reported on the console: the page must cause none.
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) page.errors.push(m.text());
  });
  return page;
}

/** Opens the page at `base` and signs in as a guest. */
export async function signIn(page, base, name) {
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  await page.fill('#signin-name', name);
  await page.click('#signin-submit');
  await page.waitForSelector('#conn[data-state="online"]');
  await page.waitForSelector('#chat:not([hidden])');
}

export async function nodeOf(page) {
  return page.getAttribute('#conn', 'data-node');
}

/** Creates a room through the sidebar form; returns its code. */
export async function createRoom(page, name) {
  await page.fill('#create-name', name);
  await page.press('#create-name', 'Enter');
  await page.waitForFunction((n) => document.querySelector('#room-title')?.textContent === n
    && !document.querySelector('#room').hidden, name);
  const code = await page.textContent('#room-code');
  assert.match(code, /^[A-Z0-9]{6,8}$/);
  return code;
}

export async function joinByCode(page, code) {
  await page.fill('#join-code', code);
  await page.press('#join-code', 'Enter');
  await page.waitForFunction((c) => document.querySelector('#room-code')?.textContent === c
    && !document.querySelector('#room').hidden, code);
}

/** Sends a text message with the composer (Enter) and waits until it shows. */
export async function sendText(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
  await waitForMessage(page, text);
}

/** Waits until a delivered (not pending) message with this text shows. */
export function waitForMessage(page, text, timeout = T) {
  return page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages li.msg .msg-body')].some((b) => b.textContent === t),
    text, { timeout },
  );
}

/** The messages on screen: [{id, seq, kind, author, text, deleted, edited}]. */
export function messages(page) {
  return page.$$eval('#messages > li', (lis) => lis.map((li) => ({
    id: li.dataset.id,
    seq: Number(li.dataset.seq),
    system: li.classList.contains('system'),
    deleted: li.classList.contains('deleted'),
    edited: !!li.querySelector('.msg-edited'),
    author: li.querySelector('.msg-author')?.textContent ?? null,
    text: li.classList.contains('system') ? li.querySelector('span').textContent : li.querySelector('.msg-body')?.textContent,
  })));
}

/** Locator of the message whose body text is exactly `text`. */
export function messageItem(page, text) {
  return page.locator('#messages > li.msg').filter({ has: page.locator('.msg-body', { hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) });
}

/** Asserts ascending seqs and no duplicate ids. */
export function assertOrdered(list) {
  const ids = new Set();
  let last = 0;
  for (const m of list) {
    assert.ok(!ids.has(m.id), `message ${m.id} (${m.text}) shown twice`);
    ids.add(m.id);
    assert.ok(m.seq > last, `messages out of order: seq ${m.seq} after ${last}`);
    last = m.seq;
  }
}

/**
 * A scripted client in its own page: huddle-client.js loaded from the node
 * (same origin, so the node's Origin check passes) and driven from the test.
 * `bot.run(fn, arg)` runs `fn(client, arg)` in the page.
 */
export async function openBot(browser, base, name) {
  const page = await newPage(browser);
  await page.goto(`${base}/healthz`);
  await page.evaluate(async ({ name }) => {
    const { HuddleClient } = await import('/huddle-client.js');
    const client = new HuddleClient({ url: `ws://${location.host}/ws`, name });
    window.bot = client;
    await client.connect();
  }, { name });
  return {
    page,
    run(fn, arg) {
      return page.evaluate(({ src, arg }) => {
        // eslint-disable-next-line no-new-func
        const f = new Function(`return (${src})`)();
        return f(window.bot, arg);
      }, { src: fn.toString(), arg });
    },
    close: () => page.context().close(),
  };
}

/** The room's history as the server has it (REST, guest mode, public room). */
export async function restHistory(base, roomId) {
  const all = [];
  let before;
  for (let i = 0; i < 50; i++) {
    const q = new URLSearchParams({ limit: '100' });
    if (before) q.set('before', String(before));
    const res = await fetch(`${base}/api/rooms/${roomId}/messages?${q}`);
    assert.equal(res.status, 200, `REST history answered ${res.status}`);
    const page = await res.json();
    all.unshift(...page.messages);
    if (!page.has_more || !page.messages.length) break;
    before = page.messages[0].seq;
  }
  return all;
}

/** The id of the room open in `page`. */
export function activeRoomId(page) {
  return page.getAttribute('#room', 'data-room-id');
}

export { waitFor };
