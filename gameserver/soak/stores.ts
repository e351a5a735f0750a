import { eventStreamPattern } from '@aethex/runtime';
import { Redis } from 'ioredis';
import pg from 'pg';

/** One entry of a shard's domain event stream (docs/gameserver.md, "Persistence and presence"). */
export interface StreamEvent {
  /** The outbox id (the stream entry id's first part). */
  id: number;
  type: 'player_joined' | 'player_left';
  player: string;
  /** Milliseconds since the epoch, on the shard's clock. */
  at: number;
  cause: string;
}

/** An outbox row (PostgreSQL), for tracing an event the stream lacks. */
export interface OutboxRow {
  id: number;
  shard: string;
  type: string;
  player: string;
  at: number;
  relayed: boolean;
  drained: boolean;
  handedOver: boolean;
}

/**
 * The soak's own corner of the test environment's servers: a database of its own in PostgreSQL
 * (created here, dropped by `remove`), and in Redis the keys of its world's event streams and its
 * players' presence (`aethex:presence:<playerPrefix>…`), deleted by `remove`. Nothing else is touched.
 */
export interface SoakStores {
  /** The database's URL (the shards get it with the host and port of a proxy). */
  databaseUrl: string;
  /** Every entry of every stream of the world, by stream key's shard name. */
  readStreams(): Promise<Map<string, StreamEvent[]>>;
  /** A player's outbox rows on a shard. */
  outboxRows(shard: string, player: string): Promise<OutboxRow[]>;
  remove(): Promise<void>;
}

export async function createSoakStores(pgUrl: string, redisUrl: string, world: string, playerPrefix: string): Promise<SoakStores> {
  const database = `aethex_${world.replaceAll('-', '_')}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${database}`);
  } finally {
    await admin.end();
  }
  const url = new URL(pgUrl);
  url.pathname = `/${database}`;
  const databaseUrl = url.toString();
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  let db: pg.Client | undefined;
  const query = async <R extends pg.QueryResultRow>(sql: string, params: unknown[]) => {
    if (!db) {
      db = new pg.Client({ connectionString: databaseUrl });
      await db.connect();
    }
    return db.query<R>(sql, params);
  };
  const scan = async (pattern: string) => {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      keys.push(...found);
    } while (cursor !== '0');
    return keys;
  };
  return {
    databaseUrl,
    async readStreams() {
      const out = new Map<string, StreamEvent[]>();
      for (const key of await scan(eventStreamPattern('', world))) {
        const shard = key.slice(key.lastIndexOf(':') + 1);
        const events: StreamEvent[] = [];
        let from = '-';
        for (;;) {
          const batch = (await redis.xrange(key, from, '+', 'COUNT', 5000)) as [string, string[]][];
          for (const [id, fields] of batch) {
            const f: Record<string, string> = {};
            for (let i = 0; i + 1 < fields.length; i += 2) f[fields[i] as string] = fields[i + 1] as string;
            events.push({
              id: Number(id.split('-')[0]),
              type: f.type as StreamEvent['type'],
              player: f.player ?? '',
              at: Number(f.at),
              cause: f.cause ?? '',
            });
          }
          if (batch.length < 5000) break;
          from = `(${(batch.at(-1) as [string, string[]])[0]}`;
        }
        out.set(shard, events);
      }
      return out;
    },
    async outboxRows(shard, player) {
      const r = await query<{
        id: string;
        type: string;
        at: Date;
        relayed_at: Date | null;
        drained: boolean;
        handed_over: boolean;
      }>(
        'SELECT id, type, at, relayed_at, drained, handed_over FROM shard_outbox WHERE world = $1 AND instance = 0 AND shard = $2 AND player_id = $3 ORDER BY id',
        [world, shard, player],
      );
      return r.rows.map((row) => ({
        id: Number(row.id),
        shard,
        type: row.type,
        player,
        at: row.at.getTime(),
        relayed: row.relayed_at !== null,
        drained: row.drained,
        handedOver: row.handed_over,
      }));
    },
    async remove() {
      await db?.end().catch(() => undefined);
      db = undefined;
      try {
        const keys = [...(await scan(eventStreamPattern('', world))), ...(await scan(`aethex:presence:${playerPrefix}*`))];
        for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
      } finally {
        redis.disconnect();
      }
      const again = new pg.Client({ connectionString: pgUrl });
      await again.connect();
      try {
        await again.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      } finally {
        await again.end();
      }
    },
  };
}
