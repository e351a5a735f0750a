import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { GameWorld } from '../src/api/gameworld.js';
import { createExternalCleanup, deletedStreamKey } from '../src/cleanup.js';
import { testEnv, uniqueName } from './harness.js';

// The snapshot table as the shard creates it (gameserver/src/persist/snapshot-store.ts).
// `world` is the world's reference, `<namespace>/<name>` (the bare name in rows from before namespaces).
const SNAPSHOTS = `CREATE TABLE IF NOT EXISTS shard_snapshots (
  world text NOT NULL, instance integer NOT NULL, shard text NOT NULL, tick bigint NOT NULL, state bytea NOT NULL,
  saved_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (world, instance, shard))`;

// The outbox's columns the cleanup reads (gameserver/src/persist/outbox.ts).
const OUTBOX = `CREATE TABLE IF NOT EXISTS shard_outbox (
  id bigserial PRIMARY KEY, world text NOT NULL, instance integer NOT NULL, shard text NOT NULL, type text NOT NULL,
  player_id text NOT NULL, at timestamptz NOT NULL, relayed_at timestamptz, event_key text)`;

// The keys shards have started under (gameserver/src/persist/stores.ts).
const KEYS = `CREATE TABLE IF NOT EXISTS shard_keys (
  world text NOT NULL, instance integer NOT NULL, shard text NOT NULL, first_start_at timestamptz NOT NULL DEFAULT now(),
  took_snapshots integer NOT NULL DEFAULT 0, took_events integer NOT NULL DEFAULT 0, PRIMARY KEY (world, instance, shard))`;

// The open places of the shards (gameserver/src/persist/outbox.ts).
const PLACES = `CREATE TABLE IF NOT EXISTS shard_places (
  world text NOT NULL, instance integer NOT NULL, shard text NOT NULL, player_id text NOT NULL,
  taken_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (world, instance, shard, player_id))`;

