// A player handed over must survive the new shard crashing before it stores them: the new shard
// snapshots soon after adopting (not only at persistence.snapshot_interval_ms), and until it says
// that snapshot is stored, the shard that handed the player over keeps a copy and gives it back to
// the new shard's next run (docs/sharding.md, "Custody").
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { testEnv } from '@aethex/testing';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import pg from 'pg';
import { afterAll, afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { decodeState } from '../src/persist/state-codec.js';
import { MODE_OWNED } from '../src/sim/world.js';
import { duoMap, linkedDuo, moduleFile, neighbour, startTestShard, type TestShard, testShardSettings, until } from './harness.js';

let shards: TestShard[] = [];
let timers: NodeJS.Timeout[] = [];
let clients: RealtimeClient[] = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  for (const c of clients) c.close();
  clients = [];
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  timers = [];
  await killProcesses();
});

/** `player` joins B and walks west until handed over to A; returns their client and entity id. */
async function walkToA(b: TestShard, player: string): Promise<{ client: RealtimeClient; entityId: number }> {
  const client = await b.client(player);
  const handoffs: unknown[] = [];
  client.on('handoff', (h) => handoffs.push(h));
  const walk = setInterval(() => client.move(-4, 0), 25);
  timers.push(walk);
  await until(`${player}'s handoff to A`, () => handoffs.length === 1, 30_000);
  clearInterval(walk);
  return { client, entityId: client.welcome?.entityId as number };
}

