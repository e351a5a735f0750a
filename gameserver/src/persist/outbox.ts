import { eventStreamKey, type ShardKey, worldRef } from '@aethex/runtime';
import type { Redis } from 'ioredis';
import type pg from 'pg';

/** A domain event of a shard: a player joined or left. */
export interface DomainEvent {
  type: 'player_joined' | 'player_left';
  playerId: string;
  /** Milliseconds since the epoch when it happened. */
  at: number;
  /**
   * Unique to this event, given when it is queued (see `eventKeys`) and kept across retries: the
   * outbox stores an event once per key, so an append retried after an ambiguous failure adds nothing twice.
   */
  eventKey: string;
}

/**
 * Keys for the events of one producer: a random prefix unique to it, then a counter from 1 —
 * `<prefix>:1`, `<prefix>:2`, … Two producers must not share a prefix.
 */
export function eventKeys(prefix: string): () => string {
  let n = 0;
  return () => `${prefix}:${++n}`;
}

/** An event as relayed: with the id that makes delivery idempotent. */
export interface RelayedEvent extends Omit<DomainEvent, 'eventKey'>, ShardKey {
  id: number;
}

/**
 * Where relayed events go. `publish` must be idempotent by event id: publishing an id twice has the
 * effect of publishing it once. Returns false when the event was already there (a duplicate).
 */
export interface EventSink {
  publish(event: RelayedEvent): Promise<boolean>;
  /**
   * The highest id the sink holds for the shard, 0 when none: an id up to it would be taken for a
   * duplicate. An outbox whose ids do not outlive its process numbers its events above it.
   */
  lastId(key: ShardKey): Promise<number>;
}

/**
 * The shard's outbox: events are appended durably first and relayed to the sink afterwards, so an
 * acknowledged append is never lost and, with an idempotent sink, is delivered exactly once even
 * if the relay crashes between publishing and marking.
 */
export interface Outbox {
  /**
   * Appends the events in order. Idempotent per event key: an event whose key the outbox already
   * holds is skipped, so an append that failed after it was written (the reply lost to a connection
   * reset or a timeout racing the commit) can be retried with the same events.
   */
  append(key: ShardKey, events: readonly DomainEvent[]): Promise<void>;
  /**
   * Relays up to `limit` of the shard's pending events in id order; returns how many. One relay
   * per shard runs at a time, and each shard appends sequentially, so ids reach the sink in order.
   */
  relay(key: ShardKey, sink: EventSink, limit?: number): Promise<number>;
  /** The shard's events not yet relayed. */
  pending(key: ShardKey): Promise<number>;
  /**
   * Forgets up to `limit` of the shard's events relayed longer ago than the outbox keeps them;
   * returns how many. Until then an event's key still makes a retried append skip it.
   */
  prune(key: ShardKey, limit?: number): Promise<number>;
}

/** How long relayed events stay in the PostgreSQL outbox by default (`persistence.outbox_retention_ms`). */
export const OUTBOX_RETENTION_MS = 3_600_000;
/** Entries a shard's Redis event stream keeps by default, about (`presence.events_max_len`). */
export const EVENTS_MAX_LEN = 100_000;

export const OUTBOX_TABLE_SQL = `
CREATE TABLE IF NOT EXISTS shard_outbox (
  id          bigserial   PRIMARY KEY,
  world       text        NOT NULL,
  instance    integer     NOT NULL,
  shard       text        NOT NULL,
  type        text        NOT NULL,
  player_id   text        NOT NULL,
  at          timestamptz NOT NULL,
  relayed_at  timestamptz,
  event_key   text
);
CREATE INDEX IF NOT EXISTS shard_outbox_pending ON shard_outbox (id) WHERE relayed_at IS NULL;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_outbox'::regclass AND attname = 'event_key' AND NOT attisdropped) THEN
    ALTER TABLE shard_outbox ADD COLUMN event_key text;
  END IF;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS shard_outbox_event_key ON shard_outbox (event_key);
DROP INDEX IF EXISTS shard_outbox_relayed;
CREATE INDEX IF NOT EXISTS shard_outbox_relayed_by_shard ON shard_outbox (world, instance, shard, relayed_at) WHERE relayed_at IS NOT NULL`;

