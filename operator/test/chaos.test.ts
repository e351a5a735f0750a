import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ALLOCATED, GAMEWORLD_GROUP, GAMEWORLD_PLURAL, GAMEWORLD_VERSION, type GameWorld, LABELS } from '../src/api/gameworld.js';
import { selectInstances } from '../src/reconcile/desired.js';
import { configMapName, pdbName, podName, serviceName } from '../src/reconcile/names.js';
import { installCrd, kubeConfig, namespace, testEnv, until, worlds } from './harness.js';
import { KwokReadiness } from './kwok-readiness.js';
import {
  buildOperator,
  type OperatorIdentity,
  type OperatorProcess,
  operatorIdentity,
  removeBuild,
  removeOperatorIdentity,
  spawnOperator,
} from './operator-process.js';

// The chaos test: the operator process (under its ServiceAccount, leader election on, a 3 s lease)
// is killed with SIGKILL at random 1–5 s intervals for two minutes and started again at once —
// with the dead leader's identity, so it may renew the lease at once, and every fifth time with a
// new one, which must wait for the lease to expire. Meanwhile a driver changes `instances` of 20
// GameWorlds, allocates random instances the way an allocator claims one (shard 0 first, with the
// resourceVersion it read as a precondition, then the other shards) and releases some. A watcher
// checks every pod event as it comes: never two live pods for one (world, instance, shard), and no
// allocated pod — nor any pod of an allocated instance — ever deleted. The last fault comes right
// after the last changes; within 15 s of it everything must have converged, with no orphans, and
// deleting worlds must leave nothing behind. Last, lease renewals refused for a moment must not
// end the leader.

/** Two minutes, as the issue asks. */
const CHAOS_MS = 120_000;
const KILL_MIN_MS = 1000;
const KILL_MAX_MS = 5000;
const WORLDS = 20;
const MAX_INSTANCES = 4;
const CONVERGE_MS = 15_000;
/** Every this many restarts the new process takes a new identity: it must wait for the dead one's lease to expire. */
const NEW_IDENTITY_EVERY = 5;
const LEASE_S = 3;
/** The operator's renewal interval. */
const RETRY_MS = 500;

const env = testEnv();
const kc = kubeConfig(env);
const core = kc.makeApiClient(k8s.CoreV1Api);
const policy = kc.makeApiClient(k8s.PolicyV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

// A seeded generator: AETHEX_CHAOS_SEED replays the driver's and the killer's choices (not the timing).
const seed = Number(process.env.AETHEX_CHAOS_SEED ?? Date.now() % 2 ** 31);
let rngState = seed;
function random(): number {
  rngState = (rngState + 0x6d2b79f5) | 0;
  let t = rngState;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const randInt = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)] as T;

let ns: string;
let identity: OperatorIdentity | undefined;
let bundle: string | undefined;
const worldNames = Array.from({ length: WORLDS }, (_, i) => `w${String(i).padStart(2, '0')}`);
/** Even worlds have one shard, odd ones two (2 × 1). */
const shardsOf = (world: string) => (Number(world.slice(1)) % 2 === 0 ? 1 : 2);

const counts = {
  processes: 0,
  kills: 0,
  identities: 1,
  /** Processes that reached `leading` before they were killed. */
  led: 0,
  /** Exits nobody asked for, by code (3: lost the lease). */
  selfExits: {} as Record<string, number>,
  scalePatches: 0,
  allocations: 0,
  /** Allocations refused because the pod changed since it was read (resourceVersion precondition). */
  allocationConflicts: 0,
  noInstanceToAllocate: 0,
  releases: 0,
  driverErrors: 0,
};

// ---------------------------------------------------------------------------------------------
// The watcher: one watch on every pod of the namespace, resumed from the last resourceVersion.

interface Seen {
  name: string;
  key: string | undefined;
  world: string | undefined;
  instance: string | undefined;
  labels: Record<string, string>;
  deleting: boolean;
}

