/** An axis-aligned rectangle in world units: min inclusive, max exclusive. */
export interface Rect {
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

type TypedArrayOf<T> = { new (buffer: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number };

/**
 * A typed array over shared memory: the world, the grid and the quantized rows are read by the
 * snapshot threads (engine.snapshot_threads) without copies. Plain array access is as fast as on
 * an ArrayBuffer.
 */
export function sharedArray<T>(Ctor: TypedArrayOf<T>, length: number): T {
  return new Ctor(new SharedArrayBuffer(length * Ctor.BYTES_PER_ELEMENT));
}

/** Thrown by `spawn` when the world already holds `capacity` entities. */
export class CapacityError extends Error {
  constructor(
    readonly capacity: number,
    message = `the shard is at its entity capacity of ${capacity}`,
  ) {
    super(message);
    this.name = 'CapacityError';
  }
}

/**
 * Ticks an id of a despawned entity rests before a new entity gets it: longer than any snapshot
 * delta's base (32 ticks) and a neighbour's ghost of it lives, so no client or neighbour ever takes
 * the new entity for the old one.
 */
export const ID_REST_TICKS = 128;

/**
 * How far ahead of this shard's counter a neighbour may name an id of this shard's range and have
 * the counter follow (`World.catchUp`): more than a run hands out before its first snapshot.
 */
export const ID_CATCH_UP = 1 << 16;

/** Entity kinds the platform knows; games may use any other value below 65536. */
export const KIND_NPC = 0;
export const KIND_PLAYER = 1;

/**
 * Who an entity in this shard's world belongs to. OWNED: this shard simulates it. GHOST: a
 * read-only mirror of a neighbour's entity near the border (never simulated, never persisted, no
 * input). OFFERED: owned, but offered to a neighbour in a handoff: frozen until the offer is
 * committed (it becomes a ghost) or rolled back. DORMANT: a player's entity waiting for that
 * player to rejoin here (their connection dropped, or it was restored from a snapshot), kept out
 * of sight and out of the simulation — so that a player who moved to a neighbour after the
 * snapshot is never seen twice — until they rejoin or the rejoin window ends.
 */
export const MODE_OWNED = 0;
export const MODE_GHOST = 1;
export const MODE_OFFERED = 2;
export const MODE_DORMANT = 3;

/** Moves a player may have waiting (beyond it, a new input only advances the newest's sequence). */
export const MAX_QUEUED_MOVES = 160;
/** Moves one step applies at most to one entity (catching up: see `World.credit`). */
export const MAX_MOVES_PER_STEP = 4;
/** Credit a player earns standing: the network jitter a step absorbs (8 steps, 200 ms at 40 Hz). */
export const IDLE_CREDIT = 8;
/**
 * Steps in a row a player's one-move jitter buffer may stay full — a move left waiting after every
 * step — before a step spends a credit to apply that move too: 0.5 s at 40 Hz. A client that sends
 * one input a tick fills the buffer with one late input and, sending exactly as fast as the shard
 * ticks, never empties it: a tick more of input lag for as long as it walks. See `step`.
 */
export const JITTER_BUFFER_STEPS = 20;
/** Most credit an entity can hold (the frozen ticks granted are capped to it). */
export const MAX_CREDIT = 255;
/**
 * Ticks granted credit (`World.grantCredit`) waits for the inputs it is for — re-sent after a
 * rejoin, a handoff, ticks the shard dropped — to start arriving: 1 s at 40 Hz. An entity still
 * standing then keeps only `IDLE_CREDIT`.
 */
export const CREDIT_LAPSE_TICKS = 40;
/** Largest game state an entity may carry (`World.gameState`), in bytes. */
export const MAX_GAME_STATE_BYTES = 4096;

/** The world arrays a snapshot thread reads. */
export interface WorldShare {
  id: Uint32Array;
  x: Float32Array;
  y: Float32Array;
  mode: Uint8Array;
  kind: Uint16Array;
  flags: Uint32Array;
  lastSeq: Uint32Array;
}

/**
 * The entities of one shard in structure-of-arrays form. Entities are packed densely in
 * `[0, count)`: spawn appends and despawn moves the last entity into the hole, both O(1), so loops
 * over entities touch contiguous memory and allocate nothing. Entity ids are stable u32 values,
 * given again only once the entity is gone for good and the id has rested (`despawn`,
 * `idRestTicks`); `indexOf` maps an id to its current slot.
 *
 * Positions and velocities are Float32: every write rounds through Math.fround, so results are
 * bit-identical on every run with the same inputs (determinism).
 */
export class World {
  readonly capacity: number;
  count = 0;
  /**
   * Changes whenever an entity comes or goes (which slot holds which entity may change), and when
   * the engine moves a ghost between ticks: the tick's grid no longer describes the world.
   */
  layout = 0;
  readonly id: Uint32Array;
  readonly x: Float32Array;
  readonly y: Float32Array;
  readonly vx: Float32Array;
  readonly vy: Float32Array;
  readonly kind: Uint16Array;
  readonly flags: Uint32Array;
  /** Last input sequence applied to the entity (players only): what snapshots acknowledge. */
  readonly lastSeq: Uint32Array;
  /** The move the next step applies (`hasMove`), from the input numbered `moveSeq`. */
  readonly moveX: Float32Array;
  readonly moveY: Float32Array;
  readonly moveSeq: Uint32Array;
  readonly hasMove: Uint8Array;
  /**
   * The move after it (`hasNext`): an input that arrived while one was already waiting (two in one
   * tick, as network jitter delivers them). Later ones wait in `queued`. See `applyInput`.
   */
  readonly nextX: Float32Array;
  readonly nextY: Float32Array;
  readonly nextSeq: Uint32Array;
  readonly hasNext: Uint8Array;
  /**
   * Moves waiting after `next`, by entity id: [seq, x, y] triples in order, at most
   * `MAX_QUEUED_MOVES`. Only a burst (a late batch, re-sent inputs) fills it, so it is off the
   * typed arrays: an entity without one costs nothing.
   */
  readonly queued = new Map<number, number[]>();
  /**
   * Steps of movement an entity may catch up on: a step applies one waiting move and, while it has
   * credit, up to `MAX_MOVES_PER_STEP - 1` more. A player earns one per step with no move waiting
   * (up to `IDLE_CREDIT`), and the engine grants the ticks it kept an entity frozen (dormant, on
   * offer). See `step`.
   */
  readonly credit: Uint8Array;
  /**
   * Steps in a row after which a move was left waiting (the jitter buffer full), up to 255; at
   * `JITTER_BUFFER_STEPS` a step with credit applies that move too. See `step`.
   */
  readonly buffered: Uint8Array;
  /**
   * When credit granted beyond `IDLE_CREDIT` lapses, by entity id: the tick by which the burst it
   * was granted for must have begun (see `grantCredit`).
   */
  readonly creditLapse = new Map<number, number>();
  /**
   * The game's own state of an entity (inventory, health, ...: opaque bytes, at most
   * `MAX_GAME_STATE_BYTES`), by entity id. It travels with a player handed over to a neighbour and
   * is kept in the shard's snapshots; it goes when the entity does. Off the typed arrays: only
   * entities a game gives state cost anything.
   */
  readonly gameState = new Map<number, Uint8Array>();
  /**
   * How many times the game has set a player entity's state, and its flags (`GameContext.setState`,
   * `setFlags`), by entity id: tells a late change from a handoff apart from a write made here
   * since. Players only: they are what is handed over.
   */
  readonly stateWrites = new Map<number, number>();
  readonly flagWrites = new Map<number, number>();
  /**
   * How many times a player entity owned here has changed owner (its generation in ghost updates
   * and offers), by entity id; absent: never (or not since a snapshot of a build before version 4
   * of the state blob, which kept none). Players only: they are what is handed over.
   */
  readonly handoffs = new Map<number, number>();
  /**
   * Slots kept for entities this shard accepted in a handoff and has not adopted yet: spawns of new
   * entities (and ghosts) leave them free; only a spawn with the entity's id (its adoption) takes one.
   */
  reserved = 0;
  /** MODE_* of each entity. */
  readonly mode: Uint8Array;
  private readonly slotOf = new Map<number, number>();
  private nextId: number;
  /**
   * Ids of despawned entities this shard handed out and may hand out again (see `despawn`), with
   * the tick each was freed, oldest first: [id, tick] pairs from `freedHead`. New entities take
   * them after `idRestTicks`, so neither a game spawning and despawning all the time
   * (projectiles) nor players joining and leaving use up the shard's id range.
   */
  private readonly freed: number[] = [];
  private freedHead = 0;
  /**
   * The ids in `freed` that may still go, each with the tick of its live entry: an entry whose id
   * left this map (taken by an entity spawned with it meanwhile), or was freed again since (a newer
   * entry), is skipped. So no id goes twice, none while an entity has it, and none before it rested
   * from its last free.
   */
  private readonly freedIds = new Map<number, number>();
  /**
   * Ids of another shard's range whose entities left for good here (a player who walked in and
   * quit), with the tick each was freed: [id, tick] pairs, oldest first. Only the shard whose range
   * it is may hand one out again (`takeReleased` gives them to the sharding, which sends them home or,
   * when it cannot, lets this shard use them: `free`).
   */
  private readonly released: number[] = [];
  /** The current tick, for resting ids (the engine sets it each step). */
  clock = 0;
  /**
   * Ticks a freed id rests: at least ID_REST_TICKS, and longer than a client may go without a
   * snapshot and stay connected (the engine sets it from gateway.slow_drop_ticks): a client still
   * showing the old entity would take a new one by its id for it, moved and changed in kind.
   */
  idRestTicks = ID_REST_TICKS;
  /**
   * Freed ids are handed out again only once freed at or before this tick: the tick before the
   * capture of the last snapshot of this shard's state the store took (a free between ticks t and
   * t+1 carries t and may come after the capture at the end of t). The shard sets it, −1 until the
   * first; without snapshots nothing is restored, and any rested id may go. A crash restores that
   * snapshot, in which an id freed after it still belongs to the entity that had it; handed out
   * again meanwhile, it could be alive at a neighbour (a player who crossed): two entities, one id.
   */
  reuseThrough = Number.POSITIVE_INFINITY;

  /**
   * Ids this world hands out are in [firstId, idLimit): the shards of one world use disjoint
   * ranges, so an entity keeps its id when it moves to another shard and ghosts never collide.
   */
  constructor(
    capacity: number,
    readonly firstId = 1,
    readonly idLimit = 0x1_0000_0000,
    /** The next id to hand out (a restored world numbers on past its snapshot's counter). */
    nextId = firstId,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity must be a positive integer, got ${capacity}`);
    this.capacity = capacity;
    this.nextId = Math.min(Math.max(nextId, firstId), idLimit);
    this.id = sharedArray(Uint32Array, capacity);
    this.x = sharedArray(Float32Array, capacity);
    this.y = sharedArray(Float32Array, capacity);
    this.vx = sharedArray(Float32Array, capacity);
    this.vy = sharedArray(Float32Array, capacity);
    this.kind = sharedArray(Uint16Array, capacity);
    this.flags = sharedArray(Uint32Array, capacity);
    this.lastSeq = sharedArray(Uint32Array, capacity);
    this.moveX = new Float32Array(capacity);
    this.moveY = new Float32Array(capacity);
    this.moveSeq = new Uint32Array(capacity);
    this.hasMove = new Uint8Array(capacity);
    this.nextX = new Float32Array(capacity);
    this.nextY = new Float32Array(capacity);
    this.nextSeq = new Uint32Array(capacity);
    this.hasNext = new Uint8Array(capacity);
    this.credit = new Uint8Array(capacity);
    this.buffered = new Uint8Array(capacity);
    this.mode = sharedArray(Uint8Array, capacity);
  }

  /**
   * Sets slot `i`'s credit to `ticks` (capped at `MAX_CREDIT`): ticks it was kept frozen, or that
   * the shard dropped, whose inputs arrive late and may be caught up on. Credit beyond
   * `IDLE_CREDIT` is for the burst that follows: unspent after `CREDIT_LAPSE_TICKS` of standing, it
   * lapses (see `step`), so no one saves it for a sprint later.
   */
  grantCredit(i: number, ticks: number): void {
    const c = Math.min(MAX_CREDIT, Math.max(0, Math.floor(ticks)));
    this.credit[i] = c;
    if (c > IDLE_CREDIT) this.creditLapse.set(this.id[i] as number, this.clock + CREDIT_LAPSE_TICKS);
  }

  /** Whether slot `i`'s granted credit has lapsed (then it is forgotten). */
  creditLapsed(i: number): boolean {
    const id = this.id[i] as number;
    const at = this.creditLapse.get(id);
    if (at !== undefined && this.clock < at) return false;
    this.creditLapse.delete(id);
    return true;
  }

  /** Drops the moves waiting for slot `i` (their inputs stay unacknowledged) and its credit. */
  clearMoves(i: number): void {
    if (this.queued.size > 0) this.queued.delete(this.id[i] as number);
    if (this.creditLapse.size > 0) this.creditLapse.delete(this.id[i] as number);
    this.credit[i] = 0;
    this.buffered[i] = 0;
    this.moveX[i] = 0;
    this.moveY[i] = 0;
    this.moveSeq[i] = 0;
    this.hasMove[i] = 0;
    this.nextX[i] = 0;
    this.nextY[i] = 0;
    this.nextSeq[i] = 0;
    this.hasNext[i] = 0;
  }

  /**
   * Adds an entity and returns its id; throws CapacityError when full. An explicit `id` is one
   * handed out before: restored from a snapshot (whose counter the world starts past), adopted in
   * a handoff, or a neighbour's ghost. It never moves this shard's counter: ids at or above it were
   * never handed out here (`neverIssued`), and one from a neighbour must not use up this range.
   */
  spawn(x: number, y: number, kind: number, id?: number): number {
    if (this.count >= this.capacity || (id === undefined && this.count + this.reserved >= this.capacity))
      throw new CapacityError(this.capacity);
    let entityId: number;
    if (id !== undefined) {
      if (this.slotOf.has(id)) throw new Error(`entity ${id} already exists`);
      entityId = id;
      // Freed here, and alive again (adopted back, a copy taken back): not handed out while it is.
      this.freedIds.delete(id);
    } else {
      const rested = this.takeFreed();
      if (rested >= 0) entityId = rested;
      else if (this.nextId >= this.idLimit) {
        throw new CapacityError(this.capacity, `the shard has used up its entity ids (below ${this.idLimit})`);
      } else entityId = this.nextId++;
    }
    const i = this.count++;
    this.layout++;
    this.id[i] = entityId;
    this.x[i] = x;
    this.y[i] = y;
    this.vx[i] = 0;
    this.vy[i] = 0;
    this.kind[i] = kind;
    this.flags[i] = 0;
    this.lastSeq[i] = 0;
    this.clearMoves(i);
    this.mode[i] = MODE_OWNED;
    this.slotOf.set(entityId, i);
    return entityId;
  }

  /**
   * Removes an entity; returns false when there is none with that id. Its id is handed out again
   * after `idRestTicks` when `reuse`: by default for an owned non-player entity (those never leave
   * their shard); a player's only when the engine says it is gone for good — a player's entity may
   * live on at a neighbour while this shard drops its copy (a restored one a neighbour claims, one
   * handed over). One of another shard's range is released (`takeReleased`), not handed out here.
   */
  despawn(entityId: number, reuse?: boolean): boolean {
    const i = this.slotOf.get(entityId);
    if (i === undefined) return false;
    this.slotOf.delete(entityId);
    this.layout++;
    if (this.queued.size > 0) this.queued.delete(entityId);
    if (this.creditLapse.size > 0) this.creditLapse.delete(entityId);
    if (this.gameState.size > 0) this.gameState.delete(entityId);
    if (this.stateWrites.size > 0) this.stateWrites.delete(entityId);
    if (this.flagWrites.size > 0) this.flagWrites.delete(entityId);
    if (this.handoffs.size > 0) this.handoffs.delete(entityId);
    if (reuse ?? (this.kind[i] !== KIND_PLAYER && this.mode[i] === MODE_OWNED)) {
      if (entityId < this.firstId || entityId >= this.idLimit) this.released.push(entityId, this.clock);
      else this.free(entityId, this.clock);
    }
    const last = --this.count;
    if (i !== last) {
      this.id[i] = this.id[last] as number;
      this.x[i] = this.x[last] as number;
      this.y[i] = this.y[last] as number;
      this.vx[i] = this.vx[last] as number;
      this.vy[i] = this.vy[last] as number;
      this.kind[i] = this.kind[last] as number;
      this.flags[i] = this.flags[last] as number;
      this.lastSeq[i] = this.lastSeq[last] as number;
      this.moveX[i] = this.moveX[last] as number;
      this.moveY[i] = this.moveY[last] as number;
      this.moveSeq[i] = this.moveSeq[last] as number;
      this.hasMove[i] = this.hasMove[last] as number;
      this.nextX[i] = this.nextX[last] as number;
      this.nextY[i] = this.nextY[last] as number;
      this.nextSeq[i] = this.nextSeq[last] as number;
      this.hasNext[i] = this.hasNext[last] as number;
      this.credit[i] = this.credit[last] as number;
      this.buffered[i] = this.buffered[last] as number;
      this.mode[i] = this.mode[last] as number;
      this.slotOf.set(this.id[i] as number, i);
    }
    return true;
  }

  /** The id the next spawn without an id takes from the freed ones, or −1 when none may go yet (it takes a new one). */
  get nextFreedId(): number {
    for (let k = this.freedHead; k < this.freed.length; k += 2) {
      const id = this.freed[k] as number;
      const at = this.freed[k + 1] as number;
      if (this.freedIds.get(id) !== at) continue;
      return this.mayGo(at) ? id : -1;
    }
    return -1;
  }

  /** An id freed at tick `at` has rested `idRestTicks` and a snapshot captured after it is stored. */
  private mayGo(at: number): boolean {
    return at <= this.reuseThrough && this.clock - at >= this.idRestTicks;
  }

  /**
   * The oldest freed id that may go again — rested `idRestTicks` and freed at or before
   * `reuseThrough` — taken off the list; −1 when none may.
   */
  private takeFreed(): number {
    while (this.freedHead < this.freed.length) {
      const id = this.freed[this.freedHead] as number;
      const at = this.freed[this.freedHead + 1] as number;
      const stale = this.freedIds.get(id) !== at;
      if (!stale && !this.mayGo(at)) return -1;
      this.freedHead += 2;
      if (this.freedHead === this.freed.length) {
        this.freed.length = 0;
        this.freedHead = 0;
      } else if (this.freedHead > 4096 && this.freedHead * 2 > this.freed.length) {
        this.freed.splice(0, this.freedHead);
        this.freedHead = 0;
      }
      if (stale) continue;
      this.freedIds.delete(id);
      return id;
    }
    return -1;
  }

  /**
   * Puts `id` among the ids this world hands out again, as freed at tick `at` (it rests from then,
   * and goes once `reuseThrough` reaches `at`: a snapshot captured after it is stored): an id of its own range it handed
   * out, or one of another shard's range that left for good here and could not go home (see
   * `released`). False, and nothing changes, when an entity has the id, it is already free, or it
   * is of this world's range but was never handed out here.
   */
  free(id: number, at = this.clock): boolean {
    if (!Number.isInteger(id) || id < 1 || id > 0xffff_ffff) return false;
    if (this.slotOf.has(id) || this.freedIds.has(id) || this.neverIssued(id)) return false;
    // Oldest first: an id freed earlier than the newest entry waits behind it, as if freed then.
    const last = this.freed.length > this.freedHead ? (this.freed[this.freed.length - 1] as number) : at;
    const tick = Math.max(at, last);
    this.freed.push(id, tick);
    this.freedIds.set(id, tick);
    return true;
  }

  /**
   * Takes the ids of other shards' ranges freed here (see `released`) at or before tick `through`:
   * those a stored snapshot no longer holds (`through` as `reuseThrough`), so a crash here cannot
   * bring their entities back.
   */
  takeReleased(through: number): { id: number; at: number }[] {
    let n = 0;
    while (n < this.released.length && (this.released[n + 1] as number) <= through) n += 2;
    const out: { id: number; at: number }[] = [];
    for (let k = 0; k < n; k += 2) out.push({ id: this.released[k] as number, at: this.released[k + 1] as number });
    this.released.splice(0, n);
    return out;
  }

  /** The arrays snapshot threads read (shared memory, no copies). */
  share(): WorldShare {
    return { id: this.id, x: this.x, y: this.y, mode: this.mode, kind: this.kind, flags: this.flags, lastSeq: this.lastSeq };
  }

  /** The slot of an entity, or -1. Slots change on despawn; hold ids, not slots. */
  indexOf(entityId: number): number {
    return this.slotOf.get(entityId) ?? -1;
  }

  /**
   * Whether `id` lies in this shard's range but was never handed out here: no neighbour can hold
   * an entity by it, and a spawn without an id would give it to a new entity.
   */
  neverIssued(id: number): boolean {
    return id >= this.nextId && id < this.idLimit;
  }

  /**
   * A neighbour holds an entity by `id`, of this shard's range but not handed out by this run: an
   * earlier run of this shard may have handed it out and lost its counter (a crash before its first
   * snapshot, a snapshot lost). Within ID_CATCH_UP of the counter, the counter moves past it, so
   * this shard never gives the id to another entity (true); further ahead it is taken for a
   * neighbour's bug, not followed (false): one id near the range's end would use the range up.
   */
  catchUp(id: number): boolean {
    if (!this.neverIssued(id)) return true;
    if (id - this.nextId >= ID_CATCH_UP) return false;
    this.nextId = id + 1;
    return true;
  }

  /** The id the next spawn without an explicit id will get (persisted with snapshots). */
  get nextEntityId(): number {
    return this.nextId;
  }

  /**
   * A 32-bit FNV-1a hash over every entity's id, position, velocity, kind, flags and last input
   * sequence, in slot order. Equal hashes after equal inputs show the simulation is deterministic.
   */
  stateHash(): number {
    let h = 0x811c9dc5;
    const view = new DataView(new ArrayBuffer(4));
    const mix = (bits: number) => {
      for (let b = 0; b < 4; b++) {
        h ^= (bits >>> (b * 8)) & 0xff;
        h = Math.imul(h, 0x01000193);
      }
    };
    for (let i = 0; i < this.count; i++) {
      mix(this.id[i] as number);
      for (const arr of [this.x, this.y, this.vx, this.vy]) {
        view.setFloat32(0, arr[i] as number);
        mix(view.getUint32(0));
      }
      mix(this.kind[i] as number);
      mix(this.flags[i] as number);
      mix(this.lastSeq[i] as number);
    }
    return h >>> 0;
  }
}
