import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type TestEnv, testEnv, uniqueName } from '@aethex/testing';
import * as k8s from '@kubernetes/client-node';
import { GAMEWORLD_GROUP, GAMEWORLD_PLURAL, GAMEWORLD_VERSION } from '../src/api/gameworld.js';

export { testEnv, uniqueName };

const run = promisify(execFile);

export function kubeConfig(env: TestEnv = testEnv()): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(env.kubeconfig);
  return kc;
}

export async function kubectl(env: TestEnv, ...args: string[]): Promise<string> {
  const { stdout } = await run(env.kubectl, ['--kubeconfig', env.kubeconfig, ...args]);
  return stdout;
}

/** Applies the GameWorld CRD (with kubectl: client-node's serializer drops `default` and CEL rules) and waits for it. */
export async function installCrd(env: TestEnv = testEnv()): Promise<void> {
  await kubectl(
    env,
    'apply',
    '--server-side',
    '--force-conflicts',
    '--field-manager=aethex-test',
    '-f',
    join(import.meta.dirname, '../../crds/gameworld.yaml'),
  );
  await kubectl(env, 'wait', '--for=condition=Established', '--timeout=60s', 'crd/gameworlds.aethex.dev');
}

/** A fresh namespace for one test file. */
export async function namespace(kc: k8s.KubeConfig, prefix: string): Promise<string> {
  const name = uniqueName(prefix).toLowerCase().slice(0, 60).replace(/-+$/, '');
  await kc.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name } } });
  return name;
}

/**
 * Deletes a test namespace for good: GameWorlds left with the operator's finalizer (and no
 * operator running to remove it) would keep the namespace Terminating forever.
 */
export async function dropNamespace(kc: k8s.KubeConfig, ns: string): Promise<void> {
  const w = worlds(kc, ns);
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const list = (await custom
    .listNamespacedCustomObject({ group: GAMEWORLD_GROUP, version: GAMEWORLD_VERSION, namespace: ns, plural: GAMEWORLD_PLURAL })
    .catch(() => ({ items: [] }))) as { items: { metadata: { name: string; finalizers?: string[] } }[] };
  for (const item of list.items) {
    if (item.metadata.finalizers?.length) await w.patch(item.metadata.name, { metadata: { finalizers: null } }).catch(() => undefined);
  }
  await kc
    .makeApiClient(k8s.CoreV1Api)
    .deleteNamespace({ name: ns })
    .catch(() => undefined);
}

export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}`, { cause: last });
}

export function worlds(kc: k8s.KubeConfig, ns: string) {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const base = { group: GAMEWORLD_GROUP, version: GAMEWORLD_VERSION, namespace: ns, plural: GAMEWORLD_PLURAL };
  return {
    create: (body: object) => custom.createNamespacedCustomObject({ ...base, body }),
    get: (name: string) => custom.getNamespacedCustomObject({ ...base, name }) as Promise<unknown>,
    patch: (name: string, body: object) =>
      custom.patchNamespacedCustomObject({ ...base, name, body }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch)),
    delete: (name: string) => custom.deleteNamespacedCustomObject({ ...base, name }),
  };
}
