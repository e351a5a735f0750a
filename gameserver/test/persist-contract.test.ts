import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, eventStreamKey, freePortBlock, presenceKey, type ShardKey } from '@aethex/runtime';
import { testEnv, uniqueName } from '@aethex/testing';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createPersistenceMetrics } from '../src/metrics.js';
import {
  APPEND_LOCK_CLASS,
  CallbackSink,
  type DomainEvent,
  EventIdConflictError,
  type EventSink,
  eventCause,
  MemoryOutbox,
  type Outbox,
  OutboxFullError,
  PostgresOutbox,
  RELAY_LOCK_CLASS,
  RedisStreamSink,
  type RelayedEvent,
} from '../src/persist/outbox.js';
import { isDataError, ShardPersistence } from '../src/persist/persistence.js';
import { MemoryPresence, type PresenceStore, RedisPresence } from '../src/persist/presence.js';
import { DirectorySnapshotStore, PostgresSnapshotStore, type SnapshotStore, StaleSnapshotError } from '../src/persist/snapshot-store.js';
import { claimShardKey, migrate } from '../src/persist/stores.js';
import { until } from './harness.js';

// The same contract runs against the real servers and against the embedded defaults.
const env = testEnv();
const schema = uniqueName('gs').replaceAll('-', '_');
let pool: pg.Pool;
let redis: Redis;