/**
 * The outbox as PostgreSQL rows, keyed like the snapshots: `world` holds the world's `worldRef`
 * (`<namespace>/<world>`, or the name alone outside Kubernetes). A transaction-scoped advisory lock
 * per shard keeps relays of one shard serial. `event_key` is unique; rows from before it existed
 * have none, and NULLs never conflict. Relayed rows are kept `retentionMs` (long past any retried
 * append), then pruned.
 */
export class PostgresOutbox implements Outbox {
  constructor(
    private readonly pool: pg.Pool,
    private readonly retentionMs = OUTBOX_RETENTION_MS,
  ) {}

  async append(key: ShardKey, events: readonly DomainEvent[]): Promise<void> {
    if (events.length === 0) return;
    const values: unknown[] = [];
    const rows = events.map((e, i) => {
      values.push(worldRef(key.namespace, key.world), key.instance, key.shard, e.type, e.playerId, new Date(e.at), e.eventKey);
      const b = i * 7;
      return `($${b + 1}, $${b + 2}, $${b + 3}, $${b + 4}, $${b + 5}, $${b + 6}, $${b + 7})`;
    });
    await this.pool.query(
      `INSERT INTO shard_outbox (world, instance, shard, type, player_id, at, event_key) VALUES ${rows.join(', ')}
       ON CONFLICT (event_key) DO NOTHING`,
      values,
    );
  }

  async relay(key: ShardKey, sink: EventSink, limit = 500): Promise<number> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const lock = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_xact_lock(hashtext('aethex-outbox'), hashtext($1)) AS ok", [
        eventStreamKey(key),
      ]);
      if (!lock.rows[0]?.ok) {
        await client.query('ROLLBACK');
        return 0;
      }
      const { rows } = await client.query<{ id: string; type: DomainEvent['type']; player_id: string; at: Date }>(
        `SELECT id, type, player_id, at FROM shard_outbox
         WHERE relayed_at IS NULL AND world = $1 AND instance = $2 AND shard = $3 ORDER BY id LIMIT $4`,
        [worldRef(key.namespace, key.world), key.instance, key.shard, limit],
      );
      for (const r of rows) {
        await sink.publish({
          id: Number(r.id),
          namespace: key.namespace,
          world: key.world,
          instance: key.instance,
          shard: key.shard,
          type: r.type,
          playerId: r.player_id,
          at: r.at.getTime(),
        });
      }
      if (rows.length > 0) {
        await client.query('UPDATE shard_outbox SET relayed_at = now() WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
      }
      await client.query('COMMIT');
      return rows.length;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async pending(key: ShardKey): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM shard_outbox WHERE relayed_at IS NULL AND world = $1 AND instance = $2 AND shard = $3',
      [worldRef(key.namespace, key.world), key.instance, key.shard],
    );
    return rows[0]?.n ?? 0;
  }

  async prune(key: ShardKey, limit = 5000): Promise<number> {
    // The shard's oldest first, through the partial index on (shard, relayed_at): the rows read are
    // the rows deleted, however many other shards' rows the table holds. Bounded, so a call stays short.
    const { rowCount } = await this.pool.query(
      `DELETE FROM shard_outbox WHERE id IN (
         SELECT id FROM shard_outbox
         WHERE relayed_at < now() - make_interval(secs => $4::double precision / 1000) AND world = $1 AND instance = $2 AND shard = $3
         ORDER BY relayed_at LIMIT $5)`,
      [worldRef(key.namespace, key.world), key.instance, key.shard, this.retentionMs, limit],
    );
    return rowCount ?? 0;
  }
}

/**
 * The embedded default: events kept in process, in order, relayed from memory (one shard per
 * process). Its ids die with the process, while the sink (a Redis stream) outlives it and would take
 * a restarted shard's ids 1, 2, … for duplicates of the previous process's. So before its first
 * publish it asks the sink for the shard's last id, once, and numbers every event above it: event n
 * of this process is `base + n`. No clock is involved, so a clock stepping back changes nothing. An
 * event's id is fixed once given, so a publish retried after a lost reply is still a duplicate. This
 * assumes one process per shard at a time: two at once would hand out the same ids. It holds the
 * keys of the events it keeps — those pending and up to the last 10,000 relayed — and skips an
 * appended event whose key is among them.
 */
