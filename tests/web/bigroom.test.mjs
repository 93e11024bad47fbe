// A big room (protocol 1.1): the people list pages through room.members and
// the count follows participants.changed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, startNode, waitFor } from './helpers/cluster.mjs';
import { joinByCode, newPage, signIn } from './helpers/page.mjs';

/** Opens `n` guest connections in one page; the first creates a room for 1000. */
async function crowd(browser, base, n) {
  const page = await newPage(browser);
  await page.goto(`${base}/healthz`);
  const code = await page.evaluate(async ({ n }) => {
    const { HuddleClient } = await import('/huddle-client.js');
    const open = async (name) => {
      const c = new HuddleClient({ url: `ws://${location.host}/ws`, name });
      await c.connect();
      return c;
    };
    const owner = await open('Owner');
    const room = await owner.createRoom({ name: 'Stadium', maxParticipants: 1000 });
    window.crowd = [owner];
    window.room = room;
    for (let i = 1; i < n; i++) {
      const c = await open(`Fan ${String(i).padStart(3, '0')}`);
      await c.joinRoom({ room: room.id });
      window.crowd.push(c);
    }
    return room.code;
  }, { n });
  return {
    page,
    code,
    /** One more fan joins. */
    more: (name) => page.evaluate(async (name) => {
      const { HuddleClient } = await import('/huddle-client.js');
      const c = new HuddleClient({ url: `ws://${location.host}/ws`, name });
      await c.connect();
      await c.joinRoom({ room: window.room.id });
      window.crowd.push(c);
    }, name),
  };
}

describe('big rooms', { timeout: 60_000 }, () => {
  let node; let browser;

  before(async () => {
    node = await startNode({ nodeId: 'solo' });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await node?.kill();
  });

  test('the people list is paged and the count follows participants.changed', async () => {
    const fans = await crowd(browser, node.base, 105);
    const page = await newPage(browser);
    await signIn(page, node.base, 'Kim');
    await joinByCode(page, fans.code);
    const listed = () => page.locator('#people-list li[data-user]').count();
    // 106 participants: the count is the server's, the list its first page.
    await page.waitForFunction(() => document.querySelector('#people-count').textContent === '106');
    // The first page: 100, plus whoever a participants.changed of the
    // crowd's last joins (coalesced, at most one a second, so it may land
    // after Kim's join reply) names that the page did not hold.
    await waitFor(async () => (await listed()) >= 100, { message: 'the first page of 100 listed' });
    await page.click('#people-more');
    await waitFor(async () => (await listed()) === 106, { message: 'the second page listed' });
    assert.equal(await page.locator('#people-more').count(), 0, 'no more pages');
    const ids = await page.locator('#people-list li[data-user]').evaluateAll(
      (items) => items.map((li) => li.dataset.user));
    assert.equal(new Set(ids).size, 106, 'everyone listed once');

    // A join above 100 is told as participants.changed: the count follows,
    // and no "joined" system message appears.
    await fans.more('Latecomer');
    await page.waitForFunction(() => document.querySelector('#people-count').textContent === '107');
    await waitFor(async () => (await page.locator('#people-list li[data-user] .pname', { hasText: 'Latecomer' }).count()) === 1,
      { message: 'the newcomer listed' });
    const text = await page.textContent('#messages');
    assert.ok(!text.includes('Latecomer joined'), 'no system message above 100');
    assert.deepEqual(page.errors, []);
  });
});
