import { performance } from 'node:perf_hooks';
import { type Logger, type ShardKey, worldRef } from '@aethex/runtime';
import { Redis } from 'ioredis';
import pg from 'pg';
import { type GameserverSettings, shardKey } from '../config.js';
import { FailureLog } from './failure-log.js';
import {
  CallbackSink,
  type EventSink,
  MemoryOutbox,
  OUTBOX_TABLE_SQL,
  type Outbox,
  PLACES_TABLE_SQL,
  PostgresOutbox,
  RedisStreamSink,
} from './outbox.js';
import { withClient } from './pg-client.js';
import { MemoryPresence, type PresenceStore, RedisPresence } from './presence.js';
import { settledWithin } from './settled.js';
import { DirectorySnapshotStore, PostgresSnapshotStore, SNAPSHOT_TABLE_SQL, type SnapshotStore } from './snapshot-store.js';

export interface Stores {
  snapshots: SnapshotStore;
  outbox: Outbox;
  sink: EventSink;
  presence: PresenceStore;
  /** What backs each store, for the start's log line: no URLs (they may hold passwords). */
  describe: { snapshots: string; presence: string; events: string };
  /**
   * Closes the clients, side by side: gracefully (Redis `QUIT`, the pool's end, each awaiting what
   * is in flight) for up to `timeoutMs` (default 2,000), then Redis is dropped (`disconnect`) and
   * the pool left to the process's exit. Never rejects.
   */
  close(timeoutMs?: number): Promise<void>;
}

/**
 * Creates the tables the shard needs. Safe with many shards starting at once: a transaction-scoped
 * advisory lock serializes the DDL, and every statement is idempotent.
 */
export async function migrate(pool: pg.Pool): Promise<void> {
  await withClient(pool, (client) => migrateWith(client));
}

async function migrateWith(client: pg.PoolClient): Promise<void> {
  try {
    await client.query('BEGIN');
    await client.query("SELECT pg_advisory_xact_lock(hashtext('aethex-gameserver-migrations'))");
    await client.query(SNAPSHOT_TABLE_SQL);
    await client.query(OUTBOX_TABLE_SQL);
    await client.query(PLACES_TABLE_SQL);
    await client.query(SHARD_KEYS_TABLE_SQL);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new Error('gameserver migrations failed', { cause: err });
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
  return withClient(pool, (client) => claimShardKeyWith(client, key, worldCreatedMs));
}

async function claimShardKeyWith(
  client: pg.PoolClient,
  key: ShardKey,
  worldCreatedMs: number,
): Promise<{ snapshots: number; events: number }> {
  const ref = worldRef(key.namespace, key.world);
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
  }
}

/**
 * The shard's PostgreSQL pool. Every wait is bounded: opening a connection (or waiting for one of
 * the 4) by `persistence.postgres_connect_timeout_ms`; a query by `persistence.postgres_query_timeout_ms`
 * on the client (the pool then drops the connection: its state is unknown) and on the server
 * (`statement_timeout`), which also ends a session left idle in a transaction that long (a relay
 * whose client vanished holds its shard's lock no longer). TCP keepalives find dead idle connections.
 */
export function createPostgresPool(settings: GameserverSettings): pg.Pool {
  const queryTimeout = settings['persistence.postgres_query_timeout_ms'];
  return new pg.Pool({
    connectionString: settings['persistence.postgres_url'],
    max: 4,
    connectionTimeoutMillis: settings['persistence.postgres_connect_timeout_ms'],
    idleTimeoutMillis: 30_000,
    query_timeout: queryTimeout,
    statement_timeout: queryTimeout,
    idle_in_transaction_session_timeout: queryTimeout,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
}

/**
 * The shard's Redis client, not yet connected. A command without an answer within
 * `presence.redis_command_timeout_ms` fails, and a connection with commands outstanding that stays
 * silent as long is dropped and reconnected (`socketTimeout`): a hung connection is never waited on.
 * While Redis is down a command is retried on 2 reconnections, then fails.
 */
export function createRedisClient(settings: GameserverSettings): Redis {
  const commandTimeout = settings['presence.redis_command_timeout_ms'];
  return new Redis(settings['presence.redis_url'], {
    lazyConnect: true,
    connectTimeout: settings['presence.redis_connect_timeout_ms'],
    commandTimeout,
    socketTimeout: commandTimeout,
    keepAlive: 10_000,
    maxRetriesPerRequest: 2,
  });
}

/** Where a store's URL points, without its credentials. */
function host(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '(an unparsable URL)';
  }
}

/** The error's message and those of its causes, for a one-line start failure. */
function messages(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 4; e = e.cause) parts.push(e.message);
  return parts.join(': ') || String(err);
}