class PodWatcher {
  events = 0;
  restarts = 0;
  relists = 0;
  /** Set false before worlds are deleted on purpose (their allocated pods go with them). */
  countDeletions = true;
  readonly duplicates: string[] = [];
  readonly allocatedPodsDeleted: string[] = [];
  readonly allocatedInstancePodsDeleted: string[] = [];
  readonly nameMismatches: string[] = [];
  private readonly live = new Map<string, Seen>(); // by uid
  private readonly byKey = new Map<string, Set<string>>(); // (world/instance/shard) → uids
  private rv = '';
  private abort: AbortController | undefined;
  private stopped = false;

  constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly ns: string,
  ) {}

  async start(): Promise<void> {
    await this.relist();
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  private async relist(): Promise<void> {
    const list = await core.listNamespacedPod({ namespace: this.ns });
    const present = new Set<string>();
    for (const p of list.items) {
      present.add(p.metadata?.uid as string);
      this.observe(this.live.has(p.metadata?.uid as string) ? 'MODIFIED' : 'ADDED', p);
    }
    for (const [uid, seen] of [...this.live]) {
      if (!present.has(uid)) this.observe('DELETED', { metadata: { uid, name: seen.name, labels: seen.labels } });
    }
    this.rv = list.metadata?.resourceVersion ?? '';
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const gone = await new Promise<boolean>((resolve) => {
        let expired = false;
        new k8s.Watch(this.kc)
          .watch(
            `/api/v1/namespaces/${this.ns}/pods`,
            { resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds: 60 },
            (phase: string, obj: k8s.V1Pod & { code?: number }) => {
              if (phase === 'ERROR') {
                if (obj.code === 410) expired = true;
                return;
              }
              if (obj.metadata?.resourceVersion) this.rv = obj.metadata.resourceVersion;
              if (phase !== 'BOOKMARK') this.observe(phase as 'ADDED' | 'MODIFIED' | 'DELETED', obj);
            },
            (err: unknown) => {
              const code = (err as { statusCode?: number; code?: number } | null)?.statusCode ?? (err as { code?: number } | null)?.code;
              resolve(expired || code === 410);
            },
          )
          .then(
            (a) => {
              this.abort = a;
            },
            () => resolve(false),
          );
      });
      if (this.stopped) return;
      this.restarts++;
      if (gone) {
        this.relists++;
        await this.relist().catch(() => undefined);
      } else {
        await sleep(100);
      }
    }
  }

  /** Forgets what was found so far (after the self-check). */
  reset(): void {
    for (const list of [this.duplicates, this.allocatedPodsDeleted, this.allocatedInstancePodsDeleted, this.nameMismatches])
      list.length = 0;
  }

  /** Checks one event against everything seen before it (events come in resourceVersion order). */
  observe(phase: 'ADDED' | 'MODIFIED' | 'DELETED', p: k8s.V1Pod): void {
    this.events++;
    const uid = p.metadata?.uid as string;
    const name = p.metadata?.name as string;
    const labels = p.metadata?.labels ?? {};
    const world = labels[LABELS.world];
    const instance = labels[LABELS.instance];
    const shard = labels[LABELS.shard];
    const key = world !== undefined && instance !== undefined && shard !== undefined ? `${world}/${instance}/${shard}` : undefined;
    const prev = this.live.get(uid);
    const deleting = phase === 'DELETED' || (p.metadata?.deletionTimestamp !== undefined && p.metadata?.deletionTimestamp !== null);
    if (deleting && !prev?.deleting) this.deletionStarted(uid, name, world, instance, { ...prev?.labels, ...labels });
    if (phase === 'DELETED') {
      this.live.delete(uid);
      if (prev?.key) this.byKey.get(prev.key)?.delete(uid);
      return;
    }
    if (key && world && instance && shard && name !== podName(world, Number(instance), Number(shard))) {
      if (!this.nameMismatches.includes(`${name} is labelled ${key}`)) this.nameMismatches.push(`${name} is labelled ${key}`);
    }
    if (prev?.key && prev.key !== key) this.byKey.get(prev.key)?.delete(uid);
    if (key) {
      const uids = this.byKey.get(key) ?? new Set<string>();
      // A duplicate is found once, when the second pod joins the key; later events of either pod
      // are the same duplicate, not new ones.
      if (!uids.has(uid)) {
        for (const other of uids) this.duplicates.push(`${key}: ${name} (${uid}) while ${this.live.get(other)?.name} (${other}) is live`);
      }
      uids.add(uid);
      this.byKey.set(key, uids);
    }
    this.live.set(uid, { name, key, world, instance, labels, deleting });
  }

  private deletionStarted(
    uid: string,
    name: string,
    world: string | undefined,
    instance: string | undefined,
    labels: Record<string, string>,
  ) {
    if (!this.countDeletions) return;
    if (labels[LABELS.state] === ALLOCATED) this.allocatedPodsDeleted.push(name);
    const allocatedSibling = [...this.live.entries()].find(
      ([u, s]) => u !== uid && s.world === world && s.instance === instance && s.labels[LABELS.state] === ALLOCATED,
    );
    if (world !== undefined && allocatedSibling)
      this.allocatedInstancePodsDeleted.push(`${name} (${allocatedSibling[1].name} is allocated)`);
  }
}

