// The page under the server's limits: a low rate limit (rate_limited →
// wait retry_after_ms, retry, nothing lost or reordered) and token mode
// (a refused token stops the client and says why; a good one signs in).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { huddleBin, launchBrowser, startNode } from './helpers/cluster.mjs';
import { assertOrdered, createRoom, messages, newPage, waitForMessage } from './helpers/page.mjs';

describe('limits', { timeout: 40_000 }, () => {
  let slow; let locked; let browser;
  const SECRET = 'web-test-secret-0123456789';

  before(async () => {
    [slow, locked] = await Promise.all([
      startNode({ nodeId: 'slow', args: ['--rate-limit', '4', '--rate-burst', '8'] }),
      startNode({ nodeId: 'locked', args: ['--jwt-secret', SECRET] }),
    ]);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await Promise.allSettled([slow?.kill(), locked?.kill()]);
  });

  test('rate_limited: the page waits and retries; every message arrives once, in order', async () => {
    const page = await newPage(browser);
    await page.goto(`${slow.base}/`);
    await page.fill('#signin-name', 'Quick');
    await page.click('#signin-submit');
    await page.waitForSelector('#conn[data-state="online"]');
    await page.waitForTimeout(1000); // let the start-up requests' tokens refill
    await createRoom(page, 'Fast talkers');
    const texts = Array.from({ length: 16 }, (_, i) => `rapid ${i + 1}`);
    for (const t of texts) {
      await page.fill('#composer-input', t);
      await page.press('#composer-input', 'Enter');
    }
    await page.waitForSelector('.toast', { timeout: 5000 }); // "Sending too fast…"
    await waitForMessage(page, 'rapid 16', 15_000);
    await page.waitForFunction(() => document.querySelectorAll('#outbox li').length === 0);
    const shown = (await messages(page)).filter((m) => !m.system);
    assertOrdered(shown);
    assert.deepEqual(shown.map((m) => m.text), texts);
    assert.equal(await page.getAttribute('#conn', 'data-state'), 'online', 'never closed for abuse');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('token mode: a bad token is refused without a reconnect loop; a good one signs in', async () => {
    const page = await newPage(browser);
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(ws.url()));
    await page.goto(`${locked.base}/`);
    await page.fill('#signin-name', 'Mallory');
    await page.click('#signin-submit');
    await page.waitForFunction(() => document.querySelector('#signin-error').textContent.includes('refused'));
    assert.equal(await page.isVisible('#signin-token'), true, 'the token field is offered');
    await page.waitForTimeout(800);
    assert.equal(sockets.length, 1, 'no reconnect after close 4001');
    assert.equal(await page.getAttribute('#conn', 'data-state'), 'idle');

    const out = spawnSync(huddleBin(), ['token', '--secret', SECRET, '--sub', 'user-42', '--name', 'Dana (verified)'], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    const token = out.stdout.trim();
    await page.fill('#signin-token', token);
    await page.click('#signin-submit');
    await page.waitForSelector('#conn[data-state="online"]');
    assert.equal(await page.textContent('#me-name'), 'Dana (verified)');
    await createRoom(page, 'Verified only');
    await page.fill('#composer-input', 'signed in with a token');
    await page.press('#composer-input', 'Enter');
    await waitForMessage(page, 'signed in with a token');
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});