/** The snapshot directory's check at start may take this long (a hung mount must not hold the start for ever). */
const DIRECTORY_CHECK_MS = 10_000;

/**
 * What `work` failed with (`failed` maps it), an error saying it did not answer when it has not
 * settled within `ms`, or undefined once it succeeded.
 */
async function failureWithin(work: Promise<unknown>, ms: number, failed = (err: unknown) => err): Promise<unknown> {
  if (!(await settledWithin(work, ms))) return new Error(`no answer within ${ms} ms`);
  return work.then(() => undefined, failed);
}

/**
 * The one place the shard constructs its PostgreSQL and Redis clients. Without a PostgreSQL URL,
 * snapshots go to a directory and the outbox stays in process; without a Redis URL, presence and
 * relayed events stay in process — the embedded defaults a newcomer runs with. Rejects, naming the
 * store, its setting and its timeout, when one cannot be used within its timeouts; what was opened
 * by then is closed.
 */
export async function openStores(settings: GameserverSettings, log: Logger): Promise<Stores> {
  const closers: ((timeoutMs: number) => Promise<void>)[] = [];
  const close = async (timeoutMs = 2000) => {
    await Promise.all(closers.map((c) => c(timeoutMs)));
  };
  try {
    let snapshots: SnapshotStore;
    let outbox: Outbox;
    const pgUrl = settings['persistence.postgres_url'];
    if (pgUrl) {
      const pool = createPostgresPool(settings);
      pool.on('error', (err) => log.warn({ err: err.message }, 'idle PostgreSQL client failed'));
      closers.push(async (timeoutMs) => {
        await settledWithin(pool.end(), timeoutMs);
      });
      try {
        await migrate(pool);
        const adopted = await claimShardKey(pool, shardKey(settings), settings['shard.world_created_s'] * 1000);
        if (adopted.snapshots + adopted.events > 0) log.info(adopted, 'took over the snapshot and events written before namespaces');
      } catch (err) {
        throw new Error(
          `PostgreSQL at ${host(pgUrl)} (persistence.postgres_url) could not be used: ${messages(err)} ` +
            `(persistence.postgres_connect_timeout_ms ${settings['persistence.postgres_connect_timeout_ms']} ms, ` +
            `persistence.postgres_query_timeout_ms ${settings['persistence.postgres_query_timeout_ms']} ms)`,
          { cause: err },
        );
      }
      snapshots = new PostgresSnapshotStore(pool);
      outbox = new PostgresOutbox(pool, settings['persistence.outbox_retention_ms']);
    } else {
      const dir = settings['persistence.directory'];
      const store = new DirectorySnapshotStore(dir);
      // Like the databases, checked before the shard reports ready: a read-only or missing volume
      // would otherwise fail every save while the shard looks healthy.
      const failure = await failureWithin(store.check(), DIRECTORY_CHECK_MS);
      if (failure) {
        throw new Error(`the snapshot directory ${dir} (persistence.directory) could not be written: ${messages(failure)}`, {
          cause: failure,
        });
      }
      snapshots = store;
      outbox = new MemoryOutbox(settings['persistence.max_queued_events']);
    }
    let presence: PresenceStore;
    let sink: EventSink;
    const redisUrl = settings['presence.redis_url'];
    if (redisUrl) {
      const redis = createRedisClient(settings);
      let lastError: Error | undefined;
      // While Redis is down every reconnection fails: the first is logged, then a count now and then.
      const errors = new FailureLog(log, 'Redis connection', () => performance.now());
      redis.on('error', (err) => {
        lastError = err;
        errors.failed('warn', err.message, {}, 'Redis connection error');
      });
      redis.on('ready', () => errors.recovered());
      closers.push(async (timeoutMs) => {
        await settledWithin(redis.quit(), timeoutMs);
        redis.disconnect();
      });
      // Bounded here: a server that accepts the connection and never answers would hold the start for ever.
      const timeoutMs = settings['presence.redis_connect_timeout_ms'];
      const failure = await failureWithin(redis.connect(), timeoutMs, (err) => lastError ?? err);
      if (failure) {
        throw new Error(
          `Redis at ${host(redisUrl)} (presence.redis_url) could not be used: ${messages(failure)} ` +
            `(presence.redis_connect_timeout_ms ${timeoutMs} ms, presence.redis_command_timeout_ms ${settings['presence.redis_command_timeout_ms']} ms)`,
          { cause: failure },
        );
      }
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
        events: redisUrl ? 'redis stream' : 'log (debug level)',
      },
      close,
    };
  } catch (err) {
    await close(0);
    throw err;
  }
}
