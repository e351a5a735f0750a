import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import type { Logger, ShardKey } from '@aethex/runtime';
import { createPersistenceMetrics, type PersistenceMetrics } from '../metrics.js';
import { FailureLog } from './failure-log.js';
import {
  type DomainEvent,
  EventIdConflictError,
  type EventSink,
  eventKeys,
  MAX_QUEUED_EVENTS,
  type Outbox,
  RELAY_BATCH,
} from './outbox.js';
import type { PresenceStore } from './presence.js';
import { settledWithin } from './settled.js';
import { type SnapshotStore, StaleSnapshotError } from './snapshot-store.js';

export interface PersistenceDeps {
  key: ShardKey;
  snapshots: SnapshotStore;
  outbox: Outbox;
  sink: EventSink;
  presence: PresenceStore;
  log: Logger;
  presenceTtlMs: number;
  /** How often queued events are appended and relayed, and presence changes written, in ms (default 250). */
  flushIntervalMs?: number;
  /** Starts the key of every event this instance queues; unique to it (default: a random UUID). */
  eventKeyPrefix?: string;
  /** How often relayed events past the outbox's retention are pruned, in ms (default 60,000). */
  pruneIntervalMs?: number;
  /** Rows one prune statement deletes at most (default 5,000). */
  pruneBatch?: number;
  /** Prune statements one run makes at most (default 10): a larger backlog waits for the next runs. */
  pruneBatchesPerRun?: number;
  /** Events waiting for the outbox at most (`persistence.max_queued_events`, default 100,000); later ones are dropped. */
  maxQueuedEvents?: number;
  /** Events relayed at most per flush, in batches of `RELAY_BATCH` (default 5,000). */
  relayPerFlush?: number;
  /** Default: unregistered ones. */
  metrics?: PersistenceMetrics;
  /** A monotonic clock in ms (default `performance.now`): it times the heartbeat, which a wall clock stepping back would stop. */
  now?: () => number;
  /** Called with a snapshot's tick once the store took it (after `save` resolved). */
  onSaved?: (tick: number, mark: number) => void;
  /** While a store keeps failing, at most one log line about it per this, in ms by `now` (default 10,000). */
  failureLogEveryMs?: number;
}

/**
 * Whether PostgreSQL refused a statement for the data in it — a data exception (SQLSTATE class 22:
 * a NUL in a text, an invalid time) or a NULL where none may be (23502) — so that the same
 * statement without the event that carries the bad data would go through. Not the sequence running
 * out (2200H), nor a unique violation (23505: a sequence reset below existing ids fails some rows
 * and not others, none of them bad): those are no event's fault.
 */
export function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return false;
  return (code.startsWith('22') && code !== '2200H') || code === '23502';
}

/** Refused events dropped at most per append: more, and none taken, is not the events' fault. */
const MAX_REFUSED_UNTAKEN = 16;

/** A drain whose final snapshot or appends failed asks the store again this often, while it has time. */
const DRAIN_RETRY_MS = 200;

/**
 * Keeps the shard's durable and shared state up to date without ever making the tick wait. Three
 * independent loops, so that one store failing or hanging holds up none of the others:
 * - `snapshot(tick, blob)` is called on the tick with a blob built there; the write happens later,
 *   one at a time, and a newer blob replaces one still waiting. A write that fails or that the store
 *   refuses (it holds a newer tick) is logged and counted, and the next snapshot tries again.
 * - `playerJoined` / `playerLeft` queue a domain event (at most `maxQueuedEvents`; beyond, events
 *   are dropped, counted and logged). Every flush appends the queue to the outbox (in order) and
 *   relays up to `relayPerFlush` pending events. A failed append is retried with the same events,
 *   keys and all, so one that was written before it failed is not written twice.
 * - They also record presence changes; every flush writes them, on its own, refreshing every local
 *   player's TTL at a third of it (timed by the monotonic clock). A failed write or removal is kept
 *   and retried.
 * Once a minute, on a timer of its own, it prunes relayed events past the outbox's retention.
 * `drain()` writes the final snapshot and flushes everything, awaiting it up to a deadline.
 */
