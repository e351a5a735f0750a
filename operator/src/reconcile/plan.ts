import type { DesiredPod } from './desired.js';

/** A shard pod as the reconciler sees it in the cluster (or the local runtime sees a process). */
export interface ObservedPod {
  name: string;
  instance: number;
  shard: number;
  hash: string | undefined;
  /** Passing its readiness check (`/readyz`). */
  ready: boolean;
  /** Ended for good: phase Failed or Succeeded. */
  dead: boolean;
  /** Being deleted (drain in progress). */
  terminating: boolean;
  /** Its instance is in a live match (`aethex.dev/state=Allocated`). */
  allocated: boolean;
}

export type DeleteReason = 'ScaleDown' | 'Dead' | 'Update';

export interface PodPlan {
  create: DesiredPod[];
  delete: { name: string; reason: DeleteReason }[];
  /** Outdated pods held back: by maxUnavailable, or because their instance is allocated. */
  held: { name: string; reason: 'MaxUnavailable' | 'Allocated' }[];
}

/**
 * The pod changes that move the world one step towards `desired`. Pure and level-triggered:
 * planning the same state twice gives the same plan, and a converged world gives an empty one.
 *
 * - a desired pod that does not exist is created;
 * - a pod that is not desired is deleted, unless its instance is allocated;
 * - a dead pod is deleted (and created again by the next pass);
 * - an outdated pod (template hash differs) is deleted to be recreated, never while its instance is
 *   allocated, and only while fewer than `maxUnavailable` desired pods are unavailable — so an
 *   update rolls shard by shard.
 */
export function planPods(desired: DesiredPod[], observed: ObservedPod[], maxUnavailable: number): PodPlan {
  const plan: PodPlan = { create: [], delete: [], held: [] };
  const have = new Map(observed.map((p) => [p.name, p]));
  const want = new Set(desired.map((d) => d.name));
  const allocatedInstances = new Set(observed.filter((p) => p.allocated).map((p) => p.instance));

  for (const p of observed) {
    if (want.has(p.name) || p.terminating) continue;
    if (allocatedInstances.has(p.instance)) plan.held.push({ name: p.name, reason: 'Allocated' });
    else plan.delete.push({ name: p.name, reason: 'ScaleDown' });
  }

  let unavailable = 0;
  const outdated: ObservedPod[] = [];
  for (const d of desired) {
    const p = have.get(d.name);
    if (!p) {
      plan.create.push(d);
      unavailable++;
    } else if (p.terminating) {
      unavailable++;
    } else if (p.dead) {
      plan.delete.push({ name: p.name, reason: 'Dead' });
      unavailable++;
    } else {
      if (!p.ready) unavailable++;
      if (p.hash !== d.hash) outdated.push(p);
    }
  }

  // Not-ready outdated pods go first: replacing them costs no availability.
  outdated.sort((a, b) => Number(a.ready) - Number(b.ready) || a.instance - b.instance || a.shard - b.shard);
  let budget = maxUnavailable - unavailable;
  for (const p of outdated) {
    if (p.allocated || allocatedInstances.has(p.instance)) {
      plan.held.push({ name: p.name, reason: 'Allocated' });
    } else if (!p.ready) {
      plan.delete.push({ name: p.name, reason: 'Update' });
    } else if (budget > 0) {
      plan.delete.push({ name: p.name, reason: 'Update' });
      budget--;
    } else {
      plan.held.push({ name: p.name, reason: 'MaxUnavailable' });
    }
  }
  return plan;
}
