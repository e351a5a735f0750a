#!/usr/bin/env node
// npm run bench:handoff [-- --json] [--seconds S] [--bots N]
// On a real 2×1 world (two shard processes on loopback, one border), each phase on a world of
// its own:
// 1. Gap: bots (handoff-bots.ts, one separate process) walk back and forth along x between −60
//    and +60, across the border at x = 0, each at a height of its own; the gap each one sees
//    between the old shard's last snapshot and the new one's first, p50 / p99 / max over every
//    handoff.
// 2. Rate: the same bots between −12 and +12, crossing as often as they can; handoffs per second
//    from both shards' aether_handoffs_total{result="ok"} over the window.
// 3. Ghosts: 1,000 wandering NPCs per shard, every one within engine.aoi_radius of the border; the
//    bytes shard 0 sends to shard 1 per second (aether_ghost_bytes_sent_total).
// Prints tables; with --json, one JSON object as the last line.
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { parseCli, type Rect } from '@aethex/runtime';
import { type LocalWorld, startLocalWorld } from '../src/world/local-world.js';
import { metricValue, scrapeMetrics } from '../src/world/metrics-scrape.js';
import type { HandoffBotsConfig, HandoffBotsSummary } from './handoff-bots.js';

const USAGE = 'usage: npm run bench:handoff [-- --json] [--seconds S] [--bots N]';
const cli = parseCli('bench:handoff', USAGE, {
  json: { type: 'boolean', default: false },
  seconds: { type: 'string', default: '20' },
  bots: { type: 'string', default: '200' },
});
const { values } = cli;
const seconds = cli.int('seconds', 5, 3600);
const botCount = cli.int('bots', 2, 2000);
const log = (s: string) => process.stderr.write(`${s}\n`);

const BOTS_SCRIPT = join(import.meta.dirname, 'handoff-bots.ts');
const NODE_ARGS = ['--conditions=aethex-source', '--import', 'tsx'];
/** Entities near the border in the ghost phase: every NPC of shard 0. */
const GHOST_NPCS = 1000;
/** Players walk at most this far a tick (engine.max_speed); bots ask for a bit less. */
const MAX_SPEED = 6;
const BOT_STEP = 5;
const BOT_INPUT_MS = 25;

// --- what is running, so that everything is stopped at the end, also on error -----------------

const live = { worlds: new Set<LocalWorld>(), children: new Set<ChildProcess>(), dirs: new Set<string>() };
async function cleanup(): Promise<void> {
  for (const c of live.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  live.children.clear();
  await Promise.all([...live.worlds].map((w) => w.stop()));
  live.worlds.clear();
  for (const d of live.dirs) rmSync(d, { recursive: true, force: true });
  live.dirs.clear();
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`bench:handoff: ${signal}, stopping...`);
    void cleanup().finally(() => process.exit(130));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const round = (v: number, digits = 1) => Math.round(v * 10 ** digits) / 10 ** digits;

// --- a world ------------------------------------------------------------------------------------

interface Bench {
  world: LocalWorld;
  dir: string;
  keyFile: string;
  bounds: Rect;
}

async function startWorld(bounds: Rect, env: Record<string, string>): Promise<Bench> {
  const dir = mkdtempSync(join(os.tmpdir(), 'aethex-bench-handoff-'));
  live.dirs.add(dir);
  const keys = generateKeyPairSync('ed25519');
  const keyFile = join(dir, 'key.pem');
  writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const world = await startLocalWorld({
    name: 'bench',
    columns: 2,
    rows: 1,
    bounds,
    directory: dir,
    publicKeyPem: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    basePort: 0,
    stdio: 'ignore',
    env: {
      AETHEX_GAMESERVER_ENGINE_MAX_SPEED: String(MAX_SPEED),
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS: String(Math.max(4000, botCount * 2 + 200)),
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: String(botCount * 2 + 200),
      // Every bot is on 127.0.0.1, and every handoff is a new connection to the neighbour.
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '100000',
      // The default (2000) unless more bots than that are asked for.
      AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: String(Math.max(2000, botCount + 100)),
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '60000',
      AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '3000',
      AETHEX_GAMESERVER_LOG_LEVEL: 'error',
      ...env,
    },
  });
  live.worlds.add(world);
  // Both links up: each shard holds a gauge per neighbour once the other's link has spoken.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const up = await Promise.all(world.shards.map((s) => scrapeMetrics(s.opsUrl).then((m) => metricValue(m, 'aether_shard_links_up'))));
    if (up.every((n) => n >= 2)) break;
    if (Date.now() > deadline) throw new Error(`shard links not up within 15 s (${up.join(', ')})`);
    await sleep(100);
  }
  return { world, dir, keyFile, bounds };
}

