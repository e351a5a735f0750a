import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortBlock } from '@aethex/runtime';
import { expect, it } from 'vitest';
import { until } from './harness.js';

const root = join(import.meta.dirname, '../..');

it('`npm start` runs the example world on the local runtime with bots on every shard, and Ctrl-C stops it all', async () => {
  // Shards take base + 2k and base + 2k + 1 (four shards and the bots' ops), the status port base + 10.
  const base = await freePortBlock(11);
  const statusPort = base + 10;
  const dir = mkdtempSync(join(tmpdir(), 'aethex-start-'));
  const child = spawn(
    process.execPath,
    [
      '--conditions=aethex-source',
      '--import',
      'tsx',
      'scripts/dev.ts',
      '--bots',
      '8',
      '--npcs',
      '20',
      '--base-port',
      String(base),
      '--status-port',
      String(statusPort),
      '--directory',
      dir,
    ],
    { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await until('the world to be announced', async () => (out.includes('frontier-0-3') ? true : undefined), 90_000, 250).catch((err) => {
      throw new Error(`${err.message}:\n${out}`);
    });
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
  } finally {
    // Ctrl-C: SIGINT to the whole process group, as a terminal does.
    if (child.pid) process.kill(-child.pid, 'SIGINT');
  }
  expect(await exited).toBe(0);
  await new Promise((r) => setTimeout(r, 500));
  const pids = (await (await import('node:fs/promises')).readdir(dir, { recursive: true })).filter((f) => f.endsWith('pid'));
  for (const f of pids) {
    const pid = Number((await (await import('node:fs/promises')).readFile(join(dir, f), 'utf8')).trim());
    expect(() => process.kill(pid, 0), `shard ${f} (pid ${pid}) still running`).toThrow();
  }
}, 180_000);
