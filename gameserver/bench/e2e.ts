import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { bucketPercentile, cpuPercent, createLogger, percentile, runQueueWaitMs } from '@aethex/runtime';
import type { BotReport } from '../../sdk/src/bots.js';
import { loadConfig } from '../src/config.js';
import { type RunningShard, startShard } from '../src/shard.js';

/**
 * Built (`npm run bench:shard` runs gameserver/dist-bench, compiled as the image is): the bots and
 * helpers run built too. From source (under tsx): everything from source.
 */
const BUILT = !import.meta.url.endsWith('.ts');
const NODE = BUILT ? [process.execPath] : [process.execPath, '--conditions=aethex-source', '--import', 'tsx'];
const ROOT = join(import.meta.dirname, BUILT ? '../../..' : '../..');
const BOTS = join(ROOT, BUILT ? 'sdk/dist/bots.js' : 'sdk/src/bots.ts');
const IDLE_CLIENTS = join(import.meta.dirname, BUILT ? 'idle-clients.js' : 'idle-clients.ts');
const IDLE_SHARD = join(import.meta.dirname, BUILT ? 'idle-shard.js' : 'idle-shard.ts');

export interface E2eResult {
  clients: number;
  joined: number;
  seconds: number;
  tick_ms: { p50: number; p99: number; max: number };
  ticks_over_25ms: number;
  /**
   * Each tick's wall time less the time the tick thread spent waiting for a CPU during it (Linux
   * schedstat): what the tick would have taken had the bots not held the cores. Waits for the
   * snapshot threads are still in it.
   */
  tick_unqueued_ms: { p50: number; p99: number; max: number };
  ticks_over_25ms_unqueued: number;
  /** The ticks of the first 4 s, while the bots join (left out of `tick_ms`). */
  join_tick_ms: { p50: number; p99: number; max: number; over_25ms: number };
  bytes_per_client_s: { median: number; p99: number };
  input_ack_ms: { p50: number; p99: number };
  max_snapshot_gap_ms: number;
  rss_mb: number;
  /** CPU the shard's process (tick thread, snapshot threads, GC) used, in % of one core. */
  shard_cpu_pct: number;
  /** CPU all bot processes used together, in % of one core (joins included). */
  bots_cpu_pct: number;
  /** Longest GC pause of any of the shard's threads (tick thread, snapshot threads) over the whole run, joins included. */
  gc_max_pause_ms: number;
  /**
   * The tick thread's GC pauses in the measured window (from 4 s in, as the ticks), and the
   * snapshot threads' (`threads`, as the tick thread hears of them, a round or so late).
   */
  gc_pauses: {
    count: number;
    p99_ms: number;
    max_ms: number;
    over_5ms: number;
    total_ms: number;
    threads: { count: number; max_ms: number; over_5ms: number };
  };
  kicked: Record<string, number>;
  /** Sessions that ended before the run did, by close code (from the bots' reports). */
  closed: Record<string, number>;
  /** Why bots that never joined failed, by count (from the bots' reports). */
  join_errors: Record<string, number>;
  /** Sessions per snapshot thread half way through the run (index 0: the tick thread). */
  thread_sessions: number[];
}

interface Running {
  shard: RunningShard;
  keyFile: string;
  /** The key's and the snapshots' directories, removed by stopShard. */
  dirs: string[];
  samples: { at: number; ms: number; waitMs: number }[];
  /** The snapshot threads' GC pauses, when the tick thread heard of them. */
  threadPauses: { at: number; ms: number }[];
  settings: ReturnType<typeof loadConfig>;
}

async function shardFor(clients: number, extra: Record<string, string> = {}): Promise<Running> {
  const keys = generateKeyPairSync('ed25519');
  const dirs = [mkdtempSync(join(tmpdir(), 'aethex-bench-')), mkdtempSync(join(tmpdir(), 'aethex-bench-snap-'))];
  const keyFile = join(dirs[0] as string, 'key.pem');
  writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  // A world sized so that each bot sees about 32 others.
  const radius = 200;
  const half = Math.round(Math.sqrt((clients * Math.PI * radius * radius) / 32) / 2);
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: `${-half},${-half},${half},${half}`,
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: String(radius),
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: String(clients + 100),
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: String(Math.max(10_000, clients + 100)),
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS: String(clients + 200),
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: String(clients + 200),
    // Every bot is on 127.0.0.1.
    AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '100000',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dirs[1] as string,
    AETHEX_GAMESERVER_LOG_LEVEL: 'error',
    ...extra,
  });
  const samples: { at: number; ms: number; waitMs: number }[] = [];
  let waitAtStart = 0;
  const threadPauses: { at: number; ms: number }[] = [];
  const shard = await startShard(settings, {
    log: createLogger('bench-shard', 'error'),
    onTickStart: () => {
      waitAtStart = runQueueWaitMs();
    },
    onTick: (ms) => samples.push({ at: performance.now(), ms, waitMs: runQueueWaitMs() - waitAtStart }),
    onThreadGc: (ms) => threadPauses.push({ at: performance.now(), ms }),
  });
  return { shard, keyFile, dirs, samples, threadPauses, settings };
}

