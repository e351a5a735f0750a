import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { RealtimeClient } from '@aethex/sdk';
import { afterAll, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { until } from './harness.js';
import { type Stall, stalledWithin, watchStalls } from './stall-probe.js';

/**
 * The shard under attack runs on a thread of its own (`startTestShard`), as it would in a process
 * of its own: a stall of this test's thread (its GC, the honest clients, Vitest) then delays only
 * what the honest clients see, and is measured apart from the shard's. The thread posts the
 * gateway's URL and a join token for each of `workerData.players`; asked (any message), it posts
 * each tick since the start (its end, epoch ms; wall and CPU ms; the thread's run-queue wait so
 * far, ms), the engine's tick, the bad-message counter and the unhandled rejections it saw, and
 * drains.
 */
const SHARD_THREAD = `(async () => {
  const { parentPort, workerData } = await import('node:worker_threads');
  (await import(workerData.tsx)).register();
  const { runQueueWaitMs, threadCpuMs } = await import('@aethex/runtime');
  const { startTestShard } = await import(workerData.harness);
  const rejections = [];
  process.on('unhandledRejection', (err) => rejections.push(String(err?.stack ?? err)));
  const ticks = [];
  let cpu = 0;
  const t = await startTestShard(
    workerData.env,
    undefined,
    (ms) => ticks.push({ at: performance.timeOrigin + performance.now(), ms, cpuMs: threadCpuMs() - cpu, waited: runQueueWaitMs() }),
    () => {
      cpu = threadCpuMs();
    },
  );
  const tokens = await Promise.all(workerData.players.map((p) => t.token(p)));
  parentPort.postMessage({ url: t.shard.gatewayUrl, tokens });
  parentPort.once('message', async () => {
    const bad = await t.shard.metrics.registry.getSingleMetricAsString('aether_bad_messages_total');
    parentPort.postMessage({ ticks, tick: t.shard.engine.tick, bad, rejections });
    await t.stop();
    parentPort.close();
  });
})();`;

interface ShardReport {
  /**
   * Each tick: its end (epoch ms), its wall time, the CPU time the shard's thread spent in it (no
   * other thread's) and that thread's run-queue wait since it started (ms): the time it was ready
   * to run but the shared machine ran something else.
   */
  ticks: { at: number; ms: number; cpuMs: number; waited: number }[];
  tick: number;
  bad: string;
  rejections: string[];
}

let shard: Worker | undefined;
const honest: RealtimeClient[] = [];
/** The probe and the fuzzer, ended whatever the test did (a failed wait included). */
const children: ChildProcess[] = [];
let stopWatching = () => {};
afterAll(async () => {
  stopWatching();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const c of honest) c.close();
  await shard?.terminate();
});

