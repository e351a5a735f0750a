import { expect, it } from 'vitest';
import { type GameWorld, withDefaults } from '../api/gameworld.js';
import { desiredPods } from './desired.js';
import { type ObservedPod, planPods } from './plan.js';
import { computeHeldStatus, computeStatus } from './status.js';

const world: GameWorld = {
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name: 'forest', namespace: 'games', uid: 'u', generation: 3 },
  spec: withDefaults({
    image: 'i',
    world: { bounds: { minX: 0, minY: 0, maxX: 10, maxY: 10 } },
    sharding: { columns: 2, rows: 2 },
    instances: 1,
  }),
};

it('reports counts, shard states and conditions, and keeps transition times while nothing changes', () => {
  const desired = desiredPods(world, [0]);
  const observed: ObservedPod[] = desired.map((d, i) => ({
    name: d.name,
    instance: 0,
    shard: d.shard,
    hash: d.hash,
    ready: i !== 3,
    dead: false,
    terminating: false,
    allocated: false,
  }));
  const s1 = computeStatus(world, desired, observed, planPods(desired, observed, 1), 't1');
  expect(s1).toMatchObject({
    observedGeneration: 3,
    selector: 'aethex.dev/world=forest',
    shardSummary: '3/4',
    instances: { desired: 1, current: 1, ready: 0, allocated: 0 },
  });
  expect(s1.shards?.map((s) => s.state)).toEqual(['Ready', 'Ready', 'Ready', 'Starting']);
  expect(s1.shards?.[0]?.address).toBe('forest-0-0.forest-shards.games.svc:7777');
  expect(s1.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
    status: 'False',
    reason: 'ShardsNotReady',
    lastTransitionTime: 't1',
  });

  const ready = observed.map((p) => ({ ...p, ready: true }));
  const s2 = computeStatus({ ...world, status: s1 }, desired, ready, planPods(desired, ready, 1), 't2');
  expect(s2.conditions?.map((c) => [c.type, c.status, c.reason, c.lastTransitionTime])).toEqual([
    ['Ready', 'True', 'AllShardsReady', 't2'],
    ['Progressing', 'False', 'Converged', 't1'],
    ['Degraded', 'False', 'Healthy', 't1'],
  ]);
  // Same observation again: identical status, so the reconciler has nothing to write.
  expect(computeStatus({ ...world, status: s2 }, desired, ready, planPods(desired, ready, 1), 't3')).toEqual(s2);
});

it('says why a world cannot be realised', () => {
  const desired = desiredPods(world, [0]);
  const s = computeStatus(world, desired, [], planPods(desired, [], 1), 't', {
    reason: 'ImagePullBackOff',
    message: 'image i cannot be pulled',
  });
  expect(s.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'ImagePullBackOff' });
  expect(s.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'ImagePullBackOff' });
});

it('holds a world whose spec cannot be realised: the shards it has, the problem in Ready and Degraded, nothing progressing', () => {
  const desired = desiredPods(world, [0]);
  const observed: ObservedPod[] = desired.map((d) => ({
    name: d.name,
    instance: 0,
    shard: d.shard,
    hash: d.hash,
    ready: true,
    dead: false,
    terminating: false,
    allocated: false,
  }));
  const running = computeStatus(world, desired, observed, planPods(desired, observed, 1), 't1');
  // The spec changes (generation 4) to one its shards would refuse: the pods stay as they are.
  const changed: GameWorld = {
    ...world,
    metadata: { ...world.metadata, generation: 4 },
    spec: { ...world.spec, world: { ...world.spec.world, bounds: { minX: 0, minY: 0, maxX: 2e6, maxY: 10 } } },
    status: running,
  };
  const problem = { reason: 'InvalidSpec', message: 'spec.world.bounds: too far from 0' };
  const lost = observed.filter((p) => p.shard !== 3).map((p) => (p.shard === 2 ? { ...p, ready: false } : p));
  const held = computeHeldStatus(changed, lost, 't2', problem);
  expect(held).toMatchObject({
    observedGeneration: 4,
    selector: 'aethex.dev/world=forest',
    shardSummary: '2/4',
    instances: { desired: 1, current: 1, ready: 0, allocated: 0 },
  });
  // Regions and addresses as the running shards have them, not as the new bounds would cut them.
  expect(held.shards?.map((s) => [s.name, s.state, s.region.maxX])).toEqual([
    ['forest-0-0', 'Ready', 5],
    ['forest-0-1', 'Ready', 10],
    ['forest-0-2', 'Starting', 5],
    ['forest-0-3', 'Missing', 10],
  ]);
  expect(held.conditions?.map((c) => [c.type, c.status, c.reason, c.observedGeneration, c.lastTransitionTime])).toEqual([
    ['Ready', 'False', 'InvalidSpec', 4, 't2'],
    ['Progressing', 'False', 'InvalidSpec', 4, 't1'],
    ['Degraded', 'True', 'InvalidSpec', 4, 't2'],
  ]);
  expect(held.conditions?.find((c) => c.type === 'Ready')?.message).toBe('spec.world.bounds: too far from 0');
  // Nothing changed: the same status, so the reconciler writes nothing.
  expect(computeHeldStatus({ ...changed, status: held }, lost, 't3', problem)).toEqual(held);
  // A world refused from the start has no shards.
  expect(computeHeldStatus({ ...changed, status: undefined }, [], 't', problem)).toMatchObject({
    shardSummary: '0/0',
    instances: { desired: 1, current: 0, ready: 0, allocated: 0 },
    shards: [],
  });
});
