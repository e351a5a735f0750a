#!/usr/bin/env node
import { createPrivateKey, type KeyObject } from 'node:crypto';
// npm run bots -- --url ws://127.0.0.1:7777 --count 100 --pattern random-walk --private-key key.pem [--duration 30]
// Drives many realtime clients from one process and reports what they saw. Join tokens are signed
// with --private-key (a development key whose public half the shard trusts) or read from --token
// (one token for a single bot).
import { readFileSync } from 'node:fs';
import { cpuPercent, DNS_LABEL, parseCli, percentile, signJoinToken } from '@aethex/runtime';
import { LatencyHistogram } from './latency-histogram.js';
import { nodeSocket } from './node-socket.js';
import { RealtimeClient } from './realtime.js';

export interface BotReport {
  bots: number;
  joined: number;
  kicked: Record<string, number>;
  /**
   * Sessions that ended before the run did, by close code (a kick's close among them; 4000: the
   * shard fell silent for the client's silenceTimeoutMs). Bots do not rejoin.
   */
  closed: Record<string, number>;
  /** Why bots that never joined failed (the error's message, addresses left out), by count. */
  join_errors: Record<string, number>;
  /** Bots whose session was still on at the end (joined, and neither kicked nor closed). */
  live: number;
  /** Seconds measured: the run's --duration but its first 2 s, while bots join. */
  seconds: number;
  /** Snapshots the bots applied in those seconds. */
  snapshots: number;
  /** Corrections the bots got in those seconds (their predicted position set back by the shard). */
  corrections: number;
  /**
   * Downstream bytes a second per bot, each over the part of the measured seconds it was connected
   * (at least 1 s of it: a bot connected for less is left out).
   */
  bytes_per_client_s: { median: number; p99: number };
  input_ack_ms: { p50: number; p99: number; max: number };
  max_snapshot_gap_ms: { median: number; max: number };
  unacknowledged_inputs: number;
  /** Entities in view at the end, averaged over the bots whose session was still on (`live`). */
  entities_seen_avg: number;
  /** Handoffs between shards the bots followed, and the snapshot gap each one caused. */
  handoffs: { done: number; failed: number; gap_ms: { p50: number; p99: number } };
  /** CPU this bot process used over its whole run (joins included), in % of one core. */
  cpu_pct: number;
  /** Raw material for aggregating several bot processes: per-client bytes/s, and input→ack latencies in 1 ms buckets (last bucket: ≥ 999 ms). */
  raw?: { rates: number[]; latency_hist: number[] };
}

const PATTERNS = ['random-walk', 'idle', 'circle'] as const;

/** The report's figures: runtime's percentile, 0 where there is nothing to measure. */
function pct(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : percentile(sorted, p);
}

const USAGE =
  'usage: npm run bots -- --url ws://host:port (--private-key key.pem | --token T) [--count N] [--min-joined N] [--pattern random-walk|idle|circle] [--duration S] [--ramp-ms MS] [--input-groups N] [--namespace NS] [--world W] [--instance N] [--shard S] [--prefix P] [--issuer I] [--audience A] [--json]\n' +
  'Exits 1 when fewer than --min-joined bots (default: all of them) joined.';
const cli = parseCli('bots', USAGE, {
  url: { type: 'string' },
  // 10, or 1 with --token.
  count: { type: 'string' },
  // --count by default.
  'min-joined': { type: 'string' },
  pattern: { type: 'string', default: 'random-walk' },
  duration: { type: 'string', default: '30' },
  'private-key': { type: 'string' },
  token: { type: 'string' },
  namespace: { type: 'string', default: '' },
  world: { type: 'string', default: 'local' },
  instance: { type: 'string', default: '0' },
  shard: { type: 'string', default: 'local-0-0' },
  issuer: { type: 'string', default: 'aethex-control-plane' },
  audience: { type: 'string', default: 'aethex-shard' },
  'ramp-ms': { type: 'string', default: '5' },
  'input-groups': { type: 'string', default: '5' },
  prefix: { type: 'string', default: 'bot' },
  json: { type: 'boolean', default: false },
});
const { fail } = cli;
// Every flag but --json (read from cli.values) is a string.
const values = cli.values as Record<string, string | undefined>;

