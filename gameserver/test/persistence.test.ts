import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createLogger, eventStreamKey, presenceKey, signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { testEnv, uniqueName } from '@aethex/testing';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { loadConfig } from '../src/config.js';
import { type EventSink, PostgresOutbox, RedisStreamSink } from '../src/persist/outbox.js';
import { ShardPersistence } from '../src/persist/persistence.js';
import { DirectorySnapshotStore, PostgresSnapshotStore } from '../src/persist/snapshot-store.js';
import { decodeState, encodeState, RESTORE_ID_MARGIN } from '../src/persist/state-codec.js';
import { migrate, openStores } from '../src/persist/stores.js';
import { KIND_NPC, KIND_PLAYER, World } from '../src/sim/world.js';
import { startTestShard, until } from './harness.js';

const env = testEnv();
const schema = uniqueName('gsp').replaceAll('-', '_');
const world = schema.replaceAll('_', '-');
let admin: pg.Pool;
let redis: Redis;

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: env.pgUrl, max: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  redis = new Redis(env.redisUrl);
});

afterAll(async () => {
  await admin.query(`DROP SCHEMA ${schema} CASCADE`);
  await admin.end();
  const keys = await redis.keys(`aethex:*${world}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

test('state survives a drain and restart on PostgreSQL; presence and events reach Redis; all of it under the namespace', async () => {
  const url = new URL(env.pgUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const shardEnv = {
    AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: url.toString(),
    AETHEX_GAMESERVER_PRESENCE_REDIS_URL: env.redisUrl,
    AETHEX_GAMESERVER_SHARD_NAMESPACE: 'prod',
    AETHEX_GAMESERVER_SHARD_WORLD: world,
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '25',
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '200',
  };
  const keys = generateKeyPairSync('ed25519');
  // A player id of this run's own: its presence key is not another run's on the same Redis.
  const alice = `${world}-alice`;
  const first = await startTestShard(shardEnv, keys);
  const aliceClient = await first.client(alice);
  const aliceId = aliceClient.welcome?.entityId as number;
  for (let i = 0; i < 5; i++) {
    aliceClient.move(2, 1);
    await new Promise((r) => setTimeout(r, 30));
  }
  await until('inputs applied', () => aliceClient.lastAckedSeq === 5);
  let presence: string | null = null;
  for (let i = 0; i < 100 && presence === null; i++) {
    presence = await redis.get(`aethex:presence:${alice}`);
    if (presence === null) await new Promise((r) => setTimeout(r, 50));
  }
  expect(JSON.parse(presence ?? 'null')).toEqual({ namespace: 'prod', world, instance: 0, shard: 'test-0-0' });
  // Persistence is visible: the last snapshot's tick and time, the outbox's queue.
  for (let i = 0; i < 100 && first.shard.persistence.lastSavedTick === 0; i++) await new Promise((r) => setTimeout(r, 50));
  const metrics = await (await fetch(`${first.shard.opsUrl}/metrics`)).text();
  expect(Number(/^aether_state_snapshot_last_saved_tick (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThan(0);
  expect(Number(/^aether_state_snapshot_last_saved_timestamp_seconds (\S+)$/m.exec(metrics)?.[1])).toBeGreaterThan(Date.now() / 1000 - 60);
  expect(metrics).toMatch(/^aether_outbox_queued_events 0$/m);
  const { engine } = first.shard;
  // Game state (the game's hooks would set it): alice's inventory and a chest's contents.
  const inventory = new TextEncoder().encode('{"gold":12,"sword":true}');
  expect(engine.context.setState(aliceId, inventory)).toBe(true);
  const chest = engine.context.spawn(5, 5, 7);
  engine.context.setState(chest, new Uint8Array(4096).fill(3));
  const slot = engine.world.indexOf(aliceId);
  const before = { x: engine.world.x[slot], y: engine.world.y[slot], seq: engine.world.lastSeq[slot], entities: engine.world.count };
  await first.stop();

  const row = await admin.query<{ world: string; tick: string }>(`SELECT world, tick FROM ${schema}.shard_snapshots WHERE world LIKE $1`, [
    `%${world}`,
  ]);
  expect(row.rows.map((r) => r.world)).toEqual([`prod/${world}`]);
  expect(Number(row.rows[0]?.tick)).toBeGreaterThan(0);
  // The drain's player_left is marked as the drain's: a restore does not take alice for gone.
  const left = await admin.query<{ drained: boolean }>(
    `SELECT drained FROM ${schema}.shard_outbox WHERE world = $1 AND type = 'player_left' AND player_id = $2`,
    [`prod/${world}`, alice],
  );
  expect(left.rows).toEqual([{ drained: true }]);

  const second = await startTestShard(shardEnv, keys);
  try {
    const restored = second.shard.engine;
    expect(restored.world.count).toBe(before.entities);
    const again = await second.client(alice);
    // Alice gets her own entity back, where she left it, with her input sequence.
    expect(again.welcome?.entityId).toBe(aliceId);
    expect(again.welcome?.lastInputSeq).toBe(before.seq);
    const s2 = restored.world.indexOf(aliceId);
    expect([restored.world.x[s2], restored.world.y[s2]]).toEqual([before.x, before.y]);
    expect(restored.context.state(aliceId)).toEqual(inventory);
    expect(restored.context.state(chest)).toEqual(new Uint8Array(4096).fill(3));
  } finally {
    await second.stop();
  }
  const events = await redis.xrange(`aethex:events:prod/${world}:0:test-0-0`, '-', '+');
  expect(events.map(([, f]) => `${f[1]}:${f[3]}`)).toEqual([
    `player_joined:${alice}`,
    `player_left:${alice}`,
    `player_joined:${alice}`,
    `player_left:${alice}`,
  ]);
  expect(await redis.get(`aethex:presence:${alice}`)).toBeNull();
});

test('a dropped player keeps their presence (and place) until they leave or their rejoin window ends; events pair up', async () => {
  // Long enough that the checks made while ann waits (800 ms in) stay well inside it however late
  // this process gets to them; bob's presence is then seen to last about as long.
  const REJOIN_WINDOW_MS = 3000;
  const dropWorld = `${world}-drop`;
  const url = new URL(env.pgUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const t = await startTestShard({
    AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: url.toString(),
    AETHEX_GAMESERVER_PRESENCE_REDIS_URL: env.redisUrl,
    AETHEX_GAMESERVER_SHARD_WORLD: dropWorld,
    AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: String(REJOIN_WINDOW_MS),
  });
  const here = JSON.stringify({ namespace: '', world: dropWorld, instance: 0, shard: 'test-0-0' });
  const ann = `${dropWorld}-ann`;
  const bob = `${dropWorld}-bob`;
  const presence = (player: string) => redis.get(`aethex:presence:${player}`);
  const presenceBecomes = async (player: string, want: string | null, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs;
    while ((await presence(player)) !== want && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(await presence(player)).toBe(want);
  };
  /** A client whose socket can be cut without a close frame (1006 at the shard). */
  const droppable = async (player: string) => {
    let socket: WebSocket | undefined;
    await t.client(player, {
      createSocket: (u) => {
        socket = new WebSocket(u);
        return socket as never;
      },
    });
    return () => socket?.terminate();
  };
  try {
    const engine = t.shard.engine;
    const cutAnn = await droppable(ann);
    await presenceBecomes(ann, here);
    cutAnn();
    await until('ann waiting', () => engine.waitingPlayers === 1);
    // Several flushes later she is still here: her entity waits on this shard.
    await new Promise((r) => setTimeout(r, 800));
    expect(await presence(ann)).toBe(here);
    const annAgain = await t.client(ann);
    expect(engine.waitingPlayers).toBe(0);
    annAgain.close();
    await presenceBecomes(ann, null);

    const cutBob = await droppable(bob);
    await presenceBecomes(bob, here);
    // Before the cut: the window starts after it.
    const dropped = Date.now();
    cutBob();
    await until('bob waiting', () => engine.waitingPlayers === 1);
    await presenceBecomes(bob, null, REJOIN_WINDOW_MS + 5000);
    // The window is counted in ticks, which a loop catching up after a pause runs closer together: some slack.
    expect(Date.now() - dropped).toBeGreaterThanOrEqual(REJOIN_WINDOW_MS - 500);
    expect(engine.waitingPlayers).toBe(0);
  } finally {
    await t.stop();
  }
  const events = await redis.xrange(eventStreamKey({ namespace: '', world: dropWorld, instance: 0, shard: 'test-0-0' }), '-', '+');
  expect(events.map(([, f]) => `${f[1]}:${f[3]}`)).toEqual([
    `player_joined:${ann}`,
    `player_left:${ann}`,
    `player_joined:${bob}`,
    `player_left:${bob}`,
  ]);
});

test('a restored shard saves its state at once: a second crash never numbers entity ids from the same counter', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-restore-'));
  const env = { AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir, AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '3600000' };
  const keys = generateKeyPairSync('ed25519');
  const store = new DirectorySnapshotStore(dir);
  const key = { namespace: '', world: 'test', instance: 0, shard: 'test-0-0' };
  const counter = async () => {
    const saved = await store.load(key);
    return saved ? decodeState(saved.state, 10_000).world.nextEntityId - RESTORE_ID_MARGIN : undefined;
  };
  const first = await startTestShard(env, keys);
  await first.client('alice');
  await first.stop();
  const before = (await counter()) as number;
  const second = await startTestShard(env, keys);
  try {
    // Written by the start, not by the hour-long periodic snapshot: the counter moved past the margin.
    expect(second.shard.engine.world.nextEntityId).toBe(before + RESTORE_ID_MARGIN);
    let now = await counter();
    for (let i = 0; i < 100 && now === before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      now = await counter();
    }
    expect(now).toBe(before + RESTORE_ID_MARGIN);
  } finally {
    await second.stop();
  }
});

test('ids after a crash: none the stored snapshot still holds is handed out again, and a restart numbers past every id handed out', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-ids-'));
  const first = await startTestShard({
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir,
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '3600000',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '1',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '8192',
    AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '10',
    AETHEX_GAMESERVER_HANDOFF_RESUME_TIMEOUT_MS: '1000',
  });
  const { engine, persistence } = first.shard;
  const store = new DirectorySnapshotStore(dir);
  const key = { namespace: '', world: 'test', instance: 0, shard: 'test-0-0' };
  // What a restart after a crash at this moment would restore.
  const restorable = async () => {
    const saved = await store.load(key);
    return saved ? decodeState(saved.state, 8192) : undefined;
  };
  const ticks = async (n: number) => {
    const until = engine.tick + n;
    while (engine.tick < until) await new Promise((r) => setTimeout(r, 5));
  };
  try {
    // The start's snapshot holds the NPC.
    for (let i = 0; i < 200 && !(await restorable()); i++) await new Promise((r) => setTimeout(r, 10));
    const npc = engine.world.id[0] as number;
    expect((await restorable())?.world.indexOf(npc)).toBe(0);
    // The NPC goes (as the engine would despawn one; a game may despawn only its own kinds).
    expect(engine.world.despawn(npc)).toBe(true);
    const freedAt = engine.tick;
    await ticks(engine.world.idRestTicks + 2);
    // Rested, but a crash would restore the NPC under that id: a new entity (a player who could
    // cross to a neighbour) gets another.
    const next = engine.context.spawn(0, 0, 7);
    expect(next).not.toBe(npc);
    expect((await restorable())?.world.indexOf(npc)).toBe(0);
    // 5,000 new entities, 100 a tick: more new ids than the restore margin, so snapshots come
    // sooner than the hour's, and a restart from the stored one numbers past them all. Once one
    // taken after the NPC went is stored, its id goes again.
    const given: number[] = [];
    let reusedWhenSaved = -1;
    for (let i = 0; i < 50; i++) {
      for (let k = 0; k < 100; k++) {
        const id = engine.context.spawn(0, 0, 7);
        if (id === npc) reusedWhenSaved = persistence.lastSavedTick;
        given.push(id);
      }
      await ticks(1);
    }
    expect(given.filter((id) => id === npc)).toHaveLength(1);
    expect(reusedWhenSaved).toBeGreaterThan(freedAt);
    const highest = Math.max(next, ...given);
    expect(highest - npc).toBeGreaterThan(RESTORE_ID_MARGIN);
    await ticks(2);
    for (let i = 0; i < 200 && persistence.lastSavedTick < engine.tick - 2; i++) await new Promise((r) => setTimeout(r, 10));
    expect((await restorable())?.world.nextEntityId).toBeGreaterThan(highest);
  } finally {
    await first.stop();
  }
});

test('a world goes on through tick 2^32: its clients read and acknowledge wrapped ticks, and its saves are taken after a restore', async () => {
  // The wire and the blob hold a tick's low 32 bits, the store the whole tick. Restored at the
  // blob's, every later save was refused as older than the stored one; a client took the ticks
  // after the wrap for old ones and stopped acknowledging.
  const dir = mkdtempSync(join(tmpdir(), 'aethex-restore-'));
  const env = { AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir, AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '3600000' };
  const store = new DirectorySnapshotStore(dir);
  const key = { namespace: '', world: 'test', instance: 0, shard: 'test-0-0' };
  const tick = 2 ** 32 - 40;
  await store.save(key, { tick: tick + 2 ** 32, state: encodeState(tick, new World(10), new Map()) });
  const shard = await startTestShard(env);
  let stopped = false;
  try {
    expect(shard.shard.engine.tick).toBeGreaterThanOrEqual(tick + 2 ** 32);
    const c = await shard.client('ann');
    const ticks: number[] = [];
    c.on('snapshot', (t) => ticks.push(t));
    // Walks through the wrap (at 2^33 here) and on for a second. (The client counts on from the
    // first tick it read, 2^32 - 40 or so: past the wrap from 2^32.)
    const timer = setInterval(() => c.move(1, 0), 25);
    try {
      await until('the wrap and 40 ticks more', () => c.lastTick > 2 ** 32 + 40, 10_000);
    } finally {
      clearInterval(timer);
    }
    await until('every input acknowledged', () => c.unacknowledged === 0);
    expect(ticks.every((t, k) => k === 0 || t > (ticks[k - 1] as number))).toBe(true);
    expect(c.ended).toBe(false);
    await shard.stop();
    stopped = true;
    const saved = (await store.load(key)) as { tick: number; state: Uint8Array };
    expect(saved.tick).toBeGreaterThan(2 ** 33 + 40);
    expect(decodeState(saved.state, 10_000).tick).toBe(saved.tick % 2 ** 32);
  } finally {
    if (!stopped) await shard.stop();
  }
});

/**
 * A TCP proxy in front of a real server, to cut it: `down` resets every connection and refuses new
 * ones (a server that is down); `hang` keeps every connection, open or new, and forwards nothing on
 * them ever again (a path blackholed: a failover, a dropped NAT entry); `up` serves new ones again.
 */
async function proxyTo(target: string) {
  const { hostname, port } = new URL(target);
  let mode: 'up' | 'down' | 'hang' = 'up';
  const pairs = new Set<{ client: Socket; server: Socket; dead: boolean }>();
  const proxy = createServer((client) => {
    if (mode === 'down') {
      client.resetAndDestroy();
      return;
    }
    const pair = { client, server: connect(Number(port), hostname), dead: mode === 'hang' };
    pairs.add(pair);
    client.on('data', (d) => pair.dead || pair.server.write(d));
    pair.server.on('data', (d) => pair.dead || client.write(d));
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      pair.server.destroy();
    };
    for (const s of [client, pair.server]) s.on('close', end).on('error', end);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const via = new URL(target);
  via.host = `127.0.0.1:${(proxy.address() as AddressInfo).port}`;
  return {
    url: via.toString(),
    set(to: typeof mode) {
      mode = to;
      for (const pair of pairs) {
        if (to === 'hang') pair.dead = true;
        if (to === 'down') {
          pair.client.resetAndDestroy();
          pair.server.destroy();
        }
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const pair of pairs) pair.client.destroy();
        proxy.close(() => resolve());
      }),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pgUrlIn = (base: string) => {
  const url = new URL(base);
  url.searchParams.set('options', `-c search_path=${schema}`);
  return url.toString();
};

describe('a store that stops answering holds nothing up for longer than its timeouts', () => {
  const keys = generateKeyPairSync('ed25519');
  const settingsFor = (env: Record<string, string>) =>
    loadConfig({
      AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      AETHEX_GAMESERVER_SHARD_WORLD: `${world}-hang`,
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_CONNECT_TIMEOUT_MS: '500',
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_QUERY_TIMEOUT_MS: '500',
      AETHEX_GAMESERVER_PRESENCE_REDIS_CONNECT_TIMEOUT_MS: '500',
      AETHEX_GAMESERVER_PRESENCE_REDIS_COMMAND_TIMEOUT_MS: '300',
      ...env,
    });
  const log = createLogger('persistence-test', 'silent');

  test('PostgreSQL blackholed for a while: snapshots and the outbox resume once it answers; presence never stops', async () => {
    const pgProxy = await proxyTo(env.pgUrl);
    const settings = settingsFor({
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(pgProxy.url),
      AETHEX_GAMESERVER_PRESENCE_REDIS_URL: env.redisUrl,
      AETHEX_GAMESERVER_SHARD_NAME: 'pg-hang',
    });
    const stores = await openStores(settings, log);
    const key = { namespace: '', world: `${world}-hang`, instance: 0, shard: 'pg-hang' };
    const persistence = new ShardPersistence({ key, ...stores, log, presenceTtlMs: 1500, flushIntervalMs: 100 });
    const ann = `${world}-pg-hang-ann`;
    let tick = 0;
    const ticking = setInterval(() => persistence.snapshot(++tick, new Uint8Array([tick & 0xff])), 50);
    persistence.start();
    try {
      persistence.playerJoined(ann);
      await until('a snapshot', () => persistence.lastSavedTick > 0);
      pgProxy.set('hang');
      persistence.playerJoined(`${world}-pg-hang-bob`);
      for (let i = 0; i < 8; i++) {
        await sleep(250);
        expect(await redis.get(presenceKey(ann))).not.toBeNull();
      }
      pgProxy.set('up');
      const resumedAt = tick;
      // Generous: only that it resumes, on its own, not how fast.
      await until('snapshots to resume', () => persistence.lastSavedTick > resumedAt, 15_000);
      const stream = eventStreamKey(key);
      for (let i = 0; i < 300 && (await redis.xlen(stream)) < 2; i++) await sleep(50);
      expect((await redis.xrange(stream, '-', '+')).map(([, f]) => f[3])).toEqual([ann, `${world}-pg-hang-bob`]);
    } finally {
      clearInterval(ticking);
      await persistence.drain(tick, new Uint8Array([0]), performance.now() + 3000).catch(() => undefined);
      await stores.close(1000);
      await pgProxy.close();
      await redis.del(presenceKey(ann), presenceKey(`${world}-pg-hang-bob`), eventStreamKey(key));
    }
  });

  test('Redis blackholed for a while: presence resumes once it answers, and a removal made meanwhile is kept and done', async () => {
    const redisProxy = await proxyTo(env.redisUrl);
    const settings = settingsFor({
      AETHEX_GAMESERVER_PRESENCE_REDIS_URL: redisProxy.url,
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-hang-')),
    });
    const stores = await openStores(settings, log);
    const key = { namespace: '', world: `${world}-hang`, instance: 0, shard: 'redis-hang' };
    const persistence = new ShardPersistence({ key, ...stores, log, presenceTtlMs: 3000, flushIntervalMs: 100 });
    const [ann, bob] = [`${world}-redis-hang-ann`, `${world}-redis-hang-bob`];
    persistence.start();
    try {
      persistence.playerJoined(ann);
      persistence.playerJoined(bob);
      for (let i = 0; i < 100 && (await redis.get(presenceKey(bob))) === null; i++) await sleep(50);
      redisProxy.set('hang');
      persistence.playerLeft(bob);
      await sleep(1500);
      expect(await redis.get(presenceKey(bob))).not.toBeNull();
      redisProxy.set('up');
      for (let i = 0; i < 200 && (await redis.get(presenceKey(bob))) !== null; i++) await sleep(50);
      expect(await redis.get(presenceKey(bob))).toBeNull();
      // ann's entry is refreshed again: its TTL back above what a lapse of the heartbeat would leave.
      await sleep(1200);
      expect(await redis.pttl(presenceKey(ann))).toBeGreaterThan(1500);
    } finally {
      await persistence.drain(1, new Uint8Array([1]), performance.now() + 3000).catch(() => undefined);
      await stores.close(1000);
      await redisProxy.close();
      await redis.del(presenceKey(ann), presenceKey(bob), eventStreamKey(key));
    }
  });
});

test('PostgreSQL failing while the relay waits for Redis with its transaction open ends that relay, not the process', async () => {
  const proxy = await proxyTo(env.pgUrl);
  const pool = new pg.Pool({ connectionString: pgUrlIn(proxy.url), max: 2 });
  pool.on('error', () => undefined);
  try {
    await migrate(pool);
    const k = { namespace: '', world: `${world}-relay-cut`, instance: 0, shard: 'test-0-0' };
    const outbox = new PostgresOutbox(pool);
    await outbox.append(k, [{ type: 'player_joined', playerId: 'p', at: Date.now(), eventKey: `${world}-relay-cut-1` }]);
    // The stream (the real one, on Redis) takes the events while PostgreSQL goes down under the
    // open transaction; its reset reaches the checked-out client with no query running on it.
    const stream = new RedisStreamSink(redis);
    const cut: EventSink = {
      publish: async (events) => {
        proxy.set('down');
        await sleep(300);
        return stream.publish(events);
      },
      lastId: (key) => stream.lastId(key),
    };
    await expect(outbox.relay(k, cut)).rejects.toThrow();
    const entries = async () => (await redis.xrange(eventStreamKey(k), '-', '+')).map(([, f]) => [f[1], f[3]]);
    expect(await entries()).toEqual([['player_joined', 'p']]);
    // Up again: the event was not marked relayed, and relays on a fresh connection; the stream,
    // which has it already, keeps it once.
    proxy.set('up');
    expect(await outbox.relay(k, stream)).toBe(1);
    expect(await outbox.pending(k)).toBe(0);
    expect(await entries()).toEqual([['player_joined', 'p']]);
  } finally {
    await pool.end();
    await proxy.close();
  }
});

describe('a drain with a store down or hung ends within ops.drain_timeout_ms', () => {
  const DRAIN_MS = 4000;
  /** A shard on PostgreSQL and Redis through proxies, with a player on it. */
  async function shardWithPlayer(name: string) {
    const [pgProxy, redisProxy] = await Promise.all([proxyTo(env.pgUrl), proxyTo(env.redisUrl)]);
    const t = await startTestShard({
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(pgProxy.url),
      AETHEX_GAMESERVER_PRESENCE_REDIS_URL: redisProxy.url,
      AETHEX_GAMESERVER_SHARD_WORLD: `${world}-${name}`,
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '200',
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_CONNECT_TIMEOUT_MS: '500',
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_QUERY_TIMEOUT_MS: '500',
      AETHEX_GAMESERVER_PRESENCE_REDIS_COMMAND_TIMEOUT_MS: '300',
      AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: String(DRAIN_MS),
      AETHEX_GAMESERVER_LOG_LEVEL: 'silent',
    });
    const player = `${world}-${name}-ann`;
    await t.client(player);
    for (let i = 0; i < 100 && (await redis.get(presenceKey(player))) === null; i++) await sleep(50);
    await until('a snapshot', () => t.shard.persistence.lastSavedTick > 0);
    const drain = async () => {
      const started = performance.now();
      const outcome = await t.stop().then(
        () => 'drained',
        (err: Error) => err.message,
      );
      return { outcome, ms: performance.now() - started };
    };
    const snapshotTick = async () =>
      Number(
        (
          await admin.query<{ tick: string }>(`SELECT tick FROM ${schema}.shard_snapshots WHERE world = $1 AND shard = 'test-0-0'`, [
            `${world}-${name}`,
          ])
        ).rows[0]?.tick,
      );
    const cleanUp = async () => {
      await Promise.all([pgProxy.close(), redisProxy.close()]);
      await redis.del(presenceKey(player), eventStreamKey({ namespace: '', world: `${world}-${name}`, instance: 0, shard: 'test-0-0' }));
    };
    return { t, pgProxy, redisProxy, player, drain, snapshotTick, cleanUp };
  }

  test.each([
    ['down', 'refusing connections'],
    ['hang', 'answering nothing'],
  ] as const)(
    'PostgreSQL %s (%s): the drain fails (no final snapshot) in time, and the leaving player is no longer present',
    async (mode, _how) => {
      const s = await shardWithPlayer(`drain-pg-${mode}`);
      try {
        s.pgProxy.set(mode);
        const { outcome, ms } = await s.drain();
        expect(outcome).toMatch(/^the final snapshot \(tick \d+\) was not written/);
        expect(ms).toBeLessThan(DRAIN_MS);
        expect(await redis.get(presenceKey(s.player))).toBeNull();
      } finally {
        await s.cleanUp();
      }
    },
  );

  test('Redis hung: the drain succeeds in time (exit 0): the final snapshot and the events are in PostgreSQL', async () => {
    const s = await shardWithPlayer('drain-redis-hang');
    try {
      s.redisProxy.set('hang');
      const tick = s.t.shard.engine.tick;
      const { outcome, ms } = await s.drain();
      expect(outcome).toBe('drained');
      expect(ms).toBeLessThan(DRAIN_MS);
      expect(await s.snapshotTick()).toBeGreaterThanOrEqual(tick);
      const events = await admin.query<{ type: string }>(`SELECT type FROM ${schema}.shard_outbox WHERE world = $1 ORDER BY id`, [
        `${world}-drain-redis-hang`,
      ]);
      expect(events.rows.map((r) => r.type)).toEqual(['player_joined', 'player_left']);
    } finally {
      await s.cleanUp();
    }
  });
});

type OutboxKey = Parameters<PostgresOutbox['append']>[0];
type EventAfter = (
  playerId: string,
  type: 'player_joined' | 'player_left',
  msAfterCapture: number,
  more?: { handedOver?: boolean; drained?: boolean },
) => Parameters<PostgresOutbox['append']>[1][number];

/**
 * Shard test-0-0 of world `name`, restarted from a snapshot captured 10 s ago with `players` in it
 * (it crashed before storing another), after `appends` wrote their events to the outbox by shard
 * (`event` dates each from the capture): the players it restored.
 */
async function restoredAfter(
  name: string,
  players: string[],
  appends: (key: OutboxKey, event: EventAfter) => [OutboxKey, ReturnType<EventAfter>[]][],
) {
  const pool = new pg.Pool({ connectionString: pgUrlIn(env.pgUrl), max: 1 });
  const key = { namespace: '', world: name, instance: 0, shard: 'test-0-0' };
  try {
    await migrate(pool);
    const capturedAtMs = Date.now() - 10_000;
    const w = new World(16);
    const saved = new Map<number, string>();
    for (const [i, p] of players.entries()) saved.set(w.spawn(i, i, KIND_PLAYER), p);
    const event: EventAfter = (playerId, type, after, more = {}) => ({
      type,
      playerId,
      at: capturedAtMs + after,
      eventKey: `${name}-${playerId}-${type}-${after}`,
      ...more,
    });
    const outbox = new PostgresOutbox(pool);
    for (const [at, events] of appends(key, event)) await outbox.append(at, events);
    await new PostgresSnapshotStore(pool).save(key, { tick: 40, state: encodeState(40, w, saved), capturedAtMs });
    const t = await startTestShard({ AETHEX_GAMESERVER_SHARD_WORLD: name, AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(env.pgUrl) });
    try {
      return [...saved].filter(([entityId]) => t.shard.engine.world.indexOf(entityId) >= 0).map(([, p]) => p);
    } finally {
      await t.stop();
    }
  } finally {
    await pool.query('DELETE FROM shard_outbox WHERE world = $1', [name]);
    await pool.query('DELETE FROM shard_places WHERE world = $1', [name]).catch(() => undefined);
    await pool.end();
  }
}

test('a player who played on another shard after the snapshot is not restored (its handoff away lost with a crash): the events of the other shards say so', async () => {
  // This shard's events of their handoffs away were lost with its crash (PostgreSQL was paused),
  // so their places here are still open.
  const restored = await restoredAfter(`${world}-moved-on`, ['dee', 'eve', 'fay', 'gus'], (key, event) => {
    const far = { ...key, shard: 'test-0-8' };
    return [
      [key, ['dee', 'eve', 'fay', 'gus'].map((p) => event(p, 'player_joined', -2000))],
      // On a shard that is no neighbour of this one: dee played there 5 s after the capture (walked
      // on since); eve within the clocks' margin of it (a handoff here just before the capture, on
      // a clock ahead, looks so); fay too, and that shard then restarted without her (its release
      // is her last event there). gus played on in another instance of the world.
      [
        far,
        [
          event('dee', 'player_joined', 5000, { handedOver: true }),
          event('eve', 'player_joined', 1000, { handedOver: true }),
          event('fay', 'player_joined', 5000, { handedOver: true }),
          event('fay', 'player_left', 6000, { drained: true }),
        ],
      ],
      [{ ...far, instance: 1 }, [event('gus', 'player_joined', 5000)]],
    ];
  });
  expect(restored).toEqual(['eve', 'fay', 'gus']);
});

test('a player who came back here after playing on another shard since the snapshot is restored: their last event there is a departure, so their entity is not there', async () => {
  const restored = await restoredAfter(`${world}-came-back`, ['hal', 'ida', 'jon'], (key, event) => [
    // Here: both joined before the capture; hal walked on to a neighbour 5 s after it and came
    // back 8 s after it (his place here is open again); ida dropped here and rejoined (no events);
    // jon was handed in here half a second before the capture.
    [
      key,
      [
        event('hal', 'player_joined', -2000),
        event('ida', 'player_joined', -2000),
        event('jon', 'player_joined', -500, { handedOver: true }),
        event('hal', 'player_left', 5000, { handedOver: true }),
        event('hal', 'player_joined', 8000, { handedOver: true }),
      ],
    ],
    // The neighbour: hal arrived and walked back here (its custody copy is gone: past CUSTODY_MS,
    // or that shard crashed too); jon's handoff in here, on a clock 3 s ahead of this shard's (its
    // copy went once the snapshot was stored). Another shard: ida joined afresh there meanwhile,
    // and left it.
    [
      { ...key, shard: 'test-0-1' },
      [
        event('hal', 'player_joined', 5000, { handedOver: true }),
        event('jon', 'player_left', 2500, { handedOver: true }),
        event('hal', 'player_left', 8000, { handedOver: true }),
      ],
    ],
    [{ ...key, shard: 'test-0-2' }, [event('ida', 'player_joined', 4000), event('ida', 'player_left', 6000)]],
  ]);
  // The copies here are their only ones: none is dropped.
  expect(restored).toEqual(['hal', 'ida', 'jon']);
});

test('a player who left between a snapshot’s capture and its store is not restored: the outbox is compared with the capture time, on the clock its events carry', async () => {
  const pool = new pg.Pool({ connectionString: pgUrlIn(env.pgUrl), max: 1 });
  const name = `${world}-captured`;
  const key = { namespace: '', world: name, instance: 0, shard: 'test-0-0' };
  try {
    await migrate(pool);
    // Captured 10 s ago with dee and eve in it; dee left 500 ms after the capture, and the store
    // took the snapshot only now (a slow store, or the snapshot's clock ahead of PostgreSQL's).
    const capturedAtMs = Date.now() - 10_000;
    const w = new World(16);
    const dee = w.spawn(1, 1, KIND_PLAYER);
    const eve = w.spawn(2, 2, KIND_PLAYER);
    const outbox = new PostgresOutbox(pool);
    await outbox.append(key, [
      { type: 'player_joined', playerId: 'dee', at: capturedAtMs - 2000, eventKey: `${name}-1` },
      { type: 'player_joined', playerId: 'eve', at: capturedAtMs - 2000, eventKey: `${name}-2` },
      { type: 'player_left', playerId: 'dee', at: capturedAtMs + 500, eventKey: `${name}-3` },
    ]);
    const store = new PostgresSnapshotStore(pool);
    await store.save(key, {
      tick: 40,
      state: encodeState(
        40,
        w,
        new Map([
          [dee, 'dee'],
          [eve, 'eve'],
        ]),
      ),
      capturedAtMs,
    });
    const loaded = await store.load(key);
    expect(loaded?.capturedAtMs).toBe(capturedAtMs);
    expect((loaded?.savedAtMs ?? 0) - capturedAtMs).toBeGreaterThan(9000);
    const t = await startTestShard({ AETHEX_GAMESERVER_SHARD_WORLD: name, AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(env.pgUrl) });
    try {
      const { engine } = t.shard;
      // eve waits for her rejoin; dee, who left, is not back.
      expect(engine.waitingPlayers).toBe(1);
      expect(engine.world.indexOf(eve)).toBeGreaterThanOrEqual(0);
      expect(engine.world.indexOf(dee)).toBe(-1);
    } finally {
      await t.stop();
    }
    // The shard's own saves keep their capture time with their tick.
    const row = await pool.query<{ tick: string; captured_tick: string; captured_at_ms: number }>(
      'SELECT tick, captured_tick, captured_at_ms FROM shard_snapshots WHERE world = $1',
      [name],
    );
    expect(row.rows[0]?.captured_tick).toBe(row.rows[0]?.tick);
    expect(Date.now() - (row.rows[0]?.captured_at_ms ?? 0)).toBeLessThan(60_000);
    // A build before capture times (a rollback) updates the tick and state alone: the capture time
    // left behind is an older snapshot's, and is not used.
    await pool.query(
      `INSERT INTO shard_snapshots (world, instance, shard, tick, state) VALUES ($1, 0, 'test-0-0', $2, $3)
       ON CONFLICT (world, instance, shard) DO UPDATE SET tick = EXCLUDED.tick, state = EXCLUDED.state, saved_at = now()
       WHERE shard_snapshots.tick <= EXCLUDED.tick`,
      [name, Number(row.rows[0]?.tick) + 100, Buffer.from(encodeState(0, new World(4), new Map()))],
    );
    const rolledBack = await store.load(key);
    expect(rolledBack?.capturedAtMs).toBeUndefined();
    expect(rolledBack?.savedAtMs).toBeGreaterThan(Date.now() - 60_000);
  } finally {
    await pool.query('DELETE FROM shard_outbox WHERE world = $1', [name]);
    await pool.query('DELETE FROM shard_places WHERE world = $1', [name]).catch(() => undefined);
    await pool.end();
  }
});

describe('restore errors name the snapshot and how to move it aside', () => {
  test.each(['directory', 'PostgreSQL'] as const)('%s', async (kind) => {
    const dir = mkdtempSync(join(tmpdir(), 'aethex-bad-'));
    const name = `${world}-bad-${kind === 'directory' ? 'dir' : 'pg'}`;
    const pool = new pg.Pool({ connectionString: pgUrlIn(env.pgUrl), max: 1 });
    await migrate(pool);
    const store = kind === 'directory' ? new DirectorySnapshotStore(dir) : new PostgresSnapshotStore(pool);
    const key = { namespace: '', world: name, instance: 0, shard: 'test-0-0' };
    // A blob whose player map names an NPC (it would give a player that entity).
    const w = new World(8);
    const npc = w.spawn(1, 1, KIND_NPC);
    await store.save(key, { tick: 5, state: encodeState(5, w, new Map([[npc, 'ann']])) });
    const shardEnv = {
      AETHEX_GAMESERVER_SHARD_WORLD: name,
      ...(kind === 'directory'
        ? { AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir }
        : { AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(env.pgUrl) }),
    };
    try {
      const failed = await startTestShard(shardEnv).then(
        (t) => t.stop().then(() => 'started'),
        (err: Error) => err.message,
      );
      const where =
        kind === 'directory'
          ? `file ${join(dir, `${name}.0.test-0-0.snapshot`)}`
          : `PostgreSQL table shard_snapshots, row world = '${name}' AND instance = 0 AND shard = 'test-0-0'`;
      const moveAside =
        kind === 'directory'
          ? `mv ${join(dir, `${name}.0.test-0-0.snapshot`)} ${join(dir, `${name}.0.test-0-0.snapshot`)}.unreadable`
          : `UPDATE shard_snapshots SET world = world || '.unreadable' WHERE world = '${name}' AND instance = 0 AND shard = 'test-0-0'`;
      expect(failed).toBe(
        `the snapshot in ${where} could not be restored: state blob has a bad player map entry 0 ([${npc},"ann"]): its entity is not a player entity of the blob; to start without it, move it aside: ${moveAside}`,
      );
      // Moved aside as it says, the shard starts (without it).
      if (kind === 'PostgreSQL') await pool.query(moveAside);
      else await store.remove(key);
      const t = await startTestShard(shardEnv);
      await t.stop();
    } finally {
      await pool.end();
    }
  });

  test('a snapshot file shorter than its header', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aethex-short-'));
    const file = join(dir, `${world}-short.0.test-0-0.snapshot`);
    writeFileSync(file, Uint8Array.of(1, 2, 3));
    const failed = await startTestShard({
      AETHEX_GAMESERVER_SHARD_WORLD: `${world}-short`,
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir,
    }).then(
      (t) => t.stop().then(() => 'started'),
      (err: Error) => err.message,
    );
    expect(failed).toBe(
      `the snapshot in file ${file} could not be restored: it is 3 bytes, shorter than its 8-byte header; to start without it, move it aside: mv ${file} ${file}.unreadable`,
    );
  });

  test('a snapshot file whose tick header a flipped bit changed: refused, not a shard whose tick no longer advances', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aethex-flipped-'));
    const name = `${world}-flipped`;
    const key = { namespace: '', world: name, instance: 0, shard: 'test-0-0' };
    const store = new DirectorySnapshotStore(dir);
    await store.save(key, { tick: 1000, state: encodeState(1000, new World(8), new Map()) });
    const file = join(dir, `${name}.0.test-0-0.snapshot`);
    const bytes = readFileSync(file);
    // Bit 6 of the header's last byte: tick 1000 + 2^62, where tick + 1 === tick in a double.
    bytes[7] = (bytes[7] as number) ^ 0x40;
    writeFileSync(file, bytes);
    const failed = await startTestShard({ AETHEX_GAMESERVER_SHARD_WORLD: name, AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir }).then(
      (t) => t.stop().then(() => 'started'),
      (err: Error) => err.message,
    );
    expect(failed).toBe(
      `the snapshot in file ${file} could not be restored: its tick header (4611686018427388904) is past 2^53, which no world reaches; to start without it, move it aside: mv ${file} ${file}.unreadable`,
    );
    // A flip that keeps the tick a number but not the blob's: refused for the disagreement.
    bytes[7] = (bytes[7] as number) ^ 0x40;
    bytes[1] = (bytes[1] as number) ^ 0x01;
    writeFileSync(file, bytes);
    const disagreed = await startTestShard({ AETHEX_GAMESERVER_SHARD_WORLD: name, AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir }).then(
      (t) => t.stop().then(() => 'started'),
      (err: Error) => err.message,
    );
    expect(disagreed).toBe(
      `the snapshot in file ${file} could not be restored: its store's tick (744) is not its checksummed blob's (1000), so the store's record is damaged; to start without it, move it aside: mv ${file} ${file}.unreadable`,
    );
  });
});

