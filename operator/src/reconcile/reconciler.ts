import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { FINALIZER, type GameWorld, type GameWorldSpec, type GameWorldStatus, withDefaults } from '../api/gameworld.js';
import { type KubeClient, KubeError } from '../kube/client.js';
import { desiredPods, desiredSupport, hashOf, isSharded, linksSecret, selectInstances } from './desired.js';
import { configMapName } from './names.js';
import { observePod, podProblem } from './observe.js';
import { type ObservedPod, planPods } from './plan.js';
import { INVALID_SPEC, nameProblem, specProblem } from './spec-problem.js';
import { computeHeldStatus, computeStatus } from './status.js';

/** Annotation on support objects: the hash of what the operator last applied. */
export const APPLIED_HASH = 'aethex.dev/applied-hash';

/** What a pass asks of the queue: nothing (wait for a change), or look again after a delay. */
export type Outcome = { requeueAfterMs?: number };

/** Cleans a deleted world's state outside Kubernetes (snapshot rows, presence keys). Idempotent. */
export type ExternalCleanup = (world: GameWorld) => Promise<void>;

export interface ReconcilerDeps {
  kube: KubeClient;
  now: () => Date;
  cleanup?: ExternalCleanup;
  log?: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
  /**
   * How long a deleted world's cleanup waits for its shard pods to be gone, from the world's
   * deletion (default 120 s: a shard drains within its grace period). A pod still there after it
   * (its node unreachable, so nothing confirms the kill) is named in a Warning Event and the
   * cleanup goes on: a world's deletion never hangs on it.
   */
  shardDrainWaitMs?: number;
}

/**
 * Moves one GameWorld one step towards its spec. Idempotent: a pass over a converged world reads
 * and writes nothing else, so the second of two passes issues zero writes. Conflicts (409) end the
 * pass with a requeue; the next pass reads fresh state.
 */
export class Reconciler {
  /** Worlds (by uid) whose link Secret is known to exist: checked once per operator process. */
  private readonly secretsFound = new Set<string>();

  constructor(private readonly deps: ReconcilerDeps) {}

  /**
   * A sharded world's shards authenticate their links with a shared secret: created here once,
   * with 256 random bits, and never updated. The operator may only create Secrets, never read
   * them: a 409 says it is already there.
   */
  private async ensureLinksSecret(world: GameWorld): Promise<void> {
    const uid = world.metadata.uid as string;
    if (!isSharded(world) || this.secretsFound.has(uid)) return;
    const m = linksSecret(world, randomBytes(32).toString('base64url'));
    try {
      await this.deps.kube.create(m);
    } catch (err) {
      if (!(err instanceof KubeError && err.status === 409)) throw err;
    }
    this.secretsFound.add(uid);
  }

  async reconcile(namespace: string, name: string): Promise<Outcome> {
    const { kube } = this.deps;
    const raw = await kube.getWorld(namespace, name);
    if (!raw) return {};
    const world: GameWorld = { ...raw, spec: withDefaults(raw.spec as unknown as Record<string, unknown>) };
    try {
      if (world.metadata.deletionTimestamp) return await this.finalize(world);
      if (!world.metadata.finalizers?.includes(FINALIZER)) {
        await kube.setFinalizers(world, [...(world.metadata.finalizers ?? []), FINALIZER]);
        return { requeueAfterMs: 0 };
      }
      return await this.converge(world);
    } catch (err) {
      if (err instanceof KubeError && err.status === 409) return { requeueAfterMs: 200 };
      throw err;
    }
  }

  private async finalize(world: GameWorld): Promise<Outcome> {
    if (!world.metadata.finalizers?.includes(FINALIZER)) return {};
    // The shards go first: a shard draining after the cleanup would write its final snapshot and
    // events again, and they would stay for good. Each gets its grace period to drain; the cleanup
    // waits until none is left, or `shardDrainWaitMs` has passed.
    const { kube, now } = this.deps;
    const pods = await kube.listShardPods(world.metadata.namespace, world.metadata.name);
    if (pods.length > 0) {
      for (const p of pods) {
        if (p.metadata?.deletionTimestamp) continue;
        await kube.deletePod(
          world.metadata.namespace,
          p.metadata?.name as string,
          p.metadata?.uid as string,
          p.metadata?.resourceVersion as string,
        );
      }
      const waited = now().getTime() - Date.parse(world.metadata.deletionTimestamp as string);
      const wait = this.deps.shardDrainWaitMs ?? 120_000;
      if (!(waited >= wait)) return { requeueAfterMs: Number.isFinite(waited) ? Math.min(1000, Math.max(100, wait - waited)) : 1000 };
      const stuck = pods.map((p) => p.metadata?.name).join(', ');
      const note = `shard pods still terminating ${Math.round(waited / 1000)} s after the world's deletion (their nodes may be unreachable): ${stuck}; cleaning the world's external state anyway`;
      this.deps.log?.warn({ world: world.metadata.name, pods: stuck }, note);
      await kube.event(world, 'Warning', 'ShardsStuckTerminating', note, now());
    }
    await this.deps.cleanup?.(world);
    await this.deps.kube.setFinalizers(
      world,
      (world.metadata.finalizers ?? []).filter((f) => f !== FINALIZER),
    );
    this.deps.log?.info({ world: world.metadata.name }, 'external state cleaned; finalizer removed');
    return {};
  }