const env = testEnv();
const schema = uniqueName('opclean').replaceAll('-', '_');
const admin = new pg.Pool({ connectionString: env.pgUrl, max: 2 });
const redis = new Redis(env.redisUrl);
const url = `${env.pgUrl}${env.pgUrl.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;

const world = (name: string, uid: string, namespace = 'games'): GameWorld => ({
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name, namespace, uid },
  spec: {} as GameWorld['spec'],
});

beforeAll(async () => {
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`SET search_path TO ${schema}; ${SNAPSHOTS}; ${OUTBOX}; ${KEYS}; ${PLACES}`);
});
afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
  redis.disconnect();
});

it('removes a deleted world’s snapshots, outbox rows and presence exactly once per uid, lets its event streams expire, and touches nothing of other worlds', async () => {
  const w = `w${Date.now().toString(36)}`;
  const other = `${w}x`;
  // `other` is another world in the same namespace; `w` in namespace `staging` is a world of the
  // same name. A row under the bare name is from before namespaces: it may be a same-named world's
  // that still runs such a build, so it stays.
  await admin.query(
    `INSERT INTO ${schema}.shard_snapshots (world, instance, shard, tick, state) VALUES ('games/' || $1, 0, '0', 1, '\\x00'),
       ('games/' || $1, 0, '1', 1, '\\x00'), ($1, 0, '1', 1, '\\x00'), ('games/' || $2, 0, '0', 1, '\\x00'), ('staging/' || $1, 0, '0', 1, '\\x00')`,
    [w, other],
  );
  await admin.query(
    `INSERT INTO ${schema}.shard_keys (world, instance, shard) VALUES ('games/' || $1, 0, '0'), ('staging/' || $1, 0, '0')`,
    [w],
  );
  const players = [`${w}-p1`, `${w}-p2`, `${w}-p3`, `${w}-p4`];
  const where = (namespace: string, world: string, instance: number, shard: string) =>
    JSON.stringify({ namespace, world, instance, shard });
  await redis.set(`aethex:presence:${players[0]}`, where('games', w, 0, '0'), 'EX', 60);
  await redis.set(`aethex:presence:${players[1]}`, where('games', w, 1, '2'), 'EX', 60);
  await redis.set(`aethex:presence:${players[2]}`, where('games', other, 0, '0'), 'EX', 60);
  await redis.set(`aethex:presence:${players[3]}`, where('staging', w, 0, '0'), 'EX', 60);
  await admin.query(
    `INSERT INTO ${schema}.shard_outbox (world, instance, shard, type, player_id, at, relayed_at)
     VALUES ('games/' || $1, 0, '0', 'player_joined', 'p1', now(), now()), ('games/' || $1, 1, '2', 'player_left', 'p2', now(), NULL),
            ('games/' || $2, 0, '0', 'player_joined', 'p3', now(), NULL), ('staging/' || $1, 0, '0', 'player_joined', 'p4', now(), NULL),
            ($1, 0, '1', 'player_joined', 'p5', now(), NULL)`,
    [w, other],
  );
  await admin.query(
    `INSERT INTO ${schema}.shard_places (world, instance, shard, player_id)
     VALUES ('games/' || $1, 0, '0', 'p1'), ('games/' || $1, 1, '2', 'p2'), ('games/' || $2, 0, '0', 'p3'), ('staging/' || $1, 0, '0', 'p4')`,
    [w, other],
  );
  const streams = [
    `aethex:events:games/${w}:0:${w}-0-0`,
    `aethex:events:games/${w}:1:${w}-1-0`,
    `aethex:events:games/${other}:0:${other}-0-0`,
    `aethex:events:staging/${w}:0:${w}-0-0`,
    `aethex:events:${w}:0:${w}-0-1`, // from before namespaces: the bare name
  ];
  for (const s of streams) await redis.xadd(s, '1-0', 'type', 'player_joined');
  const logs: object[] = [];
  const { cleanup, close } = createExternalCleanup({ postgresUrl: url, redisUrl: env.redisUrl, log: { info: (o) => logs.push(o) } });
  try {
    await cleanup(world(w, 'uid-1'));
    const rows = await admin.query(`SELECT world, shard FROM ${schema}.shard_snapshots ORDER BY world, shard`);
    expect(rows.rows).toEqual([
      { world: `games/${other}`, shard: '0' },
      { world: `staging/${w}`, shard: '0' },
      { world: w, shard: '1' },
    ]);
    const keys = await admin.query(`SELECT world FROM ${schema}.shard_keys`);
    expect(keys.rows).toEqual([{ world: `staging/${w}` }]);
    expect(await redis.exists(`aethex:presence:${players[0]}`, `aethex:presence:${players[1]}`)).toBe(0);
    expect(await redis.exists(`aethex:presence:${players[2]}`, `aethex:presence:${players[3]}`)).toBe(2);
    // Its outbox rows go with its snapshots; its event streams stay a day for their consumers,
    // under names of their own: a new world of the same name starts streams that never expire.
    const events = await admin.query(`SELECT world, player_id FROM ${schema}.shard_outbox ORDER BY id`);
    expect(events.rows).toEqual([
      { world: `games/${other}`, player_id: 'p3' },
      { world: `staging/${w}`, player_id: 'p4' },
      { world: w, player_id: 'p5' },
    ]);
    // And its shards' open places.
    const places = await admin.query(`SELECT world, player_id FROM ${schema}.shard_places ORDER BY world`);
    expect(places.rows).toEqual([
      { world: `games/${other}`, player_id: 'p3' },
      { world: `staging/${w}`, player_id: 'p4' },
    ]);
    const kept = streams.slice(0, 2).map((s) => deletedStreamKey('uid-1', s));
    expect(kept[0]).toBe(`aethex:events-deleted:uid-1:games/${w}:0:${w}-0-0`);
    expect(await redis.exists(streams[3] as string, streams[4] as string)).toBe(2);
    expect(await redis.exists(streams[0] as string, streams[1] as string)).toBe(0);
    const ttls = await Promise.all([...kept, streams[2] as string].map((s) => redis.ttl(s)));
    expect(ttls[0]).toBeGreaterThan(86_000);
    expect(ttls[1]).toBeGreaterThan(86_000);
    expect(ttls[2]).toBe(-1);
    expect(await redis.xlen(kept[0] as string)).toBe(1);
    await redis.xadd(streams[0] as string, '1-0', 'type', 'player_joined');
    expect(await redis.ttl(streams[0] as string)).toBe(-1);
    expect(logs).toContainEqual({ world: `games/${w}`, snapshots: 2, events: 2 });

    // The finalizer's pass repeated (e.g. the operator died before removing it): nothing more happens.
    await admin.query(
      `INSERT INTO ${schema}.shard_snapshots (world, instance, shard, tick, state) VALUES ('games/' || $1, 0, '0', 2, '\\x00')`,
      [w],
    );
    await cleanup(world(w, 'uid-1'));
    const count = async () =>
      (await admin.query(`SELECT count(*)::int AS n FROM ${schema}.shard_snapshots WHERE world = 'games/' || $1`, [w])).rows[0].n;
    expect(await count()).toBe(1);
    const done = await admin.query(`SELECT world_uid, world, snapshots_deleted FROM ${schema}.aethex_world_cleanups`);
    expect(done.rows).toEqual([{ world_uid: 'uid-1', world: w, snapshots_deleted: 2 }]);
    // A new world with the same name (another uid) is its own: deleting it cleans its rows.
    await cleanup(world(w, 'uid-2'));
    expect(await count()).toBe(0);
  } finally {
    await redis.del(...streams, ...['uid-1', 'uid-2'].flatMap((uid) => streams.map((s) => deletedStreamKey(uid, s))));
    await close();
  }
});
