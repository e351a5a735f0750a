import { eventStreamPattern, PRESENCE_PATTERN, type ShardKey, worldRef } from '@aethex/runtime';
import { Redis } from 'ioredis';
import pg from 'pg';
import type { GameWorld } from './api/gameworld.js';
import type { ExternalCleanup } from './reconcile/reconciler.js';

/** How long a deleted world's event streams stay for their consumers. */
export const EVENT_STREAM_GRACE_SECONDS = 86_400;

/** Where a deleted world's event stream `aethex:events:<namespace>/<world>:<instance>:<shard>` is kept meanwhile. */
export function deletedStreamKey(worldUid: string, key: string): string {
  return key.replace(/^aethex:events:/, `aethex:events-deleted:${worldUid}:`);
}

export interface CleanupStores {
  /** PostgreSQL holding the shards' `shard_snapshots` (empty: nothing to clean there). */
  postgresUrl: string;
  /** Redis holding presence keys `aethex:presence:<player>` (empty: nothing to clean there). */
  redisUrl: string;
  log: { info: (o: object, m: string) => void };
}

/**
 * What a deleted world leaves outside Kubernetes, removed when its finalizer runs: the shards'
 * snapshot and outbox rows and the presence keys naming the world — in its namespace: a world of
 * the same name in another namespace is not touched, nor is anything under the bare name (builds
 * before namespaces); its event streams are renamed
 * (`deletedStreamKey`) and expire a day later. The PostgreSQL part runs exactly once per
 * world uid — a row in `aethex_world_cleanups` is written in the same transaction as the deletes,
 * so a pass repeated after a crash finds it and deletes nothing (a new world with the same name
 * is never touched). Presence keys expire on their own; deleting them again is harmless.
 */
export function createExternalCleanup(o: CleanupStores): { cleanup: ExternalCleanup; close: () => Promise<void> } {
  const pool = o.postgresUrl
    ? new pg.Pool({ connectionString: o.postgresUrl, max: 2, connectionTimeoutMillis: 5000, statement_timeout: 30_000 })
    : undefined;
  const redis = o.redisUrl ? new Redis(o.redisUrl, { maxRetriesPerRequest: 2, lazyConnect: true }) : undefined;
  let ready: Promise<void> | undefined;
  const prepare = () => {
    ready ??= (async () => {
      await pool?.query(`CREATE TABLE IF NOT EXISTS aethex_world_cleanups (
        world_uid text PRIMARY KEY, world text NOT NULL, namespace text NOT NULL, snapshots_deleted integer NOT NULL, done_at timestamptz NOT NULL DEFAULT now())`);
      await redis?.connect();
    })();
    return ready;
  };

  const cleanup: ExternalCleanup = async (world: GameWorld) => {
    await prepare();
    const name = world.metadata.name;
    const namespace = world.metadata.namespace;
    const ref = worldRef(namespace, name);
    if (pool) {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        const claimed = await c.query(
          'INSERT INTO aethex_world_cleanups (world_uid, world, namespace, snapshots_deleted) VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING RETURNING 1',
          [world.metadata.uid, name, world.metadata.namespace],
        );
        if (claimed.rowCount === 1) {
          // The shards' rows, where the tables exist, under the world's worldRef. Rows under its
          // bare name (builds before namespaces) may be a same-named world's in another namespace
          // still on such a build: they stay (no later world takes them over: they predate it).
          const remove = async (table: 'shard_snapshots' | 'shard_outbox' | 'shard_places' | 'shard_keys') => {
            const exists = (await c.query<{ t: string | null }>('SELECT to_regclass($1)::text AS t', [table])).rows[0]?.t != null;
            return exists ? ((await c.query(`DELETE FROM ${table} WHERE world = $1`, [ref])).rowCount ?? 0) : 0;
          };
          const deleted = await remove('shard_snapshots');
          // The world's domain events: no shard of it will relay or prune them any more.
          const events = await remove('shard_outbox');
          // Its shards' open places (kept with the outbox): no shard of it will free them any more.
          await remove('shard_places');
          await remove('shard_keys');
          await c.query('UPDATE aethex_world_cleanups SET snapshots_deleted = $2 WHERE world_uid = $1', [world.metadata.uid, deleted]);
          o.log.info({ world: ref, snapshots: deleted, events }, 'deleted the world’s snapshots and outbox rows');
        }
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        c.release();
      }
    }
    if (redis) {
      let removed = 0;
      for await (const keys of redis.scanStream({ match: PRESENCE_PATTERN, count: 1000 }) as AsyncIterable<string[]>) {
        if (keys.length === 0) continue;
        const values = await redis.mget(...keys);
        const mine = keys.filter((_, i) => {
          try {
            const where = JSON.parse(values[i] ?? 'null') as Partial<ShardKey> | null;
            return where?.world === name && (where.namespace ?? '') === namespace;
          } catch {
            return false;
          }
        });
        if (mine.length > 0) removed += await redis.del(...mine);
      }
      if (removed > 0) o.log.info({ world: ref, presence: removed }, 'deleted the world’s presence keys');
      // Its event streams stay a day for their consumers to finish reading, then go — under a name
      // of their own, so that a new world with the same name starts fresh streams that do not expire.
      const streams: string[] = [];
      for await (const keys of redis.scanStream({ match: eventStreamPattern(namespace, name), count: 1000 }) as AsyncIterable<string[]>) {
        streams.push(...keys);
      }
      for (const key of streams) {
        const kept = deletedStreamKey(world.metadata.uid as string, key);
        try {
          await redis.rename(key, kept);
        } catch (err) {
          if (/no such key/i.test((err as Error).message)) continue;
          throw err;
        }
        await redis.expire(kept, EVENT_STREAM_GRACE_SECONDS);
      }
      if (streams.length > 0)
        o.log.info({ world: ref, streams: streams.length }, 'the world’s event streams are kept a day under aethex:events-deleted:<uid>:…');
    }
  };
  return {
    cleanup,
    async close() {
      await pool?.end();
      redis?.disconnect();
    },
  };
}