export class MemoryOutbox implements Outbox {
  /** `id` is the event's number in this process, from 1; the relayed id adds `base`. */
  private readonly events: (RelayedEvent & Pick<DomainEvent, 'eventKey'>)[] = [];
  private readonly keys = new Set<string>();
  private nextId = 1;
  private relayed = 0;
  private base: number | undefined;

  async append(key: ShardKey, events: readonly DomainEvent[]): Promise<void> {
    for (const e of events) {
      if (this.keys.has(e.eventKey)) continue;
      this.keys.add(e.eventKey);
      this.events.push({ ...e, ...key, id: this.nextId++ });
    }
  }

  async relay(key: ShardKey, sink: EventSink, limit = 500): Promise<number> {
    const batch = this.events.slice(this.relayed, this.relayed + limit);
    if (batch.length === 0) return 0;
    this.base ??= await sink.lastId(key);
    for (const { eventKey: _, ...e } of batch) {
      await sink.publish({ ...e, id: this.base + e.id });
      this.relayed++;
    }
    if (this.relayed > 10_000) {
      for (const e of this.events.splice(0, this.relayed)) this.keys.delete(e.eventKey);
      this.relayed = 0;
    }
    return batch.length;
  }

  async pending(_key: ShardKey): Promise<number> {
    return this.events.length - this.relayed;
  }

  /** Nothing to do: `relay` forgets all but the last 10,000 relayed events itself. */
  async prune(_key: ShardKey): Promise<number> {
    return 0;
  }
}

/**
 * Events into a Redis stream per shard (`eventStreamKey`:
 * `aethex:events:<namespace>/<world>:<instance>:<shard>`, without `<namespace>/` outside
 * Kubernetes), with the outbox id as the stream entry id `<id>-0`: Redis refuses an id that is not
 * above the stream's last, so a replayed event is detected and dropped — delivery is exactly once.
 * That holds only for ids above everything an earlier process wrote: durable ones (PostgreSQL's
 * sequence), or the in-process outbox's, which start above `lastId`. The stream keeps about the last `maxLen` entries (`XADD
 * MAXLEN ~`, trimmed by whole nodes, so it may hold a few more): consumers that fall further behind
 * miss the oldest. Trimming keeps the stream's last id, so duplicates are still refused.
 */
export class RedisStreamSink implements EventSink {
  constructor(
    private readonly redis: Redis,
    private readonly maxLen = EVENTS_MAX_LEN,
  ) {}

  async publish(e: RelayedEvent): Promise<boolean> {
    try {
      await this.redis.xadd(
        eventStreamKey(e),
        'MAXLEN',
        '~',
        this.maxLen,
        `${e.id}-0`,
        'type',
        e.type,
        'player',
        e.playerId,
        'at',
        String(e.at),
      );
      return true;
    } catch (err) {
      if (/equal or smaller than the target stream top item/.test((err as Error).message)) return false;
      throw err;
    }
  }

  /** The millisecond part of the stream's last generated id: kept by Redis even when that entry was deleted. */
  async lastId(key: ShardKey): Promise<number> {
    const stream = eventStreamKey(key);
    let info: unknown[];
    try {
      info = (await this.redis.xinfo('STREAM', stream)) as unknown[];
    } catch (err) {
      if (/no such key/i.test((err as Error).message)) return 0;
      throw err;
    }
    const last = String(info[info.indexOf('last-generated-id') + 1]);
    const ms = Number(last.split('-')[0]);
    if (!Number.isSafeInteger(ms)) throw new Error(`stream ${stream}: last id ${last} cannot be followed by an outbox id`);
    return ms;
  }
}

/** The embedded sink: events handed to a callback in process, deduplicated by id. */
export class CallbackSink implements EventSink {
  private top = 0;
  constructor(private readonly deliver: (e: RelayedEvent) => void) {}

  async publish(e: RelayedEvent): Promise<boolean> {
    if (e.id <= this.top) return false;
    this.top = e.id;
    this.deliver(e);
    return true;
  }

  async lastId(_key: ShardKey): Promise<number> {
    return this.top;
  }
}
