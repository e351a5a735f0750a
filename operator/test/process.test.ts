import { join } from 'node:path';
import { killProcesses, spawnSource, type TestProcess } from '@aethex/testing/process';
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS } from '../src/api/gameworld.js';
import { dropNamespace, installCrd, kubeConfig, kubectl, namespace, testEnv, until, worlds } from './harness.js';
import { type OperatorIdentity, operatorIdentity, removeOperatorIdentity } from './operator-process.js';

const env = testEnv();
const kc = kubeConfig(env);
const core = kc.makeApiClient(k8s.CoreV1Api);
let ns: string;
let release: string;
let saKubeconfig: string;
let identity: OperatorIdentity | undefined;

function startOperator(identity: string): TestProcess {
  return spawnSource(join(import.meta.dirname, '../src/main.ts'), [], {
    env: {
      KUBECONFIG: saKubeconfig,
      AETHEX_OPERATOR_NAMESPACE: ns,
      AETHEX_OPERATOR_LEADER_NAMESPACE: ns,
      AETHEX_OPERATOR_LEADER_IDENTITY: identity,
      AETHEX_OPERATOR_LEADER_LEASE_S: '3',
      AETHEX_OPERATOR_LEADER_RETRY_MS: '500',
      AETHEX_OPERATOR_HTTP_LISTEN: '127.0.0.1:0',
      AETHEX_OPERATOR_LOG_LEVEL: 'info',
    },
  });
}

const pods = async (w: string) =>
  (await core.listNamespacedPod({ namespace: ns, labelSelector: `${LABELS.world}=${w}` })).items.filter(
    (p) => !p.metadata?.deletionTimestamp,
  );
const readyStatus = async (name: string) => {
  const w = (await worlds(kc, ns).get(name)) as {
    metadata: { generation: number };
    status?: { observedGeneration?: number; shardSummary?: string; conditions?: { type: string; status: string }[] };
  };
  return w.status?.observedGeneration === w.metadata.generation &&
    w.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')
    ? w.status
    : undefined;
};

beforeAll(async () => {
  await installCrd(env);
  ns = await namespace(kc, 'op-process');
  release = `aethex-${ns.slice(-12)}`.replace(/-+$/, '');
  identity = await operatorIdentity(env, kc, ns, release);
  saKubeconfig = identity.kubeconfig;
});
afterAll(async () => {
  await killProcesses();
  await dropNamespace(kc, ns);
  await removeOperatorIdentity(env, identity);
});

describe('the operator process under its ServiceAccount', () => {
  it('is refused what its role does not grant (RBAC is real)', async () => {
    const sa = new k8s.KubeConfig();
    sa.loadFromFile(saKubeconfig);
    const err = await sa
      .makeApiClient(k8s.CoreV1Api)
      .listNamespacedSecret({ namespace: ns })
      .then(
        () => undefined,
        (e: { code?: number }) => e,
      );
    expect(err?.code).toBe(403);
  });

  it('reconciles the example world to Ready, and replaces a shard pod that dies', async () => {
    const op = startOperator('solo');
    await kubectl(env, 'apply', '-n', ns, '-f', join(import.meta.dirname, '../../examples/gameworld.yaml'));
    const status = await until('frontier Ready', () => readyStatus('frontier'), 30_000).catch((err) => {
      throw new Error(`${err.message}; operator said:\n${op.output()}`);
    });
    expect(status.shardSummary).toBe('4/4');
    expect((await pods('frontier')).map((p) => p.metadata?.name).sort()).toEqual([
      'frontier-0-0',
      'frontier-0-1',
      'frontier-0-2',
      'frontier-0-3',
    ]);

    const victim = (await pods('frontier'))[0] as k8s.V1Pod;
    await core.deleteNamespacedPod({ name: victim.metadata?.name as string, namespace: ns, gracePeriodSeconds: 0 });
    await until('the deleted shard pod to be replaced', async () => {
      const now = await pods('frontier');
      const again = now.find((p) => p.metadata?.name === victim.metadata?.name);
      return again && again.metadata?.uid !== victim.metadata?.uid ? true : undefined;
    });
    await until('frontier Ready again', () => readyStatus('frontier'));
    op.kill('SIGTERM');
    expect((await op.exited).code).toBe(0);
    expect(op.output()).toContain('leading');
  });

  it('fails over between two replicas; a paused stale leader writes nothing when resumed', async () => {
    const a = startOperator('replica-a');
    await a.logged('leading', 60_000);
    const b = startOperator('replica-b');
    await b.logged('waiting for the lease', 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    expect(b.output()).not.toContain('"msg":"leading"');

    a.kill('SIGSTOP');
    await b.logged('leading', 20_000);
    // While a is paused, b scales the world down: a's caches still say 1 instance of 4 pods.
    await worlds(kc, ns).patch('frontier', { spec: { instances: 0 } });
    await until('b to scale frontier to zero', async () => ((await pods('frontier')).length === 0 ? true : undefined));
    // Stop b (its lease stays valid for a few seconds): from here on, any write can only be a's.
    b.kill('SIGTERM');
    expect((await b.exited).code).toBe(0);
    const before = (await worlds(kc, ns).get('frontier')) as { metadata: { resourceVersion: string } };

    a.kill('SIGCONT');
    expect((await a.exited).code).toBe(3);
    expect(a.output()).toContain('lost the lease');
    await new Promise((r) => setTimeout(r, 1500));
    // Nothing a wrote took effect: no pod came back and the world did not change.
    expect((await pods('frontier')).length).toBe(0);
    expect(((await worlds(kc, ns).get('frontier')) as { metadata: { resourceVersion: string } }).metadata.resourceVersion).toBe(
      before.metadata.resourceVersion,
    );
    b.kill('SIGTERM');
    expect((await b.exited).code).toBe(0);
  });
});