async function stopWorld(b: Bench): Promise<void> {
  await b.world.stop();
  live.worlds.delete(b.world);
  rmSync(b.dir, { recursive: true, force: true });
  live.dirs.delete(b.dir);
}

// --- CPU of a process (Linux), for context: everything here shares the machine's cores ----------

const CLOCK_TICKS = 100;
function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** CPU use of some processes over a window, % of one core each. */
function cpuMeter(pids: (number | undefined)[]): () => (number | null)[] {
  const at = performance.now();
  const before = pids.map(cpuSeconds);
  return () => {
    const s = (performance.now() - at) / 1000;
    return pids.map((pid, i) => {
      const a = before[i];
      const b = cpuSeconds(pid);
      return a === undefined || b === undefined ? null : round(((b - a) / s) * 100, 0);
    });
  };
}

// --- bots ---------------------------------------------------------------------------------------

interface BotsRun {
  child: ChildProcess;
  /** Resolves when every bot has joined and they have started walking. */
  walking: Promise<void>;
  summary: Promise<HandoffBotsSummary>;
}

function startBots(b: Bench, lane: { minX: number; maxX: number }, warmupSeconds: number, walkSeconds: number): BotsRun {
  const config: HandoffBotsConfig = {
    world: b.world.name,
    shards: b.world.shards.map((s) => ({ name: s.name, url: s.url })),
    bounds: b.bounds,
    privateKeyFile: b.keyFile,
    count: botCount,
    warmupSeconds,
    seconds: walkSeconds,
    step: BOT_STEP,
    inputEveryMs: BOT_INPUT_MS,
    lane,
  };
  const child = spawn(process.execPath, [...NODE_ARGS, BOTS_SCRIPT, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] });
  live.children.add(child);
  child.once('exit', () => live.children.delete(child));
  let onWalking: () => void = () => undefined;
  let onSummary: (s: HandoffBotsSummary) => void = () => undefined;
  const exited = new Promise<never>((_, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`world bots exited (${code ?? signal}) before their summary`)));
  });
  const walking = Promise.race([new Promise<void>((resolve) => (onWalking = resolve)), exited]);
  const summary = Promise.race([new Promise<HandoffBotsSummary>((resolve) => (onSummary = resolve)), exited]);
  // Whichever is not awaited must not end the process as an unhandled rejection.
  for (const p of [exited, walking, summary]) p.catch(() => undefined);
  let buffer = '';
  child.stdout?.on('data', (d: Buffer) => {
    buffer += d.toString();
    for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      let msg: { progress?: unknown; summary?: HandoffBotsSummary };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      // The first progress line comes once every bot has joined and the walk has begun.
      if (msg.progress) onWalking();
      if (msg.summary) onSummary(msg.summary);
    }
  });
  return { child, walking, summary };
}

/**
 * Bounds of the player phases: the border at x = 0, players spawn within 100 of it; tall enough
 * that each bot sees some 50 others within the AOI radius.
 */
const PLAYER_BOUNDS: Rect = { minX: -100, minY: 0, maxX: 100, maxY: 400 };
const PLAYER_ENV = { AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '60', AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '0' };

interface HandoffCounts {
  ok: number;
  rolled_back: number;
  rejected: number;
  /** aether_handoff_duration_seconds (offer to accept, on the offering shard): sum and count. */
  durationSeconds: number;
  durations: number;
  /** Ticks of both shards that took over 50 ms (aether_tick_duration_seconds), ticks dropped. */
  ticksOver50ms: number;
  ticksSkipped: number;
  /** The shards' event-loop delay since the previous scrape (prom-client resets it on each), worst of the two. */
  loopP99Ms: number;
  loopMaxMs: number;
}

