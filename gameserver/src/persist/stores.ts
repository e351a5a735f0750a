import { type Logger, type ShardKey, worldRef } from '@aethex/runtime';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type GameserverSettings, shardKey } from '../config.js';
import { CallbackSink, type EventSink, MemoryOutbox, OUTBOX_TABLE_SQL, type Outbox, PostgresOutbox, RedisStreamSink } from './outbox.js';
import { MemoryPresence, type PresenceStore, RedisPresence } from './presence.js';
import { DirectorySnapshotStore, PostgresSnapshotStore, SNAPSHOT_TABLE_SQL, type SnapshotStore } from './snapshot-store.js';

export interface Stores {
  snapshots: SnapshotStore;
  outbox: Outbox;
  sink: EventSink;
  presence: PresenceStore;
  /** What backs each store, for logs: no URLs (they may hold passwords). */
  describe: { snapshots: string; presence: string };
  close(): Promise<void>;
}

/**
 * Creates the tables the shard needs. Safe with many shards starting at once: a transaction-scoped
 * advisory lock serializes the DDL, and every statement is idempotent.
 */
export async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT pg_advisory_xact_lock(hashtext('aethex-gameserver-migrations'))");
    await client.query(SNAPSHOT_TABLE_SQL);
    await client.query(OUTBOX_TABLE_SQL);
    await client.query(SHARD_KEYS_TABLE_SQL);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new Error('gameserver migrations failed', { cause: err });
  } finally {
    client.release();
  }
}

/**
 * The shard keys a shard of this build has started under (`world` is the `worldRef`), and what the
 * first start took over from before namespaces.
 */
export const SHARD_KEYS_TABLE_SQL = `
CREATE TABLE IF NOT EXISTS shard_keys (
  world           text        NOT NULL,
  instance        integer     NOT NULL,
  shard           text        NOT NULL,
  first_start_at  timestamptz NOT NULL DEFAULT now(),
  took_snapshots  integer     NOT NULL DEFAULT 0,
  took_events     integer     NOT NULL DEFAULT 0,
  PRIMARY KEY (world, instance, shard)
)`;

/**
 * Registers the shard's key and, the first time a shard in a namespace starts under it, takes over
 * its rows from before namespaces. Builds before them wrote a shard's rows under the world's bare
 * name; the shard's snapshot and outbox events (relayed or not) written since its world was created
 * (`worldCreatedMs`) become its own, so an upgrade loses nothing. Taken only once, in the transaction
 * that registers the key: a restart (even before the first save), a rollback and a return take
 * nothing. Never taken: rows of a live shard of this build outside Kubernetes (it registered the
 * bare key), or rows older than the world — a deleted world's, which a new world of the same name
 * must not inherit. When same-named worlds in two namespaces start at once, the first takes them.
 */
export async function claimShardKey(pool: pg.Pool, key: ShardKey, worldCreatedMs = 0): Promise<{ snapshots: number; events: number }> {
  const ref = worldRef(key.namespace, key.world);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const registered = await client.query(
      'INSERT INTO shard_keys (world, instance, shard) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1',
      [ref, key.instance, key.shard],
    );
    let taken = { snapshots: 0, events: 0 };
    const bare = [key.world, key.instance, key.shard];
    const bareLive =
      (await client.query('SELECT 1 FROM shard_keys WHERE world = $1 AND instance = $2 AND shard = $3', bare)).rowCount !== 0;
    if (key.namespace !== '' && registered.rowCount === 1 && !bareLive) {
      const args = [ref, ...bare, new Date(worldCreatedMs)];
      const snapshots = await client.query(
        `UPDATE shard_snapshots SET world = $1 WHERE world = $2 AND instance = $3 AND shard = $4 AND saved_at >= $5
           AND NOT EXISTS (SELECT 1 FROM shard_snapshots WHERE world = $1 AND instance = $3 AND shard = $4)`,
        args,
      );
      // Relayed and pending apart: each through its partial index, not the whole table.
      let events = 0;
      for (const relayed of ['IS NOT NULL', 'IS NULL']) {
        const r = await client.query(
          `UPDATE shard_outbox SET world = $1 WHERE relayed_at ${relayed} AND world = $2 AND instance = $3 AND shard = $4 AND at >= $5`,
          args,
        );
        events += r.rowCount ?? 0;
      }
      taken = { snapshots: snapshots.rowCount ?? 0, events };
      await client.query('UPDATE shard_keys SET took_snapshots = $4, took_events = $5 WHERE world = $1 AND instance = $2 AND shard = $3', [
        ref,
        key.instance,
        key.shard,
        taken.snapshots,
        taken.events,
      ]);
    }
    await client.query('COMMIT');
    return taken;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new Error('registering the shard key failed', { cause: err });
  } finally {
    client.release();
  }
}

/**
 * The one place the shard constructs its PostgreSQL and Redis clients. Without a PostgreSQL URL,
 * snapshots go to a directory and the outbox stays in process; without a Redis URL, presence and
 * relayed events stay in process — the embedded defaults a newcomer runs with.
 */
export async function openStores(settings: GameserverSettings, log: Logger): Promise<Stores> {
  const closers: (() => Promise<void>)[] = [];
  let snapshots: SnapshotStore;
  let outbox: Outbox;
  const pgUrl = settings['persistence.postgres_url'];
  if (pgUrl) {
    const pool = new pg.Pool({
      connectionString: pgUrl,
      max: 4,
      connectionTimeoutMillis: 5000,
      idleTimeoutMillis: 30_000,
      statement_timeout: 10_000,
    });
    pool.on('error', (err) => log.warn({ err: err.message }, 'idle PostgreSQL client failed'));
    closers.push(() => pool.end());
    await migrate(pool);
    const adopted = await claimShardKey(pool, shardKey(settings), settings['shard.world_created_s'] * 1000);
    if (adopted.snapshots + adopted.events > 0) log.info(adopted, 'took over the snapshot and events written before namespaces');
    snapshots = new PostgresSnapshotStore(pool);
    outbox = new PostgresOutbox(pool, settings['persistence.outbox_retention_ms']);
  } else {
    snapshots = new DirectorySnapshotStore(settings['persistence.directory']);
    outbox = new MemoryOutbox();
  }
  let presence: PresenceStore;
  let sink: EventSink;
  const redisUrl = settings['presence.redis_url'];
  if (redisUrl) {
    const redis = new Redis(redisUrl, { maxRetriesPerRequest: 2, connectTimeout: 5000, lazyConnect: true });
    redis.on('error', (err) => log.warn({ err: err.message }, 'Redis connection error'));
    await redis.connect();
    closers.push(async () => {
      await redis.quit().catch(() => redis.disconnect());
    });
    presence = new RedisPresence(redis);
    sink = new RedisStreamSink(redis, settings['presence.events_max_len']);
  } else {
    presence = new MemoryPresence();
    sink = new CallbackSink((e) => log.debug({ event: e }, 'domain event'));
  }
  return {
    snapshots,
    outbox,
    sink,
    presence,
    describe: {
      snapshots: pgUrl ? 'postgresql' : `directory ${settings['persistence.directory']}`,
      presence: redisUrl ? 'redis' : 'in-process',
    },
    async close() {
      for (const c of closers.reverse()) await c();
    },
  };
}
