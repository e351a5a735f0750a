// The soak's players, in a process of their own (so that they never stall the soak's proxies and
// fault timers): SDK RealtimeClients with `rejoin`, each walking towards random points anywhere in
// the world, so they keep crossing borders; every `churnMs` one quits and a new one joins. Reads
// its configuration (ClientsConfig) as JSON from argv[2] and commands from stdin; writes what the
// clients see as JSON lines (ClientsMessage) on stdout. See client-protocol.ts.
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { nodeSocket } from '@aethex/sdk/node-socket';
import { createRng } from '../src/sim/step.js';
import type { ClientEvent, ClientState, ClientsCommand, ClientsConfig, ClientsMessage } from './client-protocol.js';
import { SOAK_PLAYER_PARAM } from './fault-proxy.js';
import { walkTowards } from './walk.js';

const config = JSON.parse(process.argv[2] as string) as ClientsConfig;
const privateKey = createPrivateKey(readFileSync(config.privateKeyFile, 'utf8'));
const rng = createRng(config.seed);
const JOIN_CONCURRENCY = 8;
/** A new player whose join fails tries another shard this much later, for as long as the soak runs. */
const JOIN_RETRY_MS = 500;

const addressOf = new Map(config.shards.map((s) => [s.name, s.address]));
/**
 * The edge: `ws://<shard name>/…` goes to that shard's players' address (the soak's proxy in front
 * of it), with the player's id in the URL (`soak-player`, which the shard ignores) so that the
 * proxy knows whose connection it is — resumes and rejoins included.
 */
const socketsOf = (playerId: string) => (url: string) => {
  const u = new URL(url);
  const address = addressOf.get(u.hostname);
  if (address) u.host = address;
  u.searchParams.set(SOAK_PLAYER_PARAM, playerId);
  return nodeSocket(u.toString());
};
const urlOf = (shard: string) => `ws://${shard}/`;

const send = (m: ClientsMessage) => process.stdout.write(`${JSON.stringify(m)}\n`);
const emit = (e: ClientEvent) => send({ event: e });

interface Player {
  id: string;
  client: RealtimeClient;
  target: { x: number; y: number };
  /** Welcomed once, not quit, not ended. */
  joined: boolean;
  rejoining: boolean;
  quit: boolean;
  ended: boolean;
  /** The last input the shard had acknowledged when the connection dropped (the rejoin compares). */
  ackedAtDrop: number;
}

const players = new Map<string, Player>();
let nextPlayer = 0;
let walking = true;
let closing = false;

const pick = () => ({
  x: config.bounds.minX + 1 + rng() * (config.bounds.maxX - config.bounds.minX - 2),
  y: config.bounds.minY + 1 + rng() * (config.bounds.maxY - config.bounds.minY - 2),
});
const token = (playerId: string, shard: string) =>
  signJoinToken(
    privateKey,
    { playerId, world: config.world, instance: 0, shard },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA', ttlSeconds: 300 },
  );

/** Joins a new player on `shard`; on failure, again on another shard until it works (or the process closes). */
async function join(shard: string): Promise<void> {
  const id = `${config.playerPrefix}${nextPlayer++}`;
  let at = shard;
  for (;;) {
    if (closing) return;
    const client = new RealtimeClient({
      url: urlOf(at),
      joinToken: await token(id, at),
      createSocket: socketsOf(id),
      rejoin: { joinToken: (s) => token(id, s.name), maxDelayMs: 500, giveUpAfterMs: 60_000 },
    });
    const p: Player = { id, client, target: pick(), joined: false, rejoining: false, quit: false, ended: false, ackedAtDrop: 0 };
    listen(p);
    try {
      await client.connect();
    } catch (err) {
      emit({ e: 'join-failed', p: id, shard: at, code: (err as { code?: string }).code ?? String(err), at: Date.now() });
      client.close();
      await new Promise((r) => setTimeout(r, JOIN_RETRY_MS));
      at = config.shards[Math.floor(rng() * config.shards.length)]?.name ?? at;
      continue;
    }
    p.joined = true;
    players.set(id, p);
    emit({ e: 'joined', p: id, shard: client.shardName, entity: entityOf(client), at: Date.now() });
    return;
  }
}

const entityOf = (c: RealtimeClient) => Number(c.welcome?.entityId ?? 0);