/** Drains the shard and removes its directories (a private key among them). */
async function stopShard(r: Running): Promise<void> {
  await r.shard.drain();
  for (const dir of r.dirs) rmSync(dir, { recursive: true, force: true });
}

/** How the bot processes run next to the shard (see runBots). */
export interface BotSetting {
  /** Niceness: 0 the shard's own; 1–19 the bots yield the cores whenever the shard is runnable. */
  nice: number;
  /**
   * Linux SCHED_BATCH (`chrt --batch 0`): the bots keep their fair share of the cores, but a bot
   * woken by a snapshot no longer preempts the running shard (wakeup preemption is for interactive
   * tasks); it runs when the shard blocks or its time slice ends.
   */
  batch: boolean;
  /** Groups a process's bots send their inputs in, evenly spaced through each tick (`npm run bots -- --input-groups`). */
  inputGroups: number;
}

/**
 * `sched`: how the bots are scheduled. Niceness 10 is the nearest this machine gets to bots on
 * cores of their own; batch at niceness 0 keeps the bots' share and takes away only their
 * preempting the shard on every wakeup, which loopback causes 40 times a second per socket.
 */
function runBots(
  r: Running,
  count: number,
  seconds: number,
  processes: number,
  prefix: string,
  sched: BotSetting = { nice: 0, batch: false, inputGroups: 5 },
): Promise<BotReport[]> {
  const per = Math.ceil(count / processes);
  const runs: Promise<BotReport>[] = [];
  for (let p = 0; p < processes; p++) {
    const n = Math.min(per, count - p * per);
    if (n <= 0) break;
    const args = [
      ...NODE.slice(1),
      BOTS,
      '--url',
      r.shard.gatewayUrl,
      '--count',
      String(n),
      '--private-key',
      r.keyFile,
      '--duration',
      String(seconds),
      '--world',
      r.settings['shard.world'],
      '--shard',
      r.settings['shard.name'],
      '--prefix',
      `${prefix}${p}`,
      '--ramp-ms',
      '2',
      '--input-groups',
      String(sched.inputGroups),
      '--json',
    ];
    const command = [
      ...(sched.batch ? ['chrt', '--batch', '0'] : []),
      ...(sched.nice > 0 ? ['nice', '-n', String(sched.nice)] : []),
      NODE[0] as string,
      ...args,
    ];
    runs.push(lastJsonLine<BotReport>(command, `bot process ${p}`));
  }
  return Promise.all(runs);
}

/**
 * One shard in this process (so every tick's duration is sampled) and `clients` bots in
 * `processes` separate processes on the same machine, random-walking for `seconds`, scheduled as
 * `bots` says (see runBots).
 */
