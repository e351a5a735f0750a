import { randomUUID } from 'node:crypto';
import type { Logger, ShardKey } from '@aethex/runtime';
import { type DomainEvent, type EventSink, eventKeys, type Outbox } from './outbox.js';
import type { PresenceStore } from './presence.js';
import type { SnapshotStore } from './snapshot-store.js';

export interface PersistenceDeps {
  key: ShardKey;
  snapshots: SnapshotStore;
  outbox: Outbox;
  sink: EventSink;
  presence: PresenceStore;
  log: Logger;
  presenceTtlMs: number;
  /** How often queued events, presence changes and the relay are flushed, in ms (default 250). */
  flushIntervalMs?: number;
  /** Starts the key of every event this instance queues; unique to it (default: a random UUID). */
  eventKeyPrefix?: string;
  /** How often relayed events past the outbox's retention are pruned, in ms (default 60,000). */
  pruneIntervalMs?: number;
}

/**
 * Keeps the shard's durable and shared state up to date without ever making the tick wait.
 * - `snapshot(tick, blob)` is called on the tick with a blob built there; the write happens later,
 *   one at a time, and a newer blob replaces one still waiting.
 * - `playerJoined` / `playerLeft` queue a domain event and a presence change; a timer appends events
 *   to the outbox (in order), relays them, and writes presence in one pipeline, refreshing every
 *   local player's TTL at a third of it. A failed append is retried with the same events, keys and
 *   all, so one that was written before it failed is not written twice. Once a minute, on a timer
 *   of its own, it prunes relayed events past the outbox's retention.
 * - `drain()` writes the final snapshot and flushes everything, awaiting it.
 */
export class ShardPersistence {
  private pendingSnapshot: { tick: number; state: Uint8Array | Promise<Uint8Array> } | undefined;
  private writing: Promise<void> | undefined;
  private events: DomainEvent[] = [];
  private joined = new Set<string>();
  private left = new Set<string>();
  private readonly local = new Set<string>();
  private lastHeartbeat = 0;
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<void> | undefined;
  private draining = false;
  private readonly nextEventKey: () => string;
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** Tick of the last snapshot written. */
  lastSavedTick = 0;

  constructor(private readonly deps: PersistenceDeps) {
    this.nextEventKey = eventKeys(deps.eventKeyPrefix ?? randomUUID());
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.deps.flushIntervalMs ?? 250);
    this.timer.unref();
    this.pruneTimer = setInterval(() => {
      this.pruning ??= this.prune().finally(() => {
        this.pruning = undefined;
      });
    }, this.deps.pruneIntervalMs ?? 60_000);
    this.pruneTimer.unref();
  }

  /**
   * Forgets relayed events past the outbox's retention: up to 10 batches of 5,000 a run, so a
   * backlog is worked off over several runs. On a timer of its own, never inside a flush: a slow
   * delete holds up no append, relay or presence heartbeat. Stops between batches at a drain.
   */
  private async prune(): Promise<void> {
    const { key, outbox, log } = this.deps;
    let pruned = 0;
    try {
      for (let batch = 0; batch < 10 && !this.draining; batch++) {
        const n = await outbox.prune(key, 5000);
        pruned += n;
        if (n < 5000) break;
      }
    } catch (err) {
      log.warn({ err }, 'outbox prune failed; will retry');
    }
    if (pruned > 0) log.debug({ pruned }, 'relayed events pruned from the outbox');
  }

  /** `state` may still be being assembled (`assembleState`): it is awaited, off the tick, before the write. */
  snapshot(tick: number, state: Uint8Array | Promise<Uint8Array>): void {
    // One replaced before it was awaited must not fail as an unhandled rejection.
    if (state instanceof Promise) state.catch(() => undefined);
    this.pendingSnapshot = { tick, state };
    if (!this.writing) this.writing = this.writeSnapshots();
  }

  private async writeSnapshots(): Promise<void> {
    try {
      while (this.pendingSnapshot) {
        const next = this.pendingSnapshot;
        this.pendingSnapshot = undefined;
        try {
          await this.deps.snapshots.save(this.deps.key, { tick: next.tick, state: await next.state });
          this.lastSavedTick = next.tick;
        } catch (err) {
          this.deps.log.error({ err, tick: next.tick }, 'snapshot write failed; the next one will retry');
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  playerJoined(playerId: string, at = Date.now()): void {
    this.events.push({ type: 'player_joined', playerId, at, eventKey: this.nextEventKey() });
    this.local.add(playerId);
    this.left.delete(playerId);
    this.joined.add(playerId);
  }

  playerLeft(playerId: string, at = Date.now()): void {
    this.events.push({ type: 'player_left', playerId, at, eventKey: this.nextEventKey() });
    this.local.delete(playerId);
    this.joined.delete(playerId);
    this.left.add(playerId);
  }

  /** Flushes queued events, the relay and presence; one flush at a time. */
  flush(): Promise<void> {
    this.flushing ??= this.doFlush().finally(() => {
      this.flushing = undefined;
    });
    return this.flushing;
  }

  private async doFlush(): Promise<void> {
    const { key, outbox, sink, presence, presenceTtlMs, log } = this.deps;
    const events = this.events;
    this.events = [];
    try {
      await outbox.append(key, events);
    } catch (err) {
      // Keep them, in order and with their keys, for the next flush: the append may have been written.
      this.events = events.concat(this.events);
      log.error({ err, events: events.length }, 'outbox append failed; will retry');
      return;
    }
    try {
      while ((await outbox.relay(key, sink)) > 0) {
        // Relay until the shard's queue is empty.
      }
    } catch (err) {
      log.warn({ err }, 'outbox relay failed; will retry');
    }
    const now = Date.now();
    const heartbeat = now - this.lastHeartbeat >= presenceTtlMs / 3;
    const toSet = heartbeat ? [...this.local] : [...this.joined];
    const toRemove = [...this.left];
    this.joined.clear();
    this.left.clear();
    try {
      await presence.set(toSet, key, presenceTtlMs);
      await presence.remove(toRemove, key);
      if (heartbeat) this.lastHeartbeat = now;
    } catch (err) {
      for (const p of toSet) if (this.local.has(p)) this.joined.add(p);
      for (const p of toRemove) if (!this.local.has(p)) this.left.add(p);
      log.warn({ err }, 'presence update failed; will retry');
    }
  }

  /** Final snapshot and flush, for SIGTERM; rejects when the final snapshot could not be written. */
  async drain(finalTick: number, finalState: Uint8Array | Promise<Uint8Array>): Promise<void> {
    clearInterval(this.timer);
    clearInterval(this.pruneTimer);
    this.draining = true;
    this.snapshot(finalTick, finalState);
    await this.writing;
    // A flush may have been running already; one more catches what it did not take.
    await this.flush();
    await this.flush();
    // A prune under way stops after its current batch; the stores close after it.
    await this.pruning;
    if (this.lastSavedTick < finalTick) throw new Error(`the final snapshot (tick ${finalTick}) was not written`);
    if (this.events.length > 0) throw new Error(`${this.events.length} domain events could not be appended to the outbox`);
  }
}
