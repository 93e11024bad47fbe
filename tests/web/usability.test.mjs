// Keyboard only, and a phone-sized screen.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, screenshot, startNode } from './helpers/cluster.mjs';
import { messages, newPage, sendText, signIn, waitForMessage } from './helpers/page.mjs';

const focused = (page) => page.evaluate(() => {
  const e = document.activeElement;
  return e ? (e.id || e.getAttribute('aria-label') || e.textContent.trim().slice(0, 40)) : null;
});

/** Presses Tab until `pred(focusedId)` holds; returns the number of presses. */
async function tabTo(page, id, { max = 40, shift = false } = {}) {
  for (let i = 0; i < max; i++) {
    if ((await focused(page)) === id) return i;
    await page.keyboard.press(shift ? 'Shift+Tab' : 'Tab');
    const box = await page.evaluate(() => {
      const r = document.activeElement?.getBoundingClientRect();
      return r && r.width > 0 && r.height > 0;
    });
    assert.ok(box, `every focus stop is visible (${await focused(page)})`);
  }
  throw new Error(`Tab never reached #${id}`);
}

describe('usability', { timeout: 40_000 }, () => {
  let node; let browser;

  before(async () => {
    node = await startNode({ nodeId: 'solo' });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await node?.kill();
  });

  test('keyboard only: sign in, create a room, send, edit, delete, search, join by code', async () => {
    const page = await newPage(browser);
    await page.goto(`${node.base}/`);
    await page.waitForSelector('#signin-name');
    // The name field has focus at once; the skip link is the first Tab stop.
    assert.equal(await focused(page), 'signin-name');
    await page.keyboard.press('Shift+Tab');
    assert.equal(await focused(page), 'Skip to the message box');
    await page.keyboard.press('Tab');
    assert.equal(await focused(page), 'signin-name');
    await page.keyboard.type('Kim');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#conn[data-state="online"]');
    // Focus lands in "Room name".
    await page.waitForFunction(() => document.activeElement?.id === 'create-name');
    await page.keyboard.type('Keyboard club');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#room-title').textContent === 'Keyboard club');
    // …then in the message box.
    await page.waitForFunction(() => document.activeElement?.id === 'composer-input');
    await page.keyboard.type('typed, not clicked');
    await page.keyboard.press('Enter');
    await waitForMessage(page, 'typed, not clicked');
    // Shift+Enter makes a new line; Enter sends.
    await page.keyboard.type('line one');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('line two');
    await page.keyboard.press('Enter');
    await waitForMessage(page, 'line one\nline two');

    // ↑ in the empty box edits the last own message; Enter saves.
    await page.keyboard.press('ArrowUp');
    await page.waitForFunction(() => document.activeElement?.matches('#messages textarea'));
    await page.keyboard.press('End');
    await page.keyboard.type(' (edited)');
    await page.keyboard.press('Enter');
    await waitForMessage(page, 'line one\nline two (edited)');
    assert.equal(await focused(page), 'composer-input');

    // Tab back to that message's Delete button; Enter, Enter confirms.
    const label = 'Delete the message “line one\nline two (edited)”';
    await tabTo(page, label, { shift: true });
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.activeElement?.textContent === 'Yes, delete');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#messages li.deleted').length === 1);

    // The skip link (first in the page) jumps to the message box.
    await tabTo(page, 'Skip to the message box', { shift: true, max: 80 });
    await page.keyboard.press('Enter');
    assert.equal(await focused(page), 'composer-input');

    // Search with the keyboard; Escape closes the results.
    await tabTo(page, 'search-input', { shift: true });
    await page.keyboard.type('clicked');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelectorAll('#search-results li').length === 1);
    await page.keyboard.press('Escape');
    assert.equal(await page.isHidden('#search-panel'), true);

    // Join another room by code, keyboard only.
    const other = await newPage(browser);
    await signIn(other, node.base, 'Lee');
    await other.fill('#create-name', 'Second room');
    await other.press('#create-name', 'Enter');
    await other.waitForFunction(() => document.querySelector('#room-title').textContent === 'Second room');
    const code = await other.textContent('#room-code');
    await tabTo(page, 'join-code', { shift: true, max: 60 });
    await page.keyboard.type(code.toLowerCase());
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#room-title').textContent === 'Second room');
    await page.waitForFunction(() => document.activeElement?.id === 'composer-input');
    await page.keyboard.type('hi from the keyboard');
    await page.keyboard.press('Enter');
    await waitForMessage(other, 'hi from the keyboard');
    await screenshot(page, 'keyboard');
    assert.deepEqual(page.dialogs, []);
    assert.deepEqual(page.errors, []);
    await other.context().close();
    await page.context().close();
  });

  test('a phone-sized screen (390×844): readable, no horizontal scroll', async () => {
    const phone = await newPage(browser, { viewport: { width: 390, height: 844 }, mobile: true });
    const friend = await newPage(browser);
    const noSideways = async (what) => {
      const m = await phone.evaluate(() => ({
        doc: document.documentElement.scrollWidth,
        body: document.body.scrollWidth,
        timeline: (() => { const t = document.querySelector('#timeline'); return t ? t.scrollWidth - t.clientWidth : 0; })(),
        width: window.innerWidth,
      }));
      assert.ok(m.doc <= m.width && m.body <= m.width, `${what}: page is ${m.doc}/${m.body}px wide in a ${m.width}px viewport`);
      assert.ok(m.timeline <= 0, `${what}: the messages scroll sideways by ${m.timeline}px`);
    };

    await phone.goto(`${node.base}/`);
    await phone.waitForSelector('#signin-name');
    await noSideways('sign-in');
    await screenshot(phone, 'phone-signin');

    await signIn(phone, node.base, 'Pat Phone-Owner With A Rather Long Name');
    // With no room open, the room list fills the screen.
    assert.equal(await phone.isVisible('#create-name'), true);
    await noSideways('rooms');
    await screenshot(phone, 'phone-rooms');
    await phone.fill('#create-name', 'A room with quite a long name, to see how it wraps on a phone');
    await phone.press('#create-name', 'Enter');
    await phone.waitForSelector('#room:not([hidden])');
    // The room list folds away; the people panel starts closed.
    assert.equal(await phone.isVisible('#create-name'), false);
    assert.equal(await phone.isVisible('#people'), false);
    const code = await phone.textContent('#room-code');

    await signIn(friend, node.base, 'Sam');
    await friend.fill('#join-code', code);
    await friend.press('#join-code', 'Enter');
    await friend.waitForSelector('#room:not([hidden])');
    await sendText(friend, 'Welcome! Here is a long link: https://example.com/a/very/long/path/that/does/not/break/easily/at/all/because/it/has/no/spaces/whatsoever?and=a&query=string');
    await sendText(friend, `averyveryverylongwordwithoutanyspaces${'x'.repeat(200)}`);
    await sendText(phone, 'Thanks! Reading this on my phone.');
    await phone.click('#attach-toggle');
    await phone.fill('#attach-url', `${node.base}/favicon.svg`);
    await phone.fill('#composer-input', 'logo');
    await phone.click('#send');
    await phone.waitForSelector('#messages li.kind-image img');
    await friend.fill('#composer-input', 'typing on the big screen');
    await friend.type('#composer-input', '…');
    await phone.waitForFunction(() => document.querySelector('#typing').textContent === 'Sam is typing…');
    await noSideways('chat');
    await screenshot(phone, 'phone-chat');

    // Text is readable: at least 14px for messages.
    const size = await phone.$eval('#messages li.msg .msg-body', (b) => parseFloat(getComputedStyle(b).fontSize));
    assert.ok(size >= 14, `message text is ${size}px`);

    await phone.click('#people-toggle');
    await phone.waitForSelector('#people', { state: 'visible' });
    await noSideways('people');
    await screenshot(phone, 'phone-people');
    await phone.click('#people-close');
    await phone.click('#rooms-toggle');
    assert.equal(await phone.isVisible('#room-list'), true);
    await phone.click('#room-list button');
    assert.equal(await phone.isVisible('#room-list'), false);

    const shown = await messages(phone);
    assert.ok(shown.some((m) => m.text.startsWith('Welcome!')));
    assert.deepEqual(phone.dialogs, []);
    assert.deepEqual(phone.errors, []);
  });
});