test('a drain whose presence removal still hangs counts the players it leaves present', async () => {
  const redisProxy = await proxyTo(env.redisUrl);
  const lines: { msg: string; players?: number; inTime?: boolean }[] = [];
  const log = createLogger('persistence-test', 'warn', { write: (l: string) => void lines.push(JSON.parse(l)) });
  const keys = generateKeyPairSync('ed25519');
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_SHARD_WORLD: `${world}-hung-removal`,
    AETHEX_GAMESERVER_PRESENCE_REDIS_URL: redisProxy.url,
    // Longer than the drain: the removal is still waiting when it ends.
    AETHEX_GAMESERVER_PRESENCE_REDIS_COMMAND_TIMEOUT_MS: '5000',
    AETHEX_GAMESERVER_PRESENCE_TTL_MS: '60000',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-hung-')),
  });
  const stores = await openStores(settings, log);
  const key = { namespace: '', world: `${world}-hung-removal`, instance: 0, shard: 'test-0-0' };
  const persistence = new ShardPersistence({ key, ...stores, log, presenceTtlMs: 60_000 });
  const ann = `${world}-hung-removal-ann`;
  try {
    persistence.playerJoined(ann);
    await persistence.flush();
    expect(await redis.get(presenceKey(ann))).not.toBeNull();
    redisProxy.set('hang');
    persistence.playerLeft(ann);
    void persistence.flush();
    await sleep(50);
    await persistence.drain(1, new Uint8Array([1]), performance.now() + 600);
    expect(lines.filter((l) => l.msg.startsWith('presence of leaving players not removed'))).toMatchObject([{ players: 1, inTime: false }]);
  } finally {
    await stores.close(200);
    await redisProxy.close();
    await redis.del(presenceKey(ann), eventStreamKey(key));
  }
});

