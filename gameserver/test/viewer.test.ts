import { testEnv } from '@aethex/testing';
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { startTestShard, type TestShard } from './harness.js';

const env = testEnv();
let t: TestShard;
let browser: Browser;

beforeAll(async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-500,-500,500,500' });
  browser = await chromium.launch({
    executablePath: env.chromium,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await t?.stop();
});

test('the viewer draws the shard’s entities and a chosen player’s area of interest in a real browser', async () => {
  const player = await t.client('viewer-subject');
  const page = await browser.newPage({ viewport: { width: 1000, height: 1000 } });
  await page.goto(`${t.shard.opsUrl}/viewer`);
  await page.waitForFunction(() => Number(document.body.dataset.frames ?? 0) >= 2, undefined, { timeout: 15_000 });
  expect(await page.locator('#stats').textContent()).toContain('301 entities');

  // Count drawn pixels by colour straight from the canvas.
  const countColours = () =>
    page.evaluate(() => {
      const c = document.getElementById('view') as HTMLCanvasElement;
      const d = (c.getContext('2d') as CanvasRenderingContext2D).getImageData(0, 0, c.width, c.height).data;
      const counts = { npc: 0, player: 0, focus: 0 };
      for (let i = 0; i < d.length; i += 4) {
        const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
        if (r === 0x8b && g === 0x94 && b === 0x9e) counts.npc++;
        else if (r === 0x3f && g === 0xb9 && b === 0x50) counts.player++;
        else if (r === 0xf0 && g === 0x88 && b === 0x3e) counts.focus++;
      }
      return counts;
    });
  const before = await countColours();
  expect(before.npc).toBeGreaterThan(300);
  expect(before.player).toBeGreaterThan(0);

  await page.selectOption('#focus', String(player.welcome?.entityId));
  await page.waitForFunction(() => Number(document.body.dataset.frames ?? 0) >= 5, undefined, { timeout: 15_000 });
  const after = await countColours();
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