  private async converge(world: GameWorld): Promise<Outcome> {
    const { kube } = this.deps;
    const pods = await kube.listShardPods(world.metadata.namespace, world.metadata.name);
    const observed = pods.map(observePod).filter((p): p is ObservedPod => p !== undefined);
    // A spec its shards would refuse at start (exit 2, a crash loop on every pod), or a name its
    // children cannot have (a world stored before the CRD's name rule), is not applied: no shard
    // map or Secret is changed, so running shards keep the last valid spec. That spec is the one
    // the world's ConfigMap holds: a shard pod that ends meanwhile (evicted, its node lost) is
    // made again from it, and a roll to it in flight goes on, as a Deployment's last good
    // ReplicaSet would. Only a change of the world (or of its pods) brings it back.
    const nameIssue = nameProblem(world.metadata.name);
    const problem = nameIssue ?? specProblem(world.spec, world.metadata);
    if (problem) {
      const message = `${problem.field}: ${problem.message}`;
      const applied = nameIssue ? undefined : await this.appliedSpec(world);
      const busy = applied ? (await this.convergePods({ ...world, spec: applied }, pods, observed)).busy : false;
      await this.writeStatus(
        world,
        computeHeldStatus(world, observed, this.deps.now().toISOString(), { reason: INVALID_SPEC, message }, applied !== undefined),
      );
      return busy ? { requeueAfterMs: 1000 } : {};
    }
    const { desired, plan, busy } = await this.convergePods(world, pods, observed, true);
    const status = await this.writeStatus(
      world,
      computeStatus(world, desired, observed, plan, this.deps.now().toISOString(), podProblem(pods)),
    );
    const settling = status.conditions?.some((c) => c.type === 'Ready' && c.status !== 'True');
    // Changes in flight: look again soon. Waiting for pods to become ready: their watch events
    // bring the world back, so only a slow safety net (a 1 s loop over every unready world floods
    // the queue when many worlds start at once).
    return busy ? { requeueAfterMs: 1000 } : settling ? { requeueAfterMs: 10_000 } : {};
  }

  /**
   * Brings the world's shard pods (and, with `support`, its ConfigMap, Service, PDB and link
   * Secret) to `world.spec`: one step of a roll, bounded by maxUnavailable.
   */
  private async convergePods(world: GameWorld, pods: V1Pod[], observed: ObservedPod[], support = false) {
    const { kube } = this.deps;
    const byName = new Map<string, V1Pod>(pods.map((p) => [p.metadata?.name as string, p]));
    const instances = selectInstances(
      world.spec.instances,
      observed.map((p) => p.instance),
      observed.filter((p) => p.allocated).map((p) => p.instance),
    );
    const desired = desiredPods(world, instances);
    if (support) {
      await this.ensureLinksSecret(world);
      for (const m of desiredSupport(world, instances)) {
        const hash = hashOf(m);
        const have = await kube.observe(m);
        if (have?.annotations[APPLIED_HASH] !== hash) {
          const metadata = {
            ...m.metadata,
            annotations: { ...m.metadata.annotations, [APPLIED_HASH]: hash },
            ...(have?.resourceVersion ? { resourceVersion: have.resourceVersion } : {}),
          };
          await kube.apply({ ...m, metadata });
        }
      }
    }

    const plan = planPods(desired, observed, world.spec.updateStrategy.maxUnavailable);
    for (const d of plan.delete) {
      const p = byName.get(d.name);
      await kube.deletePod(world.metadata.namespace, d.name, p?.metadata?.uid as string, p?.metadata?.resourceVersion as string);
    }
    for (const c of plan.create) {
      try {
        await kube.create(c.manifest);
      } catch (err) {
        // Another pass (or a stale leader's) made it first: the next pass sees it.
        if (!(err instanceof KubeError && err.status === 409)) throw err;
      }
    }
    const busy = plan.create.length + plan.delete.length + plan.held.filter((h) => h.reason === 'MaxUnavailable').length > 0;
    return { desired, plan, busy };
  }

  /**
   * The spec the world's children were last made from: `world.json` of its ConfigMap, if that
   * ConfigMap is this world's (owner uid) and the spec is one the shards take. Undefined if the
   * world never had a valid spec.
   */
  private async appliedSpec(world: GameWorld): Promise<GameWorldSpec | undefined> {
    const have = await this.deps.kube.observe({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: configMapName(world.metadata.name), namespace: world.metadata.namespace },
    });
    if (!have?.data?.['world.json'] || !have.owners?.includes(world.metadata.uid as string)) return undefined;
    try {
      const stored = JSON.parse(have.data['world.json']) as { name?: unknown; spec?: Record<string, unknown> };
      if (stored.name !== world.metadata.name || typeof stored.spec !== 'object' || stored.spec === null) return undefined;
      const spec = withDefaults(stored.spec);
      return specProblem(spec, world.metadata) ? undefined : spec;
    } catch {
      // Not JSON, or not a spec withDefaults can read: as if there were none.
      return undefined;
    }
  }

  /**
   * Writes `computed` as the world's status if it differs from the stored one (at most one write
   * per pass), with an Event when Ready changes, or turns to InvalidSpec (a spec edit refused
   * while the world was not ready is worth one too). Returns it as the API server will read it back.
   */
  private async writeStatus(world: GameWorld, computed: GameWorldStatus): Promise<GameWorldStatus> {
    const { kube } = this.deps;
    // As it will read back from the API server (no undefined members), so equal means unchanged.
    const status: GameWorldStatus = JSON.parse(JSON.stringify(computed));
    if (!isDeepStrictEqual(status, world.status)) {
      const before = world.status?.conditions?.find((c) => c.type === 'Ready');
      await kube.patchStatus(world, status);
      const after = status.conditions?.find((c) => c.type === 'Ready');
      if (after && (before?.status !== after.status || (after.reason === INVALID_SPEC && before?.reason !== INVALID_SPEC))) {
        await kube.event(world, after.status === 'True' ? 'Normal' : 'Warning', after.reason, after.message, this.deps.now());
      }
    }
    return status;
  }
}
