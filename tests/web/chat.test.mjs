// Two people chat through the web page, each on a different node, the nodes
// sharing one Redis: rooms, join by code, participants and presence, typing,
// send, edit, delete, image and file messages, history paging and search.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, screenshot, startNode, startRedis, waitFor } from './helpers/cluster.mjs';
import {
  activeRoomId, assertOrdered, createRoom, joinByCode, messageItem, messages, newPage, nodeOf,
  openBot, restHistory, sendText, signIn, waitForMessage,
} from './helpers/page.mjs';

describe('chat between two pages on two nodes', { timeout: 60_000 }, () => {
  let redis; let nodeA; let nodeB; let browser;
  let ann; let bob; let code;

  before(async () => {
    redis = await startRedis();
    [nodeA, nodeB] = await Promise.all([
      startNode({ redis: redis.url, nodeId: 'n1' }),
      startNode({ redis: redis.url, nodeId: 'n2' }),
    ]);
    browser = await launchBrowser();
    ann = await newPage(browser);
    bob = await newPage(browser);
  });

  after(async () => {
    await browser?.close();
    await Promise.allSettled([nodeA?.kill(), nodeB?.kill()]);
    await redis?.stop();
  });

  test('the page is served by the node with its assets and a CSP', async () => {
    const res = await fetch(`${nodeA.base}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html; charset=utf-8/);
    assert.match(res.headers.get('content-security-policy'), /script-src 'self'/);
    for (const [p, type] of [['/app.js', 'text/javascript'], ['/huddle-client.js', 'text/javascript'], ['/style.css', 'text/css'], ['/favicon.svg', 'image/svg+xml']]) {
      const r = await fetch(`${nodeA.base}${p}`);
      assert.equal(r.status, 200, p);
      assert.ok(r.headers.get('content-type').startsWith(type), `${p}: ${r.headers.get('content-type')}`);
    }
  });

  test('sign in, create a room, join it by code from the other node', async () => {
    await ann.goto(`${nodeA.base}/`);
    await ann.waitForSelector('#signin-name');
    await screenshot(ann, 'signin');
    await signIn(ann, nodeA.base, 'Ann');
    await signIn(bob, nodeB.base, 'Bob');
    assert.equal(await nodeOf(ann), 'n1');
    assert.equal(await nodeOf(bob), 'n2');

    code = await createRoom(ann, 'Lunch plans');
    await joinByCode(bob, code);
    assert.equal(await bob.textContent('#room-title'), 'Lunch plans');
    // Both see both people, online.
    for (const page of [ann, bob]) {
      await page.waitForFunction(() => {
        const rows = [...document.querySelectorAll('#people-list li')];
        const names = rows.map((li) => li.querySelector('.pname').textContent).sort();
        return names.join(',') === 'Ann,Bob' && rows.every((li) => li.querySelector('.presence-dot.online'));
      });
    }
    assert.equal(await ann.textContent('#people-count'), '2');
    // The system messages say who came.
    await ann.waitForFunction(() => [...document.querySelectorAll('#messages li.system')].some((li) => li.textContent.includes('Bob joined')));
  });

  test('typing shows on the other page; messages go both ways', async () => {
    await bob.fill('#composer-input', 'Hi A');
    await bob.type('#composer-input', 'nn'); // input events → typing
    await ann.waitForFunction(() => document.querySelector('#typing').textContent === 'Bob is typing…');
    await bob.fill('#composer-input', '');
    await bob.type('#composer-input', 'Hi Ann');
    await bob.press('#composer-input', 'Enter');
    await waitForMessage(ann, 'Hi Ann');
    await ann.waitForFunction(() => document.querySelector('#typing').textContent === '');
    await sendText(ann, 'Hello Bob');
    await waitForMessage(bob, 'Hello Bob');
    await screenshot(bob, 'chat-desktop');
  });

  test('edit and delete own messages; not other people\'s', async () => {
    // Bob (not the room's owner) has no actions on Ann's messages.
    assert.equal(await messageItem(bob, 'Hello Bob').locator('button').count(), 0);
    // Ann edits hers with the Edit button.
    const mine = messageItem(ann, 'Hello Bob');
    await mine.hover();
    await mine.getByRole('button', { name: /^Edit/ }).click();
    await ann.fill('#messages textarea', 'Hello Bob, see you at noon');
    await ann.press('#messages textarea', 'Enter');
    await waitForMessage(bob, 'Hello Bob, see you at noon');
    assert.equal(await messageItem(bob, 'Hello Bob, see you at noon').locator('.msg-edited').count(), 1);

    await sendText(ann, 'oops, wrong room');
    const oops = messageItem(ann, 'oops, wrong room');
    await oops.hover();
    await oops.getByRole('button', { name: /^Delete/ }).click();
    await ann.getByRole('button', { name: 'Yes, delete' }).click();
    await bob.waitForFunction(() => [...document.querySelectorAll('#messages li.deleted .msg-body')]
      .some((b) => b.textContent === 'This message was deleted.'));
    const shown = await messages(bob);
    assert.ok(!shown.some((m) => m.text === 'oops, wrong room'), 'deleted text is gone');
    assertOrdered(shown);
  });

  test('image and file messages by URL', async () => {
    const imageUrl = `${nodeA.base}/favicon.svg`;
    await ann.click('#attach-toggle');
    await ann.selectOption('#attach-kind', 'image');
    await ann.fill('#attach-url', imageUrl);
    await ann.fill('#composer-input', 'our logo');
    await ann.click('#send');
    const img = bob.locator(`#messages li.kind-image img[src="${imageUrl}"]`);
    await img.waitFor();
    assert.equal(await img.getAttribute('alt'), 'favicon.svg');
    await bob.waitForFunction((u) => {
      const i = document.querySelector(`#messages li.kind-image img[src="${u}"]`);
      return i && i.complete && i.naturalWidth > 0;
    }, imageUrl);

    await ann.click('#attach-toggle');
    await ann.selectOption('#attach-kind', 'file');
    await ann.fill('#attach-url', 'https://files.example/q3/report.pdf');
    await ann.fill('#attach-name', 'Q3 report.pdf');
    await ann.press('#attach-name', 'Enter');
    const link = bob.locator('#messages li.kind-file a.file-card');
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), 'https://files.example/q3/report.pdf');
    assert.equal(await link.locator('.fname').textContent(), 'Q3 report.pdf');
    await screenshot(bob, 'attachments');
  });

  test('history pages back to the start of the room; search finds messages', async () => {
    const bot = await openBot(browser, nodeB.base, 'Bulk');
    const roomId = await activeRoomId(ann);
    await bot.run(async (c, { code, n }) => {
      const { room } = await c.joinRoom({ code });
      const sends = [];
      for (let i = 1; i <= n; i++) sends.push(c.sendMessage(room.id, { content: `bulk message ${i}` }));
      await Promise.all(sends);
    }, { code, n: 70 });
    await waitForMessage(ann, 'bulk message 70');

    // A newcomer (in dark mode) sees the latest 50 and pages back.
    const cara = await newPage(browser, { colorScheme: 'dark' });
    await signIn(cara, nodeA.base, 'Cara');
    await joinByCode(cara, code);
    await waitForMessage(cara, 'bulk message 70');
    let shown = await messages(cara);
    assert.ok(shown.length <= 51, `first page is the latest 50 (+ live), got ${shown.length}`);
    assert.ok(!shown.some((m) => m.text === 'Hi Ann'), 'older messages are not loaded yet');
    await cara.click('#load-older');
    await waitForMessage(cara, 'Hi Ann');
    await waitFor(async () => {
      if (await cara.isVisible('#history-start')) return true;
      if (await cara.isVisible('#load-older')) await cara.click('#load-older');
      return false;
    }, { timeout: 10_000, message: 'the start of the room' });
    shown = await messages(cara);
    assertOrdered(shown);
    const server = await restHistory(nodeA.base, roomId);
    assert.deepEqual(shown.map((m) => m.id), server.map((m) => m.id), 'after paging, the page holds the whole history');
    assert.equal(shown[0].text.startsWith('Ann created the room'), true);

    // Search: every word, any case; newest first; click jumps to it.
    await cara.fill('#search-input', 'HELLO noon');
    await cara.press('#search-input', 'Enter');
    await cara.waitForFunction(() => document.querySelectorAll('#search-results li').length === 1);
    assert.equal(await cara.textContent('#search-results li .msg-body'), 'Hello Bob, see you at noon');
    assert.equal(await cara.textContent('#search-results li mark'), 'Hello');
    await cara.fill('#search-input', 'bulk message 7');
    await cara.press('#search-input', 'Enter');
    // 7, 17, …, 67 and 70
    await cara.waitForFunction(() => document.querySelector('#search-summary').textContent.startsWith('8 messages match'));
    const found = await cara.$$eval('#search-results li .msg-body', (bs) => bs.map((b) => b.textContent));
    assert.deepEqual(found, [70, 67, 57, 47, 37, 27, 17, 7].map((n) => `bulk message ${n}`));
    await screenshot(cara, 'search-dark');
    await cara.locator('#search-results li button').last().click();
    await cara.waitForFunction(() => document.activeElement?.matches('#messages li.highlight'));
    await bot.close();
    await cara.context().close();
  });

  test('no page errors, no dialogs', () => {
    for (const p of [ann, bob]) {
      assert.deepEqual(p.errors, []);
      assert.deepEqual(p.dialogs, []);
    }
  });
});
