import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GAMEWORLD_GROUP, GAMEWORLD_PLURAL, GAMEWORLD_VERSION } from '@aethex/operator';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { testEnv, uniqueName } from '../env.js';

const env = testEnv();
const kc = new k8s.KubeConfig();
kc.loadFromFile(env.kubeconfig);
const core = kc.makeApiClient(k8s.CoreV1Api);
const ext = kc.makeApiClient(k8s.ApiextensionsV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
const rbac = kc.makeApiClient(k8s.RbacAuthorizationV1Api);
const namespace = uniqueName('smoke');
const crdFile = join(import.meta.dirname, '../../crds/gameworld.yaml');

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`timed out waiting for ${what}`, { cause: last });
}

function gameWorld(name: string, bounds: Record<string, number>) {
  return {
    apiVersion: `${GAMEWORLD_GROUP}/${GAMEWORLD_VERSION}`,
    kind: 'GameWorld',
    metadata: { name, namespace },
    spec: { image: 'example.org/aethex/gameserver:0.1.0', world: { bounds }, sharding: { columns: 2, rows: 2 } },
  };
}

beforeAll(async () => {
  // kubectl, not client-node's typed serializer: that one drops schema keys such as `default` and
  // `x-kubernetes-validations` because its model names them `_default` and `xKubernetesValidations`.
  await promisify(execFile)(env.kubectl, [
    '--kubeconfig',
    env.kubeconfig,
    'apply',
    '--server-side',
    '--force-conflicts',
    '--field-manager=aethex-smoke',
    '-f',
    crdFile,
  ]);
  await until('the GameWorld CRD to be Established', async () => {
    const got = await ext.readCustomResourceDefinition({ name: 'gameworlds.aethex.dev' });
    return got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ? true : undefined;
  });
  await core.createNamespace({ body: { metadata: { name: namespace } } });
});

afterAll(async () => {
  await core.deleteNamespace({ name: namespace }).catch(() => undefined);
});

describe('kube-apiserver with the GameWorld CRD', () => {
  test('a GameWorld is created with defaults, read back and seen by a watch', async () => {
    const events: { phase: string; name: string; instances: number }[] = [];
    // The API server closes watches when a CRD's schema changes (as when this run updated it), so
    // resume from the last resourceVersion seen, as an informer would.
    let resourceVersion: string | undefined;
    let stopped = false;
    let current: AbortController | undefined;
    const startWatch = async (): Promise<void> => {
      current = await new k8s.Watch(kc).watch(
        `/apis/${GAMEWORLD_GROUP}/${GAMEWORLD_VERSION}/namespaces/${namespace}/${GAMEWORLD_PLURAL}`,
        resourceVersion ? { resourceVersion } : {},
        (phase, obj) => {
          resourceVersion = obj.metadata.resourceVersion;
          events.push({ phase, name: obj.metadata.name, instances: obj.spec.instances });
        },
        () => {
          if (!stopped) void startWatch();
        },
      );
    };
    await startWatch();
    const watch = {
      abort: () => {
        stopped = true;
        current?.abort();
      },
    };
    try {
      await custom.createNamespacedCustomObject({
        group: GAMEWORLD_GROUP,
        version: GAMEWORLD_VERSION,
        namespace,
        plural: GAMEWORLD_PLURAL,
        body: gameWorld('frontier', { minX: -1000, minY: -1000, maxX: 1000, maxY: 1000 }),
      });
      const read = (await custom.getNamespacedCustomObject({
        group: GAMEWORLD_GROUP,
        version: GAMEWORLD_VERSION,
        namespace,
        plural: GAMEWORLD_PLURAL,
        name: 'frontier',
      })) as { spec: { instances: number; world: { tickRate: number; aoiRadius: number }; sharding: { columns: number } } };
      expect(read.spec.instances).toBe(1);
      expect(read.spec.world.tickRate).toBe(40);
      expect(read.spec.world.aoiRadius).toBe(200);
      expect(read.spec.sharding.columns).toBe(2);

      await custom.patchNamespacedCustomObject(
        {
          group: GAMEWORLD_GROUP,
          version: GAMEWORLD_VERSION,
          namespace,
          plural: GAMEWORLD_PLURAL,
          name: 'frontier',
          body: { spec: { instances: 3 } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      await until('the watch to deliver ADDED and MODIFIED', async () =>
        events.some((e) => e.phase === 'MODIFIED' && e.instances === 3) ? true : undefined,
      );
      expect(events[0]).toEqual({ phase: 'ADDED', name: 'frontier', instances: 1 });
    } finally {
      watch.abort();
    }
  });

  test('the API server rejects inverted bounds with a message naming the field', async () => {
    const err = await custom
      .createNamespacedCustomObject({
        group: GAMEWORLD_GROUP,
        version: GAMEWORLD_VERSION,
        namespace,
        plural: GAMEWORLD_PLURAL,
        body: gameWorld('inverted', { minX: 10, minY: 0, maxX: -10, maxY: 100 }),
      })
      .then(
        () => undefined,
        (e: k8s.ApiException<string>) => e,
      );
    expect(err?.code).toBe(422);
    expect(err?.body).toContain('spec.world.bounds.minX');
    expect(err?.body).toContain('bounds.minX must be less than bounds.maxX');
  });
});

describe('scheduler and kwok nodes', () => {
  test('a pod is scheduled onto a kwok node and becomes Ready', async () => {
    await core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'probe' },
        spec: { containers: [{ name: 'main', image: 'example.org/aethex/gameserver:0.1.0' }] },
      },
    });
    const pod = await until('the pod to be Ready', async () => {
      const p = await core.readNamespacedPod({ name: 'probe', namespace });
      return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
    });
    expect(pod.spec?.nodeName).toMatch(/^kwok-node-\d+$/);
    expect(pod.status?.phase).toBe('Running');
  });
});

describe('RBAC authorization', () => {
  test('a ServiceAccount token may do only what a Role grants it', async () => {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: 'limited' } } });
    const token = await core.createNamespacedServiceAccountToken({
      name: 'limited',
      namespace,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const cluster = kc.getCurrentCluster();
    const saConfig = new k8s.KubeConfig();
    saConfig.loadFromOptions({
      clusters: [{ name: 'c', server: cluster?.server as string, caFile: cluster?.caFile }],
      users: [{ name: 'limited', token: token.status?.token }],
      contexts: [{ name: 'c', cluster: 'c', user: 'limited' }],
      currentContext: 'c',
    });
    const saCore = saConfig.makeApiClient(k8s.CoreV1Api);

    const denied = await saCore.listNamespacedPod({ namespace }).then(
      () => undefined,
      (e: k8s.ApiException<string>) => e,
    );
    expect(denied?.code).toBe(403);

    await rbac.createNamespacedRole({
      namespace,
      body: { metadata: { name: 'pod-reader' }, rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['list'] }] },
    });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'pod-reader' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'pod-reader' },
        subjects: [{ kind: 'ServiceAccount', name: 'limited', namespace }],
      },
    });
    const list = await until('the RoleBinding to take effect', () => saCore.listNamespacedPod({ namespace }));
    expect(Array.isArray(list.items)).toBe(true);
    const stillDenied = await saCore.listNamespacedSecret({ namespace }).then(
      () => undefined,
      (e: k8s.ApiException<string>) => e,
    );
    expect(stillDenied?.code).toBe(403);
  });
});
