import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runQueueWaitMs } from '@aethex/runtime';
import type { RealtimeClient } from '@aethex/sdk';
import { afterAll, expect, test } from 'vitest';
import { startTestShard, type TestShard, until } from './harness.js';

let t: TestShard | undefined;
/** The probe and the fuzzer, ended whatever the test did (a failed wait included). */
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await t?.stop();
});

test('random and truncated frames from 100 connections at 1,000/s: no crash, honest players keep a steady stream', async () => {
  // Each tick's wall time and the CPU time the process spent in it.
  const ticks: { ms: number; cpuMs: number }[] = [];
  // The shard's thread's run-queue wait (ms, cumulative) over time: the time it was ready to run
  // but the shared machine ran something else. Sampled on each tick and snapshot arrival.
  const waits: { at: number; ms: number }[] = [];
  const sampleWait = (at: number) => {
    const last = waits[waits.length - 1];
    if (!last || at - last.at >= 1) waits.push({ at, ms: runQueueWaitMs() });
  };
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on('unhandledRejection', onRejection);
  t = await startTestShard(
    {
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '200',
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-500,-500,500,500',
      // The 100 connections of one address stand for 100 clients: neither its cap nor its rate of
      // new connections may stop them reconnecting.
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '500',
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '10000',
      AETHEX_GAMESERVER_LOG_LEVEL: 'error',
    },
    undefined,
    (ms, cpuMs) => {
      ticks.push({ ms, cpuMs });
      sampleWait(performance.timeOrigin + performance.now());
    },
  );
  const honest: RealtimeClient[] = [];
  for (let i = 0; i < 10; i++) honest.push(await t.client(`honest-${i}`));
  const tokens = await Promise.all(Array.from({ length: 50 }, (_, i) => t?.token(`fuzzer-${i}`) as Promise<string>));
  const tokensFile = join(mkdtempSync(join(tmpdir(), 'aethex-fuzz-')), 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify(tokens));

  // Snapshot arrival times (epoch ms) per honest player, and the machine's own stalls.
  const arrivals = honest.map((c) => {
    const at: number[] = [];
    c.on('snapshot', () => {
      const now = performance.timeOrigin + performance.now();
      at.push(now);
      sampleWait(now);
    });
    return at;
  });
  const probe = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'stall-probe.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(probe);
  let probeOut = '';
  probe.stdout.on('data', (d) => {
    probeOut += d;
  });
  await until('the stall probe to start', () => probeOut.includes('ready'), 20_000);
  // Start once the machine is quiet (a second without a stall, for at most 15 s): processes of the
  // test before this one may still be winding down.
  for (let i = 0; i < 15; i++) {
    const seen = probeOut.length;
    await new Promise((r) => setTimeout(r, 1000));
    if (probeOut.length === seen) break;
  }

  const measureFrom = ticks.length;
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
  children.push(fuzz);
  let out = '';
  let attackFrom = Number.POSITIVE_INFINITY;
  fuzz.stdout.on('data', (d) => {
    if (out === '') attackFrom = performance.timeOrigin + performance.now();
    out += d;
  });
  const code = await new Promise<number | null>((r) => fuzz.on('exit', r));
  const attackTo = performance.timeOrigin + performance.now();
  clearInterval(drive);
  probe.kill();
  process.off('unhandledRejection', onRejection);
  expect(code).toBe(0);
  const summary = JSON.parse(out.trim().split('\n').pop() as string) as { sent: number; reconnects: number; errors: number };
  expect(summary.sent).toBeGreaterThan(5000);

  // The bad frames were rejected and counted, offenders closed, and nothing escaped.
  const bad = await t.shard.metrics.registry.getSingleMetricAsString('aether_bad_messages_total');
  const total = [...bad.matchAll(/aether_bad_messages_total\{[^}]*\} (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
  expect(total).toBeGreaterThan(1000);
  expect(summary.reconnects).toBeGreaterThan(50);
  // Bad messages were explained, never more replies than bad messages.
  expect(summary.errors).toBeGreaterThan(0);
  expect(summary.errors).toBeLessThanOrEqual(total);
  expect(rejections).toEqual([]);
  // Honest players were never disconnected and never saw a gap in their snapshots over 100 ms
  // during the attack, less the time the shard was not run: the whole machine stopped (an idle
  // process beside us was not run either) or the shard's thread waited for a CPU the attackers
  // and the test environment held. Gaps excused so are listed, not hidden.
  const stalls = probeOut
    .split('\n')
    .filter((l) => l.startsWith('{"at"'))
    .map((l) => JSON.parse(l) as { at: number; ms: number });
  const stalledWithin = (a: number, b: number) =>
    stalls.reduce((sum, s) => sum + Math.max(0, Math.min(b, s.at + s.ms) - Math.max(a, s.at)), 0);
  const waitedWithin = (a: number, b: number) => {
    const from = waits.findLast((w) => w.at <= a);
    const to = waits.find((w) => w.at >= b);
    return from && to ? to.ms - from.ms : 0;
  };
  // The bound is on the shard's work in a tick: its wall time less the time the process was not run
  // at all (the attackers, the test environment and the VM share these two cores; attackers would
  // be on other machines). Both figures are printed.
  const measured = ticks.slice(measureFrom);
  const pct99 = (values: number[]) => values.sort((a, b) => a - b)[Math.ceil(values.length * 0.99) - 1] as number;
  const wallP99 = pct99(measured.map((k) => k.ms));
  const p99 = pct99(measured.map((k) => Math.min(k.ms, k.cpuMs)));
  const maxTick = Math.max(...measured.map((k) => k.ms));
  const longGaps: string[] = [];
  const machineStalls: string[] = [];
  let maxGap = 0;
  arrivals.forEach((at, i) => {
    for (let k = 1; k < at.length; k++) {
      const [a, b] = [at[k - 1] as number, at[k] as number];
      if (b < attackFrom || a > attackTo) continue;
      maxGap = Math.max(maxGap, b - a);
      if (b - a <= 100) continue;
      const stalled = stalledWithin(a, b);
      const waited = waitedWithin(a, b);
      const what = `honest-${i}: ${(b - a).toFixed(0)} ms at +${(a - attackFrom).toFixed(0)} ms (machine stalled ${stalled.toFixed(0)} ms of it, shard waited for a CPU ${waited.toFixed(0)} ms)`;
      (b - a - Math.max(stalled, waited) <= 100 ? machineStalls : longGaps).push(what);
    }
  });
  console.log(
    `hostile input: ${summary.sent} frames, ${total} rejected, tick p99 ${p99.toFixed(2)} ms of work (${wallP99.toFixed(2)} wall, max ${maxTick.toFixed(2)}) over ${measured.length} ticks; longest honest snapshot gap ${maxGap.toFixed(0)} ms; machine stalls ${stalls.length}${machineStalls.length ? ` (excused: ${machineStalls.join('; ')})` : ''}`,
  );
  for (const c of honest) expect(c.lastTick).toBeGreaterThan(t.shard.engine.tick - 5);
  expect(arrivals.every((at) => at.filter((x) => x >= attackFrom && x <= attackTo).length > 200)).toBe(true);
  expect(longGaps).toEqual([]);
  expect(p99).toBeLessThanOrEqual(10);
}, 60_000);