async function handoffCounts(b: Bench): Promise<HandoffCounts> {
  const all = await Promise.all(b.world.shards.map((s) => scrapeMetrics(s.opsUrl)));
  const sum = (name: string, labels: Record<string, string> = {}) => all.reduce((a, m) => a + metricValue(m, name, labels), 0);
  return {
    ok: sum('aether_handoffs_total', { result: 'ok' }),
    rolled_back: sum('aether_handoffs_total', { result: 'rolled_back' }),
    rejected: sum('aether_handoffs_total', { result: 'rejected' }),
    durationSeconds: sum('aether_handoff_duration_seconds_sum'),
    durations: sum('aether_handoff_duration_seconds_count'),
    ticksOver50ms: sum('aether_tick_duration_seconds_count') - sum('aether_tick_duration_seconds_bucket', { le: '0.05' }),
    ticksSkipped: sum('aether_ticks_skipped_total'),
    loopP99Ms: Math.max(...all.map((m) => metricValue(m, 'nodejs_eventloop_lag_p99_seconds'))) * 1000,
    loopMaxMs: Math.max(...all.map((m) => metricValue(m, 'nodejs_eventloop_lag_max_seconds'))) * 1000,
  };
}

interface PlayerPhase {
  lane: { minX: number; maxX: number };
  bots: number;
  joined: number;
  seconds: number;
  handoffs_per_s: number;
  ok: number;
  rolled_back: number;
  rejected: number;
  offer_to_accept_ms_mean: number;
  gap_ms: { p50: number; p99: number; max: number; samples: number };
  /** Shard stalls in the window (both shards): ticks that took over 50 ms, ticks dropped. */
  shard_ticks_over_50ms: number;
  shard_ticks_skipped: number;
  shards_event_loop_delay_ms: { p99: number; max: number };
  handoff_failures: number;
  closed: number;
  kicks: Record<string, number>;
  bots_event_loop_delay_ms: { p50: number; p99: number; max: number };
  cpu_pct: { shard0: number | null; shard1: number | null; bots: number | null };
}

/**
 * `botCount` bots walking back and forth between −laneHalfWidth and +laneHalfWidth. The shards'
 * counters are read 2 s after the walk starts and `seconds` later; the bots count the gaps of the
 * handoffs from 2 s on, until they stop walking a second after the window.
 */
async function playerPhase(laneHalfWidth: number): Promise<PlayerPhase> {
  const b = await startWorld(PLAYER_BOUNDS, PLAYER_ENV);
  try {
    const lane = { minX: -laneHalfWidth, maxX: laneHalfWidth };
    const run = startBots(b, lane, 2, seconds + 1);
    await run.walking;
    await sleep(2000);
    const [s0, s1] = b.world.shards;
    const cpu = cpuMeter([s0?.process?.pid, s1?.process?.pid, run.child.pid]);
    const t0 = performance.now();
    const before = await handoffCounts(b);
    await sleep(seconds * 1000);
    const after = await handoffCounts(b);
    const elapsed = (performance.now() - t0) / 1000;
    const [c0, c1, cb] = cpu();
    const summary = await run.summary;
    const ok = after.ok - before.ok;
    const durations = after.durations - before.durations;
    return {
      lane,
      bots: summary.bots,
      joined: summary.joined,
      seconds: round(elapsed, 2),
      handoffs_per_s: round(ok / elapsed),
      ok,
      rolled_back: after.rolled_back - before.rolled_back,
      rejected: after.rejected - before.rejected,
      offer_to_accept_ms_mean: durations > 0 ? round(((after.durationSeconds - before.durationSeconds) / durations) * 1000, 2) : 0,
      gap_ms: {
        p50: round(summary.handoff_gap_ms.p50),
        p99: round(summary.handoff_gap_ms.p99),
        max: round(summary.handoff_gap_ms.max),
        samples: summary.handoffs,
      },
      shard_ticks_over_50ms: after.ticksOver50ms - before.ticksOver50ms,
      shard_ticks_skipped: after.ticksSkipped - before.ticksSkipped,
      shards_event_loop_delay_ms: { p99: round(after.loopP99Ms), max: round(after.loopMaxMs) },
      handoff_failures: summary.handoff_failures.length,
      closed: summary.closed,
      kicks: summary.kicks,
      bots_event_loop_delay_ms: {
        p50: round(summary.event_loop_delay_ms.p50),
        p99: round(summary.event_loop_delay_ms.p99),
        max: round(summary.event_loop_delay_ms.max),
      },
      cpu_pct: { shard0: c0 ?? null, shard1: c1 ?? null, bots: cb ?? null },
    };
  } finally {
    await stopWorld(b);
  }
}

