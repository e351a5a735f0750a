import { regions } from '@aethex/runtime';
import type { Condition, GameWorld, GameWorldStatus, ShardStatus } from '../api/gameworld.js';
import { type DesiredPod, GAME_PORT, worldSelector } from './desired.js';
import { shardAddress } from './names.js';
import type { ObservedPod, PodPlan } from './plan.js';

function condition(prev: Condition[] | undefined, next: Omit<Condition, 'lastTransitionTime'>, now: string): Condition {
  const old = prev?.find((c) => c.type === next.type);
  // The transition time moves only when the status does, so an unchanged world writes nothing.
  return { ...next, lastTransitionTime: old && old.status === next.status ? old.lastTransitionTime : now };
}

/** A shard's state from its pod (undefined: there is none). */
function shardState(p: ObservedPod | undefined): ShardStatus['state'] {
  return !p ? 'Missing' : p.terminating ? 'Terminating' : p.dead ? 'Failed' : p.allocated ? 'Allocated' : p.ready ? 'Ready' : 'Starting';
}

/** Whether a shard counts as ready: its pod passes its readiness check and is neither ending nor ended. */
const serving = (p: ObservedPod | undefined): boolean => p?.ready === true && !p.terminating && !p.dead;

/**
 * The world's status from what was observed and what this pass plans: counts for the printer
 * columns and the scale subresource, per-shard state and address, and the Ready / Progressing /
 * Degraded conditions. Pure; `now` is only used for conditions that change.
 */
export function computeStatus(
  world: GameWorld,
  desired: DesiredPod[],
  observed: ObservedPod[],
  plan: PodPlan,
  now: string,
  problem?: { reason: string; message: string },
): GameWorldStatus {
  const gen = world.metadata.generation;
  const have = new Map(observed.map((p) => [p.name, p]));
  const grid = regions(world.spec.world.bounds, world.spec.sharding.columns, world.spec.sharding.rows);
  const instances = [...new Set(desired.map((d) => d.instance))].sort((a, b) => a - b);
  const shards: ShardStatus[] = [];
  let readyShards = 0;
  const readyInstances = new Set(instances);
  const allocated = new Set<number>();
  for (const d of desired) {
    const p = have.get(d.name);
    if (p?.allocated) allocated.add(d.instance);
    if (serving(p)) readyShards++;
    else readyInstances.delete(d.instance);
    shards.push({
      name: d.name,
      instance: d.instance,
      region: (grid[d.shard] as (typeof grid)[number]).bounds,
      state: shardState(p),
      address: shardAddress(world.metadata.name, world.metadata.namespace, d.instance, d.shard, GAME_PORT),
    });
  }
  const outdated = desired.filter((d) => {
    const p = have.get(d.name);
    return p !== undefined && p.hash !== d.hash;
  }).length;
  const converged = plan.create.length === 0 && plan.delete.length === 0 && outdated === 0 && observed.every((p) => !p.terminating);
  const allReady = readyShards === desired.length;
  const prev = world.status?.conditions;
  const conditions: Condition[] = [
    condition(
      prev,
      problem
        ? { type: 'Ready', status: 'False', observedGeneration: gen, reason: problem.reason, message: problem.message }
        : allReady
          ? {
              type: 'Ready',
              status: 'True',
              observedGeneration: gen,
              reason: 'AllShardsReady',
              message: `${readyShards}/${desired.length} shards ready`,
            }
          : {
              type: 'Ready',
              status: 'False',
              observedGeneration: gen,
              reason: 'ShardsNotReady',
              message: `${readyShards}/${desired.length} shards ready`,
            },
      now,
    ),
    condition(
      prev,
      converged
        ? { type: 'Progressing', status: 'False', observedGeneration: gen, reason: 'Converged', message: 'every shard matches the spec' }
        : {
            type: 'Progressing',
            status: 'True',
            observedGeneration: gen,
            reason: outdated > 0 ? 'RollingUpdate' : 'Reconciling',
            message: `${plan.create.length} to create, ${plan.delete.length} to delete, ${outdated} outdated`,
          },
      now,
    ),
    condition(
      prev,
      problem
        ? { type: 'Degraded', status: 'True', observedGeneration: gen, reason: problem.reason, message: problem.message }
        : plan.delete.some((d) => d.reason === 'Dead')
          ? {
              type: 'Degraded',
              status: 'True',
              observedGeneration: gen,
              reason: 'ShardFailed',
              message: 'a shard pod failed and is being replaced',
            }
          : { type: 'Degraded', status: 'False', observedGeneration: gen, reason: 'Healthy', message: 'no failed shards' },
      now,
    ),
  ];
  return {
    observedGeneration: gen,
    selector: worldSelector(world),
    shardSummary: `${readyShards}/${desired.length}`,
    instances: { desired: world.spec.instances, current: instances.length, ready: readyInstances.size, allocated: allocated.size },
    conditions,
    shards,
  };
}

/**
 * The status of a world whose spec cannot be realised (`problem`, e.g. InvalidSpec from
 * specProblem): the shards are the ones an earlier spec made, as the last status listed them
 * (region, address), in the state observed now. Ready=False and Degraded=True carry the problem;
 * Progressing=False, as nothing moves towards the new spec. `keepsLastSpec`: the shards of the
 * last valid spec are kept up (one that ends is made again); without it (no valid spec was ever
 * applied) nothing is made. Pure; unchanged observations give an equal status.
 */
export function computeHeldStatus(
  world: GameWorld,
  observed: ObservedPod[],
  now: string,
  problem: { reason: string; message: string },
  keepsLastSpec = false,
): GameWorldStatus {
  const gen = world.metadata.generation;
  const have = new Map(observed.map((p) => [p.name, p]));
  const shards: ShardStatus[] = (world.status?.shards ?? []).map((s) => ({ ...s, state: shardState(have.get(s.name)) }));
  const current = new Set<number>();
  const unready = new Set<number>();
  const allocated = new Set<number>();
  for (const s of shards) {
    const p = have.get(s.name);
    if (p) current.add(s.instance);
    if (!serving(p)) unready.add(s.instance);
    if (p?.allocated) allocated.add(s.instance);
  }
  const prev = world.status?.conditions;
  const held = { status: 'False', observedGeneration: gen, reason: problem.reason } as const;
  return {
    observedGeneration: gen,
    selector: worldSelector(world),
    shardSummary: `${shards.filter((s) => serving(have.get(s.name))).length}/${shards.length}`,
    instances: {
      desired: world.spec.instances,
      current: current.size,
      ready: [...current].filter((i) => !unready.has(i)).length,
      allocated: allocated.size,
    },
    conditions: [
      condition(prev, { type: 'Ready', ...held, message: problem.message }, now),
      condition(
        prev,
        {
          type: 'Progressing',
          ...held,
          message: keepsLastSpec
            ? 'nothing moves to this spec until it is fixed; the shards keep the last valid spec, and one that ends is made again from it'
            : 'no shard is created, deleted or rolled until the spec is fixed',
        },
        now,
      ),
      condition(prev, { type: 'Degraded', ...held, status: 'True', message: problem.message }, now),
    ],
    shards,
  };
}