export class ShardPersistence {
  private pendingSnapshot:
    | { seq: number; tick: number; state: Uint8Array | Promise<Uint8Array>; capturedAtMs: number; mark: number }
    | undefined;
  /** Numbers the snapshot requests, from 1; `savedSeq` is the last one the store took. */
  private snapshotSeq = 0;
  private savedSeq = 0;
  private writing: Promise<void> | undefined;
  private lastSaveError: unknown;
  private events: DomainEvent[] = [];
  private dropped = 0;
  /** Events of the append under way (out of `events`, still counted against `maxQueued`). */
  private appending = 0;
  /** Appended, not yet relayed, as of the last relay (or of the last count). */
  private pending = 0;
  private joined = new Set<string>();
  /**
   * Players whose presence entry is to be removed, with when they left (`now`). One whose entry has
   * expired by then (presence.ttl_ms after they left: nothing refreshed it since) is dropped from
   * it, so a long Redis outage with players coming and going does not grow it without end.
   */
  private left = new Map<string, number>();
  /** Players whose presence removal is under way (out of `left` until it fails, and it goes back). */
  private removing = new Set<string>();
  /**
   * Places the outbox holds open from before this process (`loadOpenPlaces`), until `placesRestored`:
   * a player restored here whose place is among them takes it again without a second `player_joined`.
   */
  private openAtStart: Set<string> | undefined;
  /** See `releasingForDrain`. */
  private drainReleases = false;
  private readonly local = new Set<string>();
  private lastHeartbeat = Number.NEGATIVE_INFINITY;
  private pruneTimer: NodeJS.Timeout | undefined;
  private pruning: Promise<void> | undefined;
  private draining = false;
  private readonly nextEventKey: () => string;
  private flushingOutbox: Promise<void> | undefined;
  private flushingPresence: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly metrics: PersistenceMetrics;
  private readonly now: () => number;
  private readonly maxQueued: number;
  private readonly snapshotLog: FailureLog;
  private readonly appendLog: FailureLog;
  private readonly relayLog: FailureLog;
  private readonly conflictLog: FailureLog;
  private readonly presenceSetLog: FailureLog;
  private readonly presenceRemoveLog: FailureLog;
  /** Tick of the last snapshot written. */
  lastSavedTick = 0;

  constructor(private readonly deps: PersistenceDeps) {
    this.nextEventKey = eventKeys(deps.eventKeyPrefix ?? randomUUID());
    this.metrics = deps.metrics ?? createPersistenceMetrics();
    this.now = deps.now ?? (() => performance.now());
    this.maxQueued = deps.maxQueuedEvents ?? MAX_QUEUED_EVENTS;
    const failures = (what: string) => new FailureLog(deps.log, what, this.now, deps.failureLogEveryMs);
    this.snapshotLog = failures('snapshot write');
    this.appendLog = failures('outbox append');
    this.relayLog = failures('outbox relay');
    this.conflictLog = failures('outbox relay (id conflict)');
    this.presenceSetLog = failures('presence update');
    this.presenceRemoveLog = failures('presence removal');
  }

