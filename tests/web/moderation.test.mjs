// Roles and moderation in the page (protocol 1.1): a moderator on node A
// removes users on node B (kick, then ban) and the removed page says why
// and loses the room; a muted user sees why their send is refused; a new
// moderator renames the room and every page shows it; the owner closes it.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, screenshot, startNode, startRedis } from './helpers/cluster.mjs';
import { createRoom, joinByCode, newPage, sendText, signIn, waitForMessage } from './helpers/page.mjs';

/** The people-list entry of `name`. */
function person(page, name) {
  return page.locator('#people-list > li').filter({ has: page.locator('.pname', { hasText: new RegExp(`^${name}$`) }) });
}

/** Opens `name`'s member menu and returns it. */
async function menuOf(page, name) {
  const entry = person(page, name);
  if (!(await entry.locator('details.member-menu[open]').count())) await entry.locator('details.member-menu > summary').click();
  return entry.locator('.member-actions');
}

/** The room list's entry names. */
function roomNames(page) {
  return page.$$eval('#room-list .name', (els) => els.map((e) => e.textContent));
}

describe('moderation', { timeout: 90_000 }, () => {
  let redis; let nodeA; let nodeB; let browser;
  let ann; let bob; let cat; let code;

  before(async () => {
    redis = await startRedis();
    [nodeA, nodeB] = await Promise.all([
      startNode({ redis: redis.url, nodeId: 'n1' }),
      startNode({ redis: redis.url, nodeId: 'n2' }),
    ]);
    browser = await launchBrowser();
    [ann, bob, cat] = await Promise.all([newPage(browser), newPage(browser), newPage(browser)]);
    await signIn(ann, nodeA.base, 'Ann');
    await signIn(bob, nodeB.base, 'Bob');
    await signIn(cat, nodeB.base, 'Cat');
    code = await createRoom(ann, 'Ops');
    await joinByCode(bob, code);
    await joinByCode(cat, code);
    await person(ann, 'Cat').waitFor();
  });

  after(async () => {
    for (const p of [ann, bob, cat]) if (p) assert.deepEqual(p.errors, [], 'no page errors');
    await browser?.close();
    await Promise.allSettled([nodeA?.kill(), nodeB?.kill()]);
    await redis?.stop();
  });

  test('roles are shown; a member is offered no moderation', async () => {
    await person(bob, 'Ann').locator('.tag.role-owner').waitFor();
    assert.equal(await bob.locator('details.member-menu').count(), 0, 'a member sees no member menus');
    assert.equal(await bob.isVisible('#room-admin'), false, 'a member cannot manage the room');
    assert.equal(await ann.isVisible('#room-admin'), true, 'the owner can');
    assert.equal(await person(ann, 'Ann').locator('details.member-menu').count(), 0, 'no menu on oneself');
  });

  test('a kick on node A removes Bob on node B: the page says who and why, and Bob may come back', async () => {
    const menu = await menuOf(ann, 'Bob');
    await screenshot(ann, 'member-menu');
    await menu.locator('.member-reason').fill('off topic');
    await menu.locator('button[data-action="kick"]').click();
    await bob.waitForSelector('#removed-note:not([hidden])');
    const note = await bob.textContent('#removed-note');
    assert.match(note, /Ann removed you from Ops: “off topic”\./);
    assert.doesNotMatch(note, /banned/);
    assert.equal(await bob.isVisible('#room'), false, 'the room is closed on Bob\'s page');
    assert.deepEqual(await roomNames(bob), [], 'and gone from the room list');
    await screenshot(bob, 'kicked');
    await person(ann, 'Bob').waitFor({ state: 'detached' });
    assert.equal(await ann.textContent('#people-count'), '2', 'the count follows the removal');
    // A kick is not a ban: Bob joins again, and is listed again.
    await joinByCode(bob, code);
    await person(ann, 'Bob').waitFor();
  });

  test('a ban removes Bob with its end, and his join is refused', async () => {
    const menu = await menuOf(ann, 'Bob');
    await menu.locator('.member-reason').fill('spam');
    await menu.locator('select.ban-duration').selectOption({ label: '1 day' });
    await menu.locator('button[data-action="ban"]').click();
    await bob.waitForSelector('#removed-note:not([hidden])');
    const note = await bob.textContent('#removed-note');
    assert.match(note, /Ann removed you from Ops: “spam”\. You are banned until .+\./);
    assert.equal(await bob.isVisible('#room'), false);
    await bob.fill('#join-code', code);
    await bob.press('#join-code', 'Enter');
    await bob.waitForFunction(() => [...document.querySelectorAll('#toasts *')].some((t) => /you are banned from this room until/.test(t.textContent)));
    const refusal = await bob.$$eval('#toasts *', (ts) => ts.map((t) => t.textContent).find((x) => /banned from/.test(x)));
    assert.doesNotMatch(refusal, /Unix ms/, 'the end of the ban is shown as a date');
    assert.equal(await bob.isVisible('#room'), false, 'a banned user cannot open the room');
    await screenshot(bob, 'banned');
    // The owner lists the bans and lifts Bob's; he joins again.
    await ann.click('#room-admin > summary');
    await ann.click('#bans-load');
    const entry = ann.locator('#bans-list li').filter({ hasText: 'Bob' });
    assert.match(await entry.textContent(), /until .+ by Ann: spam/);
    await entry.locator('button[data-action="unban"]').click();
    await ann.waitForSelector('#bans-list li:text("Nobody is banned.")');
    await ann.click('#room-admin > summary');
    await joinByCode(bob, code);
    await person(ann, 'Bob').waitFor();
    assert.equal(await ann.textContent('#people-count'), '3', 'removed twice and back: three people');
  });

  test('a muted user is told why the send is refused; unmuted, it goes through', async () => {
    const menu = await menuOf(ann, 'Cat');
    await menu.locator('select.mute-duration').selectOption({ label: '5 minutes' });
    await menu.locator('button[data-action="mute"]').click();
    await cat.waitForSelector('#muted-note:not([hidden])');
    assert.match(await cat.textContent('#muted-note'), /You are muted in this room until/);
    await person(ann, 'Cat').locator('.tag.muted-mark').waitFor();
    await cat.fill('#composer-input', 'can I speak?');
    await cat.press('#composer-input', 'Enter');
    await cat.waitForSelector('#outbox li.failed');
    assert.match(await cat.textContent('#outbox li.failed'), /Not sent: you are muted in this room until/);
    await screenshot(cat, 'muted');
    await cat.click('#outbox li.failed button:text("Discard")');
    await (await menuOf(ann, 'Cat')).locator('button[data-action="unmute"]').click();
    await cat.waitForSelector('#muted-note', { state: 'hidden' });
    await sendText(cat, 'thanks');
    await waitForMessage(ann, 'thanks');
  });

  test('a new moderator renames the room; every page shows the name', async () => {
    await (await menuOf(ann, 'Cat')).locator('button[data-action="moderator"]').click();
    await person(cat, 'Cat').locator('.tag.role-moderator').waitFor();
    await cat.waitForSelector('#room-admin:not([hidden])');
    assert.equal(await cat.isVisible('#close-room'), false, 'only the owner closes');
    assert.equal(await person(cat, 'Ann').locator('details.member-menu').count(), 0, 'nobody acts on the owner');
    await cat.click('#room-admin > summary');
    await cat.fill('#rename-input', 'Ops (renamed)');
    await cat.press('#rename-input', 'Enter');
    await ann.waitForFunction(() => document.querySelector('#room-title').textContent === 'Ops (renamed)');
    assert.deepEqual(await roomNames(ann), ['Ops (renamed)']);
    await cat.click('#room-admin > summary');
    await cat.check('#private-toggle');
    await ann.waitForSelector('#room-private:not([hidden])');
    assert.equal(await ann.isChecked('#private-toggle'), true);
    await cat.uncheck('#private-toggle');
    await ann.waitForSelector('#room-private', { state: 'hidden' });
  });

  test('the owner hands the room over and gets it back', async () => {
    const hand = async (from, to) => {
      const button = (await menuOf(from, to)).locator('button[data-action="owner"]');
      await button.click();
      await button.click(); // the second click confirms
    };
    await hand(ann, 'Cat');
    await person(ann, 'Ann').locator('.tag.role-moderator').waitFor();
    await person(ann, 'Cat').locator('.tag.role-owner').waitFor();
    await cat.waitForSelector('#close-room:not([hidden])', { state: 'attached' });
    assert.equal(await ann.locator('#close-room').isHidden(), true, 'the old owner no longer closes');
    assert.equal(await person(ann, 'Cat').locator('details.member-menu').count(), 0, 'nor acts on the new owner');
    await hand(cat, 'Ann');
    await person(cat, 'Ann').locator('.tag.role-owner').waitFor();
    await ann.waitForSelector('#close-room:not([hidden])', { state: 'attached' });
  });

  test('the owner closes the room: the other page leaves it and says who', async () => {
    await ann.click('#room-admin > summary');
    await ann.click('#close-room');
    await ann.click('#close-room'); // the second click confirms
    await cat.waitForSelector('#removed-note:not([hidden])');
    assert.match(await cat.textContent('#removed-note'), /Ann closed Ops \(renamed\); its messages are gone\./);
    assert.equal(await cat.isVisible('#room'), false);
    await ann.waitForSelector('#room', { state: 'hidden' });
    assert.match(await ann.textContent('#removed-note'), /You closed Ops \(renamed\)/);
    await screenshot(cat, 'closed');
  });
});
