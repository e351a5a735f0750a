import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GameWorld, LABELS } from '../src/api/gameworld.js';
import { KubeClient } from '../src/kube/client.js';
import { Reconciler } from '../src/reconcile/reconciler.js';
import { dropNamespace, installCrd, kubeConfig, kubectl, namespace, testEnv, until, worlds } from './harness.js';
import { type OperatorIdentity, operatorIdentity, removeOperatorIdentity } from './operator-process.js';

const env = testEnv();
const kc = kubeConfig(env);
const core = kc.makeApiClient(k8s.CoreV1Api);
let ns: string;
let kube: KubeClient;
let cleaned: string[];
let reconciler: Reconciler;
let identity: OperatorIdentity | undefined;

beforeAll(async () => {
  await installCrd(env);
  ns = await namespace(kc, 'op-reconcile');
  // The reconciler acts as the operator's ServiceAccount under the chart's RBAC, never as admin;
  // the test observes and plays the user with the admin kubeconfig.
  identity = await operatorIdentity(env, kc, ns, `aethex-${ns.slice(-12)}`.replace(/-+$/, ''));
  const operatorKc = new k8s.KubeConfig();
  operatorKc.loadFromFile(identity.kubeconfig);
  kube = new KubeClient(operatorKc);
  cleaned = [];
  reconciler = new Reconciler({ kube, now: () => new Date(), cleanup: recordCleanup });
});
afterAll(async () => {
  await dropNamespace(kc, ns);
  await removeOperatorIdentity(env, identity);
});

const world = (name: string, spec: Record<string, unknown> = {}) => ({
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name, namespace: ns },
  spec: {
    image: 'example.org/aethex/gameserver:1',
    world: { bounds: { minX: 0, minY: 0, maxX: 1000, maxY: 500 } },
    sharding: { columns: 2, rows: 1 },
    instances: 2,
    ...spec,
  },
});

/** The external cleanup, recording what it saw: the world's shard pods still there when it ran. */
const recordCleanup = async (w: GameWorld) =>
  void cleaned.push(`${w.metadata.name}: ${(await kube.listShardPods(w.metadata.namespace, w.metadata.name)).length} pods`);

/** Runs `r`'s passes over a deleted world, as the work queue would, until it is gone. */
async function untilGone(r: Reconciler, name: string): Promise<void> {
  await until(
    `${name} to be gone`,
    async () => {
      await r.reconcile(ns, name);
      return (await worlds(kc, ns)
        .get(name)
        .then(() => undefined)
        .catch(() => true)) as true | undefined;
    },
    30_000,
    200,
  );
}

const pods = async (w: string) => (await core.listNamespacedPod({ namespace: ns, labelSelector: `${LABELS.world}=${w}` })).items;

/** Runs passes the way the work queue would, until `done` holds for the world. */
async function settle(name: string, done: (w: GameWorld) => boolean, onPass?: () => Promise<void>, timeoutMs = 60_000): Promise<GameWorld> {
  return until(
    `${name} to settle`,
    async () => {
      await onPass?.();
      await reconciler.reconcile(ns, name);
      const w = (await worlds(kc, ns).get(name)) as unknown as GameWorld;
      return done(w) ? w : undefined;
    },
    timeoutMs,
    100,
  );
}
const ready = (w: GameWorld) =>
  w.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true &&
  w.status?.observedGeneration === w.metadata.generation;