// ---------------------------------------------------------------------------------------------
// The operator under chaos.

let current: OperatorProcess | undefined;
let leaseIdentity = 'chaos-1';
const recentOutput: string[] = [];
let chaosOver = false;
let lastFaultAt = 0;

/** Milliseconds from spawning a process to its `leading`: with the dead leader's identity, and with a new one. */
const takeoverMs = { sameIdentity: [] as number[], newIdentity: [] as number[] };
let identityChanged = false;

function startOperator(leaseS = LEASE_S): OperatorProcess {
  const spawnedAt = Date.now();
  const takeovers = identityChanged ? takeoverMs.newIdentity : takeoverMs.sameIdentity;
  identityChanged = false;
  const op = spawnOperator(bundle as string, {
    KUBECONFIG: identity?.kubeconfig as string,
    AETHEX_OPERATOR_NAMESPACE: ns,
    AETHEX_OPERATOR_LEADER_NAMESPACE: ns,
    AETHEX_OPERATOR_LEADER_IDENTITY: leaseIdentity,
    AETHEX_OPERATOR_LEADER_LEASE_S: String(leaseS),
    AETHEX_OPERATOR_LEADER_RETRY_MS: String(RETRY_MS),
    AETHEX_OPERATOR_HTTP_LISTEN: '127.0.0.1:0',
    AETHEX_OPERATOR_LOG_LEVEL: 'info',
  });
  counts.processes++;
  current = op;
  void op.logged('leading', CHAOS_MS * 2).then(
    () => {
      counts.led++;
      if (counts.processes > 1) takeovers.push(Date.now() - spawnedAt);
    },
    () => undefined,
  );
  // An exit nobody asked for (e.g. 3: it could not renew its lease in time) is counted and replaced.
  void op.exited.then(({ code, signal }) => {
    recentOutput.push(op.output().slice(-20_000));
    if (recentOutput.length > 3) recentOutput.shift();
    if (current !== op) return;
    counts.selfExits[String(code ?? signal)] = (counts.selfExits[String(code ?? signal)] ?? 0) + 1;
    if (!stopping) startOperator();
  });
  return op;
}
let stopping = false;

async function killAndRestart(): Promise<void> {
  const victim = current as OperatorProcess;
  current = undefined;
  victim.child.kill('SIGKILL');
  await victim.exited;
  counts.kills++;
  lastFaultAt = Date.now();
  if (counts.kills % NEW_IDENTITY_EVERY === 0) {
    counts.identities++;
    leaseIdentity = `chaos-${counts.identities}`;
    identityChanged = true;
  }
  startOperator();
}

// ---------------------------------------------------------------------------------------------
// The driver: what users and the allocator do meanwhile.

const podsOf = async (world: string) => (await core.listNamespacedPod({ namespace: ns, labelSelector: `${LABELS.world}=${world}` })).items;
const isReady = (p: k8s.V1Pod) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;
const isLive = (p: k8s.V1Pod) => !p.metadata?.deletionTimestamp;
const instanceOf = (p: k8s.V1Pod) => Number(p.metadata?.labels?.[LABELS.instance]);
const shardOf = (p: k8s.V1Pod) => Number(p.metadata?.labels?.[LABELS.shard]);
const allocated = (p: k8s.V1Pod) => p.metadata?.labels?.[LABELS.state] === ALLOCATED;
const code = (err: unknown) => (err as { code?: number }).code;

