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
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new Error('gameserver migrations failed', { cause: err });
  } finally {
    client.release();
  }
}

/**
 * Builds before namespaces were part of the key wrote a shard's rows under the world's name alone.
 * A shard in a namespace takes its own (same world, instance and name) for itself on its first
 * start — while it has no snapshot under its `worldRef` yet: its snapshot and its outbox events,
 * relayed or not — so an upgrade loses nothing. Later starts find a snapshot and change nothing,
 * so rows that shards outside Kubernetes write under the bare name are not taken. When same-named
 * worlds in two namespaces start at once, the first takes the rows and the other finds none.
 */
export async function adoptUnnamespaced(pool: pg.Pool, key: ShardKey): Promise<{ snapshots: number; events: number }> {
  if (key.namespace === '') return { snapshots: 0, events: 0 };
  const args = [worldRef(key.namespace, key.world), key.world, key.instance, key.shard];
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const own = await client.query('SELECT 1 FROM shard_snapshots WHERE world = $1 AND instance = $2 AND shard = $3', [
      args[0],
      key.instance,
      key.shard,
    ]);
    let taken = { snapshots: 0, events: 0 };
    if (own.rowCount === 0) {
      const snapshots = await client.query('UPDATE shard_snapshots SET world = $1 WHERE world = $2 AND instance = $3 AND shard = $4', args);
      const events = await client.query('UPDATE shard_outbox SET world = $1 WHERE world = $2 AND instance = $3 AND shard = $4', args);
      taken = { snapshots: snapshots.rowCount ?? 0, events: events.rowCount ?? 0 };
    }
    await client.query('COMMIT');
    return taken;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new Error('taking over rows from before namespaces failed', { cause: err });
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
    const adopted = await adoptUnnamespaced(pool, shardKey(settings));
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
