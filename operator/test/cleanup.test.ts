import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { GameWorld } from '../src/api/gameworld.js';
import { createExternalCleanup } from '../src/cleanup.js';
import { testEnv, uniqueName } from './harness.js';

// The snapshot table as the shard creates it (gameserver/src/persist/snapshot-store.ts).
const SNAPSHOTS = `CREATE TABLE IF NOT EXISTS shard_snapshots (
  world text NOT NULL, instance integer NOT NULL, shard text NOT NULL, tick bigint NOT NULL, state bytea NOT NULL,
  saved_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (world, instance, shard))`;

const env = testEnv();
const schema = uniqueName('opclean').replaceAll('-', '_');
const admin = new pg.Pool({ connectionString: env.pgUrl, max: 2 });
const redis = new Redis(env.redisUrl);
const url = `${env.pgUrl}${env.pgUrl.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;

const world = (name: string, uid: string): GameWorld => ({
  apiVersion: 'aethex.dev/v1alpha1',
  kind: 'GameWorld',
  metadata: { name, namespace: 'games', uid },
  spec: {} as GameWorld['spec'],
});

beforeAll(async () => {
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.query(`SET search_path TO ${schema}; ${SNAPSHOTS}`);
});
afterAll(async () => {
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await admin.end();
  redis.disconnect();
});

it('removes a deleted world’s snapshots and presence exactly once per uid, and nothing of other worlds', async () => {
  const w = `w${Date.now().toString(36)}`;
  const other = `${w}x`;
  await admin.query(
    `INSERT INTO ${schema}.shard_snapshots (world, instance, shard, tick, state) VALUES ($1, 0, '0', 1, '\\x00'), ($1, 0, '1', 1, '\\x00'), ($2, 0, '0', 1, '\\x00')`,
    [w, other],
  );
  const players = [`${w}-p1`, `${w}-p2`, `${w}-p3`];
  await redis.set(`aethex:presence:${players[0]}`, JSON.stringify({ world: w, instance: 0, shard: '0' }), 'EX', 60);
  await redis.set(`aethex:presence:${players[1]}`, JSON.stringify({ world: w, instance: 1, shard: '2' }), 'EX', 60);
  await redis.set(`aethex:presence:${players[2]}`, JSON.stringify({ world: other, instance: 0, shard: '0' }), 'EX', 60);
  const logs: object[] = [];
  const { cleanup, close } = createExternalCleanup({ postgresUrl: url, redisUrl: env.redisUrl, log: { info: (o) => logs.push(o) } });
  try {
    await cleanup(world(w, 'uid-1'));
    const rows = await admin.query(`SELECT world, shard FROM ${schema}.shard_snapshots ORDER BY world, shard`);
    expect(rows.rows).toEqual([{ world: other, shard: '0' }]);
    expect(await redis.exists(`aethex:presence:${players[0]}`, `aethex:presence:${players[1]}`)).toBe(0);
    expect(await redis.exists(`aethex:presence:${players[2]}`)).toBe(1);

    // The finalizer's pass repeated (e.g. the operator died before removing it): nothing more happens.
    await admin.query(`INSERT INTO ${schema}.shard_snapshots (world, instance, shard, tick, state) VALUES ($1, 0, '0', 2, '\\x00')`, [w]);
    await cleanup(world(w, 'uid-1'));
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${schema}.shard_snapshots WHERE world = $1`, [w])).rows[0].n).toBe(1);
    const done = await admin.query(`SELECT world_uid, world, snapshots_deleted FROM ${schema}.aethex_world_cleanups`);
    expect(done.rows).toEqual([{ world_uid: 'uid-1', world: w, snapshots_deleted: 2 }]);
    // A new world with the same name (another uid) is its own: deleting it cleans its rows.
    await cleanup(world(w, 'uid-2'));
    expect((await admin.query(`SELECT count(*)::int AS n FROM ${schema}.shard_snapshots WHERE world = $1`, [w])).rows[0].n).toBe(0);
  } finally {
    await close();
  }
});