describe('reconciling a GameWorld against the real API server', () => {
  it('creates every shard pod, the shard map, Service and PDB; kwok makes them Ready; status says so', async () => {
    await worlds(kc, ns).create(world('forest'));
    const w = await settle('forest', ready);
    expect(w.status).toMatchObject({
      shardSummary: '4/4',
      instances: { desired: 2, current: 2, ready: 2, allocated: 0 },
      selector: 'aethex.dev/world=forest',
    });
    expect(w.metadata.finalizers).toContain('aethex.dev/cleanup');
    // The Ready transition is recorded as a Kubernetes Event on the world.
    const events = await kc.makeApiClient(k8s.EventsV1Api).listNamespacedEvent({ namespace: ns });
    const ours = events.items.filter((e) => e.reportingController === 'aethex.dev/operator' && e.regarding?.name === 'forest');
    expect(ours.map((e) => `${e.type} ${e.regarding?.kind}`)).toContain('Normal GameWorld');
    const ps = await pods('forest');
    expect(ps.map((p) => p.metadata?.name).sort()).toEqual(['forest-0-0', 'forest-0-1', 'forest-1-0', 'forest-1-1']);
    for (const p of ps) {
      expect(p.spec?.nodeName).toMatch(/^kwok-node-\d+$/);
      expect(p.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'GameWorld', name: 'forest', controller: true });
      expect(p.metadata?.labels).toMatchObject({ 'aethex.dev/world': 'forest', 'aethex.dev/instance': p.metadata?.name?.split('-')[1] });
    }
    const env1 = ps.find((p) => p.metadata?.name === 'forest-1-1')?.spec?.containers[0]?.env ?? [];
    expect(env1).toEqual(
      expect.arrayContaining([
        // The whole world; the shard finds its own region in the mounted shard map.
        { name: 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS', value: '0,0,1000,500' },
        { name: 'AETHEX_GAMESERVER_SHARD_MAP_FILE', value: '/etc/aethex/shard-map.json' },
        { name: 'AETHEX_GAMESERVER_SHARD_NAME', value: 'forest-1-1' },
        // The shard's stored state and join tokens are keyed by the world's namespace too.
        { name: 'AETHEX_GAMESERVER_SHARD_NAMESPACE', value: ns },
        // When the world was created, for taking over rows from before namespaces.
        { name: 'AETHEX_GAMESERVER_SHARD_WORLD_CREATED_S', value: expect.stringMatching(/^1\d{9}$/) },
        { name: 'AETHEX_GAMESERVER_LINKS_SECRET', valueFrom: { secretKeyRef: { name: 'forest-shard-links', key: 'secret' } } },
        // No PostgreSQL in the world: snapshots go to an emptyDir (the root filesystem is read-only).
        { name: 'AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY', value: '/var/lib/aethex/snapshots' },
      ]),
    );
    const forest11 = ps.find((p) => p.metadata?.name === 'forest-1-1');
    expect(forest11?.spec?.volumes).toContainEqual(expect.objectContaining({ name: 'state', emptyDir: {} }));
    expect(forest11?.spec?.containers[0]?.volumeMounts).toContainEqual(
      expect.objectContaining({ name: 'state', mountPath: '/var/lib/aethex' }),
    );
    // The link Secret exists, made by the operator under its create-only permission.
    const secret = await core.readNamespacedSecret({ name: 'forest-shard-links', namespace: ns });
    expect(Buffer.from(secret.data?.secret ?? '', 'base64').length).toBeGreaterThanOrEqual(32);
    expect(secret.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'GameWorld', name: 'forest' });
    const cm = await core.readNamespacedConfigMap({ name: 'forest-world', namespace: ns });
    const map = JSON.parse(cm.data?.['shard-map.json'] as string);
    expect(map.instances[1].shards[0]).toEqual({
      shard: 0,
      name: 'forest-1-0',
      region: { minX: 0, minY: 0, maxX: 500, maxY: 500 },
      neighbours: [1],
      address: `forest-1-0.forest-shards.${ns}.svc:7777`,
    });
    expect((await core.readNamespacedService({ name: 'forest-shards', namespace: ns })).spec?.clusterIP).toBe('None');
    const table = await kubectl(env, 'get', 'gw', '-n', ns, 'forest');
    expect(table.split('\n')[0]?.split(/\s+/)).toEqual(['NAME', 'INSTANCES', 'READY', 'ALLOCATED', 'SHARDS', 'AGE']);
    expect(table.split('\n')[1]?.split(/\s+/).slice(0, 5)).toEqual(['forest', '2', '2', '0', '4/4']);
  });

  it('issues zero writes when it reconciles an unchanged world again', async () => {
    await reconciler.reconcile(ns, 'forest');
    const before = { ...kube.requests };
    await reconciler.reconcile(ns, 'forest');
    expect(kube.writes - (before.create + before.apply + before.patch + before.delete)).toBe(0);
  });

  it('scales through the scale subresource, and never removes an allocated instance', async () => {
    await kubectl(env, 'scale', '-n', ns, 'gw/forest', '--replicas=3');
    await settle('forest', (w) => ready(w) && w.status?.instances?.current === 3);
    expect((await pods('forest')).length).toBe(6);
    for (const p of (await pods('forest')).filter((x) => x.metadata?.labels?.[LABELS.instance] === '1')) {
      await core.patchNamespacedPod(
        { name: p.metadata?.name as string, namespace: ns, body: { metadata: { labels: { [LABELS.state]: 'Allocated' } } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
    }
    await kubectl(env, 'scale', '-n', ns, 'gw/forest', '--replicas=1');
    const w = await settle('forest', (x) => ready(x) && x.status?.instances?.current === 1 && x.status.shards?.length === 2);
    expect(w.status?.instances).toMatchObject({ desired: 1, current: 1, allocated: 1 });
    await until('scaled-down pods to go', async () => {
      const names = (await pods('forest')).map((p) => p.metadata?.name).sort();
      return names.join() === 'forest-1-0,forest-1-1' ? names : undefined;
    });
    // Back to two: the allocated instance stays, the lowest free index is added.
    await kubectl(env, 'scale', '-n', ns, 'gw/forest', '--replicas=2');
    await settle('forest', (x) => ready(x) && x.status?.instances?.current === 2);
    expect((await pods('forest')).map((p) => p.metadata?.name).sort()).toEqual(['forest-0-0', 'forest-0-1', 'forest-1-0', 'forest-1-1']);
  });

  it('rolls an image change one shard at a time, leaving the allocated instance alone', async () => {
    await worlds(kc, ns).patch('forest', { spec: { image: 'example.org/aethex/gameserver:2' } });
    let worstUnavailable = 0;
    const sample = async () => {
      const ps = (await pods('forest')).filter((p) => p.metadata?.labels?.[LABELS.instance] === '0');
      const available = ps.filter(
        (p) => !p.metadata?.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
      worstUnavailable = Math.max(worstUnavailable, 2 - available.length);
    };
    await settle(
      'forest',
      (w) =>
        ready(w) &&
        w.status?.conditions?.some((c) => c.type === 'Progressing' && c.reason !== 'Reconciling' && c.status === 'True') === true,
      sample,
    );
    await until(
      'instance 0 to run the new image',
      async () => {
        await sample();
        await reconciler.reconcile(ns, 'forest');
        const images = (await pods('forest'))
          .filter((p) => p.metadata?.labels?.[LABELS.instance] === '0' && !p.metadata?.deletionTimestamp)
          .map((p) => p.spec?.containers[0]?.image);
        return images.length === 2 && images.every((i) => i === 'example.org/aethex/gameserver:2') ? true : undefined;
      },
      60_000,
      100,
    );
    // Exactly one: the roll was seen in progress, and never with two shards of the instance down.
    expect(worstUnavailable).toBe(1);
    const allocated = (await pods('forest')).filter((p) => p.metadata?.labels?.[LABELS.instance] === '1');
    expect(allocated.map((p) => p.spec?.containers[0]?.image)).toEqual([
      'example.org/aethex/gameserver:1',
      'example.org/aethex/gameserver:1',
    ]);
  });

  it('reports Ready=False with a reason when the pods cannot be scheduled', async () => {
    await worlds(kc, ns).create(
      world('nowhere', {
        instances: 1,
        sharding: { columns: 1, rows: 1 },
        template: { nodeSelector: { 'aethex.dev/no-such-node': 'true' } },
      }),
    );
    const w = await settle(
      'nowhere',
      (x) => x.status?.conditions?.some((c) => c.type === 'Ready' && c.reason === 'Unschedulable') === true,
    );
    expect(w.status?.conditions?.find((c) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'Unschedulable' });
  });

  const held = (x: GameWorld) =>
    x.status?.observedGeneration === x.metadata.generation &&
    x.status?.conditions?.some((c) => c.type === 'Ready' && c.reason === 'InvalidSpec') === true;

  it('refuses a spec its shards would refuse at start: no pod, and the field and its allowed range in the status', async () => {
    const bounds = { minX: -2_000_000, minY: -1000, maxX: 2_000_000, maxY: 1000 };
    await worlds(kc, ns).create(world('far', { instances: 1, world: { bounds, maxSpeed: 5 } }));
    const w = await settle('far', held, undefined, 20_000);
    const condition = (type: string) => w.status?.conditions?.find((c) => c.type === type);
    expect(condition('Ready')).toMatchObject({
      status: 'False',
      reason: 'InvalidSpec',
      message: expect.stringMatching(
        /^spec\.world\.bounds: too far from 0 for spec\.world\.maxSpeed \(5\): .* keep the bounds inside ±524288, or raise spec\.world\.maxSpeed to at least 12\.5$/,
      ),
    });
    expect(condition('Degraded')).toMatchObject({ status: 'True', reason: 'InvalidSpec', message: condition('Ready')?.message });
    expect(condition('Progressing')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(w.status).toMatchObject({ shardSummary: '0/0', instances: { desired: 1, current: 0, ready: 0 }, shards: [] });
    // More passes make nothing: no pod, no shard map, no link Secret; and write nothing.
    await reconciler.reconcile(ns, 'far');
    const writes = kube.writes;
    await reconciler.reconcile(ns, 'far');
    expect(kube.writes).toBe(writes);
    expect(await pods('far')).toEqual([]);
    expect((await core.listNamespacedConfigMap({ namespace: ns, labelSelector: 'aethex.dev/world=far' })).items).toEqual([]);
    expect((await core.listNamespacedSecret({ namespace: ns, labelSelector: 'aethex.dev/world=far' })).items).toEqual([]);
    // `kubectl describe` shows it as a Warning Event on the world.
    const events = await kc.makeApiClient(k8s.EventsV1Api).listNamespacedEvent({ namespace: ns });
    const warning = events.items.find((e) => e.regarding?.name === 'far' && e.reason === 'InvalidSpec');
    expect(warning).toMatchObject({ type: 'Warning', note: condition('Ready')?.message });
  });

  it('refuses a template.env the shard would refuse (its own configuration check): no pod, the variable and its limit in the status; fixed, it runs', async () => {
    const npcs = (value: string) => ({ template: { env: [{ name: 'AETHEX_GAMESERVER_ENGINE_NPC_COUNT', value }] } });
    // 4000 entities, 500 of them players: room for 3500 NPCs. With 5000 every shard would exit 2.
    await worlds(kc, ns).create(
      world('crowd', {
        instances: 1,
        sharding: { columns: 1, rows: 1 },
        capacity: { entitiesPerShard: 4000, playersPerShard: 500 },
        ...npcs('5000'),
      }),
    );
    const w = await settle('crowd', held, undefined, 20_000);
    const condition = (type: string) => w.status?.conditions?.find((c) => c.type === type);
    expect(condition('Ready')).toMatchObject({
      status: 'False',
      reason: 'InvalidSpec',
      message:
        'spec.template.env[AETHEX_GAMESERVER_ENGINE_NPC_COUNT]: the shard would refuse its settings at start (exit 2): engine.npc_count: 5000 NPCs and engine.max_players (500) players need more than engine.max_entities (4000): at most 3500 NPCs (engine.max_entities: spec.capacity.entitiesPerShard; engine.max_players: spec.capacity.playersPerShard)',
    });
    expect(condition('Degraded')).toMatchObject({ status: 'True', reason: 'InvalidSpec', message: condition('Ready')?.message });
    expect(condition('Progressing')).toMatchObject({ status: 'False', reason: 'InvalidSpec' });
    expect(w.status).toMatchObject({ shardSummary: '0/0', instances: { desired: 1, current: 0, ready: 0 }, shards: [] });
    await reconciler.reconcile(ns, 'crowd');
    expect(await pods('crowd')).toEqual([]);
    expect((await core.listNamespacedConfigMap({ namespace: ns, labelSelector: 'aethex.dev/world=crowd' })).items).toEqual([]);
    const events = await kc.makeApiClient(k8s.EventsV1Api).listNamespacedEvent({ namespace: ns });
    expect(events.items.find((e) => e.regarding?.name === 'crowd' && e.reason === 'InvalidSpec')).toMatchObject({
      type: 'Warning',
      note: condition('Ready')?.message,
    });

    // Fixed: as many NPCs as there is room for. The pod is made, with the variable as given.
    await worlds(kc, ns).patch('crowd', { spec: npcs('3500') });
    const fixed = await settle('crowd', ready);
    expect(fixed.status).toMatchObject({ shardSummary: '1/1', instances: { desired: 1, current: 1, ready: 1 } });
    const [pod] = await pods('crowd');
    expect(pod?.spec?.containers[0]?.env?.find((e) => e.name === 'AETHEX_GAMESERVER_ENGINE_NPC_COUNT')?.value).toBe('3500');
  });

  it('keeps the running shards of a world whose spec turns invalid, says why, and rolls them once it is fixed', async () => {
    await worlds(kc, ns).create(world('glade', { instances: 1, sharding: { columns: 1, rows: 1 } }));
    await settle('glade', ready);
    const running = await pods('glade');
    const shape = (ps: k8s.V1Pod[]) =>
      ps.map((p) => [
        p.metadata?.name,
        p.metadata?.uid,
        p.metadata?.annotations?.['aethex.dev/template-hash'],
        !!p.metadata?.deletionTimestamp,
      ]);
    expect(shape(running)).toEqual([['glade-0-0', expect.any(String), expect.any(String), false]]);

    // Bounds 2,000,000 from 0 need a max speed of 12.5: the shard would exit 2 on the default 5.
    await worlds(kc, ns).patch('glade', { spec: { world: { bounds: { minX: 0, minY: 0, maxX: 2_000_000, maxY: 500 } } } });
    const w = await settle('glade', held, undefined, 20_000);
    expect(w.status?.conditions?.find((c) => c.type === 'Ready')?.message).toMatch(
      /^spec\.world\.bounds: too far from 0 for spec\.world\.maxSpeed \(5\): .*0\.125 apart at 2000000/,
    );
    // The shard still runs on the last valid spec, and the status shows it (region from then).
    expect(w.status).toMatchObject({ shardSummary: '1/1', instances: { desired: 1, current: 1, ready: 1 } });
    expect(w.status?.shards).toEqual([
      expect.objectContaining({ name: 'glade-0-0', state: 'Ready', region: { minX: 0, minY: 0, maxX: 1000, maxY: 500 } }),
    ]);
    for (let i = 0; i < 3; i++) await reconciler.reconcile(ns, 'glade');
    expect(shape(await pods('glade'))).toEqual(shape(running));
    const cm = await core.readNamespacedConfigMap({ name: 'glade-world', namespace: ns });
    expect(JSON.parse(cm.data?.['shard-map.json'] as string).bounds).toEqual({ minX: 0, minY: 0, maxX: 1000, maxY: 500 });

    // Its pod ends while the world is held (evicted, its node lost): it is made again from the
    // last valid spec, not left gone until the spec is fixed.
    await core.deleteNamespacedPod({ name: 'glade-0-0', namespace: ns, gracePeriodSeconds: 0 });
    const remade = await until(
      'the ended shard pod of a held world to be made again',
      async () => {
        await reconciler.reconcile(ns, 'glade');
        const [p] = await pods('glade');
        return p && p.metadata?.uid !== running[0]?.metadata?.uid && !p.metadata?.deletionTimestamp ? p : undefined;
      },
      30_000,
      100,
    );
    expect(remade.metadata?.annotations?.['aethex.dev/template-hash']).toBe(
      running[0]?.metadata?.annotations?.['aethex.dev/template-hash'],
    );
    expect(remade.spec?.containers[0]?.env?.find((e) => e.name === 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS')?.value).toBe('0,0,1000,500');
    const still = await settle('glade', (x) => held(x) && x.status?.shardSummary === '1/1', undefined, 20_000);
    expect(still.status?.conditions?.find((c) => c.type === 'Progressing')?.message).toMatch(/one that ends is made again/);
    const again = shape(await pods('glade'));
    for (let i = 0; i < 2; i++) await reconciler.reconcile(ns, 'glade');
    expect(shape(await pods('glade'))).toEqual(again);

    // Fixed: the world rolls to the new spec and is Ready again.
    await worlds(kc, ns).patch('glade', { spec: { world: { maxSpeed: 20 } } });
    await until(
      'glade to run the fixed spec',
      async () => {
        await reconciler.reconcile(ns, 'glade');
        const w = (await worlds(kc, ns).get('glade')) as unknown as GameWorld;
        const env = (await pods('glade')).map(
          (p) => p.spec?.containers[0]?.env?.find((e) => e.name === 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS')?.value,
        );
        return ready(w) && env.join() === '0,0,2000000,500' ? true : undefined;
      },
      60_000,
      100,
    );
  });

  it('deletes a world: its shards go first, then the finalizer cleans external state once; garbage collection removes the rest', async () => {
    expect((await pods('forest')).length).toBeGreaterThan(0);
    await worlds(kc, ns).delete('forest');
    await untilGone(reconciler, 'forest');
    await reconciler.reconcile(ns, 'forest');
    // No shard was left to write its final snapshot after the cleanup removed the world's.
    expect(cleaned.filter((n) => n.startsWith('forest:'))).toEqual(['forest: 0 pods']);
    await until('the controller-manager to collect the children', async () => {
      const left =
        (await pods('forest')).length +
        (await core.listNamespacedConfigMap({ namespace: ns, labelSelector: 'aethex.dev/world=forest' })).items.length;
      return left === 0 ? true : undefined;
    });
  });

  it('a shard pod stuck terminating (its node unreachable) delays the cleanup by shardDrainWaitMs, then is named in a Warning Event', async () => {
    await worlds(kc, ns).create(world('marsh', { sharding: { columns: 1, rows: 1 }, instances: 1 }));
    await settle('marsh', ready);
    const [pod] = await pods('marsh');
    const name = pod?.metadata?.name as string;
    // kwok stops acting for a pod marked custom: like a kubelet that never confirms the kill.
    await core.patchNamespacedPod(
      { name, namespace: ns, body: { metadata: { annotations: { 'kwok.x-k8s.io/status': 'custom' } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    const patient = new Reconciler({ kube, now: () => new Date(), shardDrainWaitMs: 2000, cleanup: recordCleanup });
    try {
      await worlds(kc, ns).delete('marsh');
      const deleted = Date.now();
      // At first the cleanup waits for the pod.
      expect(await patient.reconcile(ns, 'marsh')).toMatchObject({ requeueAfterMs: expect.any(Number) });
      expect(cleaned.filter((n) => n.startsWith('marsh:'))).toEqual([]);
      await untilGone(patient, 'marsh');
      // The wait runs from the world's deletionTimestamp, which has whole seconds: at least 1 s of the 2.
      expect(Date.now() - deleted).toBeGreaterThanOrEqual(900);
      expect(cleaned.filter((n) => n.startsWith('marsh:'))).toEqual(['marsh: 1 pods']);
      const events = await kc.makeApiClient(k8s.EventsV1Api).listNamespacedEvent({ namespace: ns });
      const warning = events.items.find((e) => e.reason === 'ShardsStuckTerminating' && e.regarding?.name === 'marsh');
      expect(warning?.note).toContain(name);
    } finally {
      await core.deleteNamespacedPod({ name, namespace: ns, gracePeriodSeconds: 0 }).catch(() => undefined);
    }
  });
});