/**
 * The numeric flag `name`, parsed one way for every flag: plain decimal digits, with a fraction
 * only where `fraction` allows (no sign, exponent, hex, spaces or empty value, which `Number()`
 * would take: '0x10' is 16, '' is 0), within [min, max] (above `min` when `above`). Anything else is
 * `fail`ed naming the flag, what it must be (`must`, or the range) and what was given.
 */
function decimalFlag(
  name: string,
  raw: string | undefined,
  range: { min: number; max: number; fraction?: boolean; above?: boolean; must?: string },
): number {
  const n = raw !== undefined && (range.fraction ? /^\d+(\.\d+)?$/ : /^\d+$/).test(raw) ? Number(raw) : Number.NaN;
  const inRange = range.above ? n > range.min : n >= range.min;
  if (!Number.isFinite(n) || !inRange || n > range.max) {
    const must = range.must ?? `a decimal ${range.fraction ? 'number' : 'integer'} from ${range.min} to ${range.max}`;
    return fail(`--${name} must be ${must}, got '${raw ?? ''}'`);
  }
  return n;
}
const flag = (name: string, range: Parameters<typeof decimalFlag>[2]) => decimalFlag(name, values[name], range);

const url = values.url ?? fail('--url is required (ws://host:port of the shard)');
if (!/^wss?:\/\/.+/.test(url) || !URL.canParse(url)) fail(`--url must be a ws:// or wss:// address, got '${url}'`);
const count = values.count === undefined ? (values.token ? 1 : 10) : flag('count', { min: 1, max: 20_000 });
const minJoined = values['min-joined'] === undefined ? count : flag('min-joined', { min: 0, max: count });
// The first 2 s (bots joining) are not measured.
const duration = flag('duration', {
  min: 2,
  above: true,
  max: 86_400,
  fraction: true,
  must: 'seconds above 2 (the first 2 s are not measured) up to 86400',
});
const pattern = values.pattern as (typeof PATTERNS)[number];
if (!PATTERNS.includes(pattern)) fail(`--pattern must be one of ${PATTERNS.join(', ')}, got '${values.pattern}'`);
const rampMs = flag('ramp-ms', { min: 0, max: 10_000, fraction: true });
if (!values['private-key'] && !values.token) fail('give --private-key (to sign join tokens) or --token');
if (values.token && count !== 1) fail('--token serves one bot; use --private-key for more');
const instance = flag('instance', { min: 0, max: 1_000_000 });
const inputGroups = flag('input-groups', { min: 1, max: 25 });
const namespace = values.namespace ?? '';
if (namespace !== '' && !DNS_LABEL.test(namespace))
  fail(`--namespace must be a DNS label (the GameWorld's namespace), or empty for a shard outside Kubernetes, got '${namespace}'`);

function readKey(path: string): KeyObject {
  try {
    return createPrivateKey(readFileSync(path));
  } catch (err) {
    return fail(`--private-key: cannot read a private key from ${path}: ${(err as Error).message}`);
  }
}
const key = values['private-key'] ? readKey(values['private-key']) : undefined;
const alg = key?.asymmetricKeyType === 'ed25519' ? 'EdDSA' : 'ES256';

async function tokenFor(i: number): Promise<string> {
  if (values.token) return values.token;
  return signJoinToken(
    key as NonNullable<typeof key>,
    { playerId: `${values.prefix}-${i}`, namespace, world: values.world as string, instance, shard: values.shard as string },
    { issuer: values.issuer as string, audience: values.audience as string, alg, ttlSeconds: 300 },
  );
}

const bots: RealtimeClient[] = [];
const kicked: Record<string, number> = {};
const closed: Record<string, number> = {};
let finished = false;
const joinErrors: Record<string, number> = {};
const entitiesSeen: number[] = [];
const handoffGaps: number[] = [];
let handoffsFailed = 0;
let snapshots = 0;
let corrections = 0;
/** When each bot's connect() resolved, and when a session that ended before the run did ended (performance.now()). */
const joinedAt = new Map<RealtimeClient, number>();
const endedAt = new Map<RealtimeClient, number>();
let latencies = new LatencyHistogram();
const started = performance.now();
const cpuAtStart = process.cpuUsage();