const label = (p: k8s.V1Pod, value: string | null, resourceVersion?: string) =>
  core.patchNamespacedPod(
    {
      name: p.metadata?.name as string,
      namespace: ns,
      body: { metadata: { labels: { [LABELS.state]: value }, ...(resourceVersion ? { resourceVersion } : {}) } },
    },
    mergePatch,
  );

/**
 * Allocates a random instance whose shards all exist and are ready, the way an allocator claims
 * one: shard 0 first, with the resourceVersion it read as a precondition (a pod deleted or changed
 * meanwhile refuses the claim), then the instance's other shards.
 */
async function allocate(): Promise<void> {
  const world = pick(worldNames);
  const pods = await podsOf(world);
  const byInstance = new Map<number, k8s.V1Pod[]>();
  for (const p of pods) byInstance.set(instanceOf(p), [...(byInstance.get(instanceOf(p)) ?? []), p]);
  const candidates = [...byInstance.values()].filter(
    (ps) => ps.length === shardsOf(world) && ps.every((p) => isLive(p) && isReady(p) && !allocated(p)),
  );
  if (candidates.length === 0) {
    counts.noInstanceToAllocate++;
    return;
  }
  const shards = pick(candidates).sort((a, b) => shardOf(a) - shardOf(b));
  try {
    await label(shards[0] as k8s.V1Pod, ALLOCATED, shards[0]?.metadata?.resourceVersion);
  } catch (err) {
    // Changed (409) or gone (404) since it was read: the claim is refused, as it must be.
    if (code(err) !== 409 && code(err) !== 404) throw err;
    counts.allocationConflicts++;
    return;
  }
  counts.allocations++;
  for (const p of shards.slice(1)) await label(p, ALLOCATED).catch((err) => (code(err) === 404 ? undefined : Promise.reject(err)));
}

/** Ends a random match: the instance's pods lose the label. */
async function release(): Promise<void> {
  const world = pick(worldNames);
  const instances = [...new Set((await podsOf(world)).filter(allocated).map(instanceOf))];
  if (instances.length === 0) return;
  const instance = pick(instances);
  for (const p of (await podsOf(world)).filter((x) => instanceOf(x) === instance && allocated(x))) {
    await label(p, null).catch((err) => (code(err) === 404 ? undefined : Promise.reject(err)));
  }
  counts.releases++;
}

async function drive(until: number): Promise<void> {
  while (Date.now() < until) {
    try {
      await worlds(kc, ns).patch(pick(worldNames), { spec: { instances: randInt(0, MAX_INSTANCES) } });
      counts.scalePatches++;
      await allocate();
      if (random() < 0.4) await release();
    } catch (err) {
      counts.driverErrors++;
      console.warn(`driver: ${(err as Error).message}`);
    }
    await sleep(randInt(500, 1000));
  }
}

// ---------------------------------------------------------------------------------------------
// What "converged" means: checked against the cluster, a list of what is still wrong.

type World = GameWorld & { metadata: { generation: number; uid: string } };
const listWorlds = async () =>
  (
    (await custom.listNamespacedCustomObject({
      group: GAMEWORLD_GROUP,
      version: GAMEWORLD_VERSION,
      namespace: ns,
      plural: GAMEWORLD_PLURAL,
    })) as { items: World[] }
  ).items;

