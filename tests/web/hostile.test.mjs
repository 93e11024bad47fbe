// Hostile content is shown as text: names, room names, messages, captions,
// attachment names and search results never become markup, no script runs,
// no dialog fires.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchBrowser, screenshot, startNode } from './helpers/cluster.mjs';
import { createRoom, joinByCode, messages, newPage, signIn, waitForMessage } from './helpers/page.mjs';

const NAME = '<img src=x onerror=alert(1)>';
const ROOM = '<script>alert("room")</script>';
const TEXTS = [
  '<script>alert(2)</script>',
  '<img src=x onerror=alert(3)>',
  '"><svg onload=alert(4)>',
  '[click](javascript:alert(5)) javascript:alert(6)',
  '&lt;b&gt;entities stay text&lt;/b&gt;',
];
const FILE_NAME = '<img src=x onerror=alert(7)>.pdf';
const CAPTION = '<iframe src="javascript:alert(8)"></iframe>';

/** Anything in the page that hostile content could have produced. */
function injected(page) {
  return page.evaluate(() => ({
    scripts: [...document.scripts].map((s) => s.src || s.textContent.slice(0, 40)),
    badImages: document.querySelectorAll('img[src="x"], img[onerror], svg[onload], iframe').length,
    handlers: [...document.querySelectorAll('*')].filter((e) => [...e.attributes].some((a) => a.name.startsWith('on'))).length,
    jsLinks: [...document.querySelectorAll('a[href]')].filter((a) => !/^(https?:|#)/i.test(a.getAttribute('href'))).length,
    bold: document.querySelectorAll('#messages b').length,
  }));
}

describe('hostile content', { timeout: 40_000 }, () => {
  let node; let browser; let eve; let viewer;

  before(async () => {
    node = await startNode({ nodeId: 'solo' }); // in-memory single node
    browser = await launchBrowser();
    eve = await newPage(browser);
    viewer = await newPage(browser);
  });

  after(async () => {
    await browser?.close();
    await node?.kill();
  });

  test('names, room names, messages and attachment names show as text', async () => {
    await signIn(eve, node.base, NAME);
    assert.equal(await eve.textContent('#me-name'), NAME);
    const code = await createRoom(eve, ROOM);
    assert.equal(await eve.textContent('#room-title'), ROOM);
    for (const t of TEXTS) {
      await eve.fill('#composer-input', t);
      await eve.press('#composer-input', 'Enter');
    }
    await eve.click('#attach-toggle');
    await eve.selectOption('#attach-kind', 'file');
    await eve.fill('#attach-url', 'https://files.example/x.pdf');
    await eve.fill('#attach-name', FILE_NAME);
    await eve.fill('#composer-input', CAPTION);
    await eve.click('#send');
    await eve.click('#attach-toggle');
    await eve.selectOption('#attach-kind', 'image');
    await eve.fill('#attach-url', 'https://images.example/a.png?"onerror="alert(9)');
    await eve.fill('#attach-name', NAME);
    await eve.click('#send');

    await signIn(viewer, node.base, 'Viewer');
    await joinByCode(viewer, code);
    for (const t of TEXTS) await waitForMessage(viewer, t);
    await waitForMessage(viewer, `${CAPTION}${FILE_NAME}`);

    const shown = await messages(viewer);
    const eves = shown.filter((m) => !m.system);
    assert.ok(eves.length >= TEXTS.length + 2);
    for (const m of eves) assert.equal(m.author, NAME, 'the author name is literal text');
    assert.ok(shown.some((m) => m.system && m.text === `${NAME} created the room`));
    assert.equal(await viewer.textContent('#room-title'), ROOM);
    assert.equal(await viewer.textContent('#room-list li .name'), ROOM);
    assert.equal(await viewer.locator('#people-list .pname', { hasText: 'onerror' }).textContent(), NAME);
    assert.equal(await viewer.locator('#messages .file-card .fname').textContent(), FILE_NAME);
    assert.equal(await viewer.locator('#messages li.kind-image img').getAttribute('alt'), NAME);

    // Search results highlight words without parsing the text as HTML.
    await viewer.fill('#search-input', 'script alert(2)');
    await viewer.press('#search-input', 'Enter');
    await viewer.waitForFunction(() => document.querySelectorAll('#search-results li').length >= 1);
    assert.equal(await viewer.textContent('#search-results li .msg-body'), TEXTS[0]);

    for (const page of [eve, viewer]) {
      const found = await injected(page);
      assert.deepEqual(found.scripts, [`${new URL(node.base).origin}/app.js`], 'only the page\'s own module script');
      assert.equal(found.badImages, 0, 'no injected img/svg/iframe');
      assert.equal(found.handlers, 0, 'no inline event handler attributes');
      assert.equal(found.jsLinks, 0, 'no link other than http(s) (and the skip link)');
      assert.equal(found.bold, 0, 'entities are not decoded into markup');
    }
    await viewer.waitForTimeout(300); // give any injected handler a chance to fire
    await screenshot(viewer, 'hostile');
    for (const page of [eve, viewer]) {
      assert.deepEqual(page.dialogs, [], 'no dialog fired');
      assert.deepEqual(page.errors, []);
    }
  });

  test('the page is served with a CSP that forbids inline script', async () => {
    const res = await fetch(`${node.base}/`);
    const csp = res.headers.get('content-security-policy');
    assert.ok(csp, 'CSP header present');
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /object-src|default-src 'none'/);
  });
});