  /**
   * Reads the places the outbox holds open for this shard (its players, as far as the events appended
   * so far tell), before the engine takes the restored players' places. Call `placesRestored` after.
   * Rejects when the outbox cannot be read (the shard does not start).
   */
  async loadOpenPlaces(): Promise<void> {
    try {
      this.openAtStart = new Set(await this.deps.outbox.openPlaces(this.deps.key));
    } catch (err) {
      throw new Error(`the outbox's open places could not be read: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * The places freed from now on are the drain's (`DomainEvent.drained`): their players did not
   * leave, the shard stopped, and a restore — of the final snapshot, or of an earlier one when the
   * final one failed — brings them back.
   */
  releasingForDrain(): void {
    this.drainReleases = true;
  }

  /**
   * Of the players a snapshot taken at `sinceMs` would restore, those who left the shard after it
   * (the outbox holds their `player_left` from then on, not a drain's) and whose place is not open
   * again: a restore leaves them out rather than keep them dormant, present and counted until their
   * rejoin window ends. Call after `loadOpenPlaces`. `sinceMs` is best the snapshot's capture time
   * (`StoredSnapshot.capturedAtMs`: the clock the events carry, and a `player_left` between the
   * capture and the store's taking it counts); with only the time the store took it, such a
   * `player_left` — or one on a clock behind the store's — is not seen. Nor is one the crash lost
   * before its append. Those players are restored as before. When the outbox cannot be read, none
   * is left out (logged). `last`: only players whose last event since then is a `player_left` of
   * their own, not a handoff away — for a player this shard's previous run adopted after the
   * snapshot (a neighbour hands the entity back): leaving by a handoff, and coming back, is no
   * departure.
   */
  async departedSince(sinceMs: number, players: readonly string[], last = false): Promise<Set<string>> {
    try {
      const left = await this.deps.outbox.leftSince(this.deps.key, sinceMs, players, last);
      return new Set(left.filter((p) => !this.openAtStart?.has(p)));
    } catch (err) {
      this.deps.log.warn({ err }, 'could not read which players left after the snapshot; all of its players are restored');
      return new Set();
    }
  }

  /**
   * Of the players a snapshot taken at `sinceMs` would restore, those who played on another shard
   * of the world instance after it and whose place there is open (`Outbox.movedOnSince`): a restore
   * leaves them out — their entity is there — whether or not their place here is open (the crash
   * may have lost their handoff away's event). When the outbox
   * cannot be read, none is left out (logged).
   */
  async movedOnSince(sinceMs: number, players: readonly string[]): Promise<Set<string>> {
    try {
      return new Set(await this.deps.outbox.movedOnSince(this.deps.key, sinceMs, players));
    } catch (err) {
      this.deps.log.warn(
        { err },
        'could not read which players played on another shard after the snapshot; all of its players are restored',
      );
      return new Set();
    }
  }

  /**
   * The restored players have taken their places: each place still open from before that nobody took
   * (a player who joined after the last snapshot, lost with a crash) is freed — `player_left` queued,
   * marked as the shard's release (`drained`), not a departure of the player's own — and a later
   * `player_joined` of that player is told again.
   */
  placesRestored(): void {
    const stale = [...(this.openAtStart ?? [])];
    this.openAtStart = undefined;
    if (stale.length === 0) return;
    this.deps.log.info({ players: stale.length }, 'places open from before the restart were not restored; their players left');
    for (const playerId of stale) {
      this.queue({ type: 'player_left', playerId, at: Date.now(), eventKey: this.nextEventKey(), drained: true });
      // Its presence entry, if it still names this shard, goes now rather than at its TTL.
      if (!this.local.has(playerId)) this.left.set(playerId, this.now());
    }
  }

  start(): void {
    this.metrics.stateSnapshotLastSaved.set(Date.now() / 1000);
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
   * Forgets relayed events past the outbox's retention: up to 10 batches of 5,000 a run (by
   * default), so a backlog is worked off over several runs. On a timer of its own, never inside a
   * flush: a slow delete holds up no append, relay or presence heartbeat. Stops between batches at
   * a drain.
   */
  private async prune(): Promise<void> {
    const { key, outbox, log } = this.deps;
    const size = this.deps.pruneBatch ?? 5000;
    const batches = this.deps.pruneBatchesPerRun ?? 10;
    let pruned = 0;
    try {
      for (let batch = 0; batch < batches && !this.draining; batch++) {
        const n = await outbox.prune(key, size);
        pruned += n;
        if (n < size) break;
      }
    } catch (err) {
      log.warn({ err }, 'outbox prune failed; will retry');
    }
    if (pruned > 0) log.debug({ pruned }, 'relayed events pruned from the outbox');
  }

  /**
   * `state` may still be being assembled (`assembleState`): it is awaited, off the tick, before the
   * write. Returns the request's number: it (or a later one) was saved once `savedThrough` is at it.
   */
  snapshot(tick: number, state: Uint8Array | Promise<Uint8Array>, mark = 0): number {
    // One replaced before it was awaited must not fail as an unhandled rejection.
    if (state instanceof Promise) state.catch(() => undefined);
    const seq = ++this.snapshotSeq;
    // On the clock the outbox's events carry: a restore compares the two (departedSince).
    this.pendingSnapshot = { seq, tick, state, capturedAtMs: Date.now(), mark };
    if (!this.writing) this.writing = this.writeSnapshots();
    return seq;
  }

  /** The number of the last snapshot request the store took (see `snapshot`); 0 before any. */
  get savedThrough(): number {
    return this.savedSeq;
  }

  private async writeSnapshots(): Promise<void> {
    const { key, snapshots } = this.deps;
    const m = this.metrics;
    try {
      while (this.pendingSnapshot) {
        const next = this.pendingSnapshot;
        this.pendingSnapshot = undefined;
        try {
          const state = await next.state;
          const done = m.stateSnapshotWriteDuration.startTimer();
          await snapshots.save(key, { tick: next.tick, state, capturedAtMs: next.capturedAtMs });
          done();
          this.lastSavedTick = next.tick;
          this.savedSeq = next.seq;
          this.lastSaveError = undefined;
          this.snapshotLog.recovered();
          this.deps.onSaved?.(next.tick, next.mark);
          m.stateSnapshotLastTick.set(next.tick);
          m.stateSnapshotLastSaved.set(Date.now() / 1000);
        } catch (err) {
          this.lastSaveError = err;
          const stale = err instanceof StaleSnapshotError;
          m.stateSnapshotFailures.inc({ reason: stale ? 'stale' : 'error' });
          this.snapshotLog.failed(
            'error',
            err,
            { tick: next.tick },
            stale
              ? 'snapshot refused: the store holds a newer one (another process of this shard, or a restored tick below the stored one); the shard state is not being saved'
              : 'snapshot write failed; the next one will retry',
          );
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  /** `handedOver`: the player arrived from a neighbour with their entity (`DomainEvent.handedOver`). */
  playerJoined(playerId: string, at = Date.now(), handedOver = false): void {
    if (!this.openAtStart?.delete(playerId)) {
      this.queue({ type: 'player_joined', playerId, at, eventKey: this.nextEventKey(), ...(handedOver ? { handedOver: true } : {}) });
    } else if (handedOver) {
      // Open from before the restart, yet arriving from a neighbour now: not restored here (a
      // restored player's place was taken at the restore), so they left by a handoff whose
      // `player_left` the crash lost. That departure is told first, as `dropDormant`'s are.
      this.queue({ type: 'player_left', playerId, at, eventKey: this.nextEventKey(), handedOver: true });
      this.queue({ type: 'player_joined', playerId, at, eventKey: this.nextEventKey(), handedOver: true });
    }
    // Otherwise a restored player, or one a neighbour's copy brought back, whose place the outbox
    // holds open already: no second `player_joined`.
    this.local.add(playerId);
    this.left.delete(playerId);
    this.joined.add(playerId);
  }

  /** `handedOver`: the player walked on to a neighbour with their entity (`DomainEvent.handedOver`). */
  playerLeft(playerId: string, at = Date.now(), handedOver = false): void {
    this.queue({
      type: 'player_left',
      playerId,
      at,
      eventKey: this.nextEventKey(),
      ...(this.drainReleases ? { drained: true } : {}),
      ...(handedOver ? { handedOver: true } : {}),
    });
    this.local.delete(playerId);
    this.joined.delete(playerId);
    this.left.set(playerId, this.now());
  }

  /** Queues an event for the outbox, or drops it when `maxQueued` wait already (the outbox has been failing long). */
  private queue(event: DomainEvent): void {
    if (this.events.length + this.appending >= this.maxQueued) {
      if (this.dropped++ === 0) {
        this.deps.log.error(
          { max: this.maxQueued },
          'domain events are being dropped: the outbox queue is full (persistence.max_queued_events) because appends keep failing',
        );
      }
      this.metrics.outboxDropped.inc();
      return;
    }
    if (this.dropped > 0) {
      this.deps.log.error({ dropped: this.dropped }, 'the outbox queue has room again; domain events were dropped meanwhile');
      this.dropped = 0;
    }
    this.events.push(event);
    this.metrics.outboxQueued.set(this.events.length);
  }

  /** Flushes the outbox (append, relay) and presence, side by side; one flush of each at a time. */
  async flush(): Promise<void> {
    await Promise.all([this.flushOutbox(), this.flushPresence()]);
  }

  private flushOutbox(): Promise<void> {
    this.flushingOutbox ??= this.appendAndRelay().finally(() => {
      this.flushingOutbox = undefined;
    });
    return this.flushingOutbox;
  }

  private flushPresence(): Promise<void> {
    this.flushingPresence ??= this.writePresence().finally(() => {
      this.flushingPresence = undefined;
    });
    return this.flushingPresence;
  }

  private async appendAndRelay(): Promise<void> {
    const { key, outbox, sink, log } = this.deps;
    const m = this.metrics;
    const events = this.events;
    if (events.length > 0) {
      this.events = [];
      this.appending = events.length;
      try {
        const refused = await this.appendIsolating(events);
        for (const { event, err } of refused) {
          m.outboxDropped.inc();
          log.error(
            { err, event: { type: event.type, playerId: event.playerId, at: event.at, eventKey: event.eventKey } },
            'domain event dropped: PostgreSQL refuses its data (the events around it were appended)',
          );
        }
        this.pending += events.length - refused.length;
        this.appendLog.recovered();
      } catch (err) {
        // Keep them, in order and with their keys, for the next flush: the append may have been written.
        this.events = events.concat(this.events);
        m.outboxAppendFailures.inc();
        this.appendLog.failed('error', err, { events: this.events.length }, 'outbox append failed; will retry');
      } finally {
        this.appending = 0;
      }
      m.outboxQueued.set(this.events.length);
    }
    // Relayed even after a failed append: what is in the outbox is older than what waits for it, and
    // relaying makes room in an in-process outbox that is full.
    const perFlush = this.deps.relayPerFlush ?? 5000;
    let relayed = 0;
    try {
      let n = RELAY_BATCH;
      while (n === RELAY_BATCH && relayed < perFlush) {
        n = await outbox.relay(key, sink, RELAY_BATCH);
        relayed += n;
        m.outboxRelayed.inc(n);
      }
      // Caught up — unless nothing was relayed because another relay of this key held the lock —
      // or stopped at the cap with more to go: then counted.
      this.pending = n === RELAY_BATCH || (relayed === 0 && this.pending > 0) ? await outbox.pending(key) : 0;
      this.relayLog.recovered();
      this.conflictLog.recovered();
    } catch (err) {
      this.pending = Math.max(0, this.pending - relayed);
      if (err instanceof EventIdConflictError) {
        m.outboxRelayFailures.inc({ reason: 'id_conflict' });
        // Not every flush: it lasts until someone gives the outbox's events ids past the stream's.
        this.conflictLog.failed(
          'error',
          err,
          { stream: err.stream, id: err.id },
          'outbox relay refused: the stream holds other events under these ids; nothing more is relayed until fixed',
        );
      } else {
        m.outboxRelayFailures.inc({ reason: 'error' });
        this.relayLog.failed('warn', err, {}, 'outbox relay failed; will retry');
      }
    }
    m.outboxPending.set(this.pending);
  }

  /**
   * Appends `events`; when PostgreSQL refuses them for their data (`isDataError`), finds the events
   * it refuses by halving, appends the rest in order and returns the refused ones, to be dropped.
   * Safe to retry as a whole: an event appended stays appended (its key makes a retry skip it). When
   * `MAX_REFUSED_UNTAKEN` events are refused with none taken, or every event is, the refusal is no
   * event's fault: it rejects with it, and every event is kept for the retry.
   */
  private async appendIsolating(events: DomainEvent[]): Promise<{ event: DomainEvent; err: unknown }[]> {
    const { key, outbox } = this.deps;
    const refused: { event: DomainEvent; err: unknown }[] = [];
    let taken = 0;
    const append = async (part: DomainEvent[]): Promise<void> => {
      try {
        await outbox.append(key, part);
        taken += part.length;
      } catch (err) {
        if (!isDataError(err)) throw err;
        if (part.length === 1) {
          refused.push({ event: part[0] as DomainEvent, err });
          if (taken === 0 && refused.length >= MAX_REFUSED_UNTAKEN) throw err;
          return;
        }
        const half = part.length >> 1;
        await append(part.slice(0, half));
        await append(part.slice(half));
      }
    };
    await append(events);
    if (taken === 0 && refused.length > 0) throw refused[0]?.err;
    return refused;
  }

  private async writePresence(): Promise<void> {
    const { key, presence, presenceTtlMs } = this.deps;
    const now = this.now();
    const heartbeat = now - this.lastHeartbeat >= presenceTtlMs / 3;
    const toSet = heartbeat ? [...this.local] : [...this.joined];
    const leftAt = new Map(this.left);
    const toRemove = [...leftAt.keys()];
    this.joined.clear();
    this.left.clear();
    for (const p of toRemove) this.removing.add(p);
    // Apart, so that a failed removal does not hold up the heartbeat, nor the other way round.
    const [set, removed] = await Promise.allSettled([presence.set(toSet, key, presenceTtlMs), presence.remove(toRemove, key)]);
    for (const p of toRemove) this.removing.delete(p);
    if (set.status === 'fulfilled') {
      if (heartbeat) this.lastHeartbeat = now;
      if (toSet.length > 0) this.presenceSetLog.recovered();
    } else {
      for (const p of toSet) if (this.local.has(p)) this.joined.add(p);
      this.metrics.presenceFailures.inc({ op: 'set' });
      this.presenceSetLog.failed('warn', set.reason, { players: toSet.length }, 'presence update failed; will retry');
    }
    if (removed.status === 'rejected') {
      // Again next flush, unless the entry has expired by now (or the player is back).
      for (const [p, at] of leftAt) if (!this.local.has(p) && now - at < presenceTtlMs && !this.left.has(p)) this.left.set(p, at);
      this.metrics.presenceFailures.inc({ op: 'remove' });
      this.presenceRemoveLog.failed('warn', removed.reason, { players: toRemove.length }, 'presence removal failed; will retry');
    } else if (toRemove.length > 0) {
      this.presenceRemoveLog.recovered();
    }
  }

  /**
   * Final snapshot and flush, for SIGTERM, each awaited until `deadline` (by `now`, default: no
   * bound) and side by side: a hung PostgreSQL keeps neither the leaving players' presence from being
   * removed nor a hung Redis the final snapshot from being written. Rejects when the final snapshot
   * or queued domain events could not be written; presence not removed (it expires) and events the
   * in-process outbox could not relay (they are lost with the process) are logged.
   */
  async drain(
    finalTick: number,
    finalState: Uint8Array | Promise<Uint8Array>,
    deadline = Number.POSITIVE_INFINITY,
    mark = 0,
  ): Promise<void> {
    const { log, outbox } = this.deps;
    clearInterval(this.timer);
    clearInterval(this.pruneTimer);
    this.draining = true;
    let finalSnapshot = this.snapshot(finalTick, finalState, mark);
    const left = () => deadline - this.now();
    // A store that fails them (a connection cut, a failover) is asked again while the drain has
    // time: the final snapshot and the events appended are all that a restart brings back. Each
    // on its own, side by side: a snapshot store that hangs does not keep the appends from being
    // asked again, nor the other way round.
    const retries = Number.isFinite(deadline);
    const snapshotFailed = () => this.savedSeq < finalSnapshot && !(this.lastSaveError instanceof StaleSnapshotError);
    const saveFinal = async (): Promise<boolean> => {
      let inTime = await settledWithin(this.writing ?? Promise.resolve(), left());
      while (inTime && snapshotFailed() && retries && left() > DRAIN_RETRY_MS) {
        await delay(DRAIN_RETRY_MS);
        finalSnapshot = this.snapshot(finalTick, finalState, mark);
        inTime = await settledWithin(this.writing ?? Promise.resolve(), left());
      }
      return inTime;
    };
    const appendAll = async (): Promise<boolean> => {
      // A flush may have been running already; one more catches what it did not take.
      let inTime = await settledWithin(
        this.flushOutbox().then(() => this.flushOutbox()),
        left(),
      );
      while (inTime && this.events.length > 0 && this.appending === 0 && retries && left() > DRAIN_RETRY_MS) {
        await delay(DRAIN_RETRY_MS);
        inTime = await settledWithin(this.flushOutbox(), left());
      }
      return inTime;
    };
    const [snapshotInTime, outboxInTime, presenceInTime] = await Promise.all([
      saveFinal(),
      appendAll(),
      settledWithin(
        this.flushPresence().then(() => this.flushPresence()),
        left(),
      ),
    ]);
    // A prune under way stops after its current batch; the stores close after it.
    await settledWithin(this.pruning ?? Promise.resolve(), left());
    // Those whose removal still hangs (not in time) are not in `left` yet.
    const notRemoved = new Set([...this.left.keys(), ...this.removing]).size;
    if (!presenceInTime || notRemoved > 0) {
      log.warn(
        { players: notRemoved, inTime: presenceInTime },
        'presence of leaving players not removed; it expires after presence.ttl_ms',
      );
    }
    if (!outbox.durable && this.pending > 0) {
      log.error({ events: this.pending, inTime: outboxInTime }, 'domain events not relayed are lost with the in-process outbox');
    }
    // This very request, or a later one: an earlier snapshot of the same tick (a periodic one) does
    // not hold what changed since (the drain's kicks, joins and leaves between ticks).
    if (this.savedSeq < finalSnapshot) {
      const why = snapshotInTime
        ? ((this.lastSaveError as Error | undefined)?.message ?? 'it failed')
        : 'no answer within the drain (ops.drain_timeout_ms)';
      throw new Error(`the final snapshot (tick ${finalTick}) was not written: ${why}`, { cause: this.lastSaveError });
    }
    // Those of an append still under way (no answer in time) are as unwritten as those queued.
    const unappended = this.events.length + this.appending;
    if (unappended > 0) {
      const why = outboxInTime && this.appending === 0 ? 'appends failed' : 'no answer within the drain (ops.drain_timeout_ms)';
      throw new Error(`${unappended} domain events could not be appended to the outbox: ${why}`);
    }
  }
}