test('random and truncated frames from 100 connections at 1,000/s: no crash, honest players keep a steady stream', async () => {
  const rejections: unknown[] = [];
  const onRejection = (err: unknown) => rejections.push(err);
  process.on('unhandledRejection', onRejection);
  const players = [...Array.from({ length: 10 }, (_, i) => `honest-${i}`), ...Array.from({ length: 50 }, (_, i) => `fuzzer-${i}`)];
  shard = new Worker(SHARD_THREAD, {
    eval: true,
    execArgv: [...process.execArgv, '--conditions=aethex-source'],
    workerData: {
      tsx: import.meta.resolve('tsx/esm/api'),
      harness: new URL('./harness.ts', import.meta.url).href,
      players,
      env: {
        AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '200',
        AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-500,-500,500,500',
        // The 100 connections of one address stand for 100 clients: neither its cap nor its rate of
        // new connections may stop them reconnecting.
        AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '500',
        AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '10000',
        AETHEX_GAMESERVER_LOG_LEVEL: 'error',
      },
    },
  });
  const worker = shard;
  const fromShard = <T>() =>
    new Promise<T>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
  const { url, tokens } = await fromShard<{ url: string; tokens: string[] }>();
  for (let i = 0; i < 10; i++) {
    const c = new RealtimeClient({ url, joinToken: tokens[i] as string, createSocket: (u) => new WebSocket(u) as never });
    honest.push(c);
    await c.connect();
  }
  const tokensFile = join(mkdtempSync(join(tmpdir(), 'aethex-fuzz-')), 'tokens.json');
  writeFileSync(tokensFile, JSON.stringify(tokens.slice(10)));

  // Snapshot arrival times (epoch ms) per honest player; the stalls of this thread, which the
  // honest players share; and, in a process of its own, the machine's.
  const arrivals = honest.map((c) => {
    const at: number[] = [];
    c.on('snapshot', () => at.push(performance.timeOrigin + performance.now()));
    return at;
  });
  const ownStalls: Stall[] = [];
  stopWatching = watchStalls((s) => ownStalls.push(s));
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

  const measureFrom = performance.timeOrigin + performance.now();
  const drive = setInterval(() => {
    for (const c of honest) c.move(Math.random() * 6 - 3, Math.random() * 6 - 3);
  }, 25);
  const fuzz = spawn(
    process.execPath,
    ['--conditions=aethex-source', '--import', 'tsx', join(import.meta.dirname, 'fuzz-clients.ts'), url, tokensFile, '100', '1000', '10'],
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
  stopWatching();
  const report = fromShard<ShardReport>();
  worker.postMessage('report');
  const { ticks, tick, bad, rejections: shardRejections } = await report;
  process.off('unhandledRejection', onRejection);
  expect(code).toBe(0);
  const summary = JSON.parse(out.trim().split('\n').pop() as string) as { sent: number; reconnects: number; errors: number };
  // 1,000 frames a second for 10 s (the fuzzer keeps its rate by the clock; a stall at its very end
  // may cost a little).
  expect(summary.sent).toBeGreaterThan(8000);

  // The bad frames were rejected and counted, offenders closed, and nothing escaped.
  const total = [...bad.matchAll(/aether_bad_messages_total\{[^}]*\} (\d+)/g)].reduce((s, m) => s + Number(m[1]), 0);
  expect(total).toBeGreaterThan(1000);
  expect(summary.reconnects).toBeGreaterThan(50);
  // Bad messages were explained, never more replies than bad messages.
  expect(summary.errors).toBeGreaterThan(0);
  expect(summary.errors).toBeLessThanOrEqual(total);
  expect([...rejections, ...shardRejections]).toEqual([]);
  // Honest players were never disconnected and never saw a gap in their snapshots over 100 ms
  // during the attack, less the time the shard was not run or they were not: the whole machine
  // stopped (an idle process beside us was not run either), the shard's thread waited for a CPU
  // the attackers and the test environment held, or this thread, the honest players', was not
  // run (its stalls are not the shard's). Gaps excused so are listed, not hidden.
  const machine = probeOut
    .split('\n')
    .filter((l) => l.startsWith('{"at"'))
    .map((l) => JSON.parse(l) as Stall);
  const waitedWithin = (a: number, b: number) => {
    const from = ticks.findLast((k) => k.at <= a);
    const to = ticks.find((k) => k.at >= b);
    return from && to ? to.waited - from.waited : 0;
  };
  // The bound is on the shard's work in a tick: its wall time, but no more than the CPU its thread
  // used in it (the attackers, the test environment and the VM share these two
  // cores, and the shard's thread waits for them; attackers would be on other machines). Both
  // figures are printed.
  const measured = ticks.filter((k) => k.at >= measureFrom);
  const pct99 = (values: number[]) => values.sort((a, b) => a - b)[Math.ceil(values.length * 0.99) - 1] as number;
  const wallP99 = pct99(measured.map((k) => k.ms));
  const p99 = pct99(measured.map((k) => Math.min(k.ms, k.cpuMs)));
  const maxTick = Math.max(...measured.map((k) => k.ms));
  const longGaps: string[] = [];
  const excused: string[] = [];
  let maxGap = 0;
  arrivals.forEach((at, i) => {
    for (let k = 1; k < at.length; k++) {
      const [a, b] = [at[k - 1] as number, at[k] as number];
      if (b < attackFrom || a > attackTo) continue;
      maxGap = Math.max(maxGap, b - a);
      if (b - a <= 100) continue;
      const stalled = stalledWithin(machine, a, b);
      const waited = waitedWithin(a, b);
      const late = stalledWithin(ownStalls, a, b);
      const what = `honest-${i}: ${(b - a).toFixed(0)} ms at +${(a - attackFrom).toFixed(0)} ms (machine stalled ${stalled.toFixed(0)} ms of it, shard waited for a CPU ${waited.toFixed(0)} ms, the honest players' thread stalled ${late.toFixed(0)} ms)`;
      (b - a - Math.max(stalled, waited, late) <= 100 ? excused : longGaps).push(what);
    }
  });
  console.log(
    `hostile input: ${summary.sent} frames, ${total} rejected, tick p99 ${p99.toFixed(2)} ms of work (${wallP99.toFixed(2)} wall, max ${maxTick.toFixed(2)}) over ${measured.length} ticks; longest honest snapshot gap ${maxGap.toFixed(0)} ms; machine stalls ${machine.length}, honest players' thread stalls ${ownStalls.length}${excused.length ? ` (excused: ${excused.join('; ')})` : ''}`,
  );
  for (const c of honest) expect(c.lastTick).toBeGreaterThan(tick - 5);
  expect(arrivals.every((at) => at.filter((x) => x >= attackFrom && x <= attackTo).length > 200)).toBe(true);
  expect(longGaps).toEqual([]);
  expect(p99).toBeLessThanOrEqual(10);
  // The shard drains and its thread ends.
  for (const c of honest) c.close();
  await new Promise((r) => worker.once('exit', r));
}, 60_000);