beforeAll(async () => {
  const admin = new pg.Pool({ connectionString: env.pgUrl, max: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  await admin.end();
  pool = new pg.Pool({ connectionString: env.pgUrl, max: 4, options: `-c search_path=${schema}` });
  await Promise.all([migrate(pool), migrate(pool), migrate(pool)]);
  redis = new Redis(env.redisUrl);
});

afterAll(async () => {
  await pool.query(`DROP SCHEMA ${schema} CASCADE`);
  await pool.end();
  const keys = await redis.keys(`aethex:*${schema}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});

const key = (shard: string, namespace = ''): ShardKey => ({ namespace, world: schema.replaceAll('_', '-'), instance: 0, shard });
const event = (type: DomainEvent['type'], playerId: string, at: number): DomainEvent => ({ type, playerId, at, eventKey: randomUUID() });

describe.each([
  ['PostgreSQL', () => new PostgresSnapshotStore(pool) as SnapshotStore],
  ['directory', () => new DirectorySnapshotStore(mkdtempSync(join(tmpdir(), 'aethex-snap-'))) as SnapshotStore],
])('snapshot store: %s', (_name, make) => {
  test('saves, loads, keeps the newest tick, removes', async () => {
    const store = make();
    const k = key('snap-0');
    expect(await store.load(k)).toBeUndefined();
    await store.save(k, { tick: 10, state: new Uint8Array([1, 2, 3]) });
    const before = Date.now();
    await store.save(k, { tick: 20, state: new Uint8Array([4, 5]) });
    // When the store took it (a restored shard's players stood still since): within this test's clock.
    const savedAtMs = (await store.load(k))?.savedAtMs as number;
    expect(savedAtMs).toBeGreaterThanOrEqual(before - 1000);
    expect(savedAtMs).toBeLessThanOrEqual(Date.now() + 1000);
    // A delayed, older write never rolls the state back, and is refused, not taken for a save.
    await expect(store.save(k, { tick: 15, state: new Uint8Array([9]) })).rejects.toThrow(new StaleSnapshotError(15, 20));
    expect(await store.load(k)).toMatchObject({ tick: 20, state: new Uint8Array([4, 5]) });
    await store.save(k, { tick: 20, state: new Uint8Array([6]) });
    expect(await store.load(k)).toMatchObject({ tick: 20, state: new Uint8Array([6]) });
    expect(await store.load(key('snap-1'))).toBeUndefined();
    await store.remove(k);
    expect(await store.load(k)).toBeUndefined();
  });

  test('the same world, instance and shard in two namespaces are two snapshots', async () => {
    const store = make();
    const [prod, staging, outside] = [key('snap-ns', 'prod'), key('snap-ns', 'staging'), key('snap-ns')];
    await store.save(prod, { tick: 7, state: new Uint8Array([7]) });
    await store.save(staging, { tick: 3, state: new Uint8Array([3]) });
    expect(await store.load(prod)).toMatchObject({ tick: 7, state: new Uint8Array([7]) });
    expect(await store.load(staging)).toMatchObject({ tick: 3, state: new Uint8Array([3]) });
    expect(await store.load(outside)).toBeUndefined();
    await store.remove(staging);
    expect(await store.load(prod)).toMatchObject({ tick: 7, state: new Uint8Array([7]) });
  });
});

test('snapshot store: PostgreSQL gives the capture time only with the tick it was written with', async () => {
  const store = new PostgresSnapshotStore(pool);
  const k = key('captured');
  await store.save(k, { tick: 10, state: new Uint8Array([1]), capturedAtMs: 1_700_000_000_000 });
  expect(await store.load(k)).toMatchObject({ tick: 10, capturedAtMs: 1_700_000_000_000 });
  // Each save replaces it with its own.
  await store.save(k, { tick: 10, state: new Uint8Array([1]), capturedAtMs: 1_700_000_005_000 });
  expect(await store.load(k)).toMatchObject({ tick: 10, capturedAtMs: 1_700_000_005_000 });
  // A build from before the capture time (a rollback) saves tick and state, and leaves it behind.
  await pool.query('UPDATE shard_snapshots SET tick = 11, state = $2 WHERE shard = $1', [k.shard, Buffer.from([2])]);
  const loaded = await store.load(k);
  expect(loaded).toMatchObject({ tick: 11, state: new Uint8Array([2]) });
  expect(loaded?.capturedAtMs).toBeUndefined();
  await store.remove(k);
});

describe.each([
  [
    'PostgreSQL outbox → Redis stream',
    () => ({
      outbox: new PostgresOutbox(pool) as Outbox,
      sink: new RedisStreamSink(redis) as EventSink,
      read: readStream,
      causes: readCauses,
    }),
  ],
  [
    'in-process outbox → Redis stream',
    () => ({ outbox: new MemoryOutbox() as Outbox, sink: new RedisStreamSink(redis) as EventSink, read: readStream, causes: readCauses }),
  ],
  [
    'in-process outbox → callback',
    () => {
      const seen: RelayedEvent[] = [];
      return {
        outbox: new MemoryOutbox() as Outbox,
        sink: new CallbackSink((e) => seen.push(e)) as EventSink,
        read: async () => seen.map(brief),
        causes: async () => seen.map((e) => `${brief(e)}:${eventCause(e)}`),
      };
    },
  ],
])('outbox: %s', (_name, make) => {
  test('relays every appended event once, in order, even when a relay is repeated', async () => {
    const { outbox, sink, read } = make();
    const k = key(`out-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(k, [event('player_joined', 'a', 1000), event('player_joined', 'b', 1001)]);
    await outbox.append(k, [event('player_left', 'a', 1002)]);
    expect(await outbox.pending(k)).toBe(3);
    expect(await outbox.relay(k, sink)).toBe(3);
    expect(await outbox.relay(k, sink)).toBe(0);
    expect(await outbox.pending(k)).toBe(0);
    expect(await read(k)).toEqual(['player_joined:a', 'player_joined:b', 'player_left:a']);
  });

  test('each relayed event says its cause: the player’s own, a handoff (away or in), or the shard’s release', async () => {
    const { outbox, sink, causes } = make();
    const k = key(`cause-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(k, [
      event('player_joined', 'a', 1000),
      { ...event('player_joined', 'b', 1001), handedOver: true },
      { ...event('player_left', 'a', 1002), handedOver: true },
      { ...event('player_left', 'b', 1003), drained: true },
      event('player_left', 'c', 1004),
    ]);
    await outbox.relay(k, sink);
    expect(await causes(k)).toEqual([
      'player_joined:a:player',
      'player_joined:b:handoff',
      'player_left:a:handoff',
      'player_left:b:shard',
      'player_left:c:player',
    ]);
  });

  test('a publish that happened before a crash is not delivered twice', async () => {
    const { outbox, sink, read } = make();
    const k = key(`dup-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(k, [event('player_joined', 'c', 5)]);
    // The relay published, then "crashed" before marking: publish the same event again.
    let first: readonly RelayedEvent[] = [];
    await outbox.relay(k, {
      publish: async (events) => {
        first = events;
        return { added: events.length, duplicates: 0 };
      },
      lastId: (k) => sink.lastId(k),
    });
    expect(await sink.publish(first)).toEqual({ added: 1, duplicates: 0 });
    expect(await sink.publish(first)).toEqual({ added: 0, duplicates: 1 });
    expect(await read(k)).toEqual(['player_joined:c']);
  });

  test('leftSince: of the players asked about, those with a player_left at or after the time, relayed or not', async () => {
    const { outbox, sink } = make();
    const k = key(`left-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(k, [event('player_joined', 'ann', 1000), event('player_joined', 'bob', 1100), event('player_left', 'ann', 2000)]);
    await outbox.relay(k, sink);
    await outbox.append(k, [event('player_left', 'bob', 3000), event('player_joined', 'cat', 3100)]);
    expect(await outbox.leftSince(k, 2000, ['ann', 'bob', 'cat', 'dan'])).toEqual(['ann', 'bob']);
    expect(await outbox.leftSince(k, 2001, ['ann', 'bob', 'cat'])).toEqual(['bob']);
    expect(await outbox.leftSince(k, 2000, ['cat'])).toEqual([]);
    expect(await outbox.leftSince(k, 0, [])).toEqual([]);
  });

  test('leftSince last: only players whose last own event since the time is leaving the game, not a handoff away; a release the shard made never counts', async () => {
    const { outbox } = make();
    const k = key(`last-${Math.random().toString(36).slice(2, 8)}`);
    const handoff = (playerId: string, at: number): DomainEvent => ({ ...event('player_left', playerId, at), handedOver: true });
    await outbox.append(k, [
      // ann quit, came back, walked on to a neighbour; bob quit; cat walked away and came back.
      event('player_joined', 'ann', 1000),
      event('player_left', 'ann', 2000),
      event('player_joined', 'ann', 2500),
      handoff('ann', 2600),
      event('player_joined', 'bob', 1000),
      event('player_left', 'bob', 2100),
      event('player_joined', 'cat', 1500),
      handoff('cat', 2200),
      event('player_joined', 'cat', 2300),
      // dan's leave was the shard's release; eve walked away; fay joined and quit.
      event('player_joined', 'dan', 2300),
      { ...event('player_left', 'dan', 2400), drained: true },
      handoff('eve', 2050),
      event('player_joined', 'fay', 2100),
      event('player_left', 'fay', 2200),
    ]);
    const everyone = ['ann', 'bob', 'cat', 'dan', 'eve', 'fay'];
    expect(await outbox.leftSince(k, 2000, everyone, true)).toEqual(['bob', 'fay']);
    // Without `last`, any leave of theirs since then: a handoff away too.
    expect(await outbox.leftSince(k, 2000, everyone)).toEqual(['ann', 'bob', 'cat', 'eve', 'fay']);
  });

  test('movedOnSince: of the players asked about, those with an event on another shard of the instance at or after the time, the last there a player_joined (PostgreSQL; in process, none)', async () => {
    const { outbox } = make();
    // A world of its own: the other tests' shards are this world's too.
    const here = { ...key('here'), world: `moved-${Math.random().toString(36).slice(2, 8)}` };
    const there = { ...here, shard: 'elsewhere' };
    const otherInstance = { ...here, shard: 'elsewhere', instance: here.instance + 1 };
    await outbox.append(here, [event('player_joined', 'ann', 1000), event('player_left', 'cat', 3000)]);
    // ann walked on to another shard after 2000, bob joined there before it; dan's event there is
    // that shard's release, and so is the last of fay's (it restarted without her entity); eve's
    // is in another instance of the world. gil walked there and back here (a handoff away is his
    // last event there); hal joined there afresh and left it: neither has an entity there.
    await outbox.append(there, [
      { ...event('player_joined', 'ann', 2500), handedOver: true },
      event('player_joined', 'bob', 1500),
      { ...event('player_left', 'dan', 2600), drained: true },
      { ...event('player_joined', 'fay', 2600), handedOver: true },
      { ...event('player_left', 'fay', 2700), drained: true },
      { ...event('player_joined', 'gil', 2500), handedOver: true },
      { ...event('player_left', 'gil', 2800), handedOver: true },
      event('player_joined', 'hal', 2500),
      event('player_left', 'hal', 2900),
    ]);
    await outbox.append(otherInstance, [event('player_joined', 'eve', 2700)]);
    const everyone = ['ann', 'bob', 'cat', 'dan', 'eve', 'fay', 'gil', 'hal'];
    expect(await outbox.movedOnSince(here, 2000, everyone)).toEqual(outbox.durable ? ['ann'] : []);
    expect(await outbox.movedOnSince(here, 1000, everyone)).toEqual(outbox.durable ? ['ann', 'bob'] : []);
    expect(await outbox.movedOnSince(here, 2501, everyone)).toEqual([]);
    expect(await outbox.movedOnSince(here, 0, [])).toEqual([]);
  });

  test('an append repeated with the same events, before or after the relay, stores each once', async () => {
    const { outbox, sink, read } = make();
    const k = key(`again-${Math.random().toString(36).slice(2, 8)}`);
    const batch = [event('player_joined', 'a', 1000), event('player_joined', 'b', 1001)];
    await outbox.append(k, batch);
    // The retry of an append that was written but reported an error, with one event queued since.
    await outbox.append(k, [...batch, event('player_left', 'a', 1002)]);
    expect(await outbox.pending(k)).toBe(3);
    expect(await outbox.relay(k, sink)).toBe(3);
    await outbox.append(k, batch);
    expect(await outbox.pending(k)).toBe(0);
    expect(await outbox.relay(k, sink)).toBe(0);
    expect(await read(k)).toEqual(['player_joined:a', 'player_joined:b', 'player_left:a']);
  });
});

describe('outbox: in-process outbox → Redis stream, across a restart', () => {
  test("a restarted shard's events reach the stream after those of its previous process, each once", async () => {
    const k = key(`restart-${Math.random().toString(36).slice(2, 8)}`);
    const joined = (players: string[]) => players.map((p) => event('player_joined', p, 1000));
    // Two outbox and sink pairs, one after the other, stand in for two processes of the same shard.
    const first = { outbox: new MemoryOutbox(), sink: new RedisStreamSink(redis) };
    await first.outbox.append(k, joined(['a', 'b', 'c']));
    expect(await first.outbox.relay(k, first.sink)).toBe(3);

    const second = { outbox: new MemoryOutbox(), sink: new RedisStreamSink(redis) };
    await second.outbox.append(k, joined(['d', 'e']));
    // The reply to the first publish is lost: Redis took the events, the relay saw an error; the
    // retry finds them in the stream, the same events, and takes them for duplicates.
    let lost = false;
    const flaky: EventSink = {
      publish: async (e) => {
        const added = await second.sink.publish(e);
        if (!lost) {
          lost = true;
          throw new Error('connection reset');
        }
        return added;
      },
      lastId: (k) => second.sink.lastId(k),
    };
    await expect(second.outbox.relay(k, flaky)).rejects.toThrow('connection reset');
    expect(await second.outbox.relay(k, flaky)).toBe(2);
    expect(await second.outbox.pending(k)).toBe(0);
    expect(await readStream(k)).toEqual(['a', 'b', 'c', 'd', 'e'].map((p) => `player_joined:${p}`));
  });
});

/**
 * The outbox's first append really commits and then reports an error, as a connection reset or a
 * timeout racing the commit does; later appends pass through.
 */
function committedThenLost(outbox: Outbox): Outbox & { failed: boolean } {
  return {
    durable: outbox.durable,
    failed: false,
    async append(k, events) {
      await outbox.append(k, events);
      if (!this.failed) {
        this.failed = true;
        throw new Error('Connection terminated unexpectedly');
      }
    },
    relay: (k, sink, limit) => outbox.relay(k, sink, limit),
    pending: (k) => outbox.pending(k),
    prune: (k, limit) => outbox.prune(k, limit),
    openPlaces: (k) => outbox.openPlaces(k),
    leftSince: (k, since, players, last) => outbox.leftSince(k, since, players, last),
    movedOnSince: (k, since, players) => outbox.movedOnSince(k, since, players),
  };
}

describe.each([
  ['PostgreSQL', () => new PostgresOutbox(pool) as Outbox],
  ['in-process', () => new MemoryOutbox() as Outbox],
])('shard persistence with the %s outbox', (_name, make) => {
  /** A shard's persistence over `outbox`, on the test's PostgreSQL and Redis. */
  const persistenceOf = (k: ShardKey, outbox: Outbox) =>
    new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new RedisStreamSink(redis),
      presence: new RedisPresence(redis),
      log: createLogger('persist-contract-test', 'silent'),
      presenceTtlMs: 60_000,
    });

  test('an append that committed but reported an error is retried without delivering its events twice', async () => {
    const k = key(`ambiguous-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = committedThenLost(make());
    const persistence = persistenceOf(k, outbox);
    const [a, b] = [`${schema}-a`, `${schema}-b`];
    persistence.playerJoined(a, 1000);
    persistence.playerJoined(b, 1001);
    await persistence.flush();
    expect(outbox.failed).toBe(true);
    persistence.playerLeft(a, 1002);
    // The retry appends the two events that were kept and the new one.
    await persistence.flush();
    expect(await outbox.pending(k)).toBe(0);
    expect(await readStream(k)).toEqual([`player_joined:${a}`, `player_joined:${b}`, `player_left:${a}`]);
  });

  test("a drain's freed places are not departures: a restore keeps those players, and leaves out one who left", async () => {
    const k = key(`drained-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = make();
    const first = persistenceOf(k, outbox);
    const [stays, goes] = [`${schema}-stays`, `${schema}-goes`];
    first.playerJoined(stays, 1000);
    first.playerJoined(goes, 1001);
    // The snapshot is stored at 2000; one player leaves after it, then the shard drains — its
    // clock ahead of the store's, or its final snapshot failing, puts the drain's events after it too.
    first.playerLeft(goes, 2500);
    first.releasingForDrain();
    first.playerLeft(stays, 3000);
    await first.flush();
    const second = persistenceOf(k, outbox);
    await second.loadOpenPlaces();
    expect([...(await second.departedSince(2000, [stays, goes]))]).toEqual([goes]);
  });

  test('a player whose place is open from before a crash, arriving by a handoff, gets the departure the crash lost and a new arrival; one restored or brought back by a copy takes the place silently', async () => {
    const k = key(`reopen-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = make();
    const first = persistenceOf(k, outbox);
    const [walker, restored, copied] = [`${schema}-walker`, `${schema}-restored`, `${schema}-copied`];
    first.playerJoined(walker, 1000, true);
    first.playerJoined(restored, 1001);
    first.playerJoined(copied, 1002, true);
    await first.flush();
    // The walker walks on to a neighbour, and the shard is killed before that player_left is appended.
    const second = persistenceOf(k, outbox);
    await second.loadOpenPlaces();
    second.playerJoined(restored, 2000); // from the snapshot
    second.playerJoined(copied, 2001); // a neighbour's custody copy handed back (restoreWaiting)
    second.playerJoined(walker, 2002, true); // back from the neighbour before the places settled
    second.placesRestored();
    await second.flush();
    const before = [`player_joined:${walker}:handoff`, `player_joined:${restored}:player`, `player_joined:${copied}:handoff`];
    expect(await readCauses(k)).toEqual(
      outbox.durable
        ? [...before, `player_left:${walker}:handoff`, `player_joined:${walker}:handoff`]
        : // The in-process outbox keeps no places across processes: every place taken is a new one.
          [...before, `player_joined:${restored}:player`, `player_joined:${copied}:player`, `player_joined:${walker}:handoff`],
    );
    // The walker's departure and arrival in one append leave the place open: all three hold theirs.
    expect((await outbox.openPlaces(k)).sort()).toEqual(outbox.durable ? [copied, restored, walker].sort() : []);
  });

  test('a place open from before a restart that no restored player took is freed as the shard’s release, and its presence entry goes at once', async () => {
    const k = key(`stale-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = make();
    const lost = `${schema}-lost`;
    const first = persistenceOf(k, outbox);
    first.playerJoined(lost, 1000);
    await first.flush();
    expect(await redis.get(presenceKey(lost))).not.toBeNull();
    // Killed before a snapshot held them: the next process restores nobody.
    const second = persistenceOf(k, outbox);
    await second.loadOpenPlaces();
    second.placesRestored();
    await second.flush();
    expect(await readCauses(k)).toEqual(
      outbox.durable ? [`player_joined:${lost}:player`, `player_left:${lost}:shard`] : [`player_joined:${lost}:player`],
    );
    if (outbox.durable) expect(await redis.get(presenceKey(lost))).toBeNull();
    await redis.del(presenceKey(lost));
  });

  test('a player who left after the snapshot and came back before the restart is restored: their place is open again', async () => {
    const k = key(`returned-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = make();
    const [back, goes] = [`${schema}-back`, `${schema}-goes`];
    const first = persistenceOf(k, outbox);
    first.playerJoined(back, 1000);
    first.playerJoined(goes, 1001);
    // The snapshot is captured at 1500; both leave after it, and one comes back.
    first.playerLeft(back, 2000);
    first.playerJoined(back, 3000);
    first.playerLeft(goes, 3100);
    await first.flush();
    const second = persistenceOf(k, outbox);
    await second.loadOpenPlaces();
    // The in-process outbox keeps no places across processes: its leaves are all it knows.
    expect([...(await second.departedSince(1500, [back, goes]))]).toEqual(outbox.durable ? [goes] : [back, goes]);
    await redis.del(presenceKey(back));
  });
});

describe('outbox: a table from before event keys', () => {
  test('migrates, with shards migrating at once, and relays its old rows and new ones, each once', async () => {
    const old = uniqueName('gso').replaceAll('-', '_');
    const oldPool = new pg.Pool({ connectionString: env.pgUrl, max: 4, options: `-c search_path=${old}` });
    try {
      await oldPool.query(`CREATE SCHEMA ${old}`);
      await oldPool.query(`
        CREATE TABLE shard_outbox (
          id bigserial PRIMARY KEY, world text NOT NULL, instance integer NOT NULL, shard text NOT NULL,
          type text NOT NULL, player_id text NOT NULL, at timestamptz NOT NULL, relayed_at timestamptz
        );
        CREATE INDEX shard_outbox_pending ON shard_outbox (id) WHERE relayed_at IS NULL`);
      const k = key(`old-${Math.random().toString(36).slice(2, 8)}`);
      await oldPool.query(
        `INSERT INTO shard_outbox (world, instance, shard, type, player_id, at) VALUES ($1, $2, $3, 'player_joined', 'a', now()), ($1, $2, $3, 'player_joined', 'b', now())`,
        [k.world, k.instance, k.shard],
      );
      await Promise.all([migrate(oldPool), migrate(oldPool), migrate(oldPool)]);
      const outbox = new PostgresOutbox(oldPool);
      const left = event('player_left', 'a', 1002);
      await outbox.append(k, [left]);
      await outbox.append(k, [left]);
      expect(await outbox.pending(k)).toBe(3);
      expect(await outbox.relay(k, new RedisStreamSink(redis))).toBe(3);
      expect(await readStream(k)).toEqual(['player_joined:a', 'player_joined:b', 'player_left:a']);
    } finally {
      await oldPool.query(`DROP SCHEMA IF EXISTS ${old} CASCADE`);
      await oldPool.end();
    }
  });
});

describe('rows from before namespaces', () => {
  // What a build before namespaces wrote, and how it saves (its SQL, verbatim): the world's bare name.
  const oldSave = (shard: string, tick: number) =>
    pool.query(
      `INSERT INTO shard_snapshots (world, instance, shard, tick, state) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (world, instance, shard) DO UPDATE SET tick = EXCLUDED.tick, state = EXCLUDED.state, saved_at = now()
       WHERE shard_snapshots.tick <= EXCLUDED.tick`,
      [key(shard).world, 0, shard, tick, Buffer.from([tick])],
    );
  const hourAgo = Date.now() - 3_600_000;

  test('a shard in a namespace takes its own over on its first start only; old builds keep working beside it', async () => {
    const shard = `ns-${Math.random().toString(36).slice(2, 8)}`;
    const before = key(shard);
    await oldSave(shard, 41);
    await pool.query(
      `INSERT INTO shard_outbox (world, instance, shard, type, player_id, at, relayed_at, event_key) VALUES
         ($1, 0, $2, 'player_joined', 'ann', now(), now() - interval '2 hours', $3), ($1, 0, $2, 'player_left', 'ann', now(), NULL, $4)`,
      [before.world, shard, `${shard}:k1`, `${shard}:k2`],
    );
    const snapshots = new PostgresSnapshotStore(pool);
    const outbox = new PostgresOutbox(pool);
    expect(await snapshots.load(key(shard, 'prod'))).toBeUndefined();

    // The shards of same-named worlds in two namespaces start at the same moment: one takes the rows.
    const [a, b] = await Promise.all([
      claimShardKey(pool, key(shard, 'prod'), hourAgo),
      claimShardKey(pool, key(shard, 'staging'), hourAgo),
    ]);
    expect([a, b].sort((x, y) => y.snapshots - x.snapshots)).toEqual([
      { snapshots: 1, events: 2 },
      { snapshots: 0, events: 0 },
    ]);
    // `prod` from here on is the one that took them.
    const [prod, staging] = a.snapshots === 1 ? [key(shard, 'prod'), key(shard, 'staging')] : [key(shard, 'staging'), key(shard, 'prod')];
    expect(await snapshots.load(prod)).toMatchObject({ tick: 41, state: new Uint8Array([41]) });
    expect(await snapshots.load(before)).toBeUndefined();
    expect(await snapshots.load(staging)).toBeUndefined();
    // The pending event is relayed into the namespaced stream; the relayed one is pruned with the shard's own.
    expect(await outbox.pending(prod)).toBe(1);
    expect(await outbox.relay(prod, new RedisStreamSink(redis))).toBe(1);
    expect(await readStream(prod)).toEqual(['player_left:ann']);
    expect(eventStreamKey(prod)).toBe(`aethex:events:${prod.namespace}/${prod.world}:0:${shard}`);
    expect(await outbox.prune(prod)).toBe(1);
    // A retried append of a taken-over event is still recognised by its key.
    await outbox.append(prod, [{ type: 'player_left', playerId: 'ann', at: 1, eventKey: `${shard}:k2` }]);
    expect(await outbox.pending(prod)).toBe(0);

    // A shard still on the old build (a same-named world mid-upgrade) saves as before. Restarts of
    // either new shard, before their first save or after, take nothing: only a first start does.
    await oldSave(shard, 50);
    expect(await claimShardKey(pool, prod, hourAgo)).toEqual({ snapshots: 0, events: 0 });
    expect(await claimShardKey(pool, staging, hourAgo)).toEqual({ snapshots: 0, events: 0 });
    expect(await snapshots.load(before)).toMatchObject({ tick: 50, state: new Uint8Array([50]) });
    expect(await snapshots.load(prod)).toMatchObject({ tick: 41, state: new Uint8Array([41]) });

    // The same-named world in the other namespace writes and relays apart from it.
    await snapshots.save(staging, { tick: 5, state: new Uint8Array([5]) });
    await outbox.append(staging, [event('player_joined', 'bea', 1)]);
    expect(await outbox.relay(staging, new RedisStreamSink(redis))).toBe(1);
    expect(await readStream(staging)).toEqual(['player_joined:bea']);
    expect(await readStream(prod)).toEqual(['player_left:ann']);
    expect(await snapshots.load(prod)).toMatchObject({ tick: 41, state: new Uint8Array([41]) });
    await redis.del(eventStreamKey(prod), eventStreamKey(staging));
  });

  test('never taken: rows older than the world (a deleted world’s), or those of a live shard outside Kubernetes', async () => {
    const shard = `nt-${Math.random().toString(36).slice(2, 8)}`;
    await oldSave(shard, 7);
    // A world created after the rows were written inherits nothing of the world they belonged to.
    expect(await claimShardKey(pool, key(shard, 'prod'), Date.now() + 60_000)).toEqual({ snapshots: 0, events: 0 });
    // A shard of this build outside Kubernetes, with the same names in the same database, registers
    // the bare key when it starts: its rows are live, and no shard in a namespace takes them.
    expect(await claimShardKey(pool, key(shard))).toEqual({ snapshots: 0, events: 0 });
    expect(await claimShardKey(pool, key(shard, 'qa'), hourAgo)).toEqual({ snapshots: 0, events: 0 });
    expect(await new PostgresSnapshotStore(pool).load(key(shard))).toMatchObject({ tick: 7, state: new Uint8Array([7]) });
  });
});

describe('outbox and stream: neither grows for ever', () => {
  test('relayed rows past the retention are pruned by the shard, pending and recent ones kept; a retried append within it is still skipped', async () => {
    const k = key(`prune-${Math.random().toString(36).slice(2, 8)}`);
    const other = key(`prune-other-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = new PostgresOutbox(pool, 60_000);
    const sink = new RedisStreamSink(redis);
    const [ann, bob, cat] = [event('player_joined', 'ann', 1), event('player_joined', 'bob', 2), event('player_joined', 'cat', 3)];
    await outbox.append(k, [ann, bob, cat]);
    await outbox.append(other, [event('player_joined', 'zoe', 1)]);
    expect(await outbox.relay(k, sink)).toBe(3);
    expect(await outbox.relay(other, sink)).toBe(1);
    // ann and bob were relayed two minutes ago, cat just now; the other shard's row is old too.
    await pool.query(`UPDATE shard_outbox SET relayed_at = now() - interval '2 minutes' WHERE event_key = ANY($1)`, [
      [ann.eventKey, bob.eventKey],
    ]);
    await pool.query(`UPDATE shard_outbox SET relayed_at = now() - interval '2 minutes' WHERE shard = $1`, [other.shard]);
    const rows = async (shard: string) =>
      (await pool.query<{ player_id: string }>('SELECT player_id FROM shard_outbox WHERE shard = $1 ORDER BY id', [shard])).rows.map(
        (r) => r.player_id,
      );

    // The shard prunes on its own timer (here every 50 ms) while Redis is down (nothing listens
    // where its sink connects): dan's event, old and never relayed, stays; only the shard's rows
    // relayed over a minute ago go.
    const down = new Redis(`redis://127.0.0.1:${await closedPort()}`, { maxRetriesPerRequest: 0, lazyConnect: true });
    down.on('error', () => undefined);
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new RedisStreamSink(down),
      presence: new MemoryPresence(),
      log: createLogger('persist-contract-test', 'silent'),
      presenceTtlMs: 60_000,
      pruneIntervalMs: 50,
    });
    let left: string[];
    try {
      persistence.playerJoined('dan', Date.now() - 86_400_000);
      await persistence.flush();
      persistence.start();
      left = await rows(k.shard);
      for (let i = 0; i < 200 && left.length > 2; i++) {
        await new Promise((r) => setTimeout(r, 25));
        left = await rows(k.shard);
      }
      await persistence.drain(1, new Uint8Array([1]));
    } finally {
      down.disconnect();
    }
    expect(left).toEqual(['cat', 'dan']);
    expect(await outbox.pending(k)).toBe(1);
    expect(await rows(other.shard)).toEqual(['zoe']);
    // cat, relayed within the retention, is still recognised by a retried append.
    await outbox.append(k, [cat]);
    expect(await rows(k.shard)).toEqual(['cat', 'dan']);
    // Batches are bounded.
    expect(await outbox.prune(other, 1)).toBe(1);
    expect(await outbox.prune(other, 1)).toBe(0);
  });

  test('a prune forgets at most its limit, the longest relayed first; the shard prunes batch after batch until one is short', async () => {
    const outbox = new PostgresOutbox(pool, 60_000);
    const rows = async (shard: string) =>
      (await pool.query<{ player_id: string }>('SELECT player_id FROM shard_outbox WHERE shard = $1 ORDER BY id', [shard])).rows.map(
        (r) => r.player_id,
      );
    // Four relayed past the retention, relayed 5, 4, 3 and 2 minutes ago (not in id order), one just now.
    const k = key(`prune-limit-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(
      k,
      ['a', 'b', 'c', 'd', 'e'].map((p, i) => event('player_joined', p, i)),
    );
    expect(await outbox.relay(k, new CallbackSink(() => undefined))).toBe(5);
    await pool.query(
      `UPDATE shard_outbox SET relayed_at = now() - make_interval(mins => (ARRAY[3, 5, 2, 4])[array_position(ARRAY['a', 'b', 'c', 'd'], player_id)])
        WHERE shard = $1 AND player_id <> 'e'`,
      [k.shard],
    );
    expect(await outbox.prune(k, 2)).toBe(2);
    expect(await rows(k.shard)).toEqual(['a', 'c', 'e']);
    expect(await outbox.prune(k, 2)).toBe(2);
    expect(await rows(k.shard)).toEqual(['e']);
    expect(await outbox.prune(k, 2)).toBe(0);

    // A backlog of 10,001: the shard's first prune takes batches of 5,000 until one is short, all in one run.
    expect(await pruneBacklog(outbox, 10_001)).toEqual({ runs: [10_001], left: 0 });
  });

  test('a prune run stops after its batches, and the next run goes on where it stopped', async () => {
    // 3 batches of 4 a run: 12, 12, then the last 1 (a run that prunes nothing logs nothing).
    const outbox = new PostgresOutbox(pool, 60_000);
    expect(await pruneBacklog(outbox, 25, { pruneBatch: 4, pruneBatchesPerRun: 3 })).toEqual({ runs: [12, 12, 1], left: 0 });
  });

  /**
   * A shard's persistence over a backlog of `size` events relayed 2 minutes ago, pruning every
   * 50 ms: the count each prune run logged until the backlog was gone, and the rows left.
   */
  async function pruneBacklog(
    outbox: PostgresOutbox,
    size: number,
    limits: { pruneBatch?: number; pruneBatchesPerRun?: number } = {},
  ): Promise<{ runs: number[]; left: number }> {
    const backlog = key(`prune-backlog-${Math.random().toString(36).slice(2, 8)}`);
    await outbox.append(
      backlog,
      Array.from({ length: size }, (_, i) => event('player_joined', `p${i}`, i)),
    );
    await pool.query(`UPDATE shard_outbox SET relayed_at = now() - interval '2 minutes' WHERE shard = $1`, [backlog.shard]);
    const { lines, log } = recordingLog('debug');
    const persistence = new ShardPersistence({
      key: backlog,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log,
      presenceTtlMs: 60_000,
      pruneIntervalMs: 50,
      ...limits,
    });
    const runs = () => lines.filter((l) => l.msg === 'relayed events pruned from the outbox').map((l) => l.pruned as number);
    persistence.start();
    try {
      await until('the backlog pruned', () => runs().reduce((a, b) => a + b, 0) >= size, 20_000);
    } finally {
      await persistence.drain(1, new Uint8Array([1]));
    }
    const { rows } = await pool.query('SELECT 1 FROM shard_outbox WHERE shard = $1', [backlog.shard]);
    return { runs: runs(), left: rows.length };
  }

  test("the prune's index is the per-shard one, also where an earlier build made it on relayed_at alone", async () => {
    const old = uniqueName('gsi').replaceAll('-', '_');
    const oldPool = new pg.Pool({ connectionString: env.pgUrl, max: 1, options: `-c search_path=${old}` });
    try {
      await oldPool.query(`CREATE SCHEMA ${old}`);
      await migrate(oldPool);
      await oldPool.query('DROP INDEX shard_outbox_relayed_by_shard');
      await oldPool.query('CREATE INDEX shard_outbox_relayed ON shard_outbox (relayed_at) WHERE relayed_at IS NOT NULL');
      await migrate(oldPool);
      const { rows } = await oldPool.query<{ indexname: string }>(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'shard_outbox' AND indexname LIKE 'shard_outbox_relayed%'",
        [old],
      );
      expect(rows.map((r) => r.indexname)).toEqual(['shard_outbox_relayed_by_shard']);
    } finally {
      await oldPool.query(`DROP SCHEMA IF EXISTS ${old} CASCADE`);
      await oldPool.end();
    }
  });

  test('a shard stream keeps about the last max-length entries, and still refuses a replayed id', async () => {
    const k = key(`trim-${Math.random().toString(36).slice(2, 8)}`);
    const sink = new RedisStreamSink(redis, 100);
    const e = (id: number): RelayedEvent => ({ ...k, id, type: 'player_joined', playerId: `p${id}`, at: id });
    for (let id = 1; id <= 1000; id += 100) await sink.publish(Array.from({ length: 100 }, (_, i) => e(id + i)));
    const length = await redis.xlen(eventStreamKey(k));
    expect(length).toBeGreaterThanOrEqual(100);
    expect(length).toBeLessThanOrEqual(200);
    expect((await readStream(k)).at(-1)).toBe('player_joined:p1000');
    expect(await sink.publish([e(1000)])).toEqual({ added: 0, duplicates: 1 });
    expect(await sink.lastId(k)).toBe(1000);
  });
});

function brief(e: { type: string; playerId: string }): string {
  return `${e.type}:${e.playerId}`;
}

async function readStream(k: ShardKey): Promise<string[]> {
  const entries = await redis.xrange(eventStreamKey(k), '-', '+');
  return entries.map(([, fields]) => `${fields[1]}:${fields[3]}`);
}

/** `type:player:cause` of each entry of the shard's stream, by field name. */
async function readCauses(k: ShardKey): Promise<string[]> {
  const entries = await redis.xrange(eventStreamKey(k), '-', '+');
  return entries.map(([, fields]) => {
    const f = new Map<string, string>();
    for (let i = 0; i < fields.length; i += 2) f.set(fields[i] as string, fields[i + 1] as string);
    return `${f.get('type')}:${f.get('player')}:${f.get('cause')}`;
  });
}

describe.each([
  ['Redis', () => new RedisPresence(redis) as PresenceStore],
  ['in-process', () => new MemoryPresence() as PresenceStore],
])('presence: %s', (_name, make) => {
  test('records whereabouts with a TTL; removal only by the shard that holds the player', async () => {
    const p = make();
    const here = key('pres-0');
    const there = key('pres-1');
    const a = `${schema}-alice`;
    const b = `${schema}-bob`;
    await p.set([a, b], here, 60_000);
    expect(await p.get(a)).toEqual(here);
    // Alice moved on to another shard; the old shard's late removal must not erase that.
    await p.set([a], there, 60_000);
    await p.remove([a, b], here);
    expect(await p.get(a)).toEqual(there);
    expect(await p.get(b)).toBeUndefined();
  });

  test('an entry expires when it is not refreshed', async () => {
    const p = make();
    const c = `${schema}-carol`;
    await p.set([c], key('pres-2'), 1000);
    expect(await p.get(c)).toBeDefined();
    await new Promise((r) => setTimeout(r, 1100));
    expect(await p.get(c)).toBeUndefined();
  });
});

/** Where nothing listens: a store that is down (connections refused). */
const closedPort = () => freePortBlock(1);
const silent = createLogger('persist-contract-test', 'silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a store that fails is seen: refused, counted, cleaned up', () => {
  test('a directory save that fails leaves no temporary file and is counted; the drain says why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aethex-snap-'));
    const k = key('blocked');
    // A directory where the snapshot file should be: the temporary file is written, the save fails.
    mkdirSync(join(dir, `${k.world}.0.blocked.snapshot`, 'x'), { recursive: true });
    const metrics = createPersistenceMetrics();
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new DirectorySnapshotStore(dir),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    await expect(persistence.drain(7, new Uint8Array([7]))).rejects.toThrow(/the final snapshot \(tick 7\) was not written: EISDIR/);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect((await metrics.stateSnapshotFailures.get()).values).toMatchObject([{ labels: { reason: 'error' }, value: 1 }]);
  });

  test('a snapshot the store refuses (it holds a higher tick, as after a tick that wrapped) fails the save and the drain, counted as stale', async () => {
    const k = key(`wrap-${Math.random().toString(36).slice(2, 8)}`);
    const store = new PostgresSnapshotStore(pool);
    await store.save(k, { tick: 2 ** 32 + 7, state: new Uint8Array([1]) });
    const metrics = createPersistenceMetrics();
    const persistence = new ShardPersistence({
      key: k,
      snapshots: store,
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    persistence.snapshot(200, new Uint8Array([2]));
    await expect(persistence.drain(207, new Uint8Array([3]))).rejects.toThrow(
      'the final snapshot (tick 207) was not written: snapshot at tick 207 refused: the store holds one at tick 4294967303, newer',
    );
    expect((await metrics.stateSnapshotFailures.get()).values).toMatchObject([{ labels: { reason: 'stale' }, value: 2 }]);
    expect(await store.load(k)).toMatchObject({ tick: 2 ** 32 + 7, state: new Uint8Array([1]) });
  });

  test('a presence removal that fails rejects, as a failed set does', async () => {
    const down = new Redis(`redis://127.0.0.1:${await closedPort()}`, { maxRetriesPerRequest: 0, lazyConnect: true });
    down.on('error', () => undefined);
    try {
      const presence = new RedisPresence(down);
      await expect(presence.set(['ann'], key('pres-down'), 60_000)).rejects.toThrow('presence update failed');
      await expect(presence.remove(['ann'], key('pres-down'))).rejects.toThrow('presence removal failed');
    } finally {
      down.disconnect();
    }
  });

  test('a join whose presence update failed is written by the next flush, not only at the next heartbeat', async () => {
    const ann = `${schema}-retry-ann`;
    const where = key('pres-retry');
    const real = new RedisPresence(redis);
    // Redis fails one update (a blip), then works.
    let failNext = false;
    const presence: PresenceStore = {
      set: async (players, at, ttlMs) => {
        if (!failNext) return real.set(players, at, ttlMs);
        failNext = false;
        throw new Error('presence update failed');
      },
      remove: (players, at) => real.remove(players, at),
      get: (player) => real.get(player),
    };
    const persistence = new ShardPersistence({
      key: where,
      snapshots: new PostgresSnapshotStore(pool),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence,
      log: silent,
      // The heartbeat every 20 s: none falls within the test.
      presenceTtlMs: 60_000,
    });
    try {
      await persistence.flush();
      persistence.playerJoined(ann);
      failNext = true;
      await persistence.flush();
      expect(await real.get(ann)).toBeUndefined();
      await persistence.flush();
      expect(await real.get(ann)).toEqual(where);
    } finally {
      await redis.del(presenceKey(ann));
    }
  });

  test('a player who leaves and comes back between two flushes keeps their presence entry', async () => {
    const ann = `${schema}-back-ann`;
    const where = key('pres-back');
    const presence = new RedisPresence(redis);
    const persistence = new ShardPersistence({
      key: where,
      snapshots: new PostgresSnapshotStore(pool),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence,
      log: silent,
      presenceTtlMs: 60_000,
    });
    try {
      persistence.playerJoined(ann);
      await persistence.flush();
      persistence.playerLeft(ann);
      persistence.playerJoined(ann);
      await persistence.flush();
      expect(await presence.get(ann)).toEqual(where);
    } finally {
      await redis.del(presenceKey(ann));
    }
  });

  test('presence removals that keep failing are retried until the entries have expired (presence.ttl_ms after leaving), then forgotten', async () => {
    const down = new Redis(`redis://127.0.0.1:${await closedPort()}`, { maxRetriesPerRequest: 0, lazyConnect: true });
    down.on('error', () => undefined);
    // Players come and go through a Redis outage; what the drain reports still to remove, with the
    // shard's clock at `leftFor` ms after they left.
    const notRemoved = async (leftFor: number) => {
      const lines: { msg: string; players?: number }[] = [];
      let clock = 0;
      const persistence = new ShardPersistence({
        key: key(`pres-expiry-${leftFor}`),
        snapshots: new PostgresSnapshotStore(pool),
        outbox: new MemoryOutbox(),
        sink: new CallbackSink(() => undefined),
        presence: new RedisPresence(down),
        log: createLogger('persist-contract-test', 'warn', { write: (l: string) => void lines.push(JSON.parse(l)) }),
        presenceTtlMs: 1000,
        now: () => clock,
      });
      for (let i = 0; i < 50; i++) {
        persistence.playerJoined(`p${i}`);
        persistence.playerLeft(`p${i}`);
      }
      await persistence.flush();
      clock = leftFor;
      await persistence.flush();
      await persistence.drain(1, new Uint8Array([1])).catch(() => undefined);
      return lines.find((l) => l.msg.startsWith('presence of leaving players not removed'))?.players ?? 0;
    };
    try {
      expect(await notRemoved(999)).toBe(50);
      expect(await notRemoved(1000)).toBe(0);
    } finally {
      down.disconnect();
    }
  });
});

describe('outbox: limits', () => {
  test('one append of more events than PostgreSQL takes parameters for is written in order; its retry adds nothing twice', async () => {
    const k = key(`many-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = new PostgresOutbox(pool);
    // 7 parameters an event once made 9,363 events the most one INSERT could take.
    const events = Array.from({ length: 12_000 }, (_, i) => event(i % 2 ? 'player_left' : 'player_joined', `p${i}`, 1000 + i));
    await outbox.append(k, events);
    await outbox.append(k, [...events, event('player_joined', 'last', 99_999)]);
    const { rows } = await pool.query<{ player_id: string }>('SELECT player_id FROM shard_outbox WHERE shard = $1 ORDER BY id', [k.shard]);
    expect(rows.map((r) => r.player_id)).toEqual([...events.map((e) => e.playerId), 'last']);
  });

  test('the in-process outbox holds a bounded number of events not yet relayed; relaying makes room', async () => {
    const k = key('bounded');
    const outbox = new MemoryOutbox(5);
    const events = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((p) => event('player_joined', p, 1));
    await expect(outbox.append(k, events)).rejects.toThrow(OutboxFullError);
    expect(await outbox.pending(k)).toBe(5);
    const seen: RelayedEvent[] = [];
    expect(await outbox.relay(k, new CallbackSink((e) => seen.push(e)))).toBe(5);
    // The retry skips the five it took by key.
    await outbox.append(k, events);
    expect(await outbox.relay(k, new CallbackSink((e) => seen.push(e)))).toBe(2);
    expect(seen.map((e) => e.playerId)).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
  });

  test('a relay of a shard whose relay lock another process holds relays nothing, publishes nothing, and the pending events are still counted', async () => {
    const k = key(`relay-held-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = new PostgresOutbox(pool);
    await outbox.append(k, [event('player_joined', 'ann', 1000)]);
    const published: RelayedEvent[] = [];
    const sink = new CallbackSink((e) => published.push(e));
    const metrics = createPersistenceMetrics();
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink,
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    const other = await pool.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [RELAY_LOCK_CLASS, eventStreamKey(k)]);
    try {
      expect(await outbox.relay(k, sink)).toBe(0);
      expect(published).toEqual([]);
      // A flush meanwhile appends, relays nothing, and counts what waits.
      persistence.playerJoined('bob', 1001);
      await persistence.flush();
      expect(published).toEqual([]);
      expect((await metrics.outboxPending.get()).values[0]?.value).toBe(2);
    } finally {
      await other.query('ROLLBACK');
      other.release();
    }
    await persistence.flush();
    expect(published.map((e) => e.playerId)).toEqual(['ann', 'bob']);
    expect((await metrics.outboxPending.get()).values[0]?.value).toBe(0);
  });

  test('dropping events is logged once per run of drops, and once when there is room again', async () => {
    const { lines, log } = recordingLog();
    const persistence = new ShardPersistence({
      key: key('drop-runs'),
      snapshots: new DirectorySnapshotStore(mkdtempSync(join(tmpdir(), 'aethex-snap-'))),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log,
      presenceTtlMs: 60_000,
      maxQueuedEvents: 1,
    });
    const drops = () =>
      lines.filter((l) => l.msg.startsWith('domain events are being dropped') || l.msg.startsWith('the outbox queue has room'));
    // Two runs of drops, the queue emptied by a flush after each.
    for (const run of [1, 2]) {
      for (const p of ['a', 'b', 'c']) persistence.playerJoined(`${p}${run}`);
      await persistence.flush();
    }
    persistence.playerJoined('d');
    expect(drops().map((l) => [l.msg.split(':')[0], l.dropped])).toEqual([
      ['domain events are being dropped', undefined],
      ['the outbox queue has room again; domain events were dropped meanwhile', 2],
      ['domain events are being dropped', undefined],
      ['the outbox queue has room again; domain events were dropped meanwhile', 2],
    ]);
  });

  test('a drain with events the in-process outbox could not relay says they are lost with the process', async () => {
    const down = new Redis(`redis://127.0.0.1:${await closedPort()}`, { maxRetriesPerRequest: 0, lazyConnect: true });
    down.on('error', () => undefined);
    const { lines, log } = recordingLog();
    const persistence = new ShardPersistence({
      key: key('lost-in-process'),
      snapshots: new DirectorySnapshotStore(mkdtempSync(join(tmpdir(), 'aethex-snap-'))),
      outbox: new MemoryOutbox(),
      sink: new RedisStreamSink(down),
      presence: new MemoryPresence(),
      log,
      presenceTtlMs: 60_000,
    });
    try {
      persistence.playerJoined('ann');
      persistence.playerLeft('ann');
      await persistence.drain(1, new Uint8Array([1]));
      expect(lines.find((l) => l.msg === 'domain events not relayed are lost with the in-process outbox')).toMatchObject({
        level: 50,
        events: 2,
      });
    } finally {
      down.disconnect();
    }
  });

  test('a flush relays a backlog in as many batches as it takes, up to relayPerFlush (5,000 by default)', async () => {
    const seen: RelayedEvent[] = [];
    const persistence = new ShardPersistence({
      key: key('relay-batches'),
      snapshots: new DirectorySnapshotStore(mkdtempSync(join(tmpdir(), 'aethex-snap-'))),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink((e) => seen.push(e)),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
    });
    for (let i = 0; i < 350; i++) persistence.playerJoined(`p${i}`);
    await persistence.flush();
    expect(seen).toHaveLength(350);
  });

  test('a snapshot the store took is the metrics’ last saved tick', async () => {
    const metrics = createPersistenceMetrics();
    const persistence = new ShardPersistence({
      key: key('saved-tick'),
      snapshots: new DirectorySnapshotStore(mkdtempSync(join(tmpdir(), 'aethex-snap-'))),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    const seq = persistence.snapshot(7, new Uint8Array([7]));
    await until('the snapshot saved', () => persistence.savedThrough >= seq);
    expect((await metrics.stateSnapshotLastTick.get()).values[0]?.value).toBe(7);
  });

  test('a drain whose outbox append has no answer in time fails naming those events, not exit 0 as if appended', async () => {
    const k = key('append-hangs');
    // Another process (an overlapping pod) holds the shard's append lock: the append waits on it.
    const other = await pool.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [APPEND_LOCK_CLASS, eventStreamKey(k)]);
    try {
      const persistence = new ShardPersistence({
        key: k,
        snapshots: new PostgresSnapshotStore(pool),
        outbox: new PostgresOutbox(pool),
        sink: new CallbackSink(() => undefined),
        presence: new MemoryPresence(),
        log: silent,
        presenceTtlMs: 60_000,
        metrics: createPersistenceMetrics(),
      });
      persistence.playerJoined('ann');
      persistence.playerLeft('bob');
      await expect(persistence.drain(1, new Uint8Array([1]), performance.now() + 500)).rejects.toThrow(
        '2 domain events could not be appended to the outbox: no answer within the drain (ops.drain_timeout_ms)',
      );
    } finally {
      await other.query('ROLLBACK');
      other.release();
    }
  });

  test('events queued while the outbox fails are bounded: later ones are dropped and counted', async () => {
    const down = new pg.Pool({
      connectionString: `postgres://postgres@127.0.0.1:${await closedPort()}/postgres`,
      connectionTimeoutMillis: 1000,
    });
    const metrics = createPersistenceMetrics();
    const persistence = new ShardPersistence({
      key: key('queue-bound'),
      snapshots: new PostgresSnapshotStore(pool),
      outbox: new PostgresOutbox(down),
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      maxQueuedEvents: 3,
      metrics,
    });
    for (const p of ['a', 'b', 'c', 'd', 'e']) persistence.playerJoined(p);
    await persistence.flush();
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(2);
    expect((await metrics.outboxQueued.get()).values[0]?.value).toBe(3);
    expect((await metrics.outboxAppendFailures.get()).values[0]?.value).toBe(1);
    // Events of an append under way still count: joins meanwhile do not make the queue grow past it.
    const flushing = persistence.flush();
    for (const p of ['f', 'g']) persistence.playerJoined(p);
    await flushing;
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(4);
    expect((await metrics.outboxQueued.get()).values[0]?.value).toBe(3);
    await expect(persistence.drain(1, new Uint8Array([1]))).rejects.toThrow('3 domain events could not be appended to the outbox');
    await down.end();
  });
});

describe('outbox: ids the stream already holds', () => {
  test('a shard moved from the in-process outbox to PostgreSQL: its events are refused loudly, kept pending, never dropped as duplicates', async () => {
    const fresh = uniqueName('gsd').replaceAll('-', '_');
    const freshPool = new pg.Pool({ connectionString: env.pgUrl, max: 2, options: `-c search_path=${fresh}` });
    const k = key(`moved-${Math.random().toString(36).slice(2, 8)}`);
    try {
      await freshPool.query(`CREATE SCHEMA ${fresh}`);
      await migrate(freshPool);
      const sink = new RedisStreamSink(redis);
      const embedded = new MemoryOutbox();
      await embedded.append(
        k,
        ['a', 'b', 'c', 'd', 'e'].map((p) => event('player_joined', p, 1)),
      );
      expect(await embedded.relay(k, sink)).toBe(5);
      // PostgreSQL's sequence starts at 1, below the stream's 5.
      const outbox = new PostgresOutbox(freshPool);
      await outbox.append(
        k,
        ['f', 'g'].map((p) => event('player_joined', p, 2)),
      );
      const refused = outbox.relay(k, sink);
      await expect(refused).rejects.toThrow(EventIdConflictError);
      await expect(refused).rejects.toThrow(`stream ${eventStreamKey(k)} already has id 1 for a different event`);
      expect(await outbox.pending(k)).toBe(2);
      // A shard's flush meeting it counts it as an id conflict, and says so.
      const metrics = createPersistenceMetrics();
      const { lines, log } = recordingLog();
      await new ShardPersistence({
        key: k,
        snapshots: new PostgresSnapshotStore(freshPool),
        outbox,
        sink,
        presence: new MemoryPresence(),
        log,
        presenceTtlMs: 60_000,
        metrics,
      }).flush();
      expect((await metrics.outboxRelayFailures.get()).values).toMatchObject([{ labels: { reason: 'id_conflict' }, value: 1 }]);
      expect(lines.map((l) => l.msg)).toContain(
        'outbox relay refused: the stream holds other events under these ids; nothing more is relayed until fixed',
      );
      expect(await readStream(k)).toEqual(['a', 'b', 'c', 'd', 'e'].map((p) => `player_joined:${p}`));
      // What docs/gameserver.md says to do ("When a store fails"): the sequence moved above the
      // stream's last id, and the shard's pending rows given new ids from it, in their order.
      await freshPool.query("SELECT setval('shard_outbox_id_seq', greatest($1, (SELECT last_value FROM shard_outbox_id_seq)))", [
        await sink.lastId(k),
      ]);
      await freshPool.query(
        `WITH p AS MATERIALIZED (SELECT id FROM shard_outbox WHERE relayed_at IS NULL AND world = $1 AND instance = $2 AND shard = $3 ORDER BY id),
              n AS MATERIALIZED (SELECT id AS old, nextval('shard_outbox_id_seq') AS id FROM p)
         UPDATE shard_outbox o SET id = n.id FROM n WHERE o.id = n.old`,
        [k.world, k.instance, k.shard],
      );
      expect(await outbox.relay(k, sink)).toBe(2);
      expect(await readStream(k)).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((p) => `player_joined:${p}`));
    } finally {
      await freshPool.query(`DROP SCHEMA IF EXISTS ${fresh} CASCADE`);
      await freshPool.end();
      await redis.del(eventStreamKey(k));
    }
  });

  test('an id the stream holds for the same player and type at another time is a different event, not a duplicate', async () => {
    const k = key(`retimed-${Math.random().toString(36).slice(2, 8)}`);
    const sink = new RedisStreamSink(redis);
    const relayed = (at: number): RelayedEvent => ({ ...k, id: 1, type: 'player_joined', playerId: 'ann', at });
    try {
      expect(await sink.publish([relayed(1000)])).toEqual({ added: 1, duplicates: 0 });
      expect(await sink.publish([relayed(1000)])).toEqual({ added: 0, duplicates: 1 });
      await expect(sink.publish([relayed(2000)])).rejects.toThrow(`stream ${eventStreamKey(k)} already has id 1 for a different event`);
    } finally {
      await redis.del(eventStreamKey(k));
    }
  });

  test('one publish takes the events of one shard: a batch of two shards is refused, nothing of it written', async () => {
    const [a, b] = [key(`one-a-${Math.random().toString(36).slice(2, 8)}`), key(`one-b-${Math.random().toString(36).slice(2, 8)}`)];
    const sink = new RedisStreamSink(redis);
    await expect(
      sink.publish([
        { ...a, id: 1, type: 'player_joined', playerId: 'ann', at: 1 },
        { ...b, id: 2, type: 'player_joined', playerId: 'bob', at: 2 },
      ]),
    ).rejects.toThrow(`one publish takes the events of one shard: ${eventStreamKey(b)} is not ${eventStreamKey(a)}`);
    expect([await readStream(a), await readStream(b)]).toEqual([[], []]);
  });
});

describe('presence keeps its own schedule', () => {
  const presenceOf = (player: string) => redis.get(presenceKey(player));

  test('while PostgreSQL is down, every local player is still heartbeated, and a join during the outage is recorded', async () => {
    const down = new pg.Pool({
      connectionString: `postgres://postgres@127.0.0.1:${await closedPort()}/postgres`,
      connectionTimeoutMillis: 1000,
    });
    const [ann, bob] = [`${schema}-hb-ann`, `${schema}-hb-bob`];
    const persistence = new ShardPersistence({
      key: key('pg-down'),
      snapshots: new PostgresSnapshotStore(down),
      outbox: new PostgresOutbox(down),
      sink: new RedisStreamSink(redis),
      presence: new RedisPresence(redis),
      log: silent,
      presenceTtlMs: 1500,
      flushIntervalMs: 100,
    });
    persistence.start();
    try {
      persistence.playerJoined(ann);
      persistence.playerJoined(bob);
      // Four times the TTL: each heartbeat (every 500 ms) must have happened for ann to be there still.
      for (let i = 0; i < 12; i++) {
        await sleep(500);
        expect([await presenceOf(ann), await presenceOf(bob)]).not.toContain(null);
      }
      persistence.playerLeft(bob);
      for (let i = 0; i < 50 && (await presenceOf(bob)) !== null; i++) await sleep(50);
      expect(await presenceOf(bob)).toBeNull();
    } finally {
      await persistence.drain(1, new Uint8Array([1]), performance.now() + 2000).catch(() => undefined);
      await down.end();
      await redis.del(presenceKey(ann), presenceKey(bob));
    }
  });

  test('a large relay backlog is worked off in batches while presence stays refreshed', async () => {
    const k = key(`backlog-${Math.random().toString(36).slice(2, 8)}`);
    const outbox = new PostgresOutbox(pool);
    const backlog = Array.from({ length: 20_000 }, (_, i) => event(i % 2 ? 'player_left' : 'player_joined', `q${i >> 1}`, 1000 + i));
    const ann = `${schema}-backlog-ann`;
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new RedisStreamSink(redis),
      presence: new RedisPresence(redis),
      log: silent,
      presenceTtlMs: 1000,
      flushIntervalMs: 100,
      relayPerFlush: 1000,
    });
    persistence.playerJoined(ann);
    persistence.start();
    try {
      while ((await presenceOf(ann)) === null || (await outbox.pending(k)) > 0) await sleep(20);
      // The backlog an outage of Redis left: appended, not relayed.
      await outbox.append(k, backlog);
      // Generous: this measures no speed, only that presence never lapses while the relay catches up.
      const deadline = Date.now() + 60_000;
      while ((await outbox.pending(k)) > 0 && Date.now() < deadline) {
        expect(await presenceOf(ann)).not.toBeNull();
        await sleep(100);
      }
      expect(await outbox.pending(k)).toBe(0);
      const stream = await redis.xrange(eventStreamKey(k), '-', '+');
      expect(stream).toHaveLength(20_001);
      expect(stream.slice(0, 3).map(([, f]) => `${f[1]}:${f[3]}`)).toEqual([`player_joined:${ann}`, 'player_joined:q0', 'player_left:q0']);
      expect(stream.at(-1)?.[1][3]).toBe('q9999');
    } finally {
      await persistence.drain(1, new Uint8Array([1]));
      await redis.del(presenceKey(ann), eventStreamKey(k));
    }
  });

  test('the heartbeat is timed by a monotonic clock: a wall clock stepped back does not stop it', async () => {
    const ann = `${schema}-clock-ann`;
    const persistence = new ShardPersistence({
      key: key('clock'),
      snapshots: new PostgresSnapshotStore(pool),
      outbox: new MemoryOutbox(),
      sink: new CallbackSink(() => undefined),
      presence: new RedisPresence(redis),
      log: silent,
      // A heartbeat a second: only a stall of 2 s on a busy machine could let it lapse; a heartbeat
      // timed by the stepped-back wall clock never beats again, and the entry is gone 3 s on.
      presenceTtlMs: 3000,
      flushIntervalMs: 100,
    });
    persistence.start();
    persistence.playerJoined(ann);
    const wall = Date.now;
    try {
      while ((await presenceOf(ann)) === null) await sleep(20);
      Date.now = () => wall() - 60_000;
      for (let i = 0; i < 8; i++) {
        await sleep(1000);
        expect(await presenceOf(ann)).not.toBeNull();
      }
    } finally {
      Date.now = wall;
      await persistence.drain(1, new Uint8Array([1]));
      await redis.del(presenceKey(ann));
    }
  });
});

/** A pool on a schema of its own (its own tables, sequence and triggers), dropped by `drop`. */
async function privateSchema(prefix: string) {
  const name = uniqueName(prefix).replaceAll('-', '_');
  const own = new pg.Pool({ connectionString: env.pgUrl, max: 4, options: `-c search_path=${name}` });
  await own.query(`CREATE SCHEMA ${name}`);
  await migrate(own);
  return {
    name,
    pool: own,
    drop: async () => {
      await own.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
      await own.end();
    },
  };
}

/** A logger whose lines are kept, parsed. */
function recordingLog(level: 'debug' | 'info' | 'warn' = 'info') {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  return { lines, log: createLogger('persist-contract-test', level, { write: (l: string) => void lines.push(JSON.parse(l)) }) };
}

describe('the final snapshot is the drain’s own', () => {
  test('a final snapshot that fails fails the drain, though a periodic snapshot of the same tick was saved', async () => {
    const own = await privateSchema('gsfin');
    const k = key('final-same-tick');
    try {
      const store = new PostgresSnapshotStore(own.pool);
      const persistence = new ShardPersistence({
        key: k,
        snapshots: store,
        outbox: new MemoryOutbox(),
        sink: new CallbackSink(() => undefined),
        presence: new MemoryPresence(),
        log: silent,
        presenceTtlMs: 60_000,
      });
      const periodic = persistence.snapshot(200, new Uint8Array([1]));
      for (let i = 0; i < 200 && persistence.lastSavedTick < 200; i++) await new Promise((r) => setTimeout(r, 10));
      expect(persistence.lastSavedTick).toBe(200);
      expect(persistence.savedThrough).toBe(periodic);
      // From now on PostgreSQL refuses every write of the row (a full disk, a lost primary would too).
      await own.pool.query(`CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no space left on device'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse BEFORE UPDATE ON shard_snapshots FOR EACH ROW EXECUTE FUNCTION refuse();`);
      // The drain's own state (its kicks ran onLeave hooks) at the same tick: it is not saved, and the drain says so.
      await expect(persistence.drain(200, new Uint8Array([2]))).rejects.toThrow(
        'the final snapshot (tick 200) was not written: no space left on device',
      );
      expect(await store.load(k)).toMatchObject({ tick: 200, state: new Uint8Array([1]) });
    } finally {
      await own.drop();
    }
  });

  test('a final snapshot the store fails for a moment (a connection cut, a failover) is written again while the drain has time', async () => {
    const own = await privateSchema('gsretry');
    const k = key('final-retried');
    try {
      const store = new PostgresSnapshotStore(own.pool);
      const persistence = new ShardPersistence({
        key: k,
        snapshots: store,
        outbox: new PostgresOutbox(own.pool),
        sink: new CallbackSink(() => undefined),
        presence: new MemoryPresence(),
        log: silent,
        presenceTtlMs: 60_000,
      });
      // PostgreSQL refuses every snapshot and event written, for 600 ms of a drain given 3 s.
      await own.pool.query(`CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'the database system is shutting down'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON shard_snapshots FOR EACH ROW EXECUTE FUNCTION refuse();
        CREATE TRIGGER refuse BEFORE INSERT ON shard_outbox FOR EACH ROW EXECUTE FUNCTION refuse();`);
      persistence.playerJoined('ann');
      const drained = persistence.drain(300, new Uint8Array([3]), performance.now() + 3000);
      await new Promise((r) => setTimeout(r, 600));
      await own.pool.query('DROP TRIGGER refuse ON shard_snapshots; DROP TRIGGER refuse ON shard_outbox');
      await drained;
      expect(await store.load(k)).toMatchObject({ tick: 300, state: new Uint8Array([3]) });
      expect((await own.pool.query('SELECT player_id FROM shard_outbox')).rows.map((r) => r.player_id)).toEqual(['ann']);
    } finally {
      await own.drop();
    }
  });
  test('a final snapshot whose write hangs does not keep the events a moment refused from being appended again', async () => {
    const own = await privateSchema('gshang');
    const k = key('final-hangs');
    try {
      const persistence = new ShardPersistence({
        key: k,
        snapshots: new PostgresSnapshotStore(own.pool),
        outbox: new PostgresOutbox(own.pool),
        sink: new CallbackSink(() => undefined),
        presence: new MemoryPresence(),
        log: silent,
        presenceTtlMs: 60_000,
      });
      // The snapshot's write waits 4 s (a lock, a stalled disk); the events are refused for 500 ms
      // of a drain given 2 s.
      await own.pool.query(`CREATE FUNCTION hang() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(4); RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'the database system is shutting down'; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER hang BEFORE INSERT OR UPDATE ON shard_snapshots FOR EACH ROW EXECUTE FUNCTION hang();
        CREATE TRIGGER refuse BEFORE INSERT ON shard_outbox FOR EACH ROW EXECUTE FUNCTION refuse();`);
      persistence.playerJoined('ann');
      const drained = persistence.drain(300, new Uint8Array([3]), performance.now() + 2000).then(
        () => 'drained',
        (err: Error) => err.message,
      );
      await new Promise((r) => setTimeout(r, 500));
      await own.pool.query('DROP TRIGGER refuse ON shard_outbox');
      expect(await drained).toBe('the final snapshot (tick 300) was not written: no answer within the drain (ops.drain_timeout_ms)');
      expect((await own.pool.query('SELECT player_id FROM shard_outbox')).rows.map((r) => r.player_id)).toEqual(['ann']);
    } finally {
      await own.drop();
    }
  });
});

describe('outbox: two processes of one shard', () => {
  test('appending at once (overlapping pods), their ids commit in order: the relay never meets an id below the stream’s', async () => {
    const own = await privateSchema('gsdup');
    // Two processes: two pools. A's rows are slow to insert (a BEFORE INSERT trigger sleeping): its
    // id is drawn first, and without serialized appends it would commit after B's.
    const other = new pg.Pool({ connectionString: env.pgUrl, max: 2, options: `-c search_path=${own.name}` });
    const k = key(`dup-${Math.random().toString(36).slice(2, 8)}`);
    try {
      await own.pool.query(`CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN IF NEW.player_id LIKE 'slow%' THEN PERFORM pg_sleep(0.5); END IF; RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER slow BEFORE INSERT ON shard_outbox FOR EACH ROW EXECUTE FUNCTION slow();`);
      const [a, b] = [new PostgresOutbox(own.pool), new PostgresOutbox(other)];
      const sink = new RedisStreamSink(redis);
      const slow = a.append(k, [event('player_joined', 'slow-ann', 1)]);
      await new Promise((r) => setTimeout(r, 150));
      await b.append(k, [event('player_joined', 'bob', 2)]);
      await b.relay(k, sink);
      await slow;
      await a.relay(k, sink);
      await b.append(k, [event('player_joined', 'cid', 3)]);
      expect(await b.relay(k, sink)).toBeGreaterThan(0);
      expect(await a.pending(k)).toBe(0);
      expect(await readStream(k)).toEqual(['player_joined:slow-ann', 'player_joined:bob', 'player_joined:cid']);
      const ids = await own.pool.query<{ player_id: string }>('SELECT player_id FROM shard_outbox ORDER BY id');
      expect(ids.rows.map((r) => r.player_id)).toEqual(['slow-ann', 'bob', 'cid']);
      // The appends' lock is not the relay's (nor the migrations', a one-key lock).
      const classes = await own.pool.query<{ same: boolean }>(
        "SELECT hashtext('aethex-outbox-append') = hashtext('aethex-outbox') AS same",
      );
      expect(classes.rows[0]?.same).toBe(false);
    } finally {
      await other.end();
      await own.drop();
      await redis.del(eventStreamKey(k));
    }
  });
});

describe('outbox: an event PostgreSQL refuses for its data', () => {
  test('is dropped, logged and counted, and the events around it go through; alone, it is kept (it may not be its fault)', async () => {
    const k = key(`poison-${Math.random().toString(36).slice(2, 8)}`);
    const metrics = createPersistenceMetrics();
    const { lines, log } = recordingLog('warn');
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox: new PostgresOutbox(pool),
      sink: new RedisStreamSink(redis),
      presence: new MemoryPresence(),
      log,
      presenceTtlMs: 60_000,
      metrics,
    });
    // A NUL, which PostgreSQL text refuses (22021): every append of a batch holding it failed, for ever.
    persistence.playerJoined('ann', 1);
    persistence.playerJoined('bad\u0000id', 2);
    persistence.playerJoined('bob', 3);
    await persistence.flush();
    expect(await readStream(k)).toEqual(['player_joined:ann', 'player_joined:bob']);
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(1);
    const dropped = lines.filter((l) => l.msg.startsWith('domain event dropped'));
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toMatchObject({ event: { type: 'player_joined', playerId: 'bad\u0000id', at: 2 }, err: { code: '22021' } });
    // Alone in its batch, nothing shows the refusal is its own: it waits, as after any failed append.
    persistence.playerJoined('worse\u0000id', 4);
    await persistence.flush();
    expect((await metrics.outboxQueued.get()).values[0]?.value).toBe(1);
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(1);
    // With an event that goes through beside it, it is dropped.
    persistence.playerLeft('ann', 5);
    await persistence.flush();
    expect(await readStream(k)).toEqual(['player_joined:ann', 'player_joined:bob', 'player_left:ann']);
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(2);
    expect((await metrics.outboxQueued.get()).values[0]?.value).toBe(0);
    await redis.del(eventStreamKey(k));
  });

  test('a dropped event is not counted pending: while the relay fails, the gauge holds the events appended, as the outbox does', async () => {
    const k = key(`poison-pending-${Math.random().toString(36).slice(2, 8)}`);
    const metrics = createPersistenceMetrics();
    const outbox = new PostgresOutbox(pool);
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new RedisStreamSink(redis),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    // The stream's key holds a string: Redis refuses every publish (WRONGTYPE), so nothing is relayed.
    await redis.set(eventStreamKey(k), 'not a stream');
    try {
      persistence.playerJoined('ann', 1);
      persistence.playerJoined('bad\u0000id', 2);
      persistence.playerJoined('bob', 3);
      await persistence.flush();
      expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(1);
      expect((await metrics.outboxRelayFailures.get()).values).toMatchObject([{ labels: { reason: 'error' }, value: 1 }]);
      expect(await outbox.pending(k)).toBe(2);
      expect((await metrics.outboxPending.get()).values[0]?.value).toBe(2);
      // Once Redis takes them, nothing waits.
      await redis.del(eventStreamKey(k));
      await persistence.flush();
      expect(await readStream(k)).toEqual(['player_joined:ann', 'player_joined:bob']);
      expect((await metrics.outboxPending.get()).values[0]?.value).toBe(0);
    } finally {
      await redis.del(eventStreamKey(k));
    }
  });

  test('a batch PostgreSQL refuses every event of is given up on after 16 refusals, not halved down to each event', async () => {
    const k = key(`refused-${Math.random().toString(36).slice(2, 8)}`);
    const metrics = createPersistenceMetrics();
    const real = new PostgresOutbox(pool);
    let appends = 0;
    const outbox: Outbox = {
      durable: true,
      append: (at, events) => {
        appends++;
        return real.append(at, events);
      },
      relay: (at, sink, limit) => real.relay(at, sink, limit),
      pending: (at) => real.pending(at),
      prune: (at, limit) => real.prune(at, limit),
      openPlaces: (at) => real.openPlaces(at),
      leftSince: (at, since, players, last) => real.leftSince(at, since, players, last),
      movedOnSince: (at, since, players) => real.movedOnSince(at, since, players),
    };
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(pool),
      outbox,
      sink: new CallbackSink(() => undefined),
      presence: new MemoryPresence(),
      log: silent,
      presenceTtlMs: 60_000,
      metrics,
    });
    for (let i = 0; i < 64; i++) persistence.playerJoined(`bad\u0000${i}`);
    await persistence.flush();
    // None taken: no event's fault. All kept for the retry, none dropped, and far fewer than the
    // 127 appends that halving down to every event takes.
    expect((await metrics.outboxQueued.get()).values[0]?.value).toBe(64);
    expect((await metrics.outboxDropped.get()).values[0]?.value).toBe(0);
    expect(appends).toBeLessThan(64);
  });

  test('only what PostgreSQL refuses for the data is an event’s fault: not the sequence running out, nor a unique violation', () => {
    // A NUL in a text, an invalid time, a NULL where none may be.
    expect(['22021', '22008', '23502'].filter((code) => !isDataError({ code }))).toEqual([]);
    // The sequence exhausted, a unique violation, a statement timeout, no SQLSTATE at all.
    expect(['2200H', '23505', '57014', undefined].filter((code) => isDataError({ code }))).toEqual([]);
  });
});

