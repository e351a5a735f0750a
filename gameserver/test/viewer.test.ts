import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testEnv } from '@aethex/testing';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { type LocalShard, type LocalWorld, startLocalWorld } from '../src/world/local-world.js';
import { launchChromium, startTestShard, type TestShard } from './harness.js';

const env = testEnv();
let t: TestShard;
let world: LocalWorld | undefined;
let browser: Browser;

/** Counts the canvas's pixels that are exactly one of `colours` (hex): entity squares are solid. */
function countColours(page: Page, colours: Record<string, string>): Promise<Record<string, number>> {
  return page.evaluate((colours) => {
    const c = document.getElementById('view') as HTMLCanvasElement;
    const d = (c.getContext('2d') as CanvasRenderingContext2D).getImageData(0, 0, c.width, c.height).data;
    const wanted = new Map(Object.entries(colours).map(([name, hex]) => [Number.parseInt(hex.slice(1), 16), name]));
    const counts: Record<string, number> = Object.fromEntries(Object.keys(colours).map((name) => [name, 0]));
    for (let i = 0; i < d.length; i += 4) {
      const name = wanted.get(((d[i] as number) << 16) | ((d[i + 1] as number) << 8) | (d[i + 2] as number));
      if (name !== undefined) counts[name] = (counts[name] ?? 0) + 1;
    }
    return counts;
  }, colours);
}

beforeAll(async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-500,-500,500,500' });
  browser = await launchChromium(env.chromium);
});

afterAll(async () => {
  await browser?.close();
  await t?.stop();
  await world?.stop();
});

test('the viewer draws the shard’s entities and a chosen player’s area of interest in a real browser', async () => {
  const player = await t.client('viewer-subject');
  const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
  await page.goto(`${t.shard.opsUrl}/viewer`);
  await page.waitForFunction(() => Number(document.body.dataset.frames ?? 0) >= 2, undefined, { timeout: 15_000 });
  expect(await page.locator('#stats').textContent()).toContain('301 owned entities');
  expect(await page.evaluate(() => document.body.dataset.entities)).toBe('301');

  // The first shard's colours: its players, its (dimmer) NPCs; and the focus highlight.
  const colours = { npc: '#26733a', player: '#3fb950', focus: '#f0883e' };
  const before = await countColours(page, colours);
  expect(before.npc).toBeGreaterThan(300);
  expect(before.player).toBeGreaterThan(0);

  // Frames keep being drawn meanwhile: wait for ones fetched after the choice (the fetch in flight
  // when it was made may predate it), not for a fixed count that may already have been reached.
  const framesAtChoice = Number(await page.evaluate(() => document.body.dataset.frames ?? 0));
  await page.selectOption('#focus', String(player.welcome?.entityId));
  await page.waitForFunction((n) => Number(document.body.dataset.frames ?? 0) >= n + 3, framesAtChoice, { timeout: 15_000 });
  const after = await countColours(page, colours);
  // The circle and the entities inside it are drawn in the focus colour.
  expect(before.focus).toBe(0);
  expect(after.focus).toBeGreaterThan(50);
  await page.screenshot({ path: `${env.logs}/viewer.png` });
  await page.close();
});

test('the viewer state refuses a focus that is not an entity id', async () => {
  const res = await fetch(`${t.shard.opsUrl}/viewer/state?focus=abc`);
  expect(res.status).toBe(400);
  expect(await res.text()).toContain('focus must be an entity id');
});

test('the viewer draws every shard of a world in one picture, with ghosts, and shows a shard that went down', async () => {
  const directory = mkdtempSync(join(tmpdir(), 'aethex-viewer-world-'));
  const publicKeyPem = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  world = await startLocalWorld({
    columns: 2,
    rows: 1,
    directory,
    publicKeyPem,
    basePort: 0,
    env: { AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '30', AETHEX_GAMESERVER_LOG_LEVEL: 'warn' },
    stdio: 'ignore',
  });
  const west = world.shards[0] as LocalShard;
  const east = world.shards[1] as LocalShard;

  // The page served by one shard reads the other's state cross-origin (a loopback page may).
  const res = await fetch(`${east.opsUrl}/viewer/state`, { headers: { origin: west.opsUrl } });
  expect(res.headers.get('access-control-allow-origin')).toBe(west.opsUrl);

  // With regions 500 wide and an area of interest of 200, some NPCs near the border are mirrored
  // to the neighbour once the link is up.
  const ghostsOf = async (opsUrl: string) => {
    const s = (await (await fetch(`${opsUrl}/viewer/state`)).json()) as { entities: number[] };
    let n = 0;
    for (let i = 4; i < s.entities.length; i += 5) if (s.entities[i] === 1) n++;
    return n;
  };
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ghosts = await Promise.all([ghostsOf(west.opsUrl), ghostsOf(east.opsUrl)]);
    if (ghosts.every((n) => n > 0)) break;
    if (Date.now() > deadline) throw new Error(`no ghosts on both shards within 20 s: ${ghosts.join(', ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
  const shards = encodeURIComponent(world.shards.map((s) => s.opsUrl).join(','));
  await page.goto(`${west.opsUrl}/viewer?shards=${shards}`);
  await page.waitForFunction(
    () => Number(document.body.dataset.frames ?? 0) >= 3 && document.body.dataset.shards === '2' && document.body.dataset.entities === '60',
    undefined,
    { timeout: 15_000 },
  );
  expect(Number(await page.evaluate(() => document.body.dataset.ghosts))).toBeGreaterThan(0);
  expect(await page.locator('#legend').textContent()).toContain('ghost');
  const table = await page.locator('#shards').textContent();
  expect(table).toContain(west.name);
  expect(table).toContain(east.name);
  // Each shard's NPCs in its own colour.
  const counts = await countColours(page, { west: '#26733a', east: '#3a6ca6' });
  expect(counts.west).toBeGreaterThan(30);
  expect(counts.east).toBeGreaterThan(30);
  await page.screenshot({ path: `${env.logs}/viewer-world.png` });

  // A shard that stops answering is shown as down while the other is still drawn.
  await east.kill('SIGKILL');
  await page.waitForFunction(() => document.body.dataset.shards === '1' && document.body.dataset.entities === '30', undefined, {
    timeout: 15_000,
  });
  expect(await page.locator('#shards tr.down').textContent()).toContain('down');
  const frames = Number(await page.evaluate(() => document.body.dataset.frames));
  await page.waitForFunction((f) => Number(document.body.dataset.frames ?? 0) >= f + 3, frames, { timeout: 15_000 });
  await page.close();
});
