import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePortBlock } from '@aethex/runtime';
import { killProcesses, spawnSource, type TestProcess } from '@aethex/testing/process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from './harness.js';

// The operator's local runtime with real processes: `main.ts --runtime local -f <file>` runs every
// shard of a 1 × 2 world on this machine, restarts a killed one, applies edits to the file
// (scale up, new bounds rolled one shard at a time, scale down, a bad edit ignored) and stops
// every shard when it is told to stop; a run after the operator was killed stops what it left.

const root = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'aethex-local-'));
const file = join(dir, 'world.yaml');
const state = join(dir, 'state');
let base = 0;
let operator: TestProcess;
let statusUrl = '';
const seenPids = new Set<number>();

function world(o: { instances: number; maxX: number; minX?: number }): string {
  return `# a small world for the local runtime test
apiVersion: aethex.dev/v1alpha1
kind: GameWorld
metadata: { name: mini }
spec:
  image: ghcr.io/aethex/gameserver:0.1.0
  world: { bounds: { minX: ${o.minX ?? 0}, minY: 0, maxX: ${o.maxX}, maxY: 200 }, tickRate: 20 }
  sharding: { columns: 2, rows: 1 }
  instances: ${o.instances}
  persistence: { snapshotIntervalSeconds: 1 }
  updateStrategy: { maxUnavailable: 1 }
  template:
    env:
      - { name: AETHEX_GAMESERVER_ENGINE_NPC_COUNT, value: "20" }
`;
}

interface Proc {
  name: string;
  instance: number;
  shard: number;
  pid: number;
  state: string;
  ops: string;
  gateway: string;
  restarts: number;
}
interface Status {
  worlds: {
    name: string;
    errors: string[];
    status?: { shardSummary: string; conditions: { type: string; status: string }[] };
    processes: Proc[];
  }[];
}

async function status(): Promise<Status['worlds'][number]> {
  const s = (await (await fetch(statusUrl)).json()) as Status;
  const w = s.worlds.find((x) => x.name === 'mini');
  if (!w) throw new Error('no world mini');
  for (const p of w.processes) seenPids.add(p.pid);
  return w;
}

/** The world once every shard process it wants (and nothing else) runs and is ready. */
async function converged(names: string[]): Promise<Status['worlds'][number] | undefined> {
  const w = await status();
  const ready = w.processes.filter((p) => p.state === 'ready').map((p) => p.name);
  const summary = `${names.length}/${names.length}`;
  const progressing = w.status?.conditions.find((c) => c.type === 'Progressing')?.status;
  return w.processes.length === names.length &&
    names.every((n) => ready.includes(n)) &&
    w.status?.shardSummary === summary &&
    progressing === 'False'
    ? w
    : undefined;
}

async function viewer(ops: string): Promise<{ shard: string; bounds: Record<string, number>; region: Record<string, number> }> {
  return (await (await fetch(`${ops}/viewer/state`)).json()) as {
    shard: string;
    bounds: Record<string, number>;
    region: Record<string, number>;
  };
}

