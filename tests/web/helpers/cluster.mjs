// Processes for the web tests: a private redis-server, Huddle nodes, tiny
// TCP proxies standing in for a load balancer, and headless Chromium.
// Everything started here is registered and killed when the test process
// exits, also on failure. Every wait is bounded.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..', '..');
export const shotDir = path.join(repoRoot, 'test-output', 'web');

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();
const cleanups = new Set();

function killAll() {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
  children.clear();
  for (const f of cleanups) {
    try { f(); } catch { /* best effort */ }
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAll(); process.exit(130); });
}

/** Polls `fn` until it returns a truthy value; throws after `timeout` ms. */
export async function waitFor(fn, { timeout = 10_000, interval = 50, message = 'condition' } = {}) {
  const until = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** A port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function track(child, label) {
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    children.delete(child);
    resolve({ code, signal });
  }));
  return { exited, stderr: () => stderr, label };
}

/** Sends one RESP command and reads the first reply line. */
function redisCommand(port, line) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error('redis: no answer')); }, 1000);
    s.on('connect', () => s.write(`${line}\r\n`));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) { clearTimeout(timer); s.end(); resolve(buf.split('\r\n')[0]); }
    });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/**
 * Starts a private `redis-server` on a free port. Fails (never skips) when
 * redis-server is not installed.
 */
export async function startRedis() {
  const bin = which('redis-server');
  if (!bin) {
    throw new Error('redis-server is not on PATH: these tests need a real Redis (apt-get install redis-server)');
  }
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'huddle-web-redis-'));
  const child = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const t = track(child, 'redis');
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  cleanups.add(cleanup);
  await waitFor(async () => (await redisCommand(port, 'PING')) === '+PONG', {
    timeout: 5000, message: `redis-server on ${port} to answer PING`,
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      child.kill('SIGKILL');
      await t.exited;
      cleanup();
      cleanups.delete(cleanup);
    },
  };
}

export function huddleBin() {
  const bin = process.env.HUDDLE_BIN || path.join(repoRoot, 'target', 'debug', 'huddle');
  if (!existsSync(bin)) {
    throw new Error(`no huddle binary at ${bin}: build it (cargo build --bin huddle) and set HUDDLE_BIN`);
  }
  return bin;
}

/**
 * Starts `huddle serve` on a free port (or `port`) and waits for its
 * `listening on` line.
 * @param {{redis?: string, nodeId?: string, port?: number, args?: string[]}} opts
 */
export async function startNode({ redis, nodeId = 'n1', port = 0, args = [] } = {}) {
  // Test defaults, unless `args` sets them.
  const defaults = { '--rate-limit': '1000', '--rate-burst': '2000', '--drain-window': '200ms', '--shutdown-grace': '5s' };
  const argv = ['serve', '--bind', `127.0.0.1:${port}`, '--node-id', nodeId, ...args];
  for (const [flag, value] of Object.entries(defaults)) if (!args.includes(flag)) argv.push(flag, value);
  if (redis) argv.push('--redis', redis);
  const child = spawn(huddleBin(), argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' } });
  const t = track(child, `node ${nodeId}`);
  const listening = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    t.exited.then(({ code, signal }) => reject(new Error(`node ${nodeId} exited (${code ?? signal}) before listening:\n${t.stderr()}`)));
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`node ${nodeId} did not print "listening on" within 15 s`)), 15_000);
  });
  const bound = await Promise.race([listening, timeout]).finally(() => clearTimeout(timer));
  listening.catch(() => {}); // an exit after start-up is not an unhandled rejection
  return {
    nodeId,
    port: bound,
    base: `http://127.0.0.1:${bound}`,
    exited: t.exited,
    stderr: t.stderr,
    /** SIGKILL: the process dies without closing its sockets politely. */
    async kill() {
      child.kill('SIGKILL');
      return t.exited;
    },
    /** SIGTERM: drains, closes sockets with 1012, exits. */
    async terminate() {
      child.kill('SIGTERM');
      let timer;
      const late = new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`node ${nodeId} did not exit within 8 s of SIGTERM`)), 8000);
      });
      return Promise.race([t.exited, late]).finally(() => clearTimeout(timer));
    },
  };
}

/**
 * A load-balancer stand-in: a TCP proxy that forwards each connection to
 * the first upstream port that accepts it. `refuse` makes it drop new
 * connections at once (as if nothing listened).
 * @param {number[]} upstreams
 */
export async function startProxy(upstreams) {
  const sockets = new Set();
  const proxy = {
    upstreams: [...upstreams],
    refuse: false,
    port: 0,
    base: '',
    connections: 0,
    server: null,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => proxy.server.close(() => r()));
    },
  };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (proxy.refuse) { client.destroy(); return; }
    client.pause();
    const list = [...proxy.upstreams];
    const tryNext = (i) => {
      if (i >= list.length || client.destroyed) { client.destroy(); return; }
      const up = net.connect(list[i], '127.0.0.1');
      let connected = false;
      up.on('connect', () => {
        connected = true;
        proxy.connections++;
        sockets.add(up);
        up.on('close', () => sockets.delete(up));
        client.pipe(up);
        up.pipe(client);
        client.resume();
        up.on('close', () => client.destroy());
        client.on('close', () => up.destroy());
      });
      up.on('error', () => {
        if (!connected) tryNext(i + 1);
        else client.destroy();
      });
    };
    tryNext(0);
  });
  proxy.server = server;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  proxy.port = server.address().port;
  proxy.base = `http://127.0.0.1:${proxy.port}`;
  return proxy;
}

export const CHROMIUM = '/usr/bin/chromium';

/** Headless Debian Chromium, as the machine notes prescribe. */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (scripts/test.sh does)`);
  }
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.add(() => { browser.close().catch(() => {}); });
  return browser;
}

/** Saves a screenshot under <repo>/test-output/web/. */
export async function screenshot(page, name) {
  mkdirSync(shotDir, { recursive: true });
  const file = path.join(shotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  return file;
}
