// The SDK's RealtimeClient in a real browser: bundled for browsers (esbuild, platform browser, the
// workspaces' source) and run in headless Chromium with the browser's own WebSocket, against a real
// shard — join, move, snapshots, other entities in view, close.
import { join } from 'node:path';
import { testEnv } from '@aethex/testing';
import { build } from 'esbuild';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { launchChromium, startTestShard, type TestShard, until } from './harness.js';

const env = testEnv();
let t: TestShard;
let browser: Browser;

beforeAll(async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '20', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100' });
  browser = await launchChromium(env.chromium);
});

afterAll(async () => {
  await browser?.close();
  await t?.stop();
});

test('RealtimeClient bundled for browsers joins a real shard from Chromium, moves, sees snapshots and other entities, and closes', async () => {
  const bundle = await build({
    stdin: {
      contents: "import { RealtimeClient } from '@aethex/sdk'; globalThis.RealtimeClient = RealtimeClient;",
      resolveDir: join(import.meta.dirname, '..', '..', 'sdk'),
      loader: 'ts',
    },
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    conditions: ['aethex-source'],
    write: false,
    logLevel: 'silent',
  });
  const code = bundle.outputFiles[0]?.text as string;
  // Nothing of Node's made it in: it would not load in a page.
  expect(code).not.toMatch(/from\s*["']node:/);

  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await page.setContent('<!doctype html><html><body></body></html>');
  await page.addScriptTag({ content: code, type: 'module' });
  await page.waitForFunction(() => (globalThis as { RealtimeClient?: unknown }).RealtimeClient !== undefined, undefined, {
    timeout: 10_000,
  });

  const token = await t.token('browser-player');
  const result = await page.evaluate(
    async ({ url, token }) => {
      type Client = {
        connect(): Promise<{ entityId: number }>;
        on(event: string, listener: (...args: unknown[]) => void): Client;
        move(dx: number, dy: number): number;
        close(): void;
        unacknowledged: number;
        predicted: { x: number; y: number };
        store: { current: { size: number } };
        interpolatedEntities(): Map<number, unknown>;
      };
      const C = (globalThis as unknown as { RealtimeClient: new (o: object) => Client }).RealtimeClient;
      // No createSocket: the browser's own WebSocket.
      const c = new C({ url, joinToken: token });
      let snapshots = 0;
      let enters = 0;
      const closes: string[] = [];
      c.on('snapshot', () => snapshots++);
      c.on('enter', () => enters++);
      c.on('close', (code, reason) => closes.push(`${code} ${reason}`));
      const w = await c.connect();
      while (snapshots === 0) await new Promise((r) => setTimeout(r, 10));
      const start = { ...c.predicted };
      // A render loop: a move every animation frame for a second.
      const until = performance.now() + 1000;
      while (performance.now() < until) {
        c.move(0.05, 0.025);
        await new Promise((r) => requestAnimationFrame(r));
      }
      const settleBy = performance.now() + 2000;
      while (c.unacknowledged > 0 && performance.now() < settleBy) await new Promise((r) => setTimeout(r, 25));
      const seen = {
        entityId: w.entityId,
        snapshots,
        enters,
        unacknowledged: c.unacknowledged,
        moved: { x: c.predicted.x - start.x, y: c.predicted.y - start.y },
        inView: c.store.current.size,
        drawn: c.interpolatedEntities().size,
      };
      c.close();
      await new Promise((r) => setTimeout(r, 200));
      return { ...seen, closes };
    },
    { url: t.shard.gatewayUrl, token },
  );
  await page.close();

  expect(problems).toEqual([]);
  expect(result.snapshots).toBeGreaterThan(20);
  // Its own entity and NPCs around it (they wander in and out of its area of interest).
  expect(result.inView).toBeGreaterThan(1);
  expect(result.enters).toBeGreaterThanOrEqual(result.inView);
  expect(result.drawn).toBeGreaterThanOrEqual(result.inView);
  expect(result.unacknowledged).toBe(0);
  expect(result.closes).toEqual(['1000 client closed']);
  // It moved; and the player left with the close.
  const world = t.shard.engine.world;
  // About 60 frames of 0.05 east (fewer when the page's frames run slow), unless a world edge stopped it.
  expect(Math.abs(result.moved.x) + Math.abs(result.moved.y)).toBeGreaterThan(0.5);
  await until('the player to leave', () => world.indexOf(result.entityId) < 0, 5000);
}, 60_000);
