import { expect, it } from 'vitest';
import { withDefaults } from '../api/gameworld.js';
import { localWorld } from './file.js';
import { localShardMap, localStatus, observeProcess, type ProcessView, planWorld, restartDelayMs } from './world.js';

const spec = (over: Record<string, unknown> = {}) =>
  withDefaults({ image: 'i:1', world: { bounds: { minX: 0, minY: 0, maxX: 200, maxY: 100 } }, sharding: { columns: 2 }, ...over });

/** Processes exactly as the previous plan wanted, all running and ready. */
function running(world: ReturnType<typeof localWorld>, instances: number[]): ProcessView[] {
  return planWorld(world, [], true)
    .desired.filter((d) => instances.includes(d.instance))
    .map((d) => ({ name: d.name, instance: d.instance, shard: d.shard, hash: d.hash, ready: true, alive: true, stopping: false }));
}

it('sees processes as the planner sees pods', () => {
  const p = { name: 'w-0-0', instance: 0, shard: 0, hash: 'h', ready: true, alive: true, stopping: false };
  expect(observeProcess(p)).toEqual({
    name: 'w-0-0',
    instance: 0,
    shard: 0,
    hash: 'h',
    ready: true,
    dead: false,
    terminating: false,
    allocated: false,
  });
  expect(observeProcess({ ...p, stopping: true })).toMatchObject({ ready: false, terminating: true, dead: false });
  expect(observeProcess({ ...p, alive: false })).toMatchObject({ ready: false, terminating: false, dead: true });
  // Asked to stop and gone: neither (the runtime forgets it).
  expect(observeProcess({ ...p, alive: false, stopping: true })).toMatchObject({ terminating: false, dead: false });
});

it('starts every shard, restarts dead ones, scales and rolls with the same plan as on Kubernetes', () => {
  const w1 = localWorld('w', spec(), 1);
  const fresh = planWorld(w1, [], true);
  expect(fresh.instances).toEqual([0]);
  expect(fresh.plan.create.map((d) => d.name)).toEqual(['w-0-0', 'w-0-1']);
  const podSpec = fresh.desired[1]?.manifest.spec as { containers: { env: { name: string; value: string }[] }[] } | undefined;
  const env = podSpec?.containers[0]?.env;
  // Every shard knows the whole world and finds its own region in the shard map.
  expect(env).toContainEqual({ name: 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS', value: '0,0,200,100' });
  expect(env).toContainEqual({ name: 'AETHEX_GAMESERVER_SHARD_MAP_FILE', value: '/etc/aethex/shard-map.json' });
  expect(env).toContainEqual({
    name: 'AETHEX_GAMESERVER_LINKS_SECRET',
    valueFrom: { secretKeyRef: { name: 'w-shard-links', key: 'secret' } },
  });

  const procs = running(w1, [0]);
  expect(planWorld(w1, procs.map(observeProcess), true).plan).toEqual({ create: [], delete: [], held: [] });

  // One died: deleted as Dead (and created again by the next pass).
  const died = procs.map((p, i) => (i === 0 ? { ...p, alive: false, ready: false } : p));
  expect(planWorld(w1, died.map(observeProcess), true).plan.delete).toEqual([{ name: 'w-0-0', reason: 'Dead' }]);

  // Scale to 2: instance 1's shards are created; back to 1: they are stopped.
  const w2 = localWorld('w', spec({ instances: 2 }), 2);
  expect(planWorld(w2, procs.map(observeProcess), true).plan.create.map((d) => d.name)).toEqual(['w-1-0', 'w-1-1']);
  const four = running(w2, [0, 1]);
  const w3 = localWorld('w', spec({ instances: 1 }), 3);
  expect(planWorld(w3, four.map(observeProcess), true).plan.delete).toEqual([
    { name: 'w-1-0', reason: 'ScaleDown' },
    { name: 'w-1-1', reason: 'ScaleDown' },
  ]);

  // New bounds: every shard is outdated, one rolls at a time (maxUnavailable 1).
  const w4 = localWorld('w', spec({ world: { bounds: { minX: 0, minY: 0, maxX: 400, maxY: 100 } } }), 4);
  const roll = planWorld(w4, procs.map(observeProcess), true).plan;
  expect(roll.delete).toEqual([{ name: 'w-0-0', reason: 'Update' }]);
  expect(roll.held).toEqual([{ name: 'w-0-1', reason: 'MaxUnavailable' }]);
  const draining = procs.map((p, i) => (i === 0 ? { ...p, stopping: true } : p));
  expect(planWorld(w4, draining.map(observeProcess), true).plan.delete).toEqual([]);

  // A world taken out of the file wants nothing.
  expect(planWorld(w1, procs.map(observeProcess), false).plan.delete.map((d) => d.reason)).toEqual(['ScaleDown', 'ScaleDown']);
});

it('gives the shard map and status local addresses', () => {
  const w = localWorld('w', spec(), 1);
  const address = (name: string) => `127.0.0.1:${name === 'w-0-0' ? 7700 : 7702}`;
  const map = localShardMap(w, [0], address);
  expect(map).toMatchObject({ world: 'w', columns: 2, rows: 1 });
  expect(map.instances[0]?.shards).toEqual([
    { shard: 0, name: 'w-0-0', region: { minX: 0, minY: 0, maxX: 100, maxY: 100 }, neighbours: [1], address: '127.0.0.1:7700' },
    { shard: 1, name: 'w-0-1', region: { minX: 100, minY: 0, maxX: 200, maxY: 100 }, neighbours: [0], address: '127.0.0.1:7702' },
  ]);
  const procs = running(w, [0]).map(observeProcess);
  const status = localStatus(w, planWorld(w, procs, true), procs, address, '2030-01-01T00:00:00Z');
  expect(status.shardSummary).toBe('2/2');
  expect(status.shards?.map((s) => [s.name, s.state, s.address])).toEqual([
    ['w-0-0', 'Ready', '127.0.0.1:7700'],
    ['w-0-1', 'Ready', '127.0.0.1:7702'],
  ]);
  expect(status.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
});

it('backs off crash restarts: 1 s doubling to 30 s', () => {
  expect([1, 2, 3, 4, 5, 6, 7, 20].map(restartDelayMs)).toEqual([1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
});
