import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventStreamKey } from '@aethex/runtime';
import { testEnv, uniqueName } from '@aethex/testing';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { DirectorySnapshotStore } from '../src/persist/snapshot-store.js';
import { decodeState, RESTORE_ID_MARGIN } from '../src/persist/state-codec.js';
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
  const first = await startTestShard(shardEnv, keys);
  const alice = await first.client('alice');
  const aliceId = alice.welcome?.entityId as number;
  for (let i = 0; i < 5; i++) {
    alice.move(2, 1);
    await new Promise((r) => setTimeout(r, 30));
  }
  await until('inputs applied', () => alice.lastAckedSeq === 5);
  let presence: string | null = null;
  for (let i = 0; i < 100 && presence === null; i++) {
    presence = await redis.get('aethex:presence:alice');
    if (presence === null) await new Promise((r) => setTimeout(r, 50));
  }
  expect(JSON.parse(presence ?? 'null')).toEqual({ namespace: 'prod', world, instance: 0, shard: 'test-0-0' });
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

  const second = await startTestShard(shardEnv, keys);
  try {
    const restored = second.shard.engine;
    expect(restored.world.count).toBe(before.entities);
    const again = await second.client('alice');
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
    'player_joined:alice',
    'player_left:alice',
    'player_joined:alice',
    'player_left:alice',
  ]);
  expect(await redis.get('aethex:presence:alice')).toBeNull();
});

test('a dropped player keeps their presence (and place) until they leave or their rejoin window ends; events pair up', async () => {
  const dropWorld = `${world}-drop`;
  const url = new URL(env.pgUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  const t = await startTestShard({
    AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: url.toString(),
    AETHEX_GAMESERVER_PRESENCE_REDIS_URL: env.redisUrl,
    AETHEX_GAMESERVER_SHARD_WORLD: dropWorld,
    AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1500',
  });
  const here = JSON.stringify({ namespace: '', world: dropWorld, instance: 0, shard: 'test-0-0' });
  const ann = `${dropWorld}-ann`;
  const bob = `${dropWorld}-bob`;
  const presence = (player: string) => redis.get(`aethex:presence:${player}`);
  const presenceBecomes = async (player: string, want: string | null) => {
    for (let i = 0; i < 100 && (await presence(player)) !== want; i++) await new Promise((r) => setTimeout(r, 50));
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
    cutBob();
    await until('bob waiting', () => engine.waitingPlayers === 1);
    const dropped = Date.now();
    await presenceBecomes(bob, null);
    expect(Date.now() - dropped).toBeGreaterThanOrEqual(1000);
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