for (let i = 0; i < count; i++) {
  const bot = new RealtimeClient({ url, joinToken: await tokenFor(i), createSocket: nodeSocket });
  bot.on('kick', (reason) => {
    kicked[reason] = (kicked[reason] ?? 0) + 1;
  });
  bot.on('snapshot', () => {
    snapshots++;
  });
  bot.on('correction', () => {
    corrections++;
  });
  bot.on('close', (code) => {
    if (!bot.welcome || finished) return;
    closed[code] = (closed[code] ?? 0) + 1;
    endedAt.set(bot, performance.now());
  });
  bot.on('handoff', ({ gapMs }) => {
    handoffGaps.push(gapMs);
  });
  bot.on('handoffFailed', () => {
    handoffsFailed++;
  });
  bots.push(bot);
  bot.connect().then(
    () => joinedAt.set(bot, performance.now()),
    (err: Error & { code?: string }) => {
      const message = err.message.replace(/wss?:\/\/\S+/g, '<url>');
      const reason = err.code && !message.includes(err.code) ? `${err.code}: ${message}` : message;
      joinErrors[reason] = (joinErrors[reason] ?? 0) + 1;
    },
  );
  if (rampMs > 0) await new Promise((r) => setTimeout(r, rampMs));
}

// One input per tick per bot, a process's bots in --input-groups groups sent evenly spaced
// through the tick (every 5 ms at 40 Hz by default), as players' inputs arrive spread over it
// rather than in one burst. One burst a tick (1 group) made the shard read every process's inputs
// at once; on the two cores the shard and the bots share, spread inputs cost the shard fewer ticks
// over 25 ms (docs/benchmarks.md, session 13). The tick is the shard's own, from the first bot's
// Welcome (its exact `tickIntervalUs`; 25 ms until a bot has joined): bots driven at another rate
// would stand some ticks (slower) or have moves merged (faster). Each group's turn is kept on an
// absolute schedule, so late timers do not slow the drive down.
let tickMs = 25;
let tickKnown = false;
const headings = bots.map(() => Math.random() * Math.PI * 2);
let phase = 0;
let nextDriveAt = performance.now();
let driver: ReturnType<typeof setTimeout> | undefined;
const drive = () => {
  if (!tickKnown) {
    const joinedBot = bots.find((b) => b.welcome);
    if (joinedBot) {
      tickMs = joinedBot.tickIntervalMs;
      tickKnown = true;
    }
  }
  phase++;
  const group = phase % inputGroups;
  for (let i = group; i < bots.length; i += inputGroups) {
    const bot = bots[i] as RealtimeClient;
    if (!bot.welcome || bot.ended) continue;
    if (pattern === 'idle') continue;
    const speed = ((bot.welcome.maxSpeed as number) ?? 5) * 0.8;
    if (pattern === 'random-walk' && Math.random() < 0.05) headings[i] = Math.random() * Math.PI * 2;
    const h = pattern === 'circle' ? Math.floor(phase / inputGroups) / 40 + i : (headings[i] as number);
    bot.move(Math.cos(h) * speed, Math.sin(h) * speed);
  }
  // After a stall, on from now: the turns missed are not run back to back.
  nextDriveAt = Math.max(nextDriveAt + tickMs / inputGroups, performance.now() - tickMs);
  driver = setTimeout(drive, Math.max(0, nextDriveAt - performance.now()));
};
driver = setTimeout(drive, tickMs / inputGroups);

const measureFrom = performance.now();
const bytesAtStart = new Map<RealtimeClient, number>();
setTimeout(() => {
  for (const b of bots) bytesAtStart.set(b, b.bytesReceived);
  for (const b of bots) b.maxSnapshotGapMs = 0;
  latencies = new LatencyHistogram();
  for (const b of bots) b.takeLatencies();
  // Counted over the seconds measured, as everything else.
  snapshots = 0;
  corrections = 0;
}, 2000);
// A client keeps only its newest 1,024 latencies (about 25 s): collected every second.
const collect = () => {
  for (const b of bots) latencies.addAll(b.takeLatencies());
};
const collector = setInterval(collect, 1000);

