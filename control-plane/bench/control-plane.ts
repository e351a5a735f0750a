#!/usr/bin/env node
// npm run bench:control-plane [-- --json] [--duration S] [--warmup S] [--skip PHASE,...]
//   [--auth-get-rate N] [--save-rate N] [--load-rate N]
// A real control plane (control-plane/src/main.ts as a child process, on the test environment's
// PostgreSQL, Redis and MinIO) under autocannon, one phase after another:
//   login     POST /api/v1/auth/login, correct passwords, accounts in rotation: bound by argon2id
//   refresh   POST /api/v1/auth/refresh, one session per connection, each token chained to the next
//   auth-get  GET /api/v1/auth/me with a valid access token at a fixed rate (1,000 a second)
//   save      PUT /api/v1/saves/:user_id/:slot of 10 KB of random bytes, one slot per connection,
//             expected_version chained from the previous answer: as fast as 20 connections go
//             (capacity), then at a fixed rate (latency)
//   load      GET /api/v1/saves/:user_id/:slot of those 10 KB saves: capacity, then a fixed rate
// Each run warms up, then measures for --duration seconds (auth-get at least 15). Latencies are
// every response of the measured window as autocannon's `response` event reports it (from writing
// the request to the last byte of the answer, on this side), 2xx only; percentiles are nearest-rank.
// Prints a table; with --json, one JSON object as the last line.
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { dirname } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseCli, percentile } from '@aethex/runtime';
import autocannon from 'autocannon';
import { Client as MinioClient } from 'minio';
import { call, dropSchema, planeVars, register, spawnPlane, testEnv, writeKeysFile } from '../test/harness.js';

const PHASES = ['login', 'refresh', 'auth-get', 'save', 'load'] as const;
type Phase = (typeof PHASES)[number];
const USAGE =
  'usage: npm run bench:control-plane [-- --json] [--duration S] [--warmup S] [--skip login,refresh,auth-get,save,load]\n' +
  '         [--auth-get-rate N] [--save-rate N] [--load-rate N]';

const cli = parseCli('bench:control-plane', USAGE, {
  json: { type: 'boolean', default: false },
  duration: { type: 'string', default: '10' },
  warmup: { type: 'string', default: '2' },
  skip: { type: 'string', default: '' },
  'auth-get-rate': { type: 'string', default: '1000' },
  'save-rate': { type: 'string', default: '25' },
  'load-rate': { type: 'string', default: '100' },
});
const { values } = cli;
const duration = cli.int('duration', 1, 3600);
const warmup = cli.int('warmup', 0, 60);
const rates = {
  'auth-get': cli.int('auth-get-rate', 1, 20_000),
  save: cli.int('save-rate', 1, 5000),
  load: cli.int('load-rate', 1, 20_000),
};
const skip = new Set<Phase>();
for (const p of (values.skip as string).split(',').filter((s) => s !== '')) {
  if (!(PHASES as readonly string[]).includes(p)) cli.fail(`--skip takes a comma-separated list of ${PHASES.join(', ')}; got '${p}'`);
  skip.add(p as Phase);
}

let env: ReturnType<typeof testEnv>;
try {
  env = testEnv();
} catch (err) {
  console.error(
    `bench:control-plane: this benchmark runs the control plane on the test environment's PostgreSQL, Redis and MinIO.\n${(err as Error).message}\n` +
      'Start it with `npm run test-env -- up`, then load its variables with `eval "$(npm run -s test-env -- env)"`.',
  );
  process.exit(2);
}

