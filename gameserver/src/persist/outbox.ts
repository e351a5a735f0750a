import { eventStreamKey, type ShardKey, worldRef } from '@aethex/runtime';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { withClient } from './pg-client.js';

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
  /**
   * A `player_left` the shard made, not a departure of the player's own: a drain's
   * (`ShardPersistence.releasingForDrain`: every place freed as it stopped — a restore brings them
   * back), or a restart's (`placesRestored`: a place nobody restored, its player lost with the
   * crash). `leftSince` does not count them.
   */
  drained?: boolean;
  /**
   * An event of a handoff: on a `player_left`, the player walked on to a neighbour with their entity
   * — a departure from this shard, but not from the game (`leftSince` with `last` does not take it
   * for one); on a `player_joined`, they arrived from a neighbour with it.
   */
  handedOver?: boolean;
}

/**
 * Why an event happened, as the stream tells consumers (its `cause` field): `handoff` — the player
 * walked between neighbouring shards (`DomainEvent.handedOver`); `shard` — the shard freed the
 * place itself (`DomainEvent.drained`: a drain, or a restart freeing a place nobody restored);
 * `player` — the player's own join or departure.
 */
export type EventCause = 'player' | 'handoff' | 'shard';

export function eventCause(e: Pick<DomainEvent, 'drained' | 'handedOver'>): EventCause {
  return e.handedOver ? 'handoff' : e.drained ? 'shard' : 'player';
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

/** What one `publish` did: events newly taken, and events the sink already held (a republish). */
export interface PublishResult {
  added: number;
  duplicates: number;
}

/**
 * Where relayed events go. `publish` takes a batch in id order and is idempotent by event id: an
 * event the sink already holds under its id — the same type, player and time — is a duplicate and
 * is skipped. An id the sink cannot take (not above its last) that holds a different event, or
 * nothing to compare with, is not a duplicate: `publish` rejects with `EventIdConflictError`, and
 * the events from that one on are not published.
 */
export interface EventSink {
  publish(events: readonly RelayedEvent[]): Promise<PublishResult>;
  /**
   * The highest id the sink holds for the shard, 0 when none: an id up to it would be taken for a
   * duplicate. An outbox whose ids do not outlive its process numbers its events above it.
   */
  lastId(key: ShardKey): Promise<number>;
}

/**
 * The sink already holds a different event (or none it can compare with) under an id the outbox
 * gave: publishing would drop the event as a "duplicate". The outbox's ids are below the stream's —
 * its PostgreSQL sequence was reset or restored from a backup while Redis kept the stream, or the
 * shard ran on the in-process outbox before. The events stay pending until the ids are fixed.
 */
export class EventIdConflictError extends Error {
  constructor(
    readonly stream: string,
    readonly id: number,
    readonly found: 'different' | 'missing',
  ) {
    super(
      `stream ${stream} already has id ${id} ${found === 'different' ? 'for a different event' : 'behind its last entry, and the entry is gone'}: ` +
        "the outbox's ids are below the stream's (its sequence reset or restored while Redis kept the stream, or events of another process of the shard committed out of order before appends were serialized); " +
        'its events stay pending until they are given ids above the stream\'s last (moving the sequence alone does not renumber them: see "When a store fails" in docs/gameserver.md) or the stream is removed',
    );
    this.name = 'EventIdConflictError';
  }
}

/**
 * Events relayed per batch by default: never more than `presence.events_max_len` allows at least
 * (100), so a batch republished after a crash between publishing and marking is still in the
 * stream — `XADD MAXLEN ~` keeps at least that many entries — and each duplicate is verified.
 */
export const RELAY_BATCH = 100;

/**
 * The shard's outbox: events are appended durably first and relayed to the sink afterwards, so an
 * acknowledged append is never lost and, with an idempotent sink, is delivered exactly once even
 * if the relay crashes between publishing and marking.
 */
export interface Outbox {
  /** Whether appended events outlive the process (PostgreSQL) or die with it (in process). */
  readonly durable: boolean;
  /**
   * Appends the events in order. Idempotent per event key: an event whose key the outbox already
   * holds is skipped, so an append that failed after it was written (the reply lost to a connection
   * reset or a timeout racing the commit) can be retried with the same events.
   */
  append(key: ShardKey, events: readonly DomainEvent[]): Promise<void>;
  /**
   * Relays up to `limit` (default `RELAY_BATCH`) of the shard's pending events in id order, in one
   * `publish`; returns how many. Marks them relayed only once the sink took them. One relay
   * per shard runs at a time, and each shard appends sequentially, so ids reach the sink in order.
   */
  relay(key: ShardKey, sink: EventSink, limit?: number): Promise<number>;
  /** The shard's events not yet relayed. */
  pending(key: ShardKey): Promise<number>;
  /**
   * The players whose place on the shard the appended events leave open (a `player_joined` not yet
   * followed by a `player_left`), as the outbox kept them across the shard's restarts: a durable
   * outbox keeps them with the events, in the same transaction; the in-process one has none from
   * before its process and answers [].
   */
  openPlaces(key: ShardKey): Promise<string[]>;
  /**
   * Of `players`, those the outbox holds a `player_left` of at or after `sinceMs` (ms since the
   * epoch) for the shard, not one the shard made (`DomainEvent.drained`): they left it since then,
   * as far as the events it still keeps tell (relayed ones go after its retention). With `last`,
   * only those whose last event since then (not one the shard made) is a `player_left` of their
   * own, not a handoff away (`DomainEvent.handedOver`): they left the game from here and did not
   * come back. Asked at a restore, with when the snapshot was taken.
   */
  leftSince(key: ShardKey, sinceMs: number, players: readonly string[], last?: boolean): Promise<string[]>;
  /**
   * Of `players`, those with an event at or after `sinceMs` (ms since the epoch, on the other
   * shard's clock) on another shard of the shard's world instance whose last such event there is
   * a `player_joined`: they played there since then, and their place there is still open — their
   * entity is there. Not when it is a `player_left` (of their own, a handoff away, or that shard's
   * release — `DomainEvent.drained`: a restart that lost their entity there, a drain): they came
   * back here, or left the game, and the copy restored here may be the one left. Asked at a
   * restore, with when the snapshot was taken: a player who walked on from here after it, in a
   * handoff whose own event the crash lost, to a shard that is no neighbour of this one (whose
   * claim would drop the copy).
   * As far as the outbox can tell: the in-process one holds this shard's events only, and answers [].
   */
  movedOnSince(key: ShardKey, sinceMs: number, players: readonly string[]): Promise<string[]>;
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
/** Events held in process at most by default, per queue (`persistence.max_queued_events`). */
export const MAX_QUEUED_EVENTS = 100_000;
/** Events per INSERT: the statement stays short, however long the backlog a retried append carries. */
const APPEND_CHUNK = 1000;
/**
 * The advisory lock classes (the first key of the two-key form; the second is `hashtext` of the
 * shard's stream key): one for the relay, one for appends. Apart, so an append never waits for a
 * relay publishing to Redis; and apart from the migrations' lock, which is a one-key (bigint) lock.
 */
export const RELAY_LOCK_CLASS = 'aethex-outbox';
export const APPEND_LOCK_CLASS = 'aethex-outbox-append';

/**
 * The open places of each shard (see `Outbox.openPlaces`), keyed like the outbox: a row is added by
 * the append of a `player_joined` and removed by that of a `player_left`, in its transaction.
 */
export const PLACES_TABLE_SQL = `
CREATE TABLE IF NOT EXISTS shard_places (
  world      text        NOT NULL,
  instance   integer     NOT NULL,
  shard      text        NOT NULL,
  player_id  text        NOT NULL,
  taken_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (world, instance, shard, player_id)
)`;

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
  event_key   text,
  drained     boolean     NOT NULL DEFAULT false,
  handed_over boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS shard_outbox_pending ON shard_outbox (id) WHERE relayed_at IS NULL;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_outbox'::regclass AND attname = 'event_key' AND NOT attisdropped) THEN
    ALTER TABLE shard_outbox ADD COLUMN event_key text;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_outbox'::regclass AND attname = 'drained' AND NOT attisdropped) THEN
    ALTER TABLE shard_outbox ADD COLUMN drained boolean NOT NULL DEFAULT false;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_outbox'::regclass AND attname = 'handed_over' AND NOT attisdropped) THEN
    ALTER TABLE shard_outbox ADD COLUMN handed_over boolean NOT NULL DEFAULT false;
  END IF;
END $$;
CREATE UNIQUE INDEX IF NOT EXISTS shard_outbox_event_key ON shard_outbox (event_key);
CREATE INDEX IF NOT EXISTS shard_outbox_player ON shard_outbox (world, instance, shard, player_id, id);
DROP INDEX IF EXISTS shard_outbox_relayed;
CREATE INDEX IF NOT EXISTS shard_outbox_relayed_by_shard ON shard_outbox (world, instance, shard, relayed_at) WHERE relayed_at IS NOT NULL`;

/**
 * The outbox as PostgreSQL rows, keyed like the snapshots: `world` holds the world's `worldRef`
 * (`<namespace>/<world>`, or the name alone outside Kubernetes). A transaction-scoped advisory lock
 * per shard keeps relays of one shard serial, and another one its appends, across processes: ids
 * come from one sequence and are handed out as rows are inserted, so two processes of one shard
 * appending at once (overlapping pods) could otherwise commit id N after N+1, after a relay had
 * published N+1 — and the stream refuses N for ever. Serialized, a row's id is drawn only once the
 * shard's earlier appends committed, so ids commit in order. The same transaction keeps the shard's
 * open places (`shard_places`). `event_key` is unique; rows from before it existed
 * have none, and NULLs never conflict. Relayed rows are kept `retentionMs` (long past any retried
 * append), then pruned.
 */
export class PostgresOutbox implements Outbox {
  readonly durable = true;

  constructor(
    private readonly pool: pg.Pool,
    private readonly retentionMs = OUTBOX_RETENTION_MS,
  ) {}

  /**
   * In chunks of `APPEND_CHUNK`, in order, each a transaction holding the shard's append lock and
   * one statement of column arrays (`unnest`): a row per event, ids given in the events' order, and
   * the shard's open places updated by the rows inserted (the last event of each player in the chunk
   * decides). A chunk that fails leaves the ones before it written; the retry skips them by key.
   */
  async append(key: ShardKey, events: readonly DomainEvent[]): Promise<void> {
    for (let i = 0; i < events.length; i += APPEND_CHUNK) {
      const chunk = events.slice(i, i + APPEND_CHUNK);
      await withClient(this.pool, (client, broke) => this.appendWith(client, broke, key, chunk));
    }
  }

  private async appendWith(
    client: pg.PoolClient,
    broke: (err: Error) => void,
    key: ShardKey,
    chunk: readonly DomainEvent[],
  ): Promise<void> {
    try {
      await client.query('BEGIN');
      await client.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [APPEND_LOCK_CLASS, eventStreamKey(key)]);
      await client.query(
        `WITH added AS (
           INSERT INTO shard_outbox (world, instance, shard, type, player_id, at, event_key, drained, handed_over)
           SELECT $1, $2, $3, e.type, e.player_id, e.at, e.event_key, e.drained, e.handed_over
           FROM unnest($4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::boolean[], $9::boolean[])
             WITH ORDINALITY AS e(type, player_id, at, event_key, drained, handed_over, n)
           ORDER BY e.n
           ON CONFLICT (event_key) DO NOTHING
           RETURNING id, type, player_id
         ), last AS (
           SELECT DISTINCT ON (player_id) player_id, type FROM added ORDER BY player_id, id DESC
         ), freed AS (
           DELETE FROM shard_places p USING last
           WHERE p.world = $1 AND p.instance = $2 AND p.shard = $3 AND p.player_id = last.player_id AND last.type = 'player_left'
         )
         INSERT INTO shard_places (world, instance, shard, player_id)
         SELECT $1, $2, $3, player_id FROM last WHERE type = 'player_joined'
         ON CONFLICT DO NOTHING`,
        [
          worldRef(key.namespace, key.world),
          key.instance,
          key.shard,
          chunk.map((e) => e.type),
          chunk.map((e) => e.playerId),
          chunk.map((e) => new Date(e.at)),
          chunk.map((e) => e.eventKey),
          chunk.map((e) => e.drained === true),
          chunk.map((e) => e.handedOver === true),
        ],
      );
      await client.query('COMMIT');
    } catch (err) {
      // PostgreSQL refused a statement (an error with a SQLSTATE): the connection is sound, roll back
      // and keep it. Anything else (a timeout, a reset) leaves its state unknown: the pool ends it.
      const sound =
        typeof (err as { code?: unknown }).code === 'string' &&
        (await client.query('ROLLBACK').then(
          () => true,
          () => false,
        ));
      if (!sound) broke(err as Error);
      throw err;
    }
  }

  async openPlaces(key: ShardKey): Promise<string[]> {
    const { rows } = await this.pool.query<{ player_id: string }>(
      'SELECT player_id FROM shard_places WHERE world = $1 AND instance = $2 AND shard = $3 ORDER BY taken_at, player_id',
      [worldRef(key.namespace, key.world), key.instance, key.shard],
    );
    return rows.map((r) => r.player_id);
  }

  async leftSince(key: ShardKey, sinceMs: number, players: readonly string[], last = false): Promise<string[]> {
    if (players.length === 0) return [];
    // Each player's events since then, newest first (the index on shard, player and id), the shard's own left out.
    const { rows } = await this.pool.query<{ player_id: string }>(
      last
        ? `SELECT player_id FROM (
             SELECT DISTINCT ON (player_id) player_id, type, handed_over FROM shard_outbox
              WHERE world = $1 AND instance = $2 AND shard = $3 AND player_id = ANY($5::text[]) AND NOT drained
                AND at >= to_timestamp($4::double precision / 1000)
              ORDER BY player_id, id DESC
           ) latest WHERE type = 'player_left' AND NOT handed_over ORDER BY player_id`
        : `SELECT DISTINCT player_id FROM shard_outbox
            WHERE world = $1 AND instance = $2 AND shard = $3 AND player_id = ANY($5::text[]) AND type = 'player_left' AND NOT drained
              AND at >= to_timestamp($4::double precision / 1000)
            ORDER BY player_id`,
      [worldRef(key.namespace, key.world), key.instance, key.shard, sinceMs, players],
    );
    return rows.map((r) => r.player_id);
  }

  async movedOnSince(key: ShardKey, sinceMs: number, players: readonly string[]): Promise<string[]> {
    if (players.length === 0) return [];
    const { rows } = await this.pool.query<{ player_id: string }>(
      `SELECT DISTINCT player_id FROM (
         SELECT DISTINCT ON (player_id, shard) player_id, type FROM shard_outbox
          WHERE world = $1 AND instance = $2 AND shard <> $3 AND player_id = ANY($5::text[])
            AND at >= to_timestamp($4::double precision / 1000)
          ORDER BY player_id, shard, id DESC
       ) latest WHERE type = 'player_joined' ORDER BY player_id`,
      [worldRef(key.namespace, key.world), key.instance, key.shard, sinceMs, players],
    );
    return rows.map((r) => r.player_id);
  }

  async relay(key: ShardKey, sink: EventSink, limit = RELAY_BATCH): Promise<number> {
    return withClient(this.pool, (client, broke) => this.relayWith(client, broke, key, sink, limit));
  }

  private async relayWith(
    client: pg.PoolClient,
    broke: (err: Error) => void,
    key: ShardKey,
    sink: EventSink,
    limit: number,
  ): Promise<number> {
    let publishing = false;
    try {
      await client.query('BEGIN');
      const lock = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2)) AS ok', [
        RELAY_LOCK_CLASS,
        eventStreamKey(key),
      ]);
      if (!lock.rows[0]?.ok) {
        await client.query('ROLLBACK');
        return 0;
      }
      const { rows } = await client.query<{
        id: string;
        type: DomainEvent['type'];
        player_id: string;
        at: Date;
        drained: boolean;
        handed_over: boolean;
      }>(
        `SELECT id, type, player_id, at, drained, handed_over FROM shard_outbox
         WHERE relayed_at IS NULL AND world = $1 AND instance = $2 AND shard = $3 ORDER BY id LIMIT $4`,
        [worldRef(key.namespace, key.world), key.instance, key.shard, limit],
      );
      if (rows.length > 0) {
        publishing = true;
        await sink.publish(
          rows.map((r) => ({
            id: Number(r.id),
            ...key,
            type: r.type,
            playerId: r.player_id,
            at: r.at.getTime(),
            ...(r.drained ? { drained: true } : {}),
            ...(r.handed_over ? { handedOver: true } : {}),
          })),
        );
        publishing = false;
        await client.query('UPDATE shard_outbox SET relayed_at = now() WHERE id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
      }
      await client.query('COMMIT');
      return rows.length;
    } catch (err) {
      // After the sink failed the connection is sound: roll back and keep it. After PostgreSQL failed
      // or timed out its state is unknown, so the pool ends it; the server rolls the transaction back
      // when it sees the end, or after idle_in_transaction_session_timeout when it never does.
      const sound =
        publishing &&
        (await client.query('ROLLBACK').then(
          () => true,
          () => false,
        ));
      if (!sound) broke(err as Error);
      throw err;
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
 * appended event whose key is among them. It holds `maxPending` events not yet relayed at most
 * (Redis down): an append beyond that keeps what fits and rejects with `OutboxFullError`.
 */
export class MemoryOutbox implements Outbox {
  readonly durable = false;
  /** `id` is the event's number in this process, from 1; the relayed id adds `base`. */
  private readonly events: (RelayedEvent & Pick<DomainEvent, 'eventKey'>)[] = [];
  private readonly keys = new Set<string>();
  private nextId = 1;
  private relayed = 0;
  private base: number | undefined;

  constructor(private readonly maxPending = MAX_QUEUED_EVENTS) {}

  async append(key: ShardKey, events: readonly DomainEvent[]): Promise<void> {
    for (const e of events) {
      if (this.keys.has(e.eventKey)) continue;
      if (this.events.length - this.relayed >= this.maxPending) throw new OutboxFullError(this.maxPending);
      this.keys.add(e.eventKey);
      this.events.push({ ...e, ...key, id: this.nextId++ });
    }
  }

  async relay(key: ShardKey, sink: EventSink, limit = RELAY_BATCH): Promise<number> {
    const batch = this.events.slice(this.relayed, this.relayed + limit);
    if (batch.length === 0) return 0;
    this.base ??= await sink.lastId(key);
    const base = this.base;
    await sink.publish(batch.map(({ eventKey: _, ...e }) => ({ ...e, id: base + e.id })));
    this.relayed += batch.length;
    if (this.relayed > 10_000) {
      for (const e of this.events.splice(0, this.relayed)) this.keys.delete(e.eventKey);
      this.relayed = 0;
    }
    return batch.length;
  }

  async pending(_key: ShardKey): Promise<number> {
    return this.events.length - this.relayed;
  }

  /** None from before this process: its events die with it. */
  async openPlaces(_key: ShardKey): Promise<string[]> {
    return [];
  }

  /** From the events it still holds (those of this process: pending, and up to 10,000 relayed). */
  async leftSince(_key: ShardKey, sinceMs: number, players: readonly string[], last = false): Promise<string[]> {
    const wanted = new Set(players);
    const left = new Set<string>();
    for (const e of this.events) {
      if (e.at < sinceMs || !wanted.has(e.playerId) || e.drained) continue;
      if (e.type === 'player_left' && !(last && e.handedOver)) left.add(e.playerId);
      else if (last) left.delete(e.playerId);
    }
    return [...left].sort();
  }

  /** It holds this shard's events only: none of another shard's. */
  async movedOnSince(_key: ShardKey, _sinceMs: number, _players: readonly string[]): Promise<string[]> {
    return [];
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
 * sequence), or the in-process outbox's, which start above `lastId`. So a refused id counts as a
 * duplicate only when the stream's entry under it is the same event; anything else is an
 * `EventIdConflictError`, never a silent drop. The stream keeps about the last `maxLen` entries
 * (`XADD MAXLEN ~`, trimmed by whole nodes, so it may hold a few more): consumers that fall further
 * behind miss the oldest. Trimming keeps the stream's last id, so duplicates are still refused.
 */
export class RedisStreamSink implements EventSink {
  constructor(
    private readonly redis: Redis,
    private readonly maxLen = EVENTS_MAX_LEN,
  ) {
    if (!('aethexPublishEvents' in redis)) redis.defineCommand('aethexPublishEvents', { numberOfKeys: 1, lua: PUBLISH_LUA });
  }

  /** One script call per batch (EVALSHA): one round trip, and the check of a duplicate is atomic with it. */
  async publish(events: readonly RelayedEvent[]): Promise<PublishResult> {
    const first = events[0];
    if (!first) return { added: 0, duplicates: 0 };
    const stream = eventStreamKey(first);
    const args: (string | number)[] = [this.maxLen];
    for (const e of events) {
      if (eventStreamKey(e) !== stream) throw new Error(`one publish takes the events of one shard: ${eventStreamKey(e)} is not ${stream}`);
      args.push(e.id, e.type, e.playerId, String(e.at), eventCause(e));
    }
    try {
      const [added, duplicates] = await (this.redis as Redis & PublishCommand).aethexPublishEvents(stream, ...args);
      return { added, duplicates };
    } catch (err) {
      const conflict = /^AETHEX_EVENT_ID_CONFLICT (\d+) (different|missing)/.exec((err as Error).message);
      if (conflict) throw new EventIdConflictError(stream, Number(conflict[1]), conflict[2] as 'different' | 'missing');
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

/**
 * The embedded sink: events handed to a callback in process, deduplicated by id. It only ever sees
 * the in-process outbox's ids, which start above its last, so an id up to it is a republish.
 */
export class CallbackSink implements EventSink {
  private top = 0;
  constructor(private readonly deliver: (e: RelayedEvent) => void) {}

  async publish(events: readonly RelayedEvent[]): Promise<PublishResult> {
    let added = 0;
    for (const e of events) {
      if (e.id <= this.top) continue;
      this.top = e.id;
      this.deliver(e);
      added++;
    }
    return { added, duplicates: events.length - added };
  }

  async lastId(_key: ShardKey): Promise<number> {
    return this.top;
  }
}

/** The in-process outbox holds as many events not yet relayed as it may. */
export class OutboxFullError extends Error {
  constructor(readonly max: number) {
    super(
      `the in-process outbox already holds ${max} events not yet relayed (persistence.max_queued_events): is Redis (presence.redis_url) reachable?`,
    );
    this.name = 'OutboxFullError';
  }
}

interface PublishCommand {
  aethexPublishEvents(stream: string, ...args: (string | number)[]): Promise<[number, number]>;
}

/**
 * KEYS[1] the stream; ARGV[1] MAXLEN, then id, type, player, at, cause per event. An XADD Redis
 * refuses (the id is not above the stream's last) is a duplicate only when the entry under that id
 * is the same event (type, player and time: entries written before `cause` have none); otherwise
 * the script stops with AETHEX_EVENT_ID_CONFLICT, the events before it added.
 */
const PUBLISH_LUA = `
local added, duplicates = 0, 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i] .. '-0'
  local r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, 'type', ARGV[i + 1], 'player', ARGV[i + 2], 'at', ARGV[i + 3], 'cause', ARGV[i + 4])
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then return redis.error_reply(r.err) end
    local found = redis.call('XRANGE', KEYS[1], id, id)[1]
    if not found then return redis.error_reply('AETHEX_EVENT_ID_CONFLICT ' .. ARGV[i] .. ' missing') end
    local f = found[2]
    if f[2] ~= ARGV[i + 1] or f[4] ~= ARGV[i + 2] or f[6] ~= ARGV[i + 3] then
      return redis.error_reply('AETHEX_EVENT_ID_CONFLICT ' .. ARGV[i] .. ' different')
    end
    duplicates = duplicates + 1
  else
    added = added + 1
  end
end
return {added, duplicates}`;
