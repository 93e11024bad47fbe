// Read state in the page (protocol 1.1): one user (a token, so the same
// user id) on two tabs on two nodes, and another user who writes. The
// unread badge comes from room.mine (the second tab never joined the
// room), counts the other user's messages only, and clears in each tab
// when the other reads the room (room.read → the `read` event), also in the
// tab that never joined it.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { huddleBin, launchBrowser, screenshot, startNode, startRedis } from './helpers/cluster.mjs';
import { createRoom, joinByCode, newPage, sendText, waitForMessage } from './helpers/page.mjs';

const SECRET = 'web-test-secret-reads-0123456789';

function token(sub, name) {
  const out = spawnSync(huddleBin(), ['token', '--secret', SECRET, '--sub', sub, '--name', name], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  return out.stdout.trim();
}

async function signInWithToken(page, base, tok) {
  await page.goto(`${base}/`, { waitUntil: 'domcontentloaded' });
  await page.evaluate(() => { document.querySelector('#signin-more').open = true; });
  await page.fill('#signin-token', tok);
  await page.click('#signin-submit');
  await page.waitForSelector('#conn[data-state="online"]');
  await page.waitForSelector('#chat:not([hidden])');
}

/** The unread badge of the room list entry `name` ('' when none). */
function badge(page, name) {
  return page.evaluate((n) => {
    const btn = [...document.querySelectorAll('#room-list button')].find((b) => b.querySelector('.name')?.textContent === n);
    if (!btn) return null;
    return btn.querySelector('.unread')?.textContent ?? '';
  }, name);
}

async function waitBadge(page, name, want) {
  await page.waitForFunction(({ n, w }) => {
    const btn = [...document.querySelectorAll('#room-list button')].find((b) => b.querySelector('.name')?.textContent === n);
    return !!btn && (btn.querySelector('.unread')?.textContent ?? '') === w;
  }, { n: name, w: want });
}

describe('read state', { timeout: 60_000 }, () => {
  let redis; let nodeA; let nodeB; let browser; let tab1; let tab2; let eve;

  before(async () => {
    redis = await startRedis();
    [nodeA, nodeB] = await Promise.all([
      startNode({ redis: redis.url, nodeId: 'n1', args: ['--jwt-secret', SECRET] }),
      startNode({ redis: redis.url, nodeId: 'n2', args: ['--jwt-secret', SECRET] }),
    ]);
    browser = await launchBrowser();
    [tab1, tab2, eve] = await Promise.all([newPage(browser), newPage(browser), newPage(browser)]);
  });

  after(async () => {
    for (const p of [tab1, tab2, eve]) if (p) assert.deepEqual(p.errors, [], 'no page errors');
    await browser?.close();
    await Promise.allSettled([nodeA?.kill(), nodeB?.kill()]);
    await redis?.stop();
  });

  test('an unread badge from room.mine, cleared in one tab when read in another', async () => {
    const dana = token('dana', 'Dana');
    await signInWithToken(tab1, nodeA.base, dana);
    await signInWithToken(eve, nodeB.base, token('eve', 'Eve'));
    const code = await createRoom(tab1, 'Reads');
    await sendText(tab1, 'my own message does not count');
    await joinByCode(eve, code);
    await createRoom(tab1, 'Elsewhere'); // Reads is no longer open in tab 1
    await sendText(eve, 'one');
    await sendText(eve, 'two');
    await waitBadge(tab1, 'Reads', '2');

    // A second tab of the same user, on the other node: it never joined
    // Reads, yet lists it with its unread count (room.mine).
    await signInWithToken(tab2, nodeB.base, dana);
    await waitBadge(tab2, 'Reads', '2');
    assert.equal(await badge(tab2, 'Elsewhere'), '', 'nothing unread in a room with only my messages');
    await screenshot(tab2, 'unread-badge');

    // Reading it in tab 1 clears tab 2's badge, though tab 2 never joined
    // the room: the `read` event reaches every tab of the user.
    await tab1.click('#room-list button:has(.name:text-is("Reads"))');
    await waitForMessage(tab1, 'two');
    await waitBadge(tab2, 'Reads', '');

    // New messages count again in tab 1 (joined, looking elsewhere), and
    // reading in tab 2 clears it.
    await tab1.click('#room-list button:has(.name:text-is("Elsewhere"))');
    await sendText(eve, 'three');
    await waitBadge(tab1, 'Reads', '1');
    await tab2.click('#room-list button:has(.name:text-is("Reads"))');
    await waitForMessage(tab2, 'three');
    await waitBadge(tab1, 'Reads', '');
  });
});