async function problems(): Promise<string[]> {
  const out: string[] = [];
  const ws = await listWorlds();
  const [pods, configMaps] = await Promise.all([
    core.listNamespacedPod({ namespace: ns }).then((l) => l.items),
    core.listNamespacedConfigMap({ namespace: ns }).then((l) => l.items),
  ]);
  const uids = new Map(ws.map((w) => [w.metadata.name, w.metadata.uid]));
  for (const p of pods) {
    const name = p.metadata?.name;
    const owner = p.metadata?.ownerReferences?.find((o) => o.controller);
    const world = p.metadata?.labels?.[LABELS.world];
    if (p.metadata?.deletionTimestamp) out.push(`pod ${name} is still terminating`);
    if (!owner) out.push(`pod ${name} has no controller owner reference (orphan)`);
    else if (owner.kind !== 'GameWorld' || world === undefined || uids.get(world) !== owner.uid)
      out.push(`pod ${name} is owned by ${owner.kind}/${owner.name} ${owner.uid}, not by a world that exists`);
  }
  for (const w of ws) {
    const name = w.metadata.name;
    const mine = pods.filter((p) => p.metadata?.labels?.[LABELS.world] === name);
    const existing = [...new Set(mine.map(instanceOf))].sort((a, b) => a - b);
    const alloc = [...new Set(mine.filter(allocated).map(instanceOf))].sort((a, b) => a - b);
    const want = selectInstances(w.spec.instances, existing, alloc);
    const expected = want.flatMap((i) => Array.from({ length: shardsOf(name) }, (_, s) => podName(name, i, s))).sort();
    const have = mine.map((p) => p.metadata?.name as string).sort();
    if (have.join() !== expected.join()) out.push(`${name}: pods [${have}] but want [${expected}] (instances ${want}, allocated ${alloc})`);
    if (want.length !== Math.max(w.spec.instances, alloc.length))
      out.push(`${name}: ${want.length} instances, want max(spec ${w.spec.instances}, allocated ${alloc.length})`);
    for (const i of alloc) if (!want.includes(i)) out.push(`${name}: allocated instance ${i} not kept`);
    for (const p of mine) if (!isReady(p)) out.push(`pod ${p.metadata?.name} is not ready`);
    const s = w.status;
    const ready = s?.conditions?.find((c) => c.type === 'Ready');
    if (s?.observedGeneration !== w.metadata.generation)
      out.push(`${name}: observedGeneration ${s?.observedGeneration} ≠ ${w.metadata.generation}`);
    if (ready?.status !== 'True') out.push(`${name}: Ready is ${ready?.status} (${ready?.reason})`);
    const n = want.length * shardsOf(name);
    if (s?.shardSummary !== `${n}/${n}`) out.push(`${name}: shardSummary ${s?.shardSummary}, want ${n}/${n}`);
    if (s?.instances?.current !== want.length || s?.instances?.allocated !== alloc.length)
      out.push(`${name}: status instances ${JSON.stringify(s?.instances)}, want current ${want.length}, allocated ${alloc.length}`);
    const cm = configMaps.find((c) => c.metadata?.name === configMapName(name));
    const mapped = cm ? (JSON.parse(cm.data?.['shard-map.json'] ?? '{}') as { instances?: { instance: number }[] }).instances : undefined;
    if (mapped?.map((x) => x.instance).join() !== want.join())
      out.push(`${name}: shard map lists instances [${mapped?.map((x) => x.instance)}], want [${want}]`);
  }
  out.push(...(await strayChildren(uids)));
  return out;
}

/** ConfigMaps, Services and PDBs the operator made whose world does not exist (or is another world of the same name). */
async function strayChildren(uids: Map<string, string>): Promise<string[]> {
  const labelSelector = `${LABELS.managedBy}=aethex-operator`;
  const children = [
    ...(await core.listNamespacedConfigMap({ namespace: ns, labelSelector })).items.map((o) => ['ConfigMap', o] as const),
    ...(await core.listNamespacedService({ namespace: ns, labelSelector })).items.map((o) => ['Service', o] as const),
    ...(await policy.listNamespacedPodDisruptionBudget({ namespace: ns, labelSelector })).items.map((o) => ['PDB', o] as const),
  ];
  const out: string[] = [];
  for (const [kind, o] of children) {
    const owner = o.metadata?.ownerReferences?.find((r) => r.controller);
    if (!owner || uids.get(owner.name) !== owner.uid) out.push(`${kind} ${o.metadata?.name} belongs to no existing world (orphan)`);
  }
  for (const [world] of uids) {
    for (const [kind, name] of [
      ['ConfigMap', configMapName(world)],
      ['Service', serviceName(world)],
      ['PDB', pdbName(world)],
    ]) {
      if (!children.some(([k, o]) => k === kind && o.metadata?.name === name)) out.push(`${world}: ${kind} ${name} missing`);
    }
  }
  return out;
}

