import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OPERATOR_SETTINGS } from '@aethex/operator';
import { envName } from '@aethex/runtime';
import { afterAll, expect, test } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { testEnv, uniqueName } from '../env.js';

const run = promisify(execFile);
const env = testEnv();
const chart = join(import.meta.dirname, '../../charts/aethex');
const helm = (...args: string[]) => run(env.helm, [...args, '--kubeconfig', env.kubeconfig], { maxBuffer: 16 << 20 });
const release = uniqueName('smoke');

afterAll(async () => {
  await helm('uninstall', release, '--namespace', release, '--wait').catch(() => undefined);
  await run(env.kubectl, ['--kubeconfig', env.kubeconfig, 'delete', 'namespace', release, '--wait=false']).catch(() => undefined);
});

test('helm lint passes on charts/aethex', async () => {
  const { stdout } = await helm('lint', chart, '--strict');
  expect(stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
});

test('helm template renders the CRD, the operator and its least-privilege RBAC', async () => {
  const { stdout } = await helm('template', 'aethex', chart, '--include-crds', '--namespace', 'aethex-system');
  const docs = parseAllDocuments(stdout).map(
    (d) => d.toJS() as { kind: string; metadata: { name: string }; rules?: { resources: string[]; verbs: string[] }[] },
  );
  expect(docs.map((d) => d.kind).sort()).toEqual(
    ['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'Deployment', 'Role', 'RoleBinding', 'ServiceAccount'].sort(),
  );
  const clusterRole = docs.find((d) => d.kind === 'ClusterRole');
  // Secrets: create only (each sharded world's link Secret); never get, list or watch.
  const secretRules = clusterRole?.rules?.filter((r) => r.resources.includes('secrets')) ?? [];
  expect(secretRules.map((r) => r.verbs)).toEqual([['create']]);
  expect(secretRules.every((r) => r.resources.length === 1)).toBe(true);
});

test('the operator Deployment sets only settings the operator has, and the Lease in its own namespace', async () => {
  const { stdout } = await helm('template', 'aethex', chart, '--namespace', 'aethex-system', '--set', 'operator.watchNamespace=games');
  const deployment = parseAllDocuments(stdout)
    .map((d) => d.toJS())
    .find((d) => d?.kind === 'Deployment');
  const env = deployment.spec.template.spec.containers[0].env as {
    name: string;
    value?: string;
    valueFrom?: { fieldRef: { fieldPath: string } };
  }[];
  const known = new Set(Object.keys(OPERATOR_SETTINGS).map((k) => envName('AETHEX_OPERATOR', k)));
  for (const e of env) expect(known, `${e.name} is not an operator setting`).toContain(e.name);
  expect(env).toEqual(
    expect.arrayContaining([
      { name: 'AETHEX_OPERATOR_NAMESPACE', value: 'games' },
      { name: 'AETHEX_OPERATOR_LEADER_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ]),
  );
});

test('the deletion cleanup reads its store URLs from Secrets through the kubelet, and waits as long as the values say', async () => {
  const render = async (...set: string[]) => {
    const { stdout } = await helm('template', 'aethex', chart, '--namespace', 'aethex-system', ...set.flatMap((s) => ['--set', s]));
    const deployment = parseAllDocuments(stdout)
      .map((d) => d.toJS())
      .find((d) => d?.kind === 'Deployment');
    return deployment.spec.template.spec.containers[0].env as { name: string }[];
  };
  const cleanup = (env: { name: string }[]) => env.filter((e) => e.name.startsWith('AETHEX_OPERATOR_CLEANUP_'));
  expect(cleanup(await render())).toEqual([{ name: 'AETHEX_OPERATOR_CLEANUP_SHARD_WAIT_S', value: '120' }]);
  expect(
    cleanup(
      await render(
        'operator.cleanup.postgresUrlSecret.name=shard-stores',
        'operator.cleanup.redisUrlSecret.name=shard-stores',
        'operator.cleanup.redisUrlSecret.key=redis',
        'operator.cleanup.shardWaitSeconds=300',
      ),
    ),
  ).toEqual([
    { name: 'AETHEX_OPERATOR_CLEANUP_POSTGRES_URL', valueFrom: { secretKeyRef: { name: 'shard-stores', key: 'url' } } },
    { name: 'AETHEX_OPERATOR_CLEANUP_REDIS_URL', valueFrom: { secretKeyRef: { name: 'shard-stores', key: 'redis' } } },
    { name: 'AETHEX_OPERATOR_CLEANUP_SHARD_WAIT_S', value: '300' },
  ]);
  // Less than the shard pods' grace period would clean under a draining shard.
  const err = await render('operator.cleanup.shardWaitSeconds=10').then(
    () => undefined,
    (e: { stderr: string }) => e,
  );
  expect(err?.stderr).toContain('operator.cleanup.shardWaitSeconds: Must be greater than or equal to 30');
});

test('values.schema.json refuses an unknown value with its name', async () => {
  const err = await helm('template', 'aethex', chart, '--set', 'operator.replicaz=3').then(
    () => undefined,
    (e: { stderr: string }) => e,
  );
  expect(err?.stderr).toContain('replicaz');
});

test('helm installs the chart into the real API server and its operator pods are scheduled', async () => {
  await helm(
    'install',
    release,
    chart,
    '--namespace',
    release,
    '--create-namespace',
    '--set',
    'operator.replicas=1',
    '--wait',
    '--timeout',
    '90s',
  );
  const { stdout } = await run(env.kubectl, [
    '--kubeconfig',
    env.kubeconfig,
    'get',
    'pods',
    '--namespace',
    release,
    '-o',
    'jsonpath={range .items[*]}{.spec.nodeName}{"\\n"}{end}',
  ]);
  expect(stdout.trim().split('\n')).toEqual([expect.stringMatching(/^kwok-node-\d+$/)]);
});
