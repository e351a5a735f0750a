import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { expect, it } from 'vitest';
import { cpuPercent, runQueueWaitMs, threadCpuMs } from './run-queue.js';

// A process that burns 600 ms of CPU and prints how long its thread waited for a CPU meanwhile.
const BURN = `
import { runQueueWaitMs } from ${JSON.stringify(join(import.meta.dirname, 'run-queue.ts'))};
const before = runQueueWaitMs();
const cpu = process.cpuUsage();
let x = 0;
while (process.cpuUsage(cpu).user < 600_000) for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
console.log(JSON.stringify({ waited: runQueueWaitMs() - before, x }));
`;
const burn = ['--import', 'tsx', '--input-type=module', '-e', BURN];

it('runQueueWaitMs counts the time a thread was ready to run but a busy CPU ran something else', () => {
  const own = runQueueWaitMs();
  expect(own).toBeGreaterThanOrEqual(0);
  // Two burners pinned to one CPU take turns: each waits for about as long as the other runs.
  const rival = spawn('taskset', ['-c', '0', process.execPath, ...burn], { stdio: 'ignore' });
  try {
    const r = spawnSync('taskset', ['-c', '0', process.execPath, ...burn], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const { waited } = JSON.parse(r.stdout.trim()) as { waited: number };
    expect(waited).toBeGreaterThan(200);
  } finally {
    rival.kill('SIGKILL');
  }
  expect(runQueueWaitMs()).toBeGreaterThanOrEqual(own);
});

it('threadCpuMs counts the calling thread’s time on a CPU, not the other threads of its process', async () => {
  const before = threadCpuMs();
  const process0 = process.cpuUsage();
  // Another thread of this process burns 300 ms of CPU while this one waits for it, idle.
  const worker = new Worker(
    'const s = Date.now(); let x = 0; while (Date.now() - s < 300) x = (x * 31 + 7) | 0; require("node:worker_threads").parentPort.postMessage(x);',
    { eval: true },
  );
  await once(worker, 'message');
  await worker.terminate();
  const processMs = (process.cpuUsage(process0).user + process.cpuUsage(process0).system) / 1000;
  const idleMs = threadCpuMs() - before;
  // The worker's CPU time (on a busy machine less than its 300 ms of wall time) is the process's.
  expect(processMs - idleMs).toBeGreaterThan(100);
  // This thread's own burn counts.
  const own = threadCpuMs();
  const cpu = process.cpuUsage();
  let x = 0;
  while (process.cpuUsage(cpu).user < 200_000) for (let i = 0; i < 100_000; i++) x = (x * 31 + i) | 0;
  expect(x).not.toBeNaN();
  expect(threadCpuMs() - own).toBeGreaterThan(150);
});

it('cpuPercent gives CPU over wall time in whole % of one core, and refuses an empty span', () => {
  expect(cpuPercent({ user: 300_000, system: 200_000 }, 1000)).toBe(50);
  expect(cpuPercent({ user: 1_500_000, system: 0 }, 1000)).toBe(150);
  expect(cpuPercent({ user: 1_234, system: 0 }, 100)).toBe(1);
  expect(() => cpuPercent({ user: 1, system: 0 }, 0)).toThrow('wallMs must be positive, got 0');
});