interface GhostPhase {
  aoi_radius: number;
  npcs_per_shard: number;
  /** Ghosts of shard 0's entities held by shard 1 (mean of the two reads). */
  ghost_entities: number;
  seconds: number;
  bytes_per_s: number;
  bytes_per_entity_per_s: number;
  bytes_per_entity_per_tick: number;
  reverse_bytes_per_s: number;
  tick_ms_mean: { shard0: number; shard1: number };
  cpu_pct: { shard0: number | null; shard1: number | null };
}

/** Shard 0's region as wide as the AOI radius, so that all of its NPCs are near the border. */
async function ghostPhase(): Promise<GhostPhase> {
  const radius = 200;
  const bounds: Rect = { minX: 0, minY: 0, maxX: 2 * radius, maxY: 1000 };
  const b = await startWorld(bounds, {
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: String(radius),
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: String(GHOST_NPCS),
  });
  try {
    const [s0, s1] = b.world.shards as [LocalWorld['shards'][number], LocalWorld['shards'][number]];
    const read = async () => {
      const [m0, m1] = await Promise.all([scrapeMetrics(s0.opsUrl), scrapeMetrics(s1.opsUrl)]);
      return {
        bytes01: metricValue(m0, 'aether_ghost_bytes_sent_total', { neighbour: s1.name }),
        bytes10: metricValue(m1, 'aether_ghost_bytes_sent_total', { neighbour: s0.name }),
        ghosts: metricValue(m1, 'aether_ghosts', { neighbour: s0.name }),
        ticks: [metricValue(m0, 'aether_tick_duration_seconds_count'), metricValue(m1, 'aether_tick_duration_seconds_count')],
        tickSeconds: [metricValue(m0, 'aether_tick_duration_seconds_sum'), metricValue(m1, 'aether_tick_duration_seconds_sum')],
      };
    };
    const deadline = Date.now() + 15_000;
    while ((await read()).ghosts < GHOST_NPCS) {
      if (Date.now() > deadline) throw new Error(`shard 1 holds fewer than ${GHOST_NPCS} ghosts of shard 0 after 15 s`);
      await sleep(200);
    }
    await sleep(2000);
    const cpu = cpuMeter([s0.process?.pid, s1.process?.pid]);
    const t0 = performance.now();
    const before = await read();
    await sleep(seconds * 1000);
    const after = await read();
    const elapsed = (performance.now() - t0) / 1000;
    const [c0, c1] = cpu();
    const ticks = (after.ticks[0] as number) - (before.ticks[0] as number);
    const bytesPerS = (after.bytes01 - before.bytes01) / elapsed;
    const entities = (before.ghosts + after.ghosts) / 2;
    const tickMean = (k: 0 | 1) =>
      round(
        (((after.tickSeconds[k] as number) - (before.tickSeconds[k] as number)) /
          ((after.ticks[k] as number) - (before.ticks[k] as number))) *
          1000,
        2,
      );
    return {
      aoi_radius: radius,
      npcs_per_shard: GHOST_NPCS,
      ghost_entities: round(entities, 0),
      seconds: round(elapsed, 2),
      bytes_per_s: Math.round(bytesPerS),
      bytes_per_entity_per_s: round(bytesPerS / entities),
      bytes_per_entity_per_tick: round((after.bytes01 - before.bytes01) / ticks / entities, 2),
      reverse_bytes_per_s: Math.round((after.bytes10 - before.bytes10) / elapsed),
      tick_ms_mean: { shard0: tickMean(0), shard1: tickMean(1) },
      cpu_pct: { shard0: c0 ?? null, shard1: c1 ?? null },
    };
  } finally {
    await stopWorld(b);
  }
}

// --- run ----------------------------------------------------------------------------------------

const cpus = os.cpus();
const machine = {
  cpus: cpus.length,
  model: cpus[0]?.model ?? 'cpu',
  mem_gib: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  load_average_before: os.loadavg().map((v) => round(v, 2)),
};
let gap: PlayerPhase;
let rate: PlayerPhase;
let ghosts: GhostPhase;
try {
  log(`gap: ${botCount} bots across the border (lane ±60) for ${seconds} s...`);
  gap = await playerPhase(60);
  log(`rate: ${botCount} bots in a lane of ±12 across the border for ${seconds} s...`);
  rate = await playerPhase(12);
  log(`ghosts: ${GHOST_NPCS} NPCs per shard within the AOI radius of the border for ${seconds} s...`);
  ghosts = await ghostPhase();
} catch (err) {
  log(`bench:handoff: ${(err as Error).stack ?? err}`);
  await cleanup();
  process.exit(1);
}
await cleanup();