export async function runE2e(
  clients: number,
  seconds: number,
  processes: number,
  threads = 1,
  bots: BotSetting = { nice: 0, batch: false, inputGroups: 5 },
): Promise<E2eResult> {
  const r = await shardFor(clients, { AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: String(threads) });
  const pauses: { at: number; ms: number }[] = [];
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) pauses.push({ at: e.startTime, ms: e.duration });
  });
  gc.observe({ entryTypes: ['gc'] });
  let rss = 0;
  const started = performance.now();
  const cpuAtStart = process.cpuUsage();
  const rssTimer = setInterval(() => {
    rss = Math.max(rss, process.memoryUsage().rss);
  }, 1000);
  // Half way through: how the sessions are spread over the snapshot threads.
  const spread = new Promise<number[]>((resolve) => {
    setTimeout(
      async () => {
        const metrics = await (await fetch(`${r.shard.opsUrl}/metrics`)).text();
        resolve([...metrics.matchAll(/^aether_snapshot_thread_sessions\{thread="(\d+)"\} (\d+)/gm)].map((m) => Number(m[2])));
      },
      (seconds * 1000) / 2,
    );
  });
  const reports = await runBots(r, clients, seconds, processes, 'e2e', bots);
  const botsDone = performance.now();
  const cpu = process.cpuUsage(cpuAtStart);
  const cpuPct = cpuPercent(cpu, performance.now() - started);
  clearInterval(rssTimer);
  gc.disconnect();
  const threadSessions = await spread;
  await stopShard(r);
  // Bots measure from 2 s after their start, once everyone has joined; so do we.
  const inWindow = r.samples.filter((s) => s.at >= started + 4000 && s.at <= started + seconds * 1000);
  const window = inWindow.map((s) => s.ms).sort((a, b) => a - b);
  const gcInWindow = pauses
    .filter((p) => p.at >= started + 4000 && p.at <= started + seconds * 1000)
    .map((p) => p.ms)
    .sort((a, b) => a - b);
  const threadGcInWindow = r.threadPauses
    .filter((p) => p.at >= started + 4000 && p.at <= started + seconds * 1000)
    .map((p) => p.ms)
    .sort((a, b) => a - b);
  const joining = r.samples
    .filter((s) => s.at < started + 4000)
    .map((s) => s.ms)
    .sort((a, b) => a - b);
  const unqueued = inWindow.map((s) => Math.max(0, s.ms - s.waitMs)).sort((a, b) => a - b);
  const rates = reports.flatMap((b) => b.raw?.rates ?? []).sort((a, b) => a - b);
  const hist = new Array<number>(1000).fill(0);
  for (const b of reports) {
    b.raw?.latency_hist.forEach((c, i) => {
      hist[i] = (hist[i] as number) + c;
    });
  }
  // The bots count in 1 ms buckets: a percentile is its bucket's upper bound, never below the latency.
  const histPct = (p: number) => bucketPercentile(hist, p) + 1;
  const sum = (counts: Record<string, number>[]) => {
    const total: Record<string, number> = {};
    for (const c of counts) for (const [k, v] of Object.entries(c)) total[k] = (total[k] ?? 0) + v;
    return total;
  };
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    clients,
    joined: reports.reduce((a, b) => a + b.joined, 0),
    seconds,
    tick_ms: { p50: round(percentile(window, 50)), p99: round(percentile(window, 99)), max: round(window[window.length - 1] ?? 0) },
    ticks_over_25ms: window.filter((v) => v > 25).length,
    tick_unqueued_ms: {
      p50: round(percentile(unqueued, 50)),
      p99: round(percentile(unqueued, 99)),
      max: round(unqueued[unqueued.length - 1] ?? 0),
    },
    ticks_over_25ms_unqueued: unqueued.filter((v) => v > 25).length,
    join_tick_ms: {
      p50: round(percentile(joining, 50)),
      p99: round(percentile(joining, 99)),
      max: round(joining[joining.length - 1] ?? 0),
      over_25ms: joining.filter((v) => v > 25).length,
    },
    bytes_per_client_s: { median: Math.round(percentile(rates, 50)), p99: Math.round(percentile(rates, 99)) },
    input_ack_ms: { p50: histPct(50), p99: histPct(99) },
    max_snapshot_gap_ms: Math.max(...reports.map((b) => b.max_snapshot_gap_ms.max)),
    rss_mb: Math.round(rss / 2 ** 20),
    shard_cpu_pct: cpuPct,
    bots_cpu_pct: reports.reduce((a, b) => a + b.cpu_pct, 0),
    // The run is the joins and the bots' play; the drain after it is not (the tick thread's
    // observer is disconnected by then, and the snapshot threads' pauses there are left out too).
    gc_max_pause_ms: round(Math.max(0, ...pauses.map((p) => p.ms), ...r.threadPauses.filter((p) => p.at <= botsDone).map((p) => p.ms))),
    gc_pauses: {
      count: gcInWindow.length,
      p99_ms: round(percentile(gcInWindow, 99)),
      max_ms: round(gcInWindow[gcInWindow.length - 1] ?? 0),
      over_5ms: gcInWindow.filter((v) => v > 5).length,
      total_ms: Math.round(gcInWindow.reduce((a, b) => a + b, 0)),
      threads: {
        count: threadGcInWindow.length,
        max_ms: round(threadGcInWindow[threadGcInWindow.length - 1] ?? 0),
        over_5ms: threadGcInWindow.filter((v) => v > 5).length,
      },
    },
    kicked: sum(reports.map((b) => b.kicked)),
    closed: sum(reports.map((b) => b.closed ?? {})),
    join_errors: sum(reports.map((b) => b.join_errors ?? {})),
    thread_sessions: threadSessions,
  };
}

/** Runs `command` and resolves with the JSON object its output ends with (its report). */
async function lastJsonLine<T>(command: string[], what: string): Promise<T> {
  const child = spawn(command[0] as string, command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => {
    out += d;
  });
  const [code] = (await once(child, 'exit')) as [number | null];
  try {
    return JSON.parse(out.trim().split('\n').pop() ?? '') as T;
  } catch {
    throw new Error(`${what} exited ${code} without a report:\n${out.slice(-500)}`);
  }
}

/** idleMemory in a fresh process of its own (as a shard starts), flagged as the shard runs. */
export function idleMemoryFresh(count: number): Promise<{ kb_per_connection: number; connections: number }> {
  return lastJsonLine([NODE[0] as string, '--no-parallel-scavenge', ...NODE.slice(1), IDLE_SHARD, String(count)], 'idle-shard');
}

/** Memory the shard holds per open, unauthenticated socket, with `count` of them. */
export async function idleMemory(count: number): Promise<{ kb_per_connection: number; connections: number }> {
  const r = await shardFor(count, { AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '120000' });
  const settle = () => new Promise((res) => setTimeout(res, 1500));
  await settle();
  const before = process.memoryUsage().rss;
  const child = spawn(NODE[0] as string, [...NODE.slice(1), IDLE_CLIENTS, r.shard.gatewayUrl, String(count)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const opened = await new Promise<number>((resolve) => {
    child.stdout.on('data', (d) => {
      const m = /open (\d+)/.exec(String(d));
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', () => resolve(0));
  });
  await settle();
  const after = process.memoryUsage().rss;
  const connections = r.shard.gateway.connectionCount;
  child.kill('SIGTERM');
  await stopShard(r);
  return { kb_per_connection: Math.round(((after - before) / Math.max(1, Math.min(opened, connections)) / 1024) * 10) / 10, connections };
}