/** When a process logged that it leads and that its caches synced, relative to `since`. */
function milestones(op: OperatorProcess | undefined, since: number): string {
  const at = (msg: string) => {
    const line = op
      ?.output()
      .split('\n')
      .find((l) => l.includes(`"msg":"${msg}"`));
    const time = line ? (JSON.parse(line) as { time: number }).time : undefined;
    return time ? `+${((time - since) / 1000).toFixed(1)}s` : 'never';
  };
  return `leading ${at('leading')}, caches synced ${at('caches synced; reconciling')}`;
}

/** Polls until nothing is wrong or the deadline passes; returns what is still wrong (empty: converged). */
async function convergedBy(deadline: number, trace?: string[]): Promise<string[]> {
  const from = Date.now();
  for (;;) {
    const left = await problems().catch((err: Error) => [`could not check: ${err.message}`]);
    trace?.push(`+${((Date.now() - from) / 1000).toFixed(1)}s ${left.length}${left[0] ? ` (${left[0]})` : ''}`);
    if (left.length === 0 || Date.now() >= deadline) return left;
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------

let watcher: PodWatcher | undefined;
let readiness: KwokReadiness | undefined;

beforeAll(async () => {
  await installCrd(env);
  ns = await namespace(kc, 'op-chaos');
  const release = `aethex-${ns.slice(-12)}`.replace(/-+$/, '');
  [identity, bundle] = await Promise.all([operatorIdentity(env, kc, ns, release), buildOperator()]);
  watcher = new PodWatcher(kc, ns);
  readiness = new KwokReadiness(kc, ns);
  await Promise.all([watcher.start(), readiness.start()]);
}, 120_000);

afterAll(async () => {
  stopping = true;
  watcher?.stop();
  readiness?.stop();
  if (current) {
    current.child.kill('SIGKILL');
    await current.exited;
  }
  // Without the operator nothing removes the finalizers, and the namespace would never go away.
  const left = await listWorlds().catch(() => [] as World[]);
  await Promise.all(
    left.map((w) =>
      worlds(kc, ns)
        .patch(w.metadata.name, { metadata: { finalizers: null } })
        .catch(() => undefined),
    ),
  );
  await core.deleteNamespace({ name: ns }).catch(() => undefined);
  await removeOperatorIdentity(env, identity);
  removeBuild(bundle);
}, 60_000);

describe('the operator under SIGKILL chaos', () => {
  it('has a watcher that sees what it must count (two pods for one shard, an allocated pod deleted)', async () => {
    const w = watcher as PodWatcher;
    const probe = (name: string, state?: string) =>
      core.createNamespacedPod({
        namespace: ns,
        body: {
          metadata: {
            name,
            labels: { [LABELS.world]: 'probe', [LABELS.instance]: '0', [LABELS.shard]: '0', ...(state ? { [LABELS.state]: state } : {}) },
          },
          spec: { containers: [{ name: 'c', image: 'example.org/probe:1' }] },
        },
      });
    try {
      await probe('probe-0-0', ALLOCATED);
      await probe('probe-copy');
      // Both exist now: wait until the watcher has seen the second before removing them.
      await until('the watcher to see the copy', async () => (w.duplicates.length > 0 ? true : undefined), 10_000, 50).catch(
        () => undefined,
      );
      await core.deleteNamespacedPod({ name: 'probe-copy', namespace: ns, gracePeriodSeconds: 0 });
      await core.deleteNamespacedPod({ name: 'probe-0-0', namespace: ns, gracePeriodSeconds: 0 });
      await until('the watcher to see the probes', async () => (w.allocatedPodsDeleted.length > 0 ? true : undefined), 10_000, 50);
      // Copies, not the live arrays: the finally block below clears them before a failure is printed.
      expect([...w.duplicates]).toEqual([expect.stringContaining('probe/0/0: probe-copy')]);
      expect([...w.nameMismatches]).toEqual(['probe-copy is labelled probe/0/0']);
      expect([...w.allocatedPodsDeleted]).toEqual(['probe-0-0']);
      expect([...w.allocatedInstancePodsDeleted]).toEqual(['probe-copy (probe-0-0 is allocated)']);
    } finally {
      await until('the probes to be gone', async () =>
        (await core.listNamespacedPod({ namespace: ns })).items.length === 0 ? true : undefined,
      );
      w.reset();
    }
  });

  it(
    'never duplicates a shard pod, never deletes an allocated instance, and converges within 15 s of the last kill',
    async () => {
      startOperator();
      for (const name of worldNames) {
        await worlds(kc, ns).create({
          apiVersion: 'aethex.dev/v1alpha1',
          kind: 'GameWorld',
          metadata: { name },
          spec: {
            image: 'example.org/aethex/gameserver:1',
            world: { bounds: { minX: 0, minY: 0, maxX: 1000, maxY: 500 } },
            sharding: { columns: shardsOf(name), rows: 1 },
            instances: randInt(0, MAX_INSTANCES),
          },
        });
      }
      expect(await convergedBy(Date.now() + 90_000)).toEqual([]);

      const startedAt = Date.now();
      const end = startedAt + CHAOS_MS;
      const driving = drive(end);
      while (Date.now() < end) {
        await sleep(Math.min(randInt(KILL_MIN_MS, KILL_MAX_MS), Math.max(0, end - Date.now())));
        if (Date.now() < end) await killAndRestart();
      }
      await driving;
      // The last changes, then at once the last fault: the process that must converge starts cold
      // with work to do (five worlds scaled to a different size).
      for (const name of [...worldNames].sort(() => random() - 0.5).slice(0, 5)) {
        const w = (await worlds(kc, ns).get(name)) as World;
        await worlds(kc, ns).patch(name, { spec: { instances: (w.spec.instances + randInt(1, MAX_INSTANCES)) % (MAX_INSTANCES + 1) } });
        counts.scalePatches++;
      }
      await killAndRestart();
      chaosOver = true;

      const trace: string[] = [];
      const left = await convergedBy(lastFaultAt + CONVERGE_MS, trace);
      const convergedInMs = Date.now() - lastFaultAt;
      const w = watcher as PodWatcher;
      console.log(
        `chaos (seed ${seed}): ${JSON.stringify(counts)}; ${w.events} pod events watched (${w.restarts} watch restarts, ${w.relists} relists); ` +
          `${readiness?.restored} pods made ready again after the node controller marked them not ready; ` +
          `duplicates ${w.duplicates.length}, allocated pods deleted ${w.allocatedPodsDeleted.length}, pods of allocated instances deleted ${w.allocatedInstancePodsDeleted.length}; ` +
          `takeover after a kill median ${median(takeoverMs.sameIdentity)} ms with the same identity, ${median(takeoverMs.newIdentity)} ms with a new one; ` +
          `converged ${left.length === 0 ? `${convergedInMs} ms` : 'NOT'} after the last kill (the new process: ${milestones(current, lastFaultAt)}) [${trace.join(', ')}]`,
      );
      if (left.length > 0)
        console.log(`operator output, last processes:\n${[...recentOutput, current?.output() ?? ''].join('\n---\n').slice(-12_000)}`);
      expect(w.duplicates).toEqual([]);
      expect(w.nameMismatches).toEqual([]);
      expect(w.allocatedPodsDeleted).toEqual([]);
      expect(w.allocatedInstancePodsDeleted).toEqual([]);
      expect(left).toEqual([]);
      // The chaos did what it says: the operator died many times, and worked in between.
      expect(chaosOver).toBe(true);
      expect(counts.kills).toBeGreaterThanOrEqual(CHAOS_MS / KILL_MAX_MS);
      expect(counts.led).toBeGreaterThan(counts.kills / 2);
      expect(counts.allocations).toBeGreaterThan(10);
      expect(Object.keys(counts.selfExits).filter((c) => c !== '3')).toEqual([]);
    },
    CHAOS_MS + 120_000,
  );

  it('leaves nothing behind when worlds are deleted: the garbage collector takes their children', async () => {
    const w = watcher as PodWatcher;
    // The worlds' allocated pods go with them now, on purpose.
    w.countDeletions = false;
    const doomed = worldNames.slice(0, 5);
    await Promise.all(doomed.map((name) => worlds(kc, ns).delete(name)));
    await until(
      'deleted worlds and their children to be gone',
      async () => {
        const ws = (await listWorlds()).map((x) => x.metadata.name);
        const pods = (await core.listNamespacedPod({ namespace: ns })).items.map((p) => p.metadata?.labels?.[LABELS.world]);
        const cms = (await core.listNamespacedConfigMap({ namespace: ns })).items.map((o) => o.metadata?.labels?.[LABELS.world]);
        const svcs = (await core.listNamespacedService({ namespace: ns })).items.map((o) => o.metadata?.labels?.[LABELS.world]);
        const pdbs = (await policy.listNamespacedPodDisruptionBudget({ namespace: ns })).items.map(
          (o) => o.metadata?.labels?.[LABELS.world],
        );
        return doomed.some((d) => ws.includes(d) || pods.includes(d) || cms.includes(d) || svcs.includes(d) || pdbs.includes(d))
          ? undefined
          : true;
      },
      60_000,
      500,
    );
    expect(await convergedBy(Date.now() + CONVERGE_MS)).toEqual([]);
    expect(w.duplicates).toEqual([]);
    expect(Object.keys(counts.selfExits).filter((c) => c !== '3')).toEqual([]);
  }, 90_000);

  it('keeps leading through lease renewals the API server refuses for less than the lease', async () => {
    // A process of its own, with the same identity (it leads at once) and a 10 s lease: renewals
    // refused for about a second stay well within it though this test process be held up for seconds.
    const leaseS = 10;
    const previous = current;
    current = undefined;
    previous?.child.kill('SIGKILL');
    await previous?.exited;
    const op = startOperator(leaseS);
    await op.logged('leading');
    const leases = kc.makeApiClient(k8s.CoordinationV1Api);
    const renewedAt = async () => {
      const lease = await leases.readNamespacedLease({ name: 'aethex-operator', namespace: ns });
      return new Date(lease.spec?.renewTime as unknown as string).getTime();
    };
    const rbac = kc.makeApiClient(k8s.RbacAuthorizationV1Api);
    const role = await rbac.readNamespacedRole({ name: identity?.leaderRole as string, namespace: ns });
    const rules = role.rules ?? [];
    // The Lease may be read but not updated (403) until it has gone three renewal intervals unrenewed.
    await rbac.replaceNamespacedRole({
      name: role.metadata?.name as string,
      namespace: ns,
      body: { ...role, rules: rules.map((r) => ({ ...r, verbs: r.verbs.filter((v) => v !== 'update' && v !== 'patch') })) },
    });
    const lastRenewed = await until(
      'renewals to be refused',
      async () => {
        const at = await renewedAt();
        return Date.now() - at >= 3 * RETRY_MS ? at : undefined;
      },
      10_000,
      50,
    );
    const fresh = await rbac.readNamespacedRole({ name: role.metadata?.name as string, namespace: ns });
    await rbac.replaceNamespacedRole({ name: role.metadata?.name as string, namespace: ns, body: { ...fresh, rules } });
    // How long the operator went unrenewed: from its last renewal until the role was back.
    const refusedMs = Date.now() - lastRenewed;
    let exited = false;
    void op.exited.then(() => {
      exited = true;
    });
    const outcome = await until(
      'a renewal after the refusals, or the operator to exit',
      async () => (exited ? 'exited' : (await renewedAt()) > lastRenewed ? 'renewed' : undefined),
      10_000,
      50,
    );
    // A refused renewal is not a lost lease: the lease is still this replica's until it expires.
    expect(refusedMs, 'renewals refused for less than the lease, less a renewal interval').toBeLessThan(leaseS * 1000 - RETRY_MS);
    expect(outcome).toBe('renewed');
    expect(op.output()).not.toContain('lost the lease');
    expect(op.child.exitCode).toBeNull();
  }, 30_000);
});