async function readyz(port: number): Promise<boolean> {
  try {
    return (await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200;
  } catch {
    return false;
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A shard's log since its process last started (the log is appended to across restarts). */
function lastRun(shard: string): string {
  const log = readFileSync(join(state, 'mini', shard, 'shard.log'), 'utf8');
  return log.slice(log.lastIndexOf('\n--- ') + 1);
}

const byName = (w: Status['worlds'][number]) => new Map(w.processes.map((p) => [p.name, p]));

const keys = generateKeyPairSync('ed25519');

/** Starts `main.ts --runtime local -f <file>` on the test's directory and waits for its HTTP address. */
async function startOperator(): Promise<void> {
  operator = spawnSource(join(root, 'operator/src/main.ts'), ['--runtime', 'local', '-f', file], {
    cwd: root,
    env: {
      AETHEX_OPERATOR_HTTP_LISTEN: '127.0.0.1:0',
      AETHEX_OPERATOR_LOCAL_DIRECTORY: state,
      AETHEX_OPERATOR_LOCAL_BASE_PORT: String(base),
      AETHEX_OPERATOR_LOCAL_ENV: JSON.stringify({ AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: 5000 }),
      AETHEX_OPERATOR_LOG_LEVEL: 'info',
      // Passed through to the shards: the join-token key they trust.
      AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    },
  });
  const listening = /"address":"(127\.0\.0\.1:\d+)".*operator listening/;
  const line = await operator.line((l) => listening.test(l), 'the operator to listen', 30_000);
  statusUrl = `http://${listening.exec(line)?.[1]}/status`;
}

beforeAll(async () => {
  base = await freePortBlock(10);
  writeFileSync(file, world({ instances: 1, maxX: 400 }));
  await startOperator();
}, 40_000);

afterAll(async () => {
  // Only if a test failed before the operator was stopped: nothing it started may outlive the run.
  await killProcesses();
  for (const pid of seenPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

describe('the local runtime', () => {
  it('starts every shard of the world with its region, neighbours and a local address', async () => {
    const w = await until('both shards ready', () => converged(['mini-0-0', 'mini-0-1']), 40_000);
    const shards = byName(w);
    expect(shards.get('mini-0-0')).toMatchObject({ gateway: `ws://127.0.0.1:${base}`, ops: `http://127.0.0.1:${base + 1}`, restarts: 0 });
    expect(shards.get('mini-0-1')).toMatchObject({ gateway: `ws://127.0.0.1:${base + 2}`, ops: `http://127.0.0.1:${base + 3}` });
    // The shards themselves say which region they simulate, in which world.
    expect(await viewer(`http://127.0.0.1:${base + 1}`)).toMatchObject({
      shard: 'mini-0-0',
      bounds: { minX: 0, minY: 0, maxX: 400, maxY: 200 },
      region: { minX: 0, minY: 0, maxX: 200, maxY: 200 },
    });
    expect(await viewer(`http://127.0.0.1:${base + 3}`)).toMatchObject({
      shard: 'mini-0-1',
      bounds: { minX: 0, minY: 0, maxX: 400, maxY: 200 },
      region: { minX: 200, minY: 0, maxX: 400, maxY: 200 },
    });
    // And they are linked to each other.
    const links = await (await fetch(`http://127.0.0.1:${base + 1}/metrics`)).text();
    expect(links).toContain('aether_shard_links_up{neighbour="mini-0-1",direction="out"} 1');
    const map = JSON.parse(readFileSync(join(state, 'mini/shard-map.json'), 'utf8'));
    expect(map).toMatchObject({ world: 'mini', columns: 2, rows: 1 });
    expect(map.instances).toEqual([
      {
        instance: 0,
        shards: [
          { shard: 0, name: 'mini-0-0', region: { minX: 0, minY: 0, maxX: 200, maxY: 200 }, neighbours: [1], address: `127.0.0.1:${base}` },
          {
            shard: 1,
            name: 'mini-0-1',
            region: { minX: 200, minY: 0, maxX: 400, maxY: 200 },
            neighbours: [0],
            address: `127.0.0.1:${base + 2}`,
          },
        ],
      },
    ]);
    expect(operator.output()).toContain('"msg":"world ready"');
  }, 45_000);

  it('restarts a shard process that was killed', async () => {
    const before = byName(await status()).get('mini-0-0') as Proc;
    process.kill(before.pid, 'SIGKILL');
    const w = await until(
      'the killed shard to run again',
      async () => {
        const w = await converged(['mini-0-0', 'mini-0-1']);
        const p = w && byName(w).get('mini-0-0');
        return p && p.pid !== before.pid ? w : undefined;
      },
      30_000,
    );
    expect(byName(w).get('mini-0-0')).toMatchObject({ restarts: 1, ops: before.ops });
    expect(alive(before.pid)).toBe(false);
    expect(operator.output()).toContain('"exit":"killed by SIGKILL"');
  }, 35_000);

  it('scales up when the file asks for more instances', async () => {
    writeFileSync(file, world({ instances: 2, maxX: 400 }));
    const w = await until('four shards ready', () => converged(['mini-0-0', 'mini-0-1', 'mini-1-0', 'mini-1-1']), 30_000);
    expect(byName(w).get('mini-1-0')?.ops).toBe(`http://127.0.0.1:${base + 5}`);
    expect(byName(w).get('mini-1-1')?.ops).toBe(`http://127.0.0.1:${base + 7}`);
    expect(await viewer(`http://127.0.0.1:${base + 7}`)).toMatchObject({ shard: 'mini-1-1', region: { minX: 200, maxX: 400 } });
    const map = JSON.parse(readFileSync(join(state, 'mini/shard-map.json'), 'utf8'));
    expect(map.instances.map((i: { instance: number }) => i.instance)).toEqual([0, 1]);
  }, 35_000);

  it('rolls new bounds one shard at a time, never more than maxUnavailable down', async () => {
    const before = byName(await status());
    const opsPorts = [1, 3, 5, 7].map((o) => base + o);
    let sampling = true;
    let maxDown = 0;
    const sampler = (async () => {
      while (sampling) {
        const up = await Promise.all(opsPorts.map(readyz));
        maxDown = Math.max(maxDown, up.filter((u) => !u).length);
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    writeFileSync(file, world({ instances: 2, maxX: 800 }));
    const w = await until(
      'every shard restarted with the new bounds',
      async () => {
        const w = await converged(['mini-0-0', 'mini-0-1', 'mini-1-0', 'mini-1-1']);
        return w?.processes.every((p) => p.pid !== before.get(p.name)?.pid) ? w : undefined;
      },
      60_000,
      250,
    );
    sampling = false;
    await sampler;
    expect(maxDown).toBe(1);
    for (const p of w.processes) {
      const half = p.shard === 0 ? { minX: 0, maxX: 400 } : { minX: 400, maxX: 800 };
      expect(await viewer(p.ops)).toMatchObject({ shard: p.name, region: { ...half, minY: 0, maxY: 200 }, bounds: { minX: 0, maxX: 800 } });
      expect(p.ops).toBe(before.get(p.name)?.ops);
      expect(alive(before.get(p.name)?.pid as number)).toBe(false);
    }
  }, 70_000);

  it('stops the extra shards (SIGTERM, drained) when scaled back down', async () => {
    const before = byName(await status());
    writeFileSync(file, world({ instances: 1, maxX: 800 }));
    await until('two shards left', () => converged(['mini-0-0', 'mini-0-1']), 30_000);
    for (const name of ['mini-1-0', 'mini-1-1']) {
      await until(`${name} to exit`, async () => (alive(before.get(name)?.pid as number) ? undefined : true), 15_000);
      // The shard drained on SIGTERM rather than being killed.
      expect(lastRun(name)).toContain('"msg":"drained; exiting"');
    }
    expect(byName(await status()).get('mini-0-0')?.pid).toBe(before.get('mini-0-0')?.pid);
  }, 35_000);

  it('keeps the last good world running when an edit is invalid, and says which field is wrong', async () => {
    const before = await status();
    writeFileSync(file, world({ instances: 3, minX: 900, maxX: 800 }));
    const w = await until('the error to be reported', async () => ((await status()).errors.length > 0 ? status() : undefined), 10_000);
    expect(w.errors).toEqual(['spec.world.bounds.minX: bounds.minX must be less than bounds.maxX']);
    expect(operator.output()).toContain('invalid GameWorld; the last good spec keeps running');
    await new Promise((r) => setTimeout(r, 1500));
    expect((await status()).processes.map((p) => p.pid).sort()).toEqual(before.processes.map((p) => p.pid).sort());
    // Putting the last good spec back clears the error and changes nothing else.
    writeFileSync(file, world({ instances: 1, maxX: 800 }));
    await until('the error to clear', async () => ((await status()).errors.length === 0 ? true : undefined), 10_000);
    expect((await status()).processes.map((p) => p.pid).sort()).toEqual(before.processes.map((p) => p.pid).sort());
  }, 30_000);

  it('refuses an edit its shards would refuse at start, naming the field, and keeps the shards running', async () => {
    const before = await status();
    // 2,000,000 from 0 needs a max speed of 12.5: on the default 5 every shard would exit 2.
    writeFileSync(file, world({ instances: 1, maxX: 2_000_000 }));
    const w = await until('the error to be reported', async () => ((await status()).errors.length > 0 ? status() : undefined), 10_000);
    expect(w.errors).toEqual([
      expect.stringMatching(
        /^spec\.world\.bounds: too far from 0 for spec\.world\.maxSpeed \(5\): .*0\.125 apart at 2000000.*at least 12\.5$/,
      ),
    ]);
    await new Promise((r) => setTimeout(r, 1500));
    expect((await status()).processes.map((p) => p.pid).sort()).toEqual(before.processes.map((p) => p.pid).sort());
    writeFileSync(file, world({ instances: 1, maxX: 800 }));
    await until('the error to clear', async () => ((await status()).errors.length === 0 ? true : undefined), 10_000);
  }, 30_000);

  it('stops the shards a killed operator left behind when it starts again', async () => {
    const left = (await status()).processes.map((p) => p.pid);
    operator.kill('SIGKILL');
    await operator.exited;
    // Nothing stops them now: they run on without the operator.
    for (const pid of left) expect(alive(pid)).toBe(true);
    await startOperator();
    const w = await until(
      'new shards in place of the old ones',
      async () => {
        const w = await converged(['mini-0-0', 'mini-0-1']);
        return w?.processes.every((p) => !left.includes(p.pid)) ? w : undefined;
      },
      40_000,
    );
    for (const pid of left) expect(alive(pid)).toBe(false);
    expect(operator.output()).toContain('stopping a shard left running by an earlier run');
    expect(w.errors).toEqual([]);
    // The same slots, and the snapshots the old shards wrote were restored.
    expect(byName(w).get('mini-0-0')?.ops).toBe(`http://127.0.0.1:${base + 1}`);
    expect(readFileSync(join(state, 'mini/mini-0-0/shard.log'), 'utf8')).toContain('"msg":"restored from snapshot"');
  }, 50_000);

  it('stops every shard and exits 0 on SIGTERM', async () => {
    const pids = (await status()).processes.map((p) => p.pid);
    operator.kill('SIGTERM');
    expect((await operator.exited).code).toBe(0);
    for (const pid of [...seenPids, ...pids]) expect(alive(pid), `pid ${pid}`).toBe(false);
    expect(operator.output()).toContain('"msg":"every shard stopped"');
    for (const name of ['mini-0-0', 'mini-0-1']) expect(lastRun(name)).toContain('"msg":"drained; exiting"');
  }, 40_000);
});