test('a shard that adopts a player stores a snapshot holding them within about a second, long before its periodic one', async () => {
  const { a, b } = await linkedDuo(
    { AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000', AETHEX_GAMESERVER_LOG_LEVEL: 'warn' },
    (s) => shards.push(s),
  );
  const stored = async () => {
    const saved = await a.shard.stores.snapshots.load({ namespace: '', world: 'duo', instance: 0, shard: 'duo-0-0' });
    return saved ? [...decodeState(saved.state, 10_000).players.values()] : [];
  };
  // A's snapshot at start holds nobody.
  await until("A's first snapshot", () => a.shard.persistence.savedThrough > 0, 10_000);
  expect(await stored()).toEqual([]);
  await walkToA(b, 'rae');
  const handedAt = Date.now();
  let players: string[] = [];
  while (Date.now() - handedAt < 5000 && !players.includes('rae')) {
    await new Promise((r) => setTimeout(r, 50));
    players = await stored();
  }
  expect(players).toEqual(['rae']);
  expect(Date.now() - handedAt).toBeLessThan(3000);
});

test('a HandoffStored lost with its link is sent again once the link is back: the shard that handed the player over lets its copy go', async () => {
  const { a, b } = await linkedDuo({ AETHEX_GAMESERVER_LOG_LEVEL: 'warn' }, (s) => shards.push(s));
  // A's answer that it stored rae goes into a link that dies before delivering it.
  const links = a.shard.links as NonNullable<typeof a.shard.links>;
  const send = links.send.bind(links);
  let lost = 0;
  links.send = (n, msg) => {
    if (msg.handoffStored && lost === 0) {
      lost++;
      setImmediate(() => links.disconnect(n));
      return 1;
    }
    return send(n, msg);
  };
  const { entityId: original } = await walkToA(b, 'rae');
  expect(b.shard.sharding?.custodyHeld).toEqual([original]);
  await until("A's answer lost", () => lost === 1, 5000);
  // The link comes back to the same run of B: A answers again, and B forgets its copy (which a
  // restart of A would otherwise get back — older than what A stored).
  await until("B's copy released", () => b.shard.sharding?.custodyHeld.length === 0, 10_000);
});

test('a shard that drains right after adopting a player tells the shard that handed them over its final snapshot holds them: no older copy is kept to come back', async () => {
  const { a, b } = await linkedDuo(
    { AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000', AETHEX_GAMESERVER_LOG_LEVEL: 'warn' },
    (s) => shards.push(s),
  );
  const { entityId: original } = await walkToA(b, 'sam');
  // B keeps a copy until A has stored sam; A drains at once, before its adoption's snapshot.
  expect(b.shard.sharding?.custodyHeld).toEqual([original]);
  await a.stop();
  await until("B's copy released", () => b.shard.sharding?.custodyHeld.length === 0, 2000);
});

test('a shard that drains while its own offer is undecided rolls it back: an accept that comes during the drain is refused, and the player comes back to its next run with their entity', async () => {
  const { a, b, start } = await linkedDuo(
    {
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-custody-')),
      AETHEX_GAMESERVER_GAME_MODULE: moduleFile(GAME),
      AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
    },
    (s) => shards.push(s),
  );
  // B's accepts are held on their way into A, and let in once A's drain has detached its players
  // and captured its final state (with the links still up, as they are until that is stored).
  const sharding = a.shard.sharding as NonNullable<typeof a.shard.sharding>;
  const held: (() => void)[] = [];
  const onMessage = sharding.onMessage.bind(sharding);
  sharding.onMessage = (from, msg) => {
    if (msg.body === 'handoffAccept') held.push(() => onMessage(from, msg));
    else onMessage(from, msg);
  };
  const persistence = a.shard.persistence;
  const finalSnapshot = persistence.drain.bind(persistence);
  persistence.drain = (...args) => {
    for (const accept of held.splice(0)) accept();
    return finalSnapshot(...args);
  };
  const walker = await a.client('walker', { rejoin: { joinToken: (s) => a.token('walker', { shard: s.name }), maxDelayMs: 200 } });
  const original = walker.welcome?.entityId as number;
  await walker.rpc('set', new Uint8Array([2, 7, 1]));
  const events: string[] = [];
  walker.on('handoff', (h) => events.push(`handoff ${h.from}->${h.to}`));
  walker.on('rejoined', (r) => events.push(`rejoined ${r.shard}`));
  timers.push(setInterval(() => held.length === 0 && walker.move(4, 0), 25));
  await until("B's accept of the walker", () => held.length > 0, 30_000);
  timers.forEach(clearInterval);
  await a.shard.drain();
  await start(0);
  // Back on A's next run with their own entity — not a new one, the old lost to a commit B adopted —
  // which stands past the border, so A's next run hands it over to B.
  await until('the walker back on A', () => events.length > 0, 30_000);
  expect(events[0]).toBe('rejoined duo-0-0');
  expect(walker.welcome?.entityId).toBe(original);
  await until('the walker handed over to B', () => events.length > 1, 30_000);
  expect(events).toEqual(['rejoined duo-0-0', 'handoff duo-0-0->duo-0-1']);
  expect([...(await walker.rpc('state'))]).toEqual([2, 7, 1]);
  expect(b.shard.engine.world.mode[b.shard.engine.world.indexOf(original)]).toBe(MODE_OWNED);
});

/** A game that gives each new player a game state (7, 7), and RPCs to set it and read it back. */
const GAME = `export default {
  onJoin(ctx, p, { rejoined, handedOver }) { if (!rejoined && !handedOver) ctx.setState(p.entityId, new Uint8Array([7, 7])); },
  rpc: {
    set: (ctx, p, payload) => { ctx.setState(p.entityId, payload); return new Uint8Array(0); },
    state: (ctx, p) => ctx.state(p.entityId) ?? new Uint8Array(0),
  },
};`;

/** PostgreSQL in a schema of this file's own (the shards' rows of world `duo` are this run's alone). */
const pgSchema = `custody_${process.pid}_${Date.now().toString(36)}`;
let admin: pg.Pool | undefined;
afterAll(async () => {
  await admin?.query(`DROP SCHEMA IF EXISTS ${pgSchema} CASCADE`);
  await admin?.end();
});
async function postgresUrl(): Promise<string> {
  const base = testEnv().pgUrl;
  admin ??= new pg.Pool({ connectionString: base, max: 1 });
  await admin.query(`CREATE SCHEMA IF NOT EXISTS ${pgSchema}`);
  const url = new URL(base);
  url.searchParams.set('options', `-c search_path=${pgSchema}`);
  return url.toString();
}

/**
 * The walker, joined on A (x 0..400), sets its game state to (3, 1, 4) and walks east into B until
 * handed over: its entity, and its handoffs and rejoins from then on.
 */
async function walkIntoB(walker: RealtimeClient): Promise<{ original: number; events: string[] }> {
  const original = walker.welcome?.entityId as number;
  await walker.rpc('set', new Uint8Array([3, 1, 4]));
  const events: string[] = [];
  walker.on('handoff', (h) => events.push(`handoff ${h.from}->${h.to}`));
  walker.on('rejoined', (r) => events.push(`rejoined ${r.shard}`));
  timers.push(
    setInterval(() => {
      if (events.length === 0) walker.move(4, 0);
    }, 25),
  );
  await until('the handoff to B', () => events.length > 0, 30_000);
  expect(events).toEqual(['handoff duo-0-0->duo-0-1']);
  return { original, events };
}

test.each([
  // The in-process outbox keeps nothing across the crash; killed at once.
  ['on the snapshot directory, killed at once', 'directory', 0],
  // The new shard's player_joined is in the PostgreSQL outbox by then (flushed every 250 ms), so its
  // restart finds the walker's place open and not restored.
  ['on PostgreSQL, killed after the join is in the outbox', 'postgres', 450],
] as const)(
  'a shard killed right after adopting a player gets the player back from the shard that handed them over (%s): they rejoin with their entity and game state',
  async (_name, store, killAfterMs) => {
    const keys = generateKeyPairSync('ed25519');
    const { envOf } = await duoMap();
    const env = {
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '50',
      AETHEX_GAMESERVER_GAME_MODULE: moduleFile(GAME),
      ...(store === 'postgres'
        ? { AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: await postgresUrl() }
        : { AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-custody-')) }),
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000',
      AETHEX_GAMESERVER_LOG_LEVEL: 'info',
    };
    const a = await startTestShard({ ...envOf(0), ...env, AETHEX_GAMESERVER_LOG_LEVEL: 'warn' }, keys);
    shards.push(a);
    // B is a real process, to be SIGKILLed: no drain, no final snapshot.
    const startB = async () => {
      const p = spawnSource(join(import.meta.dirname, '../src/main.ts'), [], {
        env: {
          ...envOf(1),
          ...env,
          AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
          AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
        },
      });
      await p.logged('shard started', 20_000);
      return p;
    };
    const first = await startB();
    const linkToB = () => a.shard.links?.isUp(neighbour(a)) ?? false;
    await until('the links between A and B', linkToB, 10_000);
    const walker = await a.client('walker', { rejoin: { joinToken: (s) => a.token('walker', { shard: s.name }), maxDelayMs: 200 } });
    expect([...(await walker.rpc('state'))]).toEqual([7, 7]);
    const { original, events } = await walkIntoB(walker);
    // A keeps a copy: B has not said it stored the walker.
    expect(a.shard.sharding?.custodyHeld).toEqual([original]);
    // B dies before the snapshot its adoption brings forward (within a second) is stored.
    await new Promise((r) => setTimeout(r, killAfterMs));
    if (store === 'postgres') {
      const joined = await admin?.query(
        `SELECT count(*)::int AS n FROM ${pgSchema}.shard_outbox WHERE shard = 'duo-0-1' AND type = 'player_joined' AND player_id = 'walker'`,
      );
      expect(joined?.rows).toEqual([{ n: 1 }]);
    }
    expect(a.shard.sharding?.custodyHeld).toEqual([original]);
    first.kill('SIGKILL');
    await first.exited;
    const second = await startB();
    const handedBack = await second.logged('entities adopted before the restart and not stored, handed back by the neighbour', 10_000);
    expect(handedBack).toMatchObject({ from: 'duo-0-0', taken: 1, released: 0 });
    await until('the walker to rejoin B', () => events.length > 1, 30_000);
    expect(events).toEqual(['handoff duo-0-0->duo-0-1', 'rejoined duo-0-1']);
    // Their entity, with the game state it had (a new one would have another id and the state (7, 7)).
    expect(walker.welcome?.entityId).toBe(original);
    expect([...(await walker.rpc('state'))]).toEqual([3, 1, 4]);
    // Once B's snapshot holding the walker is stored, A lets its copy go.
    await until("A's copy released", () => (a.shard.sharding?.custodyHeld.length ?? 1) === 0, 10_000);
    second.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
  },
);

test('a shard killed right after adopting a player, restarted while the shard that keeps the copy is stopped past the settle time: the rejoin waits for it and gets the entity', async () => {
  const keys = generateKeyPairSync('ed25519');
  const { envOf } = await duoMap();
  const env = {
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '50',
    AETHEX_GAMESERVER_GAME_MODULE: moduleFile(GAME),
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-custody-')),
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000',
    AETHEX_GAMESERVER_LOG_LEVEL: 'info',
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
  };
  // Both are real processes: A to be stopped (SIGSTOP), B to be killed (no drain, no final snapshot).
  const start = async (k: number) => {
    const p = spawnSource(join(import.meta.dirname, '../src/main.ts'), [], { env: { ...envOf(k), ...env } });
    await p.logged('shard started', 20_000);
    return p;
  };
  const a = await start(0);
  const first = await start(1);
  const settings = testShardSettings({ ...envOf(0), ...env }, keys);
  const token = (shard: string) =>
    signJoinToken(
      keys.privateKey,
      { playerId: 'walker', namespace: settings['shard.namespace'], world: 'duo', instance: 0, shard },
      { issuer: settings['auth.issuer'], audience: settings['auth.audience'], alg: 'EdDSA', ttlSeconds: 60 },
    );
  const walker = new RealtimeClient({
    url: `ws://${envOf(0).AETHEX_GAMESERVER_GATEWAY_BIND_ADDR}`,
    joinToken: await token('duo-0-0'),
    createSocket: (url) => new WebSocket(url) as never,
    rejoin: { joinToken: (s) => token(s.name), maxDelayMs: 200 },
  });
  clients.push(walker);
  await walker.connect();
  const { original, events } = await walkIntoB(walker);
  // A, which keeps the copy, stops; B dies before storing the walker, and starts again.
  a.kill('SIGSTOP');
  first.kill('SIGKILL');
  await first.exited;
  const second = await start(1);
  const startedAt = performance.now();
  // Past B's settle time (3 s) the walker's rejoin, naming the entity it had, still waits.
  await new Promise((r) => setTimeout(r, 5000));
  expect(events).toEqual(['handoff duo-0-0->duo-0-1']);
  a.kill('SIGCONT');
  const handedBack = await second.logged('entities adopted before the restart and not stored, handed back by the neighbour', 10_000);
  expect(handedBack).toMatchObject({ from: 'duo-0-0', taken: 1, released: 0 });
  await until('the walker to rejoin B', () => events.length > 1, 30_000);
  expect(events).toEqual(['handoff duo-0-0->duo-0-1', 'rejoined duo-0-1']);
  expect(performance.now() - startedAt).toBeGreaterThan(5000);
  // Their entity, with the game state it had (a new one would have another id and the state (7, 7)).
  expect(walker.welcome?.entityId).toBe(original);
  expect([...(await walker.rpc('state'))]).toEqual([3, 1, 4]);
  second.kill('SIGTERM');
  a.kill('SIGTERM');
  expect((await second.exited).code).toBe(0);
  expect((await a.exited).code).toBe(0);
});
