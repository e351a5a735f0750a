import type { GameWorld, GameWorldStatus } from '../api/gameworld.js';
import { type DesiredPod, desiredPods, selectInstances, shardMap } from '../reconcile/desired.js';
import { type ObservedPod, type PodPlan, planPods } from '../reconcile/plan.js';
import { computeStatus } from '../reconcile/status.js';

/** What the planner needs to know of a shard process. */
export interface ProcessView {
  name: string;
  instance: number;
  shard: number;
  hash: string;
  ready: boolean;
  /** Still running (not exited). */
  alive: boolean;
  /** Asked to stop (SIGTERM sent). */
  stopping: boolean;
}

/**
 * A shard process as the planner sees a pod: one asked to stop and still running is terminating;
 * one that exited without being asked is dead (a pod in phase Failed). Local instances are never
 * allocated (no allocator runs against local shards).
 */
export function observeProcess(p: ProcessView): ObservedPod {
  return {
    name: p.name,
    instance: p.instance,
    shard: p.shard,
    hash: p.hash,
    ready: p.alive && !p.stopping && p.ready,
    dead: !p.alive && !p.stopping,
    terminating: p.alive && p.stopping,
    allocated: false,
  };
}

export interface WorldPlan {
  instances: number[];
  desired: DesiredPod[];
  plan: PodPlan;
}

/**
 * One step of the reconcile core for a local world — exactly what the Kubernetes reconciler runs:
 * the instances to keep, the shards they need, and the changes that move the processes towards
 * them. A world no longer in the file wants no shards.
 */
export function planWorld(world: GameWorld, observed: ObservedPod[], inFile: boolean): WorldPlan {
  const instances = inFile
    ? selectInstances(
        world.spec.instances,
        observed.map((p) => p.instance),
        [],
      )
    : [];
  const desired = desiredPods(world, instances);
  return { instances, desired, plan: planPods(desired, observed, world.spec.updateStrategy.maxUnavailable) };
}

/** The world's status as computeStatus makes it, with each shard's address on this machine. */
export function localStatus(
  world: GameWorld,
  wp: WorldPlan,
  observed: ObservedPod[],
  address: (name: string) => string,
  now: string,
  problem?: { reason: string; message: string },
): GameWorldStatus {
  const status = computeStatus(world, wp.desired, observed, wp.plan, now, problem);
  return { ...status, shards: status.shards?.map((s) => ({ ...s, address: address(s.name) })) };
}

/** shardMap() of the world with addresses on this machine (`127.0.0.1:<players port>`). */
export function localShardMap(world: GameWorld, instances: number[], address: (name: string) => string): ReturnType<typeof shardMap> {
  const map = shardMap(world, instances);
  return {
    ...map,
    instances: map.instances.map((i) => ({ ...i, shards: i.shards.map((s) => ({ ...s, address: address(s.name) })) })),
  };
}

/** Delay before a crashed shard is started again: 1 s, doubling with each crash in a row, at most 30 s. */
export function restartDelayMs(consecutive: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, consecutive - 1));
}