test('after a crash, players restored are not told to join again, those who joined after the last snapshot leave, and those who left after it stay gone', async () => {
  // The real process, killed with SIGKILL: bob and cy join before a snapshot, ann after it, and cy leaves after it.
  const crashWorld = `${world}-crash`;
  const keys = generateKeyPairSync('ed25519');
  // Player ids of this run's own (their presence keys are no other run's), named here without the prefix.
  const id = (name: string) => `${crashWorld}-${name}`;
  const short = (playerId: string) => playerId.replace(id(''), '');
  // Periodic snapshots far enough apart that ann's join, cy's leave and the crash all come between
  // two of them, however slowly this machine gets through them (checked below: the premise).
  const SNAPSHOT_INTERVAL_MS = 6000;
  const start = async () => {
    const p = spawnSource(join(import.meta.dirname, '../src/main.ts'), [], {
      env: {
        AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
        AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
        AETHEX_GAMESERVER_SHARD_WORLD: crashWorld,
        AETHEX_GAMESERVER_SHARD_NAME: 'test-0-0',
        AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrlIn(env.pgUrl),
        AETHEX_GAMESERVER_PRESENCE_REDIS_URL: env.redisUrl,
        AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: String(SNAPSHOT_INTERVAL_MS),
        AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1000',
        AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '2',
      },
    });
    const { gateway } = (await p.logged('shard started', 20_000)) as { gateway: string };
    return Object.assign(p, { gateway });
  };
  const joinAs = async (gateway: string, player: string) => {
    const token = await signJoinToken(
      keys.privateKey,
      { playerId: id(player), world: crashWorld, instance: 0, shard: 'test-0-0' },
      { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' },
    );
    const c = new RealtimeClient({ url: gateway, joinToken: token, createSocket: (u) => new WebSocket(u) as never });
    await c.connect();
    return c;
  };
  const stream = eventStreamKey({ namespace: '', world: crashWorld, instance: 0, shard: 'test-0-0' });
  const relayed = async () =>
    (await redis.xrange(stream, '-', '+')).map(([, f]) => ({ event: `${f[1]}:${short(f[3] as string)}`, at: Number(f[5]) }));
  const events = async () => (await relayed()).map((e) => e.event);
  /** The stored snapshot: its players and when the shard captured it (on the clock of its events). */
  const stored = async () => {
    const row = (
      await admin.query<{ state: Buffer; captured_at_ms: number }>(
        `SELECT state, captured_at_ms FROM ${schema}.shard_snapshots WHERE world = $1`,
        [crashWorld],
      )
    ).rows[0];
    return row && { players: [...decodeState(row.state, 10_000).players.values()].map(short).sort(), capturedAtMs: row.captured_at_ms };
  };
  const places = async () =>
    (
      await admin.query<{ p: string }>(`SELECT player_id AS p FROM ${schema}.shard_places WHERE world = $1 ORDER BY 1`, [crashWorld])
    ).rows.map((r) => short(r.p));
  const eventually = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
  };
  try {
    const first = await start();
    const bob = await joinAs(first.gateway, 'bob');
    const cy = await joinAs(first.gateway, 'cy');
    // The first periodic snapshot (the start's holds no one): it holds both.
    await eventually(
      'a snapshot holding bob and cy',
      async () => (await stored())?.players.join() === 'bob,cy',
      SNAPSHOT_INTERVAL_MS + 10_000,
    );
    const ann = await joinAs(first.gateway, 'ann');
    cy.close();
    await eventually('four events relayed', async () => (await events()).length >= 4, 10_000);
    expect(await places()).toEqual(['ann', 'bob']);
    first.kill('SIGKILL');
    await first.exited;
    bob.close();
    ann.close();
    // The premise: the last snapshot holds bob and cy, not ann, and was captured before ann joined and cy left.
    const last = await stored();
    expect(last?.players).toEqual(['bob', 'cy']);
    const before = await relayed();
    expect(before.map((e) => e.event)).toEqual(['player_joined:bob', 'player_joined:cy', 'player_joined:ann', 'player_left:cy']);
    for (const e of before.slice(2)) expect(e.at).toBeGreaterThan(last?.capturedAtMs as number);

    const second = await start();
    // ann's place goes at once; bob's when his rejoin window (1 s) ends; cy, gone before the
    // crash, is not brought back (no second player_joined, no presence).
    await eventually('six events', async () => (await events()).length >= 6, 10_000);
    // Nothing more comes.
    await sleep(1500);
    expect(await events()).toEqual([
      'player_joined:bob',
      'player_joined:cy',
      'player_joined:ann',
      'player_left:cy',
      'player_left:ann',
      'player_left:bob',
    ]);
    expect(await places()).toEqual([]);
    expect(await redis.exists(presenceKey(id('cy')))).toBe(0);
    second.kill('SIGTERM');
    expect((await second.exited).code).toBe(0);
    expect(await events()).toHaveLength(6);
  } finally {
    await killProcesses();
    await redis.del(stream, presenceKey(id('bob')), presenceKey(id('ann')), presenceKey(id('cy')));
  }
});