await new Promise((r) => setTimeout(r, duration * 1000));
clearTimeout(driver);
clearInterval(collector);
collect();
const endAt = performance.now();
const measuredFrom = Math.max(measureFrom + 2000, started);
const seconds = (endAt - measuredFrom) / 1000;
const joined = bots.filter((b) => b.welcome);
const live = joined.filter((b) => !endedAt.has(b));
// Bots that never joined saw nothing, and those whose session ended see nothing now: either would
// only pull the average down.
for (const b of live) entitiesSeen.push(b.store.current.size);
// Each bot's bytes over the time it was connected within the measured seconds (one that joined
// late, or whose session ended, received nothing the rest of the time).
const rates = joined
  .flatMap((b) => {
    const from = Math.max(measuredFrom, joinedAt.get(b) ?? measuredFrom);
    const connectedS = ((endedAt.get(b) ?? endAt) - from) / 1000;
    return connectedS < 1 ? [] : [(b.bytesReceived - (bytesAtStart.get(b) ?? 0)) / connectedS];
  })
  .sort((a, b) => a - b);
const gaps = joined.map((b) => b.maxSnapshotGapMs).sort((a, b) => a - b);
handoffGaps.sort((a, b) => a - b);
const report: BotReport = {
  bots: count,
  joined: joined.length,
  live: live.length,
  kicked,
  closed,
  join_errors: joinErrors,
  seconds: Math.round(seconds * 10) / 10,
  snapshots,
  corrections,
  bytes_per_client_s: { median: Math.round(pct(rates, 50)), p99: Math.round(pct(rates, 99)) },
  input_ack_ms: {
    p50: latencies.count === 0 ? 0 : latencies.percentile(50),
    p99: latencies.count === 0 ? 0 : latencies.percentile(99),
    max: Math.round(latencies.max * 10) / 10,
  },
  max_snapshot_gap_ms: { median: Math.round(pct(gaps, 50)), max: Math.round(gaps[gaps.length - 1] ?? 0) },
  unacknowledged_inputs: joined.reduce((s, b) => s + b.unacknowledged, 0),
  entities_seen_avg: Math.round((entitiesSeen.reduce((a, b) => a + b, 0) / Math.max(1, entitiesSeen.length)) * 10) / 10,
  handoffs: {
    done: bots.reduce((s, b) => s + b.handoffs, 0),
    failed: handoffsFailed,
    gap_ms: { p50: Math.round(pct(handoffGaps, 50)), p99: Math.round(pct(handoffGaps, 99)) },
  },
  cpu_pct: cpuPercent(process.cpuUsage(cpuAtStart), performance.now() - started),
};
finished = true;
for (const b of bots) b.close();
if (cli.values.json) {
  report.raw = { rates: rates.map((r) => Math.round(r)), latency_hist: latencies.perMillisecond() };
}

console.log(
  `bots: ${report.joined}/${report.bots} joined, ${report.live} still on at the end, ${report.seconds}s measured, pattern ${pattern}, ${report.cpu_pct}% of a core`,
);
console.log(
  '| downstream B/s per client (median / p99) | snapshots | corrections | input→ack ms (p50 / p99 / max) | max snapshot gap ms (median / max) | entities in view (avg) | handoffs (done / failed) | handoff gap ms (p50 / p99) | kicked | closed (by code) |',
);
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
console.log(
  `| ${report.bytes_per_client_s.median} / ${report.bytes_per_client_s.p99} | ${report.snapshots} | ${report.corrections} | ${report.input_ack_ms.p50} / ${report.input_ack_ms.p99} / ${report.input_ack_ms.max} | ${report.max_snapshot_gap_ms.median} / ${report.max_snapshot_gap_ms.max} | ${report.entities_seen_avg} | ${report.handoffs.done} / ${report.handoffs.failed} | ${report.handoffs.gap_ms.p50} / ${report.handoffs.gap_ms.p99} | ${JSON.stringify(report.kicked)} | ${JSON.stringify(report.closed)} |`,
);
// Why bots did not join, and why sessions were kicked: each on a line of its own.
for (const [reason, n] of Object.entries(report.join_errors)) console.log(`join failed: ${n} × ${reason}`);
for (const [reason, n] of Object.entries(report.kicked)) console.log(`kicked: ${n} × ${reason}`);
const short = report.joined < minJoined;
if (short) {
  console.error(
    `bots: only ${report.joined} of ${report.bots} bots joined (at least ${minJoined} wanted: --min-joined)${
      Object.keys(report.join_errors).length > 0 ? `; join errors: ${JSON.stringify(report.join_errors)}` : ''
    }`,
  );
}
if (cli.values.json) console.log(JSON.stringify(report));
// Also when the event loop empties before the timer (it does not hold the process open).
process.exitCode = short ? 1 : 0;
setTimeout(() => process.exit(), 200).unref();
