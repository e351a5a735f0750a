#!/usr/bin/env node
// npm run bench:operator [-- --json] [--worlds N] [--steady-s S] [--resync-s S]
// The operator as a process (built from source into one file, as an image runs it; under its
// ServiceAccount with the chart's RBAC) in a fresh namespace of the test environment's API
// server, with kwok nodes:
//   1. converge: N GameWorlds of 2 × 2 shards, one instance each, created as fast as the API
//      server takes them; the time from the first create until every world's status is Ready
//      with 4/4 shards and observedGeneration = generation; the API requests the operator issued
//      (its aethex_operator_api_requests counters), its CPU seconds (/proc/<pid>/stat) and peak
//      RSS (VmHWM).
//   2. steady state: nothing changes for --steady-s seconds while the operator resyncs every
//      world every --resync-s seconds; its writes (create, apply, patch, delete) per minute, goal 0.
// Prints a table; with --json, one JSON object as the last line.
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCli } from '@aethex/runtime';
import * as k8s from '@kubernetes/client-node';
import { GAMEWORLD_GROUP, GAMEWORLD_PLURAL, GAMEWORLD_VERSION, type GameWorld } from '../src/api/gameworld.js';
import { installCrd, kubeConfig, namespace, testEnv } from '../test/harness.js';
import { KwokReadiness } from '../test/kwok-readiness.js';
import {
  apiRequests,
  buildOperator,
  cpuSeconds,
  memoryMb,
  type OperatorIdentity,
  type OperatorProcess,
  operatorIdentity,
  reconcilePasses,
  removeBuild,
  removeOperatorIdentity,
  spawnOperator,
} from '../test/operator-process.js';

const USAGE = 'usage: npm run bench:operator [-- --json] [--worlds N] [--steady-s S] [--resync-s S]';

const cli = parseCli('bench:operator', USAGE, {
  json: { type: 'boolean', default: false },
  worlds: { type: 'string', default: '100' },
  'steady-s': { type: 'string', default: '60' },
  'resync-s': { type: 'string', default: '20' },
});
const { values } = cli;
// The test environment has 3 kwok nodes of 250 pods; other tests use some.
const WORLDS = cli.int('worlds', 1, 150);
const STEADY_S = cli.int('steady-s', 0, 3600);
const RESYNC_S = cli.int('resync-s', 10, 86_400);
const SHARDS = 4;
const CONVERGE_TIMEOUT_MS = 600_000;

let env: ReturnType<typeof testEnv>;
try {
  env = testEnv();
} catch (err) {
  console.error(
    `bench:operator: this benchmark runs the operator against the test environment's API server and kwok nodes.\n${(err as Error).message}\n` +
      'Start it with `npm run test-env -- up`, then load its variables with `eval "$(npm run -s test-env -- env)"`.',
  );
  process.exit(2);
}