function listen(p: Player): void {
  const c = p.client;
  let lastShard = '';
  /** The SDK's last event was a snapshot: a `handoff` now is the new shard's first snapshot's, not a rejoin's. */
  let afterSnapshot = false;
  c.on('snapshot', () => {
    lastShard = c.shardName;
    afterSnapshot = true;
  });
  c.on('handoff', (h) => {
    // During a rejoin, a handoff comes either from the rejoin itself (the new shard dropped before
    // its first snapshot) or after a rejoin answered with a redirect, at the new shard's first
    // snapshot; 'rejoined' follows at once either way (docs/sdk.md).
    const viaRejoin = p.rejoining && !afterSnapshot;
    emit({ e: 'handoff', p: p.id, from: h.from, to: h.to, entity: entityOf(c), gapMs: h.gapMs, viaRejoin, at: Date.now() });
  });
  c.on('handoffFailed', (reason) => {
    afterSnapshot = false;
    emit({ e: 'handoff-failed', p: p.id, shard: c.shardName, reason, at: Date.now() });
  });
  c.on('disconnected', (code, reason) => {
    afterSnapshot = false;
    p.rejoining = true;
    p.ackedAtDrop = c.lastAckedSeq;
    emit({ e: 'dropped', p: p.id, shard: c.shardName || lastShard, code, reason, acked: c.lastAckedSeq, at: Date.now() });
  });
  c.on('rejoined', (r) => {
    p.rejoining = false;
    const seq = Number(c.welcome?.lastInputSeq ?? 0);
    // `lastAckedSeq` is min(acked at the drop, the Welcome's) by now: the drop's was kept.
    emit({
      e: 'rejoined',
      p: p.id,
      shard: r.shard,
      entity: entityOf(c),
      seq,
      acked: p.ackedAtDrop,
      downMs: Math.round(r.downMs),
      attempts: r.attempts,
      at: Date.now(),
    });
  });
  c.on('kick', (reason, message) => {
    if (p.joined) emit({ e: 'kicked', p: p.id, shard: c.shardName, reason, message, at: Date.now() });
  });
  c.on('close', (code, reason) => {
    if (!p.joined || p.quit || closing) return;
    p.ended = true;
    emit({ e: 'closed', p: p.id, shard: c.shardName, code, reason, at: Date.now() });
  });
}

function quitOne(): void {
  const live = [...players.values()].filter((p) => !p.rejoining && !p.ended);
  const p = live[Math.floor(rng() * live.length)];
  if (!p) return;
  p.quit = true;
  players.delete(p.id);
  emit({ e: 'quit', p: p.id, shard: p.client.shardName, entity: entityOf(p.client), at: Date.now() });
  p.client.close();
}

function state(p: Player): ClientState {
  const c = p.client;
  return {
    p: p.id,
    shard: c.shardName,
    entity: entityOf(c),
    live: p.joined && !p.rejoining && !p.ended && !c.ended,
    rejoining: p.rejoining,
    ended: p.ended || c.ended,
    unacknowledged: c.unacknowledged,
    sinceSnapshotMs: Math.round(performance.now() - c.lastSnapshotAt),
    longestGapMs: Math.round(c.maxSnapshotGapMs),
    x: Math.round(c.predicted.x * 10) / 10,
    y: Math.round(c.predicted.y * 10) / 10,
  };
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line) as ClientsCommand;
  if (m.cmd === 'stand') walking = false;
  else if (m.cmd === 'report') send({ report: [...players.values()].map(state) });
  else if (m.cmd === 'close') {
    closing = true;
    walking = false;
    for (const p of players.values()) p.client.close();
    setTimeout(() => process.exit(0), 500);
  }
});
// The soak went away without a word: nothing to report to.
process.stdin.on('end', () => process.exit(0));

// The first players, spread over the shards.
for (let i = 0; i < config.count; i += JOIN_CONCURRENCY) {
  const batch: Promise<void>[] = [];
  for (let k = i; k < Math.min(config.count, i + JOIN_CONCURRENCY); k++)
    batch.push(join((config.shards[k % config.shards.length] as { name: string }).name));
  await Promise.all(batch);
}
send({ started: { joined: players.size } });

setInterval(() => {
  if (!walking) return;
  for (const p of players.values()) {
    const c = p.client;
    if (p.rejoining || p.ended) continue;
    walkTowards(c, p, config.step, pick);
  }
}, config.inputEveryMs);

if (config.churnMs > 0) {
  setInterval(() => {
    if (!walking) return;
    quitOne();
    void join((config.shards[Math.floor(rng() * config.shards.length)] as { name: string }).name);
  }, config.churnMs);
}
