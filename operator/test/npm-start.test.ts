import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortBlock } from '@aethex/runtime';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import { afterEach, expect, it } from 'vitest';
import { until } from './harness.js';

const root = join(import.meta.dirname, '../..');
afterEach(killProcesses);

it('`npm start` runs the example world on the local runtime with bots on every shard, and Ctrl-C stops it all', async () => {
  // Shards take base + 2k and base + 2k + 1 (four shards and the bots' ops), the status port base + 10.
  const base = await freePortBlock(11);
  const statusPort = base + 10;
  const dir = mkdtempSync(join(tmpdir(), 'aethex-start-'));
  const start = spawnSource(
    'scripts/dev.ts',
    ['--bots', '8', '--npcs', '20', '--base-port', String(base), '--status-port', String(statusPort), '--directory', dir],
    { cwd: root, group: true },
  );
  // The shards', the bots' and the operator's, seen while the world runs.
  const pids: number[] = [];
  try {
    await start.line((l) => l.includes('frontier-0-3'), 'the world to be announced', 90_000);
    const opsPorts = [1, 3, 5, 7].map((k) => base + k);
    // Every shard serves its region and has bots playing on it.
    const players = await until(
      'all 8 bots playing, some on every shard',
      async () => {
        const counts = await Promise.all(
          opsPorts.map(async (p) => {
            const text = await (await fetch(`http://127.0.0.1:${p}/metrics`)).text();
            return Number(/^aether_players (\d+)/m.exec(text)?.[1] ?? 0);
          }),
        );
        // All 8 at one instant: a bot between two shards in a handoff is counted by neither.
        return counts.every((c) => c > 0) && counts.reduce((a, b) => a + b, 0) === 8 ? counts : undefined;
      },
      60_000,
      500,
    );
    expect(players.reduce((a, b) => a + b, 0)).toBe(8);
    const region = (await (await fetch(`http://127.0.0.1:${base + 7}/viewer/state`)).json()) as { region: object };
    expect(region.region).toEqual({ minX: 0, minY: 0, maxX: 2000, maxY: 2000 });
    // What runs now: the shards (the local runtime's status lists them), and npm start's own
    // children, the operator and the bots (a process for each shard's).
    const status = (await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()) as { worlds: { processes: { pid: number }[] }[] };
    const shards = status.worlds.flatMap((w) => w.processes.map((p) => p.pid));
    const children = childrenOf(start.pid);
    const operators = children.filter((p) => p.cmd.includes('operator/src/main.ts')).map((p) => p.pid);
    const botProcesses = children.filter((p) => p.cmd.includes('sdk/src/bots.ts')).map((p) => p.pid);
    expect(shards).toHaveLength(4);
    expect(operators).toHaveLength(1);
    expect(botProcesses).toHaveLength(4);
    pids.push(...shards, ...operators, ...botProcesses);
    expect(pids.every(running)).toBe(true);
  } finally {
    // Ctrl-C: SIGINT to the whole process group, as a terminal does.
    start.kill('SIGINT');
  }
  expect((await start.exited).code).toBe(0);
  expect(pids).toHaveLength(9);
  await until('every shard, bot and operator process to exit', async () => (pids.some(running) ? undefined : true), 5000, 100).catch(
    (err) => {
      const left = pids.filter(running);
      // Nothing of the run may outlive the test.
      for (const pid of left) process.kill(pid, 'SIGKILL');
      throw new Error(`${err.message}: still running ${left.join(', ')}`);
    },
  );
}, 180_000);

/** The child processes of `parent`, with their command lines (from Linux's /proc). */
function childrenOf(parent: number): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, the fields after it do not.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) found.push({ pid: Number(entry), cmd: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ') });
    } catch {
      // It exited meanwhile.
    }
  }
  return found;
}

/** Whether `pid` runs: it exists and has not exited (an exited child nobody reaped yet is a zombie, state Z). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