const log = (s: string) => process.stderr.write(`${s}\n`);
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;
const cpus = os.cpus();
const machine = `${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const loadAvgBefore = os.loadavg().map((x) => round(x));
const WRITES = ['create', 'apply', 'patch', 'delete'];
const READS = ['get', 'list'];
const sum = (counts: Record<string, number>, verbs: string[]) => verbs.reduce((n, v) => n + (counts[v] ?? 0), 0);
const diff = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries([...READS, ...WRITES].map((v) => [v, (b[v] ?? 0) - (a[v] ?? 0)]));

const kc = kubeConfig(env);
const core = kc.makeApiClient(k8s.CoreV1Api);
const custom = kc.makeApiClient(k8s.CustomObjectsApi);
let ns = '';
let identity: OperatorIdentity | undefined;
let op: OperatorProcess | undefined;
let readiness: KwokReadiness | undefined;
let bundle: string | undefined;

async function cleanup(): Promise<void> {
  readiness?.stop();
  if (op && op.child.exitCode === null && op.child.signalCode === null) {
    op.child.kill('SIGTERM');
    const timer = setTimeout(() => op?.child.kill('SIGKILL'), 5000);
    await op.exited;
    clearTimeout(timer);
  }
  if (ns) {
    // With the operator gone nothing removes the worlds' finalizers; without this the namespace would never go.
    const base = { group: GAMEWORLD_GROUP, version: GAMEWORLD_VERSION, namespace: ns, plural: GAMEWORLD_PLURAL };
    const left = ((await custom.listNamespacedCustomObject(base).catch(() => ({ items: [] }))) as { items: GameWorld[] }).items;
    for (const w of left) {
      await custom
        .patchNamespacedCustomObject(
          { ...base, name: w.metadata.name, body: { metadata: { finalizers: null } } },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        )
        .catch(() => undefined);
    }
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
  }
  await removeOperatorIdentity(env, identity);
  removeBuild(bundle);
}
process.on('SIGINT', () => {
  log('interrupted; cleaning up...');
  void cleanup().finally(() => process.exit(130));
});

const world = (name: string) => ({
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name },
  spec: {
    image: 'example.org/aethex/gameserver:1',
    world: { bounds: { minX: 0, minY: 0, maxX: 2000, maxY: 2000 } },
    sharding: { columns: 2, rows: 2 },
    instances: 1,
  },
});

/** Worlds whose status says Ready with every shard ready, for the current generation. */
async function readyWorlds(): Promise<{ ready: number; total: number }> {
  const list = (await custom.listNamespacedCustomObject({
    group: GAMEWORLD_GROUP,
    version: GAMEWORLD_VERSION,
    namespace: ns,
    plural: GAMEWORLD_PLURAL,
  })) as { items: (GameWorld & { metadata: { generation?: number } })[] };
  const ready = list.items.filter(
    (w) =>
      w.status?.observedGeneration === w.metadata.generation &&
      w.status?.shardSummary === `${SHARDS}/${SHARDS}` &&
      w.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
  ).length;
  return { ready, total: list.items.length };
}

interface Steady {
  writes_per_min: number;
  reads_per_min: number;
  passes_per_min: number;
  cpu_pct: number;
  /** Pods kwok-readiness put back to ready in the window (the node controller had marked them not ready). */
  node_flap_pods: number;
  /** Seconds of the window with no such pod in them or in the 15 s before, and the writes in those seconds. */
  quiet_s: number;
  quiet_writes: number;
  writes_by_verb: Record<string, number>;
}

let failed = false;
let result: Record<string, unknown> = {};
try {
  log(`setting up: CRD, namespace, the operator's RBAC, building the operator...`);
  await installCrd(env);
  ns = await namespace(kc, 'bench-operator');
  const release = `aethex-${ns.slice(-12)}`.replace(/-+$/, '');
  const [id, built] = await Promise.all([operatorIdentity(env, kc, ns, release), buildOperator()]);
  identity = id;
  bundle = built;
  readiness = new KwokReadiness(kc, ns);
  await readiness.start();

  op = spawnOperator(built, {
    KUBECONFIG: id.kubeconfig,
    AETHEX_OPERATOR_NAMESPACE: ns,
    AETHEX_OPERATOR_LEADER_NAMESPACE: ns,
    AETHEX_OPERATOR_HTTP_LISTEN: '127.0.0.1:0',
    AETHEX_OPERATOR_RESYNC_S: String(RESYNC_S),
    AETHEX_OPERATOR_LOG_LEVEL: 'info',
  });
  const address = (await op.logged('operator listening')).address as string;
  await op.logged('caches synced; reconciling');
  const cpu0 = cpuSeconds(op.pid); // what starting took
  const flaps0 = readiness.restored;

  log(`converge: creating ${WORLDS} worlds of ${SHARDS} shards...`);
  const t0 = performance.now();
  const names = Array.from({ length: WORLDS }, (_, i) => `w${String(i).padStart(3, '0')}`);
  let next = 0;
  await Promise.all(
    Array.from({ length: 10 }, async () => {
      while (next < names.length) {
        const name = names[next++] as string;
        await custom.createNamespacedCustomObject({
          group: GAMEWORLD_GROUP,
          version: GAMEWORLD_VERSION,
          namespace: ns,
          plural: GAMEWORLD_PLURAL,
          body: world(name),
        });
      }
    }),
  );
  const createdS = (performance.now() - t0) / 1000;
  let lastLog = 0;
  for (;;) {
    const { ready } = await readyWorlds();
    const elapsed = performance.now() - t0;
    if (ready === WORLDS) break;
    if (elapsed > CONVERGE_TIMEOUT_MS) throw new Error(`only ${ready} of ${WORLDS} worlds Ready after ${CONVERGE_TIMEOUT_MS / 1000} s`);
    if (elapsed - lastLog > 5000) {
      lastLog = elapsed;
      const pods = (await core.listNamespacedPod({ namespace: ns })).items;
      const scheduled = pods.filter((p) => p.spec?.nodeName).length;
      const podsReady = pods.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).length;
      log(
        `  ${round(elapsed / 1000)} s: ${ready}/${WORLDS} worlds Ready; pods ${pods.length} created, ${scheduled} scheduled, ${podsReady} ready`,
      );
    }
    await sleep(250);
  }
  const convergeS = (performance.now() - t0) / 1000;
  const cpu1 = cpuSeconds(op.pid);
  const mem1 = memoryMb(op.pid);
  const atConverge = await apiRequests(address);
  const passes = await reconcilePasses(address);
  const flaps1 = readiness.restored;
  log(`  converged in ${round(convergeS)} s`);

  let steady: Steady | undefined;
  if (STEADY_S > 0) {
    log(`steady state: ${STEADY_S} s, resync every ${RESYNC_S} s...`);
    await sleep(2000); // the last passes and Ready events finish
    const s0 = await apiRequests(address);
    const passes0 = await reconcilePasses(address);
    const cpuS0 = cpuSeconds(op.pid);
    const flapsS0 = readiness.restored;
    const ts0 = performance.now();
    // Sampled every second, so writes can be told apart from the node flaps that cause them.
    const samples = [{ at: Date.now(), writes: sum(s0, WRITES) }];
    while (performance.now() - ts0 < STEADY_S * 1000) {
      await sleep(Math.min(1000, STEADY_S * 1000 - (performance.now() - ts0)));
      samples.push({ at: Date.now(), writes: sum(await apiRequests(address), WRITES) });
    }
    const minutes = (performance.now() - ts0) / 60_000;
    const s1 = await apiRequests(address);
    const d = diff(s0, s1);
    // A second is quiet if no pod was re-readied after a node flap in it or in the 15 s before it.
    let quietMs = 0;
    let quietWrites = 0;
    for (let i = 1; i < samples.length; i++) {
      const [a, b] = [samples[i - 1], samples[i]] as [(typeof samples)[number], (typeof samples)[number]];
      if (readiness.restoredAt.some((t) => t >= a.at - 15_000 && t <= b.at)) continue;
      quietMs += b.at - a.at;
      quietWrites += b.writes - a.writes;
    }
    steady = {
      writes_per_min: round(sum(d, WRITES) / minutes),
      reads_per_min: round(sum(d, READS) / minutes),
      passes_per_min: round(((await reconcilePasses(address)).count - passes0.count) / minutes),
      cpu_pct: round(((cpuSeconds(op.pid) - cpuS0) / (minutes * 60)) * 100, 2),
      node_flap_pods: readiness.restored - flapsS0,
      quiet_s: round(quietMs / 1000),
      quiet_writes: quietWrites,
      writes_by_verb: Object.fromEntries(WRITES.map((v) => [v, d[v] ?? 0])),
    };
  }
  const mem = memoryMb(op.pid);
  const byVerb = diff({}, atConverge);
  result = {
    machine,
    load_average_before: loadAvgBefore,
    worlds: WORLDS,
    shards_per_world: SHARDS,
    converge_s: round(convergeS),
    created_s: round(createdS),
    api_requests: sum(byVerb, [...READS, ...WRITES]),
    api_requests_by_verb: byVerb,
    cpu_s: round(cpu1 - cpu0, 2),
    startup_cpu_s: round(cpu0, 2),
    rss_mb: mem1.peak,
    converge_node_flap_pods: flaps1 - flaps0,
    converge_passes: passes.count,
    pass_ms_mean: round((passes.seconds / Math.max(1, passes.count)) * 1000),
    ...(steady
      ? {
          steady_s: STEADY_S,
          resync_s: RESYNC_S,
          steady_writes_per_min: steady.writes_per_min,
          steady_reads_per_min: steady.reads_per_min,
          steady_passes_per_min: steady.passes_per_min,
          steady_cpu_pct: steady.cpu_pct,
          steady_node_flap_pods: steady.node_flap_pods,
          steady_quiet_s: steady.quiet_s,
          steady_quiet_writes: steady.quiet_writes,
          steady_writes_by_verb: steady.writes_by_verb,
        }
      : {}),
    rss_mb_end: mem.rss,
    rss_peak_mb_end: mem.peak,
  };

  const n = (x: unknown) => (typeof x === 'number' ? x.toLocaleString('en-US') : String(x));
  console.log(`\nOperator benchmark — ${machine}, load average ${loadAvgBefore.join(' / ')} before\n`);
  console.log(`Converge: ${WORLDS} GameWorlds × ${SHARDS} shards (2 × 2, one instance) from the first create to all Ready, kwok nodes\n`);
  console.log(
    '| worlds | pods | created in s | converge s | API requests | get | list | create | apply | patch | delete | CPU s | peak RSS MB |',
  );
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  console.log(
    `| ${WORLDS} | ${WORLDS * SHARDS} | ${result.created_s} | ${result.converge_s} | ${n(result.api_requests)} | ${[...READS, ...WRITES].map((v) => n(byVerb[v])).join(' | ')} | ${result.cpu_s} | ${result.rss_mb} |`,
  );
  console.log(
    `\nAPI requests are the operator's own counters (reads and writes of reconciling, the informers' lists); its watches and Lease renewals are not counted. ` +
      `CPU is the operator's user + system time over the converge window (${result.startup_cpu_s} s more to start). ` +
      `${n(result.converge_passes)} reconcile passes, ${result.pass_ms_mean} ms each on average (4 workers). ` +
      `Pods kwok readied again after a node flap while converging: ${result.converge_node_flap_pods}.`,
  );
  if (steady) {
    console.log(`\nSteady state: ${STEADY_S} s with nothing changing, every world reconciled again every ${RESYNC_S} s\n`);
    console.log(
      '| writes/min (goal 0) | create | apply | patch | delete | reads/min | passes/min | CPU % | pods re-readied after a node flap | writes in the s without a flap |',
    );
    console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    console.log(
      `| ${steady.writes_per_min} | ${WRITES.map((v) => n(steady?.writes_by_verb[v])).join(' | ')} | ${n(steady.reads_per_min)} | ${steady.passes_per_min} | ${steady.cpu_pct} | ${steady.node_flap_pods} | ${steady.quiet_writes} in ${steady.quiet_s} s |`,
    );
    console.log(
      steady.writes_per_min === 0
        ? `\nNo writes in ${STEADY_S} s, over ${Math.round(steady.passes_per_min * (STEADY_S / 60))} passes of converged worlds.`
        : steady.quiet_writes === 0
          ? '\nEvery write came within 15 s of a node flap: status updates (and Ready events) of worlds whose pods the node lifecycle controller ' +
            'marked not ready when a kwok node missed its heartbeat, then ready again. Passes over converged worlds wrote nothing.'
          : `\n${steady.quiet_writes} writes came at least 15 s away from any node flap: something else changed, or a pass over a converged world wrote.`,
    );
  }
  if (values.json) console.log(JSON.stringify(result));
} catch (err) {
  failed = true;
  console.error(`bench:operator: ${(err as Error).message}`);
  if (op) console.error(`operator output (last lines):\n${op.output().slice(-4000)}`);
} finally {
  log('cleaning up...');
  await cleanup();
}
process.exit(failed ? 1 : 0);
