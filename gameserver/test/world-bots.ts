// Bots for the sharded-world tests and the handoff benchmark, in their own process: COUNT players
// spread over the world's shards, each walking towards random points anywhere in the world (so
// they keep crossing borders), following handoffs through the SDK, and rejoining the shard they
// were on when its process dies. Reads its configuration as JSON from argv[2]; prints one JSON
// line every 200 ms ({"progress": …}) and a summary line at the end ({"summary": …}), then keeps its
// players in the world until SIGTERM.
import { readFileSync } from 'node:fs';
import { percentile, type Rect, signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { WebSocket } from 'ws';
import { walkTowards } from '../soak/walk.js';

export interface WorldBotsConfig {
  world: string;
  shards: { name: string; url: string; region: Rect; index: number }[];
  bounds: Rect;
  privateKeyFile: string;
  count: number;
  seconds: number;
  /** World units per input; inputs go every `inputEveryMs`. */
  step: number;
  inputEveryMs: number;
  /** Bots walk between these x values only (benchmarks across one border); default: anywhere. */
  lane?: { minX: number; maxX: number };
}

const config = JSON.parse(process.argv[2] as string) as WorldBotsConfig;
const key = readFileSync(config.privateKeyFile, 'utf8');
const { createPrivateKey } = await import('node:crypto');
const privateKey = createPrivateKey(key);
const ID_SHARD_BITS = 24;

interface Bot {
  id: string;
  client: RealtimeClient | undefined;
  shard: string;
  target: { x: number; y: number };
  handoffs: number;
  gaps: number[];
  rejoins: number;
  failures: string[];
  sawForeign: boolean;
  joined: boolean;
  stopped: boolean;
}

const byName = new Map(config.shards.map((s) => [s.name, s]));
const kicks = new Map<string, number>();
const bots: Bot[] = [];
const rnd = (a: number, b: number) => a + Math.random() * (b - a);
const pick = () => {
  const lane = config.lane;
  return {
    x: lane ? rnd(lane.minX, lane.maxX) : rnd(config.bounds.minX + 1, config.bounds.maxX - 1),
    y: rnd(config.bounds.minY + 1, config.bounds.maxY - 1),
  };
};

const token = (playerId: string, shard: string) =>
  signJoinToken(
    privateKey,
    { playerId, world: config.world, instance: 0, shard },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA', ttlSeconds: 120 },
  );

async function connect(bot: Bot): Promise<void> {
  const shard = byName.get(bot.shard);
  if (!shard) throw new Error(`unknown shard ${bot.shard}`);
  const client = new RealtimeClient({
    url: shard.url,
    joinToken: await token(bot.id, shard.name),
    createSocket: (u) => new WebSocket(u) as never,
    // The SDK rejoins a shard that went away (killed and restarted) by itself.
    rejoin: { joinToken: (s) => token(bot.id, s.name), maxDelayMs: 250 },
  });
  bot.client = client;
  client.on('handoff', (h) => {
    bot.handoffs++;
    bot.gaps.push(h.gapMs);
    bot.shard = h.to;
  });
  client.on('handoffFailed', (why) => bot.failures.push(why));
  client.on('kick', (reason) => kicks.set(reason, (kicks.get(reason) ?? 0) + 1));
  client.on('snapshot', () => {
    if (bot.sawForeign) return;
    const mine = byName.get(client.shardName)?.index;
    for (const [id, e] of client.entities()) {
      // NPCs never leave their region: one from another shard's id range is a ghost.
      if (e.kind === 0 && id >>> ID_SHARD_BITS !== mine) {
        bot.sawForeign = true;
        break;
      }
    }
  });
  client.on('disconnected', () => {
    bot.joined = false;
  });
  client.on('rejoined', (r) => {
    bot.rejoins += r.attempts;
    bot.joined = true;
  });
  client.on('close', (code, reason) => {
    if (bot.stopped) return;
    bot.joined = false;
    bot.failures.push(`session closed: ${code} ${reason}`);
  });
  await client.connect();
  bot.joined = true;
}

for (let i = 0; i < config.count; i++) {
  const shard = config.shards[i % config.shards.length] as WorldBotsConfig['shards'][number];
  const bot: Bot = {
    id: `walker-${i}`,
    client: undefined,
    shard: shard.name,
    target: pick(),
    handoffs: 0,
    gaps: [],
    rejoins: 0,
    failures: [],
    sawForeign: false,
    joined: false,
    stopped: false,
  };
  bots.push(bot);
  await connect(bot);
}

const started = Date.now();
const walk = setInterval(() => {
  for (const bot of bots) {
    const c = bot.client;
    if (!c || !bot.joined) continue;
    walkTowards(c, bot, config.step, pick);
  }
}, config.inputEveryMs);
const progress = setInterval(() => {
  const handoffs = bots.reduce((s, b) => s + b.handoffs, 0);
  const joined = bots.filter((b) => b.joined).length;
  console.log(JSON.stringify({ progress: { seconds: Math.round((Date.now() - started) / 1000), joined, handoffs } }));
}, 200);

await new Promise((r) => setTimeout(r, config.seconds * 1000));
clearInterval(walk);
// Stand still and let every input be answered.
await new Promise((r) => setTimeout(r, 2000));
clearInterval(progress);
const gaps = bots.flatMap((b) => b.gaps).sort((a, b) => a - b);
const summary = {
  bots: bots.length,
  joined: bots.filter((b) => b.joined).length,
  handoffs: bots.reduce((s, b) => s + b.handoffs, 0),
  handoff_gap_ms: { p50: percentile(gaps, 50), p99: percentile(gaps, 99), max: gaps.at(-1) ?? 0 },
  unacknowledged: bots.reduce((s, b) => s + (b.client?.unacknowledged ?? 0), 0),
  rejoins: bots.reduce((s, b) => s + b.rejoins, 0),
  handoff_failures: bots.flatMap((b) => b.failures).slice(0, 10),
  kicks: Object.fromEntries(kicks),
  saw_neighbours: bots.filter((b) => b.sawForeign).length,
};
// The players stay in the world until the test has taken its last look (SIGTERM), then leave.
for (const bot of bots) bot.stopped = true;
console.log(JSON.stringify({ summary }));
await new Promise((r) => {
  process.once('SIGTERM', r);
  setTimeout(r, 30_000).unref();
});
for (const bot of bots) bot.client?.close();
process.exit(0);