const n = (v: number) => v.toLocaleString('en-US');
const pct = (v: number | null) => (v === null ? '–' : `${v} %`);
console.log(
  `\nHandoff benchmark — ${machine.cpus} × ${machine.model}, ${machine.mem_gib} GiB, Node ${machine.node}; two shards and the bots on the same cores\n`,
);
console.log(
  `Players (${botCount} bots in one process, ${seconds} s window, world ${PLAYER_BOUNDS.maxX - PLAYER_BOUNDS.minX} × ${PLAYER_BOUNDS.maxY}, border at x = 0)\n`,
);
console.log(
  '| phase | lane x | handoffs/s | ok | rolled back | rejected | gap p50 / p99 / max ms | gap samples | offer→accept mean ms | shard ticks > 50 ms / dropped | shard loop delay p99 / max ms | CPU shard 0 / shard 1 / bots | bot loop delay p99 / max ms |',
);
console.log('| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- | --- |');
for (const [name, p] of [
  ['gap', gap],
  ['rate', rate],
] as const) {
  console.log(
    `| ${name} | ±${p.lane.maxX} | ${n(p.handoffs_per_s)} | ${n(p.ok)} | ${p.rolled_back} | ${p.rejected} | ${p.gap_ms.p50} / ${p.gap_ms.p99} / ${p.gap_ms.max} | ${n(p.gap_ms.samples)} | ${p.offer_to_accept_ms_mean} | ${p.shard_ticks_over_50ms} / ${p.shard_ticks_skipped} | ${p.shards_event_loop_delay_ms.p99} / ${p.shards_event_loop_delay_ms.max} | ${pct(p.cpu_pct.shard0)} / ${pct(p.cpu_pct.shard1)} / ${pct(p.cpu_pct.bots)} | ${p.bots_event_loop_delay_ms.p99} / ${p.bots_event_loop_delay_ms.max} |`,
  );
}
if (gap.handoff_failures + rate.handoff_failures + gap.closed + rate.closed > 0) {
  console.log(
    `\nSessions lost during the walk (gap / rate): ${gap.closed} / ${rate.closed}; failed handoffs ${gap.handoff_failures} / ${rate.handoff_failures}; kicks ${JSON.stringify(gap.kicks)} / ${JSON.stringify(rate.kicks)}`,
  );
}
console.log(`\nGhosts (${ghosts.npcs_per_shard} NPCs per shard, aoi_radius ${ghosts.aoi_radius} = shard 0's width, ${ghosts.seconds} s)\n`);
console.log(
  '| entities mirrored | shard 0 → 1 B/s | B per entity per s | B per entity per tick | shard 1 → 0 B/s | tick mean ms shard 0 / 1 | CPU shard 0 / 1 |',
);
console.log('| ---: | ---: | ---: | ---: | ---: | --- | --- |');
console.log(
  `| ${n(ghosts.ghost_entities)} | ${n(ghosts.bytes_per_s)} | ${n(ghosts.bytes_per_entity_per_s)} | ${ghosts.bytes_per_entity_per_tick} | ${n(ghosts.reverse_bytes_per_s)} | ${ghosts.tick_ms_mean.shard0} / ${ghosts.tick_ms_mean.shard1} | ${pct(ghosts.cpu_pct.shard0)} / ${pct(ghosts.cpu_pct.shard1)} |`,
);
console.log(
  `\nGoal: handoff gap p99 ≤ 100 ms — ${gap.gap_ms.p99} ms (${gap.gap_ms.p99 <= 100 ? 'met' : 'missed'}); handoffs/s sustained: ${n(rate.handoffs_per_s)}; ghost traffic at 1,000 entities: ${n(ghosts.bytes_per_s)} B/s`,
);
if (values.json) {
  console.log(
    JSON.stringify({
      machine,
      seconds,
      bots: botCount,
      handoff_gap_ms: gap.gap_ms,
      handoffs_per_s: rate.handoffs_per_s,
      handoffs_rolled_back: gap.rolled_back + rate.rolled_back,
      handoffs_rejected: gap.rejected + rate.rejected,
      ghost_bytes_per_s: ghosts.bytes_per_s,
      ghost_bytes_per_entity_per_s: ghosts.bytes_per_entity_per_s,
      gap_phase: gap,
      rate_phase: rate,
      ghost_phase: ghosts,
    }),
  );
}
process.exit(0);
