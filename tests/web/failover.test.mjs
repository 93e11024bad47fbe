// The page survives its node: two nodes behind load-balancer stand-ins
// (proxy A → node A, else node B; proxy B → node B, else node A). Node A is
// killed; the page on it reconnects through proxy A to node B, resumes the
// room with `since` and shows every message sent while it was away, in
// order, once. Then node B shuts down politely (close 1012) and both pages
// move to a third node at once.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, screenshot, startNode, startProxy, startRedis, waitFor } from './helpers/cluster.mjs';
import {
  activeRoomId, assertOrdered, createRoom, joinByCode, messageItem, messages, newPage, nodeOf,
  restHistory, sendText, signIn, waitForMessage,
} from './helpers/page.mjs';

/**
 * The page's messages equal the server's history: same ids, order, text,
 * edits and deletions. (Retried briefly: a janitor's "left" message may
 * land between the two reads.)
 */
async function assertMatchesServer(page, base, roomId) {
  let shown; let server;
  await waitFor(async () => {
    server = await restHistory(base, roomId);
    shown = await messages(page);
    return JSON.stringify(shown.map((m) => m.id)) === JSON.stringify(server.map((m) => m.id));
  }, { timeout: 10_000, message: 'the page to show exactly the server\'s messages' }).catch((e) => {
    assert.deepEqual(shown.map((m) => `${m.seq} ${m.text}`), server.map((m) => `${m.seq} ${m.content}`), e.message);
  });
  assertOrdered(shown);
  for (const [i, m] of server.entries()) {
    assert.equal(shown[i].deleted, m.deleted, `deleted flag of seq ${m.seq}`);
    if (!m.deleted && m.kind !== 'system') assert.equal(shown[i].text, m.content, `text of seq ${m.seq}`);
    assert.equal(shown[i].edited, !!m.edited_at && !m.deleted, `edited mark of seq ${m.seq}`);
  }
  assert.equal(await page.locator('#outbox > li').count(), 0, 'nothing left unsent');
}

describe('failover', { timeout: 60_000 }, () => {
  let redis; let nodeA; let nodeB; let nodeC; let proxyA; let proxyB; let browser;
  let ann; let bob; let roomId;

  before(async () => {
    redis = await startRedis();
    [nodeA, nodeB] = await Promise.all([
      startNode({ redis: redis.url, nodeId: 'n1' }),
      startNode({ redis: redis.url, nodeId: 'n2' }),
    ]);
    proxyA = await startProxy([nodeA.port, nodeB.port]);
    proxyB = await startProxy([nodeB.port, nodeA.port]);
    browser = await launchBrowser();
    ann = await newPage(browser);
    bob = await newPage(browser);
  });

  after(async () => {
    await browser?.close();
    await Promise.allSettled([nodeA?.kill(), nodeB?.kill(), nodeC?.kill(), proxyA?.close(), proxyB?.close()]);
    await redis?.stop();
  });

  test('a killed node: the page reconnects to the other node and misses nothing', async () => {
    await signIn(ann, proxyA.base, 'Ann');
    await signIn(bob, proxyB.base, 'Bob');
    assert.equal(await nodeOf(ann), 'n1');
    assert.equal(await nodeOf(bob), 'n2');
    const code = await createRoom(ann, 'Ops');
    roomId = await activeRoomId(ann);
    await joinByCode(bob, code);
    await sendText(ann, 'before 1');
    await sendText(bob, 'before 2');
    await waitForMessage(ann, 'before 2');

    // Node A dies; for a moment the load balancer has nowhere to send Ann.
    proxyA.refuse = true;
    await nodeA.kill();
    await ann.waitForSelector('#conn[data-state="reconnecting"]');
    await screenshot(ann, 'reconnecting');

    // Meanwhile: Bob talks, edits and deletes; Ann writes while offline.
    for (let i = 1; i <= 5; i++) await sendText(bob, `while away ${i}`);
    const edited = messageItem(bob, 'before 2');
    await edited.hover();
    await edited.getByRole('button', { name: /^Edit/ }).click();
    await bob.fill('#messages textarea', 'before 2 (edited while Ann was away)');
    await bob.press('#messages textarea', 'Enter');
    await waitForMessage(bob, 'before 2 (edited while Ann was away)');
    await sendText(bob, 'to be deleted');
    const doomed = messageItem(bob, 'to be deleted');
    await doomed.hover();
    await doomed.getByRole('button', { name: /^Delete/ }).click();
    await bob.getByRole('button', { name: 'Yes, delete' }).click();
    await bob.waitForFunction(() => document.querySelectorAll('#messages li.deleted').length === 1);

    await ann.fill('#composer-input', 'written offline');
    await ann.press('#composer-input', 'Enter');
    await ann.waitForFunction(() => document.querySelector('#outbox li')?.textContent.includes('Waiting for the connection'));
    assert.equal(await ann.locator('#messages .msg-body', { hasText: 'while away' }).count(), 0);

    // The load balancer routes Ann to node B.
    proxyA.refuse = false;
    await ann.waitForSelector('#conn[data-state="online"][data-node="n2"]', { timeout: 20_000 });
    await waitForMessage(ann, 'while away 5');
    await waitForMessage(ann, 'before 2 (edited while Ann was away)');
    await waitForMessage(bob, 'written offline');
    await assertMatchesServer(ann, nodeB.base, roomId);
    await assertMatchesServer(bob, nodeB.base, roomId);
    const offline = (await messages(bob)).filter((m) => m.text === 'written offline');
    assert.equal(offline.length, 1, 'the message written offline arrived once');
    await screenshot(ann, 'after-failover');
  });

  test('close 1012 (node shutting down): both pages reconnect at once elsewhere', async () => {
    nodeC = await startNode({ redis: redis.url, nodeId: 'n3' });
    proxyA.upstreams = [nodeC.port];
    proxyB.upstreams = [nodeB.port, nodeC.port];
    const started = Date.now();
    const exited = nodeB.terminate();
    await Promise.all([
      ann.waitForSelector('#conn[data-state="online"][data-node="n3"]', { timeout: 10_000 }),
      bob.waitForSelector('#conn[data-state="online"][data-node="n3"]', { timeout: 10_000 }),
    ]);
    const took = Date.now() - started;
    await exited;
    // The node spreads its 1012s over a 200 ms drain window; no backoff after.
    assert.ok(took < 3000, `reconnected ${took} ms after SIGTERM`);
    await sendText(bob, 'after the restart');
    await waitForMessage(ann, 'after the restart');
    await assertMatchesServer(ann, nodeC.base, roomId);
    await assertMatchesServer(bob, nodeC.base, roomId);
  });

  test('no page errors, no dialogs', () => {
    for (const p of [ann, bob]) {
      assert.deepEqual(p.errors, []);
      assert.deepEqual(p.dialogs, []);
    }
  });
});
