import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RealtimeClient } from '@aethex/sdk';
import { afterAll, expect, test } from 'vitest';
import { startTestShard, type TestShard } from './harness.js';

let t: TestShard | undefined;
afterAll(async () => t?.stop());

test('random and truncated frames from 100 connections at 1,000/s: no crash, honest players keep a steady stream', async () => {
  const ticks: number[] = [];
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on('unhandledRejection', onRejection);
  t = await startTestShard(
    {
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '200',
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-500,-500,500,500',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '500',
      AETHEX_GAMESERVER_LOG_LEVEL: 'error',
    },
    undefined,
    (ms) => ticks.push(ms),
  );
  const honest: RealtimeClient[] = [];
  for (let i = 0; i < 10; i++) honest.push(await t.client(`honest-${i}`));
  const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => t?.token(`fuzzer-${i}`) as Promise<string>));
  const tokensFile = join(mkdtempSync(join(tmpdir(), 'aethex-fuzz-')), 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify(tokens));

  const measureFrom = ticks.length;
  for (const c of honest) c.maxSnapshotGapMs = 0;
  const drive = setInterval(() => {
    for (const c of honest) c.move(Math.random() * 6 - 3, Math.random() * 6 - 3);
  }, 25);
  const fuzz = spawn(
    process.execPath,
    [
      '--conditions=aethex-source',
      '--import',
      'tsx',
      join(import.meta.dirname, 'fuzz-clients.ts'),
      t.shard.gatewayUrl,
      tokensFile,
      '100',
      '1000',
      '10',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let out = '';
  fuzz.stdout.on('data', (d) => {
    if (out === '') for (const c of honest) c.maxSnapshotGapMs = 0;
    out += d;
  });
  const code = await new Promise<number | null>((r) => fuzz.on('exit', r));
  clearInterval(drive);
  process.off('unhandledRejection', onRejection);
  expect(code).toBe(0);
  const summary = JSON.parse(out.trim().split('\n').pop() as string) as { sent: number; reconnects: number };
  expect(summary.sent).toBeGreaterThan(5000);

  // The bad frames were rejected and counted, offenders closed, and nothing escaped.
  const bad = await t.shard.metrics.registry.getSingleMetricAsString('aether_bad_messages_total');
  const total = [...bad.matchAll(/aether_bad_messages_total\{[^}]*\} (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
  expect(total).toBeGreaterThan(1000);
  expect(summary.reconnects).toBeGreaterThan(50);
  expect(rejections).toEqual([]);
  // Honest players were never disconnected and never saw a gap in their snapshots over 100 ms.
  for (const c of honest) {
    expect(c.lastTick).toBeGreaterThan(t.shard.engine.tick - 5);
    expect(c.maxSnapshotGapMs).toBeLessThanOrEqual(100);
  }
  const window = ticks.slice(measureFrom).sort((a, b) => a - b);
  const p99 = window[Math.ceil(window.length * 0.99) - 1] as number;
  console.log(`hostile input: ${summary.sent} frames, ${total} rejected, tick p99 ${p99.toFixed(2)} ms over ${window.length} ticks`);
  expect(p99).toBeLessThanOrEqual(10);
}, 60_000);