const log = (s: string) => process.stderr.write(`${s}\n`);
const round = (x: number) => Math.round(x * 10) / 10;
const cpus = os.cpus();
const machine = `${cpus.length} × ${cpus[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const loadAvgBefore = os.loadavg().map(round);

const PASSWORD = 'correct horse battery staple';
const SAVE_BYTES = 10_240;
/** Connections of the closed-loop runs: each keeps one request in flight. */
const CLOSED = { login: 8, refresh: 10, save: 20, load: 20 };
/** Paced runs spread their rate over up to this many connections (one autocannon instance each). */
const PACED_MAX_CONNECTIONS = 50;
const ACCOUNTS = PACED_MAX_CONNECTIONS;

interface RunResult {
  connections: number;
  /** Offered requests per second; null: closed loop, as fast as the connections go. */
  offered_per_s: number | null;
  seconds: number;
  ok: number;
  ok_per_s: number;
  latency_ms: { p50: number; p95: number; p99: number; max: number };
  /** Responses in the measured window by status code. */
  status: Record<string, number>;
  non_2xx: number;
  /** Connection errors and timeouts over the whole run, warm-up included. */
  errors: number;
  /** Share of the measured window in which some runnable task waited for a CPU (/proc/pressure/cpu). */
  cpu_stall_pct: number | null;
  /** CPU time of the control plane process (all its threads) over the measured window, in % of one core. */
  plane_cpu_pct: number;
  plane_rss_mb: number;
}

/** Microseconds some task has waited for a CPU since boot (Linux PSI), or null where not available. */
function cpuStallUs(): number | null {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** CPU seconds the process has used (user + system, all threads), from /proc/<pid>/stat. */
function cpuSecondsOf(pid: number): number {
  // Fields after the command (which may hold spaces) start at the state; utime and stime are 14th and 15th.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function rssOf(pid: number): { rss_mb: number; peak_mb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss_mb: Math.round(kb('VmRSS') / 1024), peak_mb: Math.round(kb('VmHWM') / 1024) };
}

// --- the plane -----------------------------------------------------------------------------------

const keysFile = await writeKeysFile();
const vars = planeVars(env, keysFile, {
  // Budgets at their maximum: the benchmark measures the service, not the limiter.
  AETHEX_AUTH_LOGIN_ACCOUNT_BUDGET: '10000',
  AETHEX_AUTH_LOGIN_PAIR_BUDGET: '1000',
  AETHEX_AUTH_LOGIN_ADDRESS_BUDGET: '100000',
  AETHEX_AUTH_SIGNUP_ADDRESS_BUDGET: '100000',
  AETHEX_AUTH_REFRESH_ADDRESS_BUDGET: '1000000',
  // Access tokens made at the start must outlive every phase.
  AETHEX_AUTH_ACCESS_TTL_S: '3600',
  // spawnPlane raises this to info to read the listening address; request logging is off, so that
  // adds two lines, none per request.
  AETHEX_LOG_LEVEL: 'warn',
});
log('starting the control plane...');
const plane = await spawnPlane(vars);
const pid = plane.child.pid as number;
const url = plane.url;
const exited = new Promise<void>((resolve) => plane.child.once('exit', () => resolve()));
let stopped = false;
async function stopPlane(): Promise<void> {
  if (stopped) return;
  stopped = true;
  if (plane.child.exitCode === null && plane.child.signalCode === null) {
    plane.child.kill('SIGTERM');
    const timer = setTimeout(() => plane.child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  // Leave nothing behind in the test environment: the schema, the bucket (every object version) and the key file.
  await dropSchema(env, vars.AETHEX_POSTGRES_SCHEMA as string).catch((err: Error) => log(`could not drop the schema: ${err.message}`));
  await dropBucket(vars.AETHEX_S3_BUCKET as string).catch((err: Error) => log(`could not remove the bucket: ${err.message}`));
  rmSync(dirname(keysFile), { recursive: true, force: true });
}
async function dropBucket(bucket: string): Promise<void> {
  const u = new URL(env.s3.endpoint);
  const s3 = new MinioClient({
    endPoint: u.hostname,
    port: Number(u.port) || (u.protocol === 'https:' ? 443 : 80),
    useSSL: u.protocol === 'https:',
    accessKey: env.s3.accessKey,
    secretKey: env.s3.secretKey,
  });
  if (!(await s3.bucketExists(bucket))) return;
  const objects: { name: string; versionId: string }[] = [];
  for await (const o of s3.listObjects(bucket, '', true, { IncludeVersion: true })) {
    if (o.name) objects.push({ name: o.name, versionId: o.versionId ?? 'null' });
  }
  for (let i = 0; i < objects.length; i += 1000) await s3.removeObjects(bucket, objects.slice(i, i + 1000));
  await s3.removeBucket(bucket);
}
process.once('SIGINT', () => {
  void stopPlane().then(() => process.exit(130));
});

/**
 * One measured run. Closed loop (`rate` undefined): one autocannon instance whose `connections`
 * each keep one request in flight. Paced (`rate` set): autocannon's own rate limit lets each
 * connection send its whole per-second quota back to back at the start of every second, all
 * connections at once — bursts, not a rate — so the rate is spread over min(rate, 50)
 * single-connection instances started evenly across one second, each sending its share a second.
 * `make(i)` gives connection i its request list.
 */
async function measure(
  label: string,
  o: { connections?: number; rate?: number; seconds: number },
  make: (i: number) => autocannon.Request[],
) {
  const paced = o.rate !== undefined;
  const connections = paced ? Math.min(o.rate as number, PACED_MAX_CONNECTIONS) : (o.connections as number);
  const rampMs = paced ? 1000 : 0;
  log(`${label}: ${connections} connections${paced ? ` at ${o.rate}/s` : ''}, ${warmup} s warm-up + ${o.seconds} s...`);
  const latencies: number[] = [];
  const status: Record<string, number> = {};
  let errors = 0;
  const t0 = performance.now();
  const from = t0 + rampMs + warmup * 1000;
  const until = from + o.seconds * 1000;
  const stall: (number | null)[] = [];
  const cpu: number[] = [];
  for (const at of [from, until]) {
    setTimeout(() => {
      stall.push(cpuStallUs());
      cpu.push(cpuSecondsOf(pid));
    }, at - t0);
  }
  const onResponse = (_client: autocannon.Client, code: number, _bytes: number, ms: number) => {
    const now = performance.now();
    if (now < from || now > until) return;
    status[code] = (status[code] ?? 0) + 1;
    if (code >= 200 && code < 300) latencies.push(ms);
  };
  // autocannon stops on its first 1 s sample tick after `duration`; the measured window is ours.
  const runFor = warmup + o.seconds + (rampMs + 1000) / 1000;
  const start = (opts: Omit<autocannon.Options, 'url' | 'duration'>) =>
    new Promise<void>((resolve, reject) => {
      const instance = autocannon({ ...opts, url, duration: runFor }, () => undefined);
      instance.on('response', onResponse);
      instance.on('reqError', () => {
        errors++;
      });
      instance.on('done', () => resolve());
      instance.on('error', reject);
    });
  const runs: Promise<void>[] = [];
  if (paced) {
    const rate = o.rate as number;
    for (let i = 0; i < connections; i++) {
      const connectionRate = Math.floor(rate / connections) + (i < rate % connections ? 1 : 0);
      runs.push(start({ connections: 1, connectionRate, setupClient: (c) => c.setRequests(make(i)) }));
      await sleep(rampMs / connections);
    }
  } else {
    let next = 0;
    runs.push(start({ connections, setupClient: (c) => c.setRequests(make(next++)) }));
  }
  await Promise.all(runs);
  latencies.sort((a, b) => a - b);
  const total = Object.values(status).reduce((a, b) => a + b, 0);
  const r: RunResult = {
    connections,
    offered_per_s: o.rate ?? null,
    seconds: o.seconds,
    ok: latencies.length,
    ok_per_s: round(latencies.length / o.seconds),
    latency_ms: {
      p50: round(percentile(latencies, 50)),
      p95: round(percentile(latencies, 95)),
      p99: round(percentile(latencies, 99)),
      max: round(latencies.at(-1) ?? Number.NaN),
    },
    status,
    non_2xx: total - latencies.length,
    errors,
    cpu_stall_pct: stall[0] != null && stall[1] != null ? Math.round((stall[1] - stall[0]) / (o.seconds * 1e4)) : null,
    plane_cpu_pct: Math.round((((cpu[1] ?? Number.NaN) - (cpu[0] ?? Number.NaN)) / o.seconds) * 100),
    plane_rss_mb: rssOf(pid).rss_mb,
  };
  log(
    `  ${r.ok_per_s} 2xx/s, p50 ${r.latency_ms.p50} / p95 ${r.latency_ms.p95} / p99 ${r.latency_ms.p99} ms, non-2xx ${r.non_2xx}, errors ${errors}, plane CPU ${r.plane_cpu_pct} %, CPU stall ${r.cpu_stall_pct ?? '-'} %`,
  );
  return r;
}

// --- the phases ----------------------------------------------------------------------------------

const JSON_HEADERS = { 'content-type': 'application/json' };
const runs: { key: string; phase: Phase; request: string; result: RunResult; goal: string }[] = [];
const seconds = { normal: duration, authGet: Math.max(15, duration) };
try {
  log(`registering ${ACCOUNTS} accounts...`);
  const tag = Date.now().toString(36);
  const accounts: { email: string; id: string; access: string; refresh: string }[] = [];
  for (let i = 0; i < ACCOUNTS; i += 2) {
    const pair = [i, i + 1].map(async (j) => {
      const email = `bench-${tag}-${j}@example.com`;
      return { email, ...(await register(url, email, PASSWORD)) };
    });
    accounts.push(...(await Promise.all(pair)));
  }
  const account = (i: number) => accounts[i % accounts.length] as (typeof accounts)[number];
  const record = (key: string, phase: Phase, request: string, result: RunResult, goal: string) =>
    runs.push({ key, phase, request, result, goal });

  if (!skip.has('login')) {
    const result = await measure('login', { connections: CLOSED.login, seconds: seconds.normal }, (i) => {
      let k = i;
      return [
        {
          method: 'POST',
          path: '/api/v1/auth/login',
          headers: JSON_HEADERS,
          setupRequest: (req) => ({ ...req, body: JSON.stringify({ email: account(k++).email, password: PASSWORD }) }),
        },
      ];
    });
    record('login', 'login', 'POST /auth/login', result, 'report (argon2id bound)');
  }

  if (!skip.has('refresh')) {
    // One session per connection; a refresh token works once, so each request sends the token the
    // previous answer returned.
    const sessions = Array.from({ length: CLOSED.refresh }, (_, i) => ({ token: account(i).refresh }));
    const result = await measure('refresh', { connections: CLOSED.refresh, seconds: seconds.normal }, (i) => {
      const s = sessions[i] as (typeof sessions)[number];
      return [
        {
          method: 'POST',
          path: '/api/v1/auth/refresh',
          headers: JSON_HEADERS,
          setupRequest: (req) => ({ ...req, body: JSON.stringify({ refresh_token: s.token }) }),
          onResponse: (code, body) => {
            if (code === 200) s.token = (JSON.parse(body) as { refresh_token: string }).refresh_token;
          },
        },
      ];
    });
    record('refresh', 'refresh', 'POST /auth/refresh', result, 'report');
  }

  if (!skip.has('auth-get')) {
    const result = await measure('auth-get', { rate: rates['auth-get'], seconds: seconds.authGet }, (i) => [
      { method: 'GET', path: '/api/v1/auth/me', headers: { authorization: `Bearer ${account(i).access}` } },
    ]);
    record('auth_get', 'auth-get', 'GET /auth/me', result, 'p95 ≤ 20 ms at 1,000/s');
  }

  // One slot per connection index, spread over the accounts (a user's writes are serialized by a
  // row lock); expected_version follows each answer, and a 409 resynchronizes it.
  const slots = Array.from({ length: Math.max(CLOSED.save, CLOSED.load, PACED_MAX_CONNECTIONS) }, (_, i) => ({
    user: account(i),
    path: `/api/v1/saves/${account(i).id}/bench-${i}`,
    version: null as number | null,
  }));
  const slot = (i: number) => slots[i % slots.length] as (typeof slots)[number];
  const payloads = Array.from({ length: 16 }, () => randomBytes(SAVE_BYTES).toString('base64'));
  let nextPayload = 0;
  const put = (i: number): autocannon.Request[] => {
    const s = slot(i);
    return [
      {
        method: 'PUT',
        path: s.path,
        headers: { ...JSON_HEADERS, authorization: `Bearer ${s.user.access}` },
        setupRequest: (req) => ({
          ...req,
          body: JSON.stringify({ data: payloads[nextPayload++ % payloads.length], expected_version: s.version }),
        }),
        onResponse: (code, body) => {
          if (code === 200) s.version = (JSON.parse(body) as { version: number }).version;
          else if (code === 409)
            s.version =
              (JSON.parse(body) as { error: { data: { current: { version: number } | null } } }).error.data.current?.version ?? null;
        },
      },
    ];
  };
  const get = (i: number): autocannon.Request[] => [
    { method: 'GET', path: slot(i).path, headers: { authorization: `Bearer ${slot(i).user.access}` } },
  ];

  if (!skip.has('save')) {
    record(
      'save_capacity',
      'save',
      'PUT /saves/:user/:slot 10 KB',
      await measure('save (capacity)', { connections: CLOSED.save, seconds: seconds.normal }, put),
      'report',
    );
    record(
      'save',
      'save',
      'PUT /saves/:user/:slot 10 KB',
      await measure('save (paced)', { rate: rates.save, seconds: seconds.normal }, put),
      'p95 ≤ 50 ms',
    );
  }

  if (!skip.has('load')) {
    for (const s of slots) {
      if (s.version !== null) continue;
      const r = await call(url, 'PUT', s.path, { token: s.user.access, body: { data: payloads[0], expected_version: null } });
      if (r.status !== 200) throw new Error(`PUT ${s.path}: ${r.status} ${JSON.stringify(r.body)}`);
      s.version = r.body.version as number;
    }
    record(
      'load_capacity',
      'load',
      'GET /saves/:user/:slot 10 KB',
      await measure('load (capacity)', { connections: CLOSED.load, seconds: seconds.normal }, get),
      'report',
    );
    record(
      'load',
      'load',
      'GET /saves/:user/:slot 10 KB',
      await measure('load (paced)', { rate: rates.load, seconds: seconds.normal }, get),
      'p95 ≤ 20 ms',
    );
  }
} catch (err) {
  log(`bench:control-plane: ${(err as Error).stack ?? err}\ncontrol plane output:\n${plane.output()}`);
  await stopPlane();
  process.exit(1);
}
const rss = rssOf(pid);
await stopPlane();

// --- report --------------------------------------------------------------------------------------

const run = (key: string) => runs.find((r) => r.key === key)?.result;
const figures = {
  login_per_s: run('login')?.ok_per_s ?? null,
  refresh_per_s: run('refresh')?.ok_per_s ?? null,
  auth_get_p95_ms: run('auth_get')?.latency_ms.p95 ?? null,
  save_p95_ms: run('save')?.latency_ms.p95 ?? null,
  load_p95_ms: run('load')?.latency_ms.p95 ?? null,
};
const verdict = (value: number | null, goal: number) => (value === null ? 'skipped' : value <= goal ? 'met' : 'missed');
const others = (r: RunResult) =>
  Object.entries(r.status)
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, n]) => `${code}: ${n}`)
    .concat(r.errors > 0 ? [`errors: ${r.errors}`] : [])
    .join(', ') || '0';

console.log(`\nControl plane benchmark — ${machine}, load average ${loadAvgBefore.join(' / ')} before\n`);
console.log(
  `Each run: ${warmup} s warm-up, then ${seconds.normal} s measured (auth-get ${seconds.authGet} s); latencies per request, client side, 2xx only.\n` +
    'Plane CPU: the control plane process, all threads, in % of one core. CPU stall: share of the measured time in which some\n' +
    'runnable task on this machine (this benchmark and the stores included) waited for a CPU (/proc/pressure/cpu).\n',
);
console.log(
  '| phase | request | connections | offered/s | 2xx/s | p50 ms | p95 ms | p99 ms | max ms | non-2xx | plane CPU % | CPU stall % | goal |',
);
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |');
for (const r of runs) {
  const x = r.result;
  console.log(
    `| ${r.key} | ${r.request} | ${x.connections} | ${x.offered_per_s ?? 'max'} | ${x.ok_per_s} | ${x.latency_ms.p50} | ${x.latency_ms.p95} | ${x.latency_ms.p99} | ${x.latency_ms.max} | ${others(x)} | ${x.plane_cpu_pct} | ${x.cpu_stall_pct ?? '-'} | ${r.goal} |`,
  );
}
for (const p of PHASES) if (skip.has(p)) console.log(`| ${p} | skipped | | | | | | | | | | | |`);
console.log(
  `\nlogin_per_s ${figures.login_per_s ?? '-'}, refresh_per_s ${figures.refresh_per_s ?? '-'}, ` +
    `auth_get_p95_ms ${figures.auth_get_p95_ms ?? '-'} (${verdict(figures.auth_get_p95_ms, 20)}), ` +
    `save_p95_ms ${figures.save_p95_ms ?? '-'} (${verdict(figures.save_p95_ms, 50)}), ` +
    `load_p95_ms ${figures.load_p95_ms ?? '-'} (${verdict(figures.load_p95_ms, 20)})`,
);
const conflicts = runs.filter((r) => r.phase === 'save').reduce((n, r) => n + (r.result.status['409'] ?? 0), 0);
if (!skip.has('save')) console.log(`Save version conflicts (409) in the measured windows: ${conflicts}`);
console.log(`Control plane RSS at the end: ${rss.rss_mb} MB (peak ${rss.peak_mb} MB)`);
if (values.json) {
  console.log(
    JSON.stringify({
      ...figures,
      machine,
      load_average_before: loadAvgBefore,
      warmup_s: warmup,
      duration_s: duration,
      latency_method:
        "autocannon 'response' event per request (request written to last byte read, client side), 2xx in the measured window, nearest-rank percentiles",
      runs: Object.fromEntries(runs.map((r) => [r.key, r.result])),
      save_conflicts: skip.has('save') ? null : conflicts,
      plane_rss_mb: rss.rss_mb,
      plane_peak_rss_mb: rss.peak_mb,
    }),
  );
}
process.exit(0);
