// Bots for `npm run bench:handoff`, in their own process: COUNT players, each at a height of its
// own, walking back and forth along x between lane.minX and lane.maxX across the border of a
// 2×1 world, so that every leg is a crossing. The SDK's RealtimeClient follows each handoff and
// reports the gap between the old shard's last snapshot and the new shard's first. Reads its
// configuration as JSON from argv[2]; prints one JSON line per second ({"progress": …}, the first
// once every bot has joined and the walk has begun) and a summary line at the end ({"summary": …}).
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { percentile, type Rect, signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { WebSocket } from 'ws';

export interface HandoffBotsConfig {
  world: string;
  shards: { name: string; url: string }[];
  bounds: Rect;
  privateKeyFile: string;
  count: number;
  /** How long the bots walk once all have joined: gaps count after the first `warmupSeconds`. */
  warmupSeconds: number;
  seconds: number;
  /** World units per input; inputs go every `inputEveryMs`. */
  step: number;
  inputEveryMs: number;
  lane: { minX: number; maxX: number };
}

export interface HandoffBotsSummary {
  bots: number;
  joined: number;
  handoffs: number;
  handoff_gap_ms: { p50: number; p99: number; max: number; samples: number };
  /** Sessions that ended during the walk (a failed handoff, a kick). */
  closed: number;
  handoff_failures: string[];
  kicks: Record<string, number>;
  /** This process's event-loop delay during the walk: a late loop stretches the gaps it measures. */
  event_loop_delay_ms: { p50: number; p99: number; max: number };
}

const config = JSON.parse(process.argv[2] as string) as HandoffBotsConfig;
const privateKey = createPrivateKey(readFileSync(config.privateKeyFile, 'utf8'));
const JOIN_CONCURRENCY = 16;

interface Bot {
  client: RealtimeClient;
  y: number;
  /** Which end of the lane the bot walks to. */
  toMax: boolean;
  open: boolean;
}

const bots: Bot[] = [];
const gaps: number[] = [];
const failures: string[] = [];
const kicks: Record<string, number> = {};
let closed = 0;
let walking = false;
let measuring = false;
let warmupHandoffs = 0;
let started = 0;

async function join(i: number): Promise<Bot> {
  const shard = config.shards[i % config.shards.length] as HandoffBotsConfig['shards'][number];
  const joinToken = await signJoinToken(
    privateKey,
    { playerId: `crosser-${i}`, world: config.world, instance: 0, shard: shard.name },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA', ttlSeconds: 300 },
  );
  const client = new RealtimeClient({ url: shard.url, joinToken, createSocket: (u) => new WebSocket(u) as never });
  const h = config.bounds.maxY - config.bounds.minY;
  const bot: Bot = { client, y: config.bounds.minY + ((i + 0.5) / config.count) * h, toMax: i % 2 === 0, open: true };
  client.on('handoff', (info) => {
    if (measuring) gaps.push(info.gapMs);
    else warmupHandoffs++;
  });
  client.on('handoffFailed', (why) => failures.push(why));
  client.on('kick', (reason) => {
    kicks[reason] = (kicks[reason] ?? 0) + 1;
  });
  client.on('close', () => {
    if (!bot.open) return;
    bot.open = false;
    if (walking) closed++;
  });
  await client.connect();
  return bot;
}

for (let i = 0; i < config.count; i += JOIN_CONCURRENCY) {
  const batch: Promise<Bot>[] = [];
  for (let k = i; k < Math.min(config.count, i + JOIN_CONCURRENCY); k++) batch.push(join(k));
  bots.push(...(await Promise.all(batch)));
}

walking = true;
started = Date.now();
setTimeout(() => {
  measuring = true;
}, config.warmupSeconds * 1000);
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
const walk = setInterval(() => {
  for (const bot of bots) {
    if (!bot.open) continue;
    const me = bot.client.predicted;
    const tx = bot.toMax ? config.lane.maxX : config.lane.minX;
    const dx = tx - me.x;
    const dy = bot.y - me.y;
    const d = Math.hypot(dx, dy);
    if (d < config.step) {
      bot.toMax = !bot.toMax;
      continue;
    }
    bot.client.move((dx / d) * config.step, (dy / d) * config.step);
  }
}, config.inputEveryMs);
const progress = () =>
  console.log(
    JSON.stringify({
      progress: {
        seconds: Math.round((Date.now() - started) / 1000),
        joined: bots.filter((b) => b.open).length,
        handoffs: warmupHandoffs + gaps.length,
      },
    }),
  );
progress();
const progressTimer = setInterval(progress, 1000);

await new Promise((r) => setTimeout(r, (config.warmupSeconds + config.seconds) * 1000));
clearInterval(walk);
loopDelay.disable();
// Stand still and let the handoffs under way complete.
await new Promise((r) => setTimeout(r, 1500));
clearInterval(progressTimer);
walking = false;
const sorted = [...gaps].sort((a, b) => a - b);
const summary: HandoffBotsSummary = {
  bots: bots.length,
  joined: bots.filter((b) => b.open).length,
  handoffs: gaps.length,
  handoff_gap_ms: { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? 0, samples: sorted.length },
  closed,
  handoff_failures: failures.slice(0, 10),
  kicks,
  event_loop_delay_ms: {
    p50: loopDelay.percentile(50) / 1e6,
    p99: loopDelay.percentile(99) / 1e6,
    max: loopDelay.max / 1e6,
  },
};
for (const bot of bots) {
  bot.open = false;
  bot.client.close();
}
console.log(JSON.stringify({ summary }));
process.exit(0);
