import { describe, expect, it } from 'vitest';
import { type GameWorld, withDefaults } from '../api/gameworld.js';
import { type DesiredPod, desiredPods, selectInstances, shardEnv } from './desired.js';
import { type ObservedPod, planPods } from './plan.js';

const world = (over: Record<string, unknown> = {}): GameWorld => ({
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name: 'forest', namespace: 'games', uid: 'u-1', generation: 1 },
  spec: withDefaults({
    image: 'shard:1',
    world: { bounds: { minX: 0, minY: 0, maxX: 1000, maxY: 1000 } },
    sharding: { columns: 2, rows: 1 },
    instances: 2,
    ...over,
  }),
});

const observe = (d: DesiredPod, o: Partial<ObservedPod> = {}): ObservedPod => ({
  name: d.name,
  instance: d.instance,
  shard: d.shard,
  hash: d.hash,
  ready: true,
  dead: false,
  terminating: false,
  allocated: false,
  ...o,
});

describe('selectInstances', () => {
  it.each([
    [2, [], [], [0, 1]],
    [2, [0, 1, 2], [], [0, 1]],
    [2, [0, 1, 2], [2], [0, 2]],
    [1, [0, 1, 2], [1, 2], [1, 2]],
    [3, [5], [], [0, 1, 5]],
    [0, [0, 1], [], []],
    [0, [0, 1], [1], [1]],
  ])('want %i with %j existing and %j allocated → %j', (want, existing, allocated, out) => {
    expect(selectInstances(want, existing, allocated)).toEqual(out);
  });
});

describe('planPods', () => {
  it('creates every shard of every instance from nothing, then has nothing to do', () => {
    const desired = desiredPods(world(), [0, 1]);
    expect(desired.map((d) => d.name)).toEqual(['forest-0-0', 'forest-0-1', 'forest-1-0', 'forest-1-1']);
    expect(planPods(desired, [], 1).create).toHaveLength(4);
    expect(
      planPods(
        desired,
        desired.map((d) => observe(d)),
        1,
      ),
    ).toEqual({ create: [], delete: [], held: [] });
  });

  it('scales down by deleting pods no longer desired, but never an allocated instance', () => {
    const three = desiredPods(world(), [0, 1, 2]);
    const observed = three.map((d) => observe(d, { allocated: d.instance === 2 }));
    const kept = selectInstances(2, [0, 1, 2], [2]);
    expect(kept).toEqual([0, 2]);
    const plan = planPods(desiredPods(world(), kept), observed, 1);
    expect(plan.delete).toEqual([
      { name: 'forest-1-0', reason: 'ScaleDown' },
      { name: 'forest-1-1', reason: 'ScaleDown' },
    ]);
    expect(plan.create).toEqual([]);
  });

  it('rolls an image change one shard at a time with maxUnavailable 1, skipping allocated instances', () => {
    const old = desiredPods(world(), [0, 1]);
    const next = desiredPods(world({ image: 'shard:2' }), [0, 1]);
    expect(next[0]?.hash).not.toBe(old[0]?.hash);
    let observed = old.map((d) => observe(d, { allocated: d.instance === 1 }));
    const steps: string[][] = [];
    for (let pass = 0; pass < 10; pass++) {
      const plan = planPods(next, observed, 1);
      if (plan.delete.length === 0 && plan.create.length === 0) break;
      steps.push([...plan.delete.map((d) => `-${d.name}`), ...plan.create.map((c) => `+${c.name}`)]);
      // Apply: deleted pods vanish; created ones appear ready with the new hash.
      const gone = new Set(plan.delete.map((d) => d.name));
      observed = observed.filter((p) => !gone.has(p.name));
      for (const c of plan.create) observed.push(observe(c));
      expect(plan.delete.length).toBeLessThanOrEqual(1);
    }
    expect(steps).toEqual([['-forest-0-0'], ['+forest-0-0'], ['-forest-0-1'], ['+forest-0-1']]);
    const final = planPods(next, observed, 1);
    expect(final.held).toEqual([
      { name: 'forest-1-0', reason: 'Allocated' },
      { name: 'forest-1-1', reason: 'Allocated' },
    ]);
  });

  it('honours maxUnavailable 2, counting pods that are already down', () => {
    const next = desiredPods(world({ image: 'shard:2', instances: 2 }), [0, 1]);
    const old = desiredPods(world({ instances: 2 }), [0, 1]);
    const plan = planPods(
      next,
      old.map((d) => observe(d)),
      2,
    );
    expect(plan.delete.map((d) => d.name)).toEqual(['forest-0-0', 'forest-0-1']);
    const oneDown = old.map((d, i) => observe(d, { ready: i !== 3 }));
    // The not-ready outdated pod is replaced for free; one more fits in the budget of 2.
    expect(planPods(next, oneDown, 2).delete.map((d) => d.name)).toEqual(['forest-1-1', 'forest-0-0']);
  });

  it('replaces a dead pod and waits for a terminating one', () => {
    const desired = desiredPods(world(), [0]);
    const plan = planPods(
      desired,
      [observe(desired[0] as DesiredPod, { dead: true }), observe(desired[1] as DesiredPod, { terminating: true })],
      1,
    );
    expect(plan).toEqual({ create: [], delete: [{ name: 'forest-0-0', reason: 'Dead' }], held: [] });
  });
});

describe('shardEnv', () => {
  const rate = (tickRate: number) =>
    shardEnv(world({ world: { bounds: { minX: 0, minY: 0, maxX: 1000, maxY: 1000 }, tickRate } }), 0, {
      shard: 0,
      column: 0,
      row: 0,
      bounds: { minX: 0, minY: 0, maxX: 500, maxY: 1000 },
      neighbours: [1],
    }).find((e) => e.name === 'AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND')?.value;
  it('raises the message rate of a world ticking faster than the shard default serves (an input a tick)', () => {
    expect(rate(40)).toBeUndefined();
    expect(rate(76)).toBeUndefined();
    // 120 Hz is 8 ms ticks: 125 inputs a second.
    expect(rate(120)).toBe('375');
    expect(rate(100)).toBe('300');
  });
});

describe('desiredPods: where snapshots go', () => {
  type PodSpec = {
    containers: { env: { name: string; value?: string }[]; volumeMounts: { name: string; mountPath: string }[] }[];
    volumes: Record<string, unknown>[];
  };
  const specOf = (d: DesiredPod) => (d.manifest as unknown as { spec: PodSpec }).spec;

  it('a world without PostgreSQL keeps them in an emptyDir of the pod (the root filesystem is read-only)', () => {
    const spec = specOf(desiredPods(world(), [0])[0] as DesiredPod);
    expect(spec.volumes).toContainEqual({ name: 'state', emptyDir: {} });
    expect(spec.containers[0]?.volumeMounts).toContainEqual({ name: 'state', mountPath: '/var/lib/aethex' });
    expect(spec.containers[0]?.env).toContainEqual({ name: 'AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY', value: '/var/lib/aethex/snapshots' });
  });

  it('a world with PostgreSQL gets no such volume or variable', () => {
    const pg = { name: 'AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL', valueFrom: { secretKeyRef: { name: 'db', key: 'url' } } };
    const spec = specOf(desiredPods(world({ template: { env: [pg] } }), [0])[0] as DesiredPod);
    expect(spec.volumes.map((v) => v.name)).toEqual(['world']);
    expect(spec.containers[0]?.volumeMounts.map((m) => m.name)).toEqual(['world']);
    expect(spec.containers[0]?.env.map((e) => e.name)).not.toContain('AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY');
  });
});
