import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { TestEnv } from '@aethex/testing';
import { spawnNode, type TestProcess } from '@aethex/testing/process';
import * as k8s from '@kubernetes/client-node';
import { build } from 'esbuild';
import { parseAllDocuments } from 'yaml';
import { kubectl } from './harness.js';

// The operator as a real process for the chaos test and `bench:operator`: its RBAC exactly as the
// chart renders it, a kubeconfig holding its ServiceAccount's token, and the process built once
// from the current source into one file, the way an image runs compiled JavaScript — it starts in
// ~0.4 s where `--import tsx` takes 3–5 s on this machine, which matters when it is killed every
// few seconds.

const run = promisify(execFile);

export interface OperatorIdentity {
  /** A kubeconfig whose user is the operator's ServiceAccount (its token, never admin). */
  kubeconfig: string;
  /** The rendered RBAC file (delete it with `kubectl delete -f`: the ClusterRole outlives the namespace). */
  rbacFile: string;
  /** The Role granting the Lease (leader election) in the namespace. */
  leaderRole: string;
}

/** Applies the chart's operator RBAC in `ns` under the release `release`, and mints its ServiceAccount's token. */
export async function operatorIdentity(env: TestEnv, kc: k8s.KubeConfig, ns: string, release: string): Promise<OperatorIdentity> {
  const { stdout: rendered } = await run(env.helm, [
    'template',
    release,
    join(import.meta.dirname, '../../charts/aethex'),
    '--namespace',
    ns,
    '--show-only',
    'templates/operator-rbac.yaml',
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'aethex-op-'));
  const rbacFile = join(dir, 'rbac.yaml');
  writeFileSync(rbacFile, rendered);
  await kubectl(env, 'apply', '-f', rbacFile);
  const docs = parseAllDocuments(rendered).map((d) => d.toJS() as { kind?: string; metadata: { name: string } } | null);
  const sa = docs.find((d) => d?.kind === 'ServiceAccount')?.metadata.name as string;
  const leaderRole = docs.find((d) => d?.kind === 'Role')?.metadata.name as string;
  const token = await kc.makeApiClient(k8s.CoreV1Api).createNamespacedServiceAccountToken({
    name: sa,
    namespace: ns,
    body: { spec: { audiences: [], expirationSeconds: 3600 } },
  });
  const cluster = kc.getCurrentCluster();
  const cfg = new k8s.KubeConfig();
  cfg.loadFromOptions({
    clusters: [{ name: 'c', server: cluster?.server as string, caFile: cluster?.caFile }],
    users: [{ name: sa, token: token.status?.token }],
    contexts: [{ name: 'c', cluster: 'c', user: sa, namespace: ns }],
    currentContext: 'c',
  });
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(kubeconfig, cfg.exportConfig());
  return { kubeconfig, rbacFile, leaderRole };
}

/** Removes what `operatorIdentity` made outside the namespace (the ClusterRole and its binding) and its files (the token). */
export async function removeOperatorIdentity(env: TestEnv, id: OperatorIdentity | undefined): Promise<void> {
  if (!id) return;
  await kubectl(env, 'delete', '--ignore-not-found', '--wait=false', '-f', id.rbacFile).catch(() => undefined);
  rmSync(dirname(id.rbacFile), { recursive: true, force: true });
}

/** Deletes what `buildOperator` wrote. */
export function removeBuild(bundle: string | undefined): void {
  if (bundle) rmSync(dirname(bundle), { recursive: true, force: true });
}

/** Bundles operator/src/main.ts (and the workspace sources it imports) into one ES module; returns its path. */
export async function buildOperator(): Promise<string> {
  const outfile = join(mkdtempSync(join(tmpdir(), 'aethex-op-build-')), 'operator.mjs');
  await build({
    entryPoints: [join(import.meta.dirname, '../src/main.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['aethex-source'],
    // CommonJS dependencies call require(); give the bundle one.
    banner: { js: "import { createRequire as __aethexRequire } from 'node:module'; const require = __aethexRequire(import.meta.url);" },
    logLevel: 'error',
  });
  return outfile;
}

/** The operator process: its output, its log lines awaited (`logged`), its exit. */
export type OperatorProcess = TestProcess;

/** Starts the bundled operator with `settings` (AETHEX_OPERATOR_* and KUBECONFIG) over this process's environment. */
export function spawnOperator(bundle: string, settings: Record<string, string>): OperatorProcess {
  return spawnNode([bundle], { env: settings });
}

/** The operator's counters of API requests by verb, read from its /metrics. */
export async function apiRequests(address: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^aethex_operator_api_requests\{verb="(\w+)"\} (\d+(?:\.\d+)?)$/gm)) out[m[1] as string] = Number(m[2]);
  return out;
}

/** Reconcile passes finished so far and the seconds they took in all (the duration histogram's count and sum). */
export async function reconcilePasses(address: string): Promise<{ count: number; seconds: number }> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  return {
    count: Number(/^aethex_operator_reconcile_duration_seconds_count (\d+)$/m.exec(text)?.[1] ?? 0),
    seconds: Number(/^aethex_operator_reconcile_duration_seconds_sum (\S+)$/m.exec(text)?.[1] ?? 0),
  };
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat (USER_HZ = 100). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Resident memory of a process, now and at its peak (VmRSS, VmHWM), in MB. */
export function memoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: Math.round(kb('VmRSS') / 1024), peak: Math.round(kb('VmHWM') / 1024) };
}
