import type { V1Pod } from '@kubernetes/client-node';
import { ALLOCATED, LABELS, TEMPLATE_HASH } from '../api/gameworld.js';
import type { ObservedPod } from './plan.js';

/** Waiting reasons that mean the spec cannot be realised as written (not a transient start-up). */
const HOPELESS = new Set(['ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'CreateContainerConfigError', 'CrashLoopBackOff']);

/** A shard pod as the planner sees it; undefined for a pod without the operator's labels. */
export function observePod(p: V1Pod): ObservedPod | undefined {
  const labels = p.metadata?.labels ?? {};
  const instance = Number(labels[LABELS.instance]);
  const shard = Number(labels[LABELS.shard]);
  if (!p.metadata?.name || !Number.isInteger(instance) || !Number.isInteger(shard)) return undefined;
  const phase = p.status?.phase;
  return {
    name: p.metadata.name,
    instance,
    shard,
    hash: p.metadata.annotations?.[TEMPLATE_HASH],
    ready: p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    dead: phase === 'Failed' || phase === 'Succeeded',
    terminating: p.metadata.deletionTimestamp !== undefined && p.metadata.deletionTimestamp !== null,
    allocated: labels[LABELS.state] === ALLOCATED,
  };
}

/** Why the world's pods cannot run, if a container is stuck in a state that will not fix itself. */
export function podProblem(pods: V1Pod[]): { reason: string; message: string } | undefined {
  for (const p of pods) {
    const unschedulable = p.status?.conditions?.find(
      (c) => c.type === 'PodScheduled' && c.status === 'False' && c.reason === 'Unschedulable',
    );
    if (unschedulable)
      return { reason: 'Unschedulable', message: `pod ${p.metadata?.name}: ${unschedulable.message ?? 'no node fits'}`.slice(0, 512) };
    for (const s of p.status?.containerStatuses ?? []) {
      const w = s.state?.waiting;
      if (w?.reason && HOPELESS.has(w.reason)) {
        return { reason: w.reason, message: `pod ${p.metadata?.name}: ${w.reason}${w.message ? `: ${w.message}` : ''}`.slice(0, 512) };
      }
    }
  }
  return undefined;
}