describe('store failures are logged at a bounded rate', () => {
  test('the first failure with its error, then a count now and then, and one line when it works again', async () => {
    const own = await privateSchema('gsrate');
    const k = key(`rate-${Math.random().toString(36).slice(2, 8)}`);
    const { lines, log } = recordingLog();
    const persistence = new ShardPersistence({
      key: k,
      snapshots: new PostgresSnapshotStore(own.pool),
      outbox: new PostgresOutbox(own.pool),
      sink: new RedisStreamSink(redis),
      presence: new MemoryPresence(),
      log,
      presenceTtlMs: 60_000,
      flushIntervalMs: 20,
      failureLogEveryMs: 500,
    });
    let tick = 0;
    const ticking = setInterval(() => persistence.snapshot(++tick, new Uint8Array([1])), 20);
    try {
      // Every write fails (as with PostgreSQL down): the tables are gone.
      await own.pool.query(
        'ALTER TABLE shard_outbox RENAME TO shard_outbox_away; ALTER TABLE shard_snapshots RENAME TO shard_snapshots_away',
      );
      persistence.start();
      persistence.playerJoined('ann');
      await new Promise((r) => setTimeout(r, 1600));
      const about = (msg: string) => lines.filter((l) => l.msg.startsWith(msg));
      for (const msg of ['outbox append failed', 'outbox relay failed', 'snapshot write failed']) {
        const logged = about(msg);
        // About 80 failures each in 1.6 s: the first, and a summary at most every 0.5 s.
        expect(logged.length, msg).toBeGreaterThanOrEqual(2);
        expect(logged.length, msg).toBeLessThanOrEqual(4);
        expect((logged[0]?.err as { stack?: string } | undefined)?.stack, msg).toMatch(/shard_(outbox|snapshots)/);
        for (const summary of logged.slice(1)) {
          expect(summary.msg).toMatch(/\(still failing: \d+ more failures since the last line\)$/);
          expect(summary.failures as number).toBeGreaterThan(3);
          expect(summary.err).toBeUndefined();
          expect(summary.reason).toMatch(/does not exist/);
        }
      }
      await own.pool.query(
        'ALTER TABLE shard_outbox_away RENAME TO shard_outbox; ALTER TABLE shard_snapshots_away RENAME TO shard_snapshots',
      );
      const recovered = ['outbox append', 'outbox relay', 'snapshot write'];
      await until('each store to log that it works again', () => recovered.every((what) => about(`${what} works again after`).length > 0));
      for (const what of recovered) expect(about(`${what} works again after`), what).toHaveLength(1);
      // The relay may have recovered on a flush before the one that appended the event.
      await persistence.flush();
      expect(await readStream(k)).toEqual(['player_joined:ann']);
    } finally {
      clearInterval(ticking);
      await persistence.drain(tick + 1, new Uint8Array([0])).catch(() => undefined);
      await own.drop();
      await redis.del(eventStreamKey(k));
    }
  });
});
