import { presenceKey as key, type ShardKey } from '@aethex/runtime';
import type { ChainableCommander, Redis } from 'ioredis';

/** Where a player is playing. */
export type Whereabouts = ShardKey;

/**
 * Player → namespace/world/instance/shard, each entry expiring after `ttlMs` unless refreshed, so a shard
 * that dies stops claiming its players on its own. Each `set` or `remove` is one batch (one
 * pipeline in Redis); `ShardPersistence` gathers them off the tick.
 */
export interface PresenceStore {
  /** Records the players' whereabouts (or refreshes their TTL); rejects when any write failed. */
  set(players: readonly string[], where: Whereabouts, ttlMs: number): Promise<void>;
  /** Removes the entries that still name `where`; rejects when any removal failed (retry them all: it is idempotent). */
  remove(players: readonly string[], where: Whereabouts): Promise<void>;
  get(player: string): Promise<Whereabouts | undefined>;
}

/** Presence in Redis: one key per player with a TTL, written in one pipeline per batch. */
export class RedisPresence implements PresenceStore {
  constructor(private readonly redis: Redis) {}

  async set(players: readonly string[], where: Whereabouts, ttlMs: number): Promise<void> {
    if (players.length === 0) return;
    const value = JSON.stringify(where);
    const pipeline = this.redis.pipeline();
    for (const p of players) pipeline.set(key(p), value, 'PX', ttlMs);
    await execAll(pipeline, 'presence update');
  }

  async remove(players: readonly string[], where: Whereabouts): Promise<void> {
    if (players.length === 0) return;
    // Delete only if the key still names this shard: the player may have moved on already.
    const value = JSON.stringify(where);
    const pipeline = this.redis.pipeline();
    for (const p of players)
      pipeline.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end", 1, key(p), value);
    await execAll(pipeline, 'presence removal');
  }

  async get(player: string): Promise<Whereabouts | undefined> {
    const v = await this.redis.get(key(player));
    return v ? (JSON.parse(v) as Whereabouts) : undefined;
  }
}

/** Sends the pipeline; rejects naming `what` when any of its commands failed (ioredis reports those per command). */
async function execAll(pipeline: ChainableCommander, what: string): Promise<void> {
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err);
  if (!results || failed) throw new Error(`${what} failed`, { cause: failed?.[0] ?? new Error('the pipeline was aborted') });
}

/** The embedded default: presence in a map with expiry times, for one process. */
export class MemoryPresence implements PresenceStore {
  private readonly entries = new Map<string, { where: Whereabouts; until: number }>();

  constructor(private readonly now: () => number = Date.now) {}

  async set(players: readonly string[], where: Whereabouts, ttlMs: number): Promise<void> {
    const until = this.now() + ttlMs;
    for (const p of players) this.entries.set(p, { where, until });
  }

  async remove(players: readonly string[], where: Whereabouts): Promise<void> {
    const value = JSON.stringify(where);
    for (const p of players) {
      const e = this.entries.get(p);
      if (e && JSON.stringify(e.where) === value) this.entries.delete(p);
    }
  }

  async get(player: string): Promise<Whereabouts | undefined> {
    const e = this.entries.get(player);
    if (!e) return undefined;
    if (e.until <= this.now()) {
      this.entries.delete(player);
      return undefined;
    }
    return e.where;
  }
}
