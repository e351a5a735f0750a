import { readSnapshotBody, type SnapshotBodyVisitor } from '@aethex/proto';

/** An entity as the client last received it, in quantized world units (multiply by the scale). */
export interface EntityRecord {
  qx: number;
  qy: number;
  kind: number;
  flags: number;
}

/** Frames kept to resolve delta bases; the server never uses a base older than 32 ticks. */
const KEPT_FRAMES = 64;

/** Entities a frame holds before it first grows (a view of about 32 is typical). */
const INITIAL_CAPACITY = 64;

/**
 * The entities in view at one tick: a read-only map from entity id to record, kept as typed arrays
 * (index `i` in `[0, size)`: `ids[i]`, `qx[i]`, `qy[i]`, `kind[i]`, `flags[i]`, in no particular
 * order) so that applying 40 snapshots a second allocates nothing. `get` and iteration build a
 * fresh `EntityRecord` per call; hot loops can read the arrays through `indexOf` instead.
 *
 * A frame belongs to its `SnapshotStore`, which reuses it for a later tick once it is neither the
 * store's `current` nor its `previous` nor a possible base for the server's next snapshots: copy
 * what you keep longer (`new Map(frame)`); `tick` says which tick a frame holds.
 */
export class Frame implements ReadonlyMap<number, EntityRecord> {
  tick = 0;
  size = 0;
  ids: Uint32Array;
  qx: Int32Array;
  qy: Int32Array;
  kind: Uint16Array;
  flags: Uint32Array;
  /** Open addressing, linear probing: index + 1 of the entry with that id's hash, 0 for empty. */
  private table: Int32Array;
  private shift: number;

  constructor(capacity = INITIAL_CAPACITY) {
    this.ids = new Uint32Array(capacity);
    this.qx = new Int32Array(capacity);
    this.qy = new Int32Array(capacity);
    this.kind = new Uint16Array(capacity);
    this.flags = new Uint32Array(capacity);
    // At most half full: a table of the next power of two at or above twice the capacity.
    const bits = Math.max(4, 32 - Math.clz32(capacity * 2 - 1));
    this.table = new Int32Array(1 << bits);
    this.shift = 32 - bits;
  }

  get capacity(): number {
    return this.ids.length;
  }

  /** Where `id` is in the arrays, or -1. */
  indexOf(id: number): number {
    const table = this.table;
    const mask = table.length - 1;
    for (let h = Math.imul(id, 0x9e3779b1) >>> this.shift; ; h = (h + 1) & mask) {
      const e = table[h] as number;
      if (e === 0) return -1;
      if (this.ids[e - 1] === id) return e - 1;
    }
  }

  has(id: number): boolean {
    return this.indexOf(id) >= 0;
  }

  /** The ids of this frame's entities that `other` does not have. */
  idsNotIn(other: ReadonlyMap<number, unknown>): number[] {
    const ids: number[] = [];
    for (let i = 0; i < this.size; i++) if (!other.has(this.ids[i] as number)) ids.push(this.ids[i] as number);
    return ids;
  }

  get(id: number): EntityRecord | undefined {
    const i = this.indexOf(id);
    return i < 0 ? undefined : this.record(i);
  }

  private record(i: number): EntityRecord {
    return { qx: this.qx[i] as number, qy: this.qy[i] as number, kind: this.kind[i] as number, flags: this.flags[i] as number };
  }

  forEach(callback: (value: EntityRecord, key: number, map: ReadonlyMap<number, EntityRecord>) => void, thisArg?: unknown): void {
    for (let i = 0; i < this.size; i++) callback.call(thisArg, this.record(i), this.ids[i] as number, this);
  }

  *keys(): MapIterator<number> {
    for (let i = 0; i < this.size; i++) yield this.ids[i] as number;
  }

  *values(): MapIterator<EntityRecord> {
    for (let i = 0; i < this.size; i++) yield this.record(i);
  }

  *entries(): MapIterator<[number, EntityRecord]> {
    for (let i = 0; i < this.size; i++) yield [this.ids[i] as number, this.record(i)];
  }

  [Symbol.iterator](): MapIterator<[number, EntityRecord]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return 'Frame';
  }

  /** Empties the frame for `tick`, with room for at least `capacity` entities. */
  reset(tick: number, capacity: number): void {
    this.tick = tick;
    this.size = 0;
    if (capacity > this.ids.length) this.reallocate(capacity);
    else this.table.fill(0);
  }

  /** Adds an entity that is not in the frame yet; returns its index. */
  add(id: number, qx: number, qy: number, kind: number, flags: number): number {
    if (this.size === this.ids.length) this.reallocate(this.size * 2);
    const i = this.size++;
    this.ids[i] = id;
    this.qx[i] = qx;
    this.qy[i] = qy;
    this.kind[i] = kind;
    this.flags[i] = flags;
    this.index(id, i);
    return i;
  }

  /** Enters entry `i`, of entity `id`, in the table. */
  private index(id: number, i: number): void {
    const table = this.table;
    const mask = table.length - 1;
    let h = Math.imul(id, 0x9e3779b1) >>> this.shift;
    while (table[h] !== 0) h = (h + 1) & mask;
    table[h] = i + 1;
  }

  /** Grows the arrays to `capacity`, keeping the entries (and rebuilding the table). */
  private reallocate(capacity: number): void {
    const n = this.size;
    const grown = new Frame(capacity);
    grown.ids.set(this.ids.subarray(0, n));
    grown.qx.set(this.qx.subarray(0, n));
    grown.qy.set(this.qy.subarray(0, n));
    grown.kind.set(this.kind.subarray(0, n));
    grown.flags.set(this.flags.subarray(0, n));
    this.ids = grown.ids;
    this.qx = grown.qx;
    this.qy = grown.qy;
    this.kind = grown.kind;
    this.flags = grown.flags;
    this.table = grown.table;
    this.shift = grown.shift;
    for (let i = 0; i < n; i++) this.index(this.ids[i] as number, i);
  }
}

/**
 * Changes one snapshot made to the client's view. `entered` and `left` are worked out when first
 * read (a client nobody listens to for enter and leave never pays for them): read them before
 * the next snapshot is applied.
 */
export interface SnapshotChanges {
  readonly tick: number;
  readonly entered: readonly number[];
  readonly left: readonly number[];
  /** The store's newest frame after the snapshot (see `Frame` for how long it stays as it is). */
  readonly frame: Frame;
}

const NONE: readonly number[] = Object.freeze([]);

/** `SnapshotChanges` of a snapshot that became the newest view, over the view it replaced. */
class NewestChanges implements SnapshotChanges {
  private enteredIds: number[] | undefined;
  private leftIds: number[] | undefined;

  constructor(
    readonly tick: number,
    readonly frame: Frame,
    private readonly replaced: Frame,
  ) {}

  get entered(): readonly number[] {
    this.enteredIds ??= this.frame.idsNotIn(this.replaced);
    return this.enteredIds;
  }

  get left(): readonly number[] {
    this.leftIds ??= this.replaced.idsNotIn(this.frame);
    return this.leftIds;
  }
}

const EMPTY = new Frame(1);

/**
 * Rebuilds the server's per-client view from delta snapshots. Each snapshot names the base tick it
 * is relative to (0: none): the client's last acknowledgement the server received, which only
 * moves forward (docs/protocol.md). The store keeps the frames from the newest base it was sent
 * on, among the 64 newest ticks, so that the server's next base is at hand; older ones can never
 * be a base again and are reused at once. Frames are reused (see `Frame`): in a steady stream,
 * applying a snapshot allocates only its `SnapshotChanges`, and the few frames in use stay warm in
 * the CPU's caches (with a frame per tick kept for 64 ticks, a process holding hundreds of clients
 * spent twice as long per snapshot, reading frames back from memory: docs/benchmarks.md).
 */
export class SnapshotStore {
  /** The frame of tick t at t % KEPT_FRAMES, when its `tick` is t. */
  private readonly ring: (Frame | undefined)[] = new Array(KEPT_FRAMES).fill(undefined);
  /** Frames no longer kept or handed out, for reuse. */
  private readonly free: Frame[] = [];
  private latest: Frame = EMPTY;
  private before: Frame = EMPTY;
  latestTick = 0;
  /** The newest base a snapshot was relative to: frames of earlier ticks are given up. */
  private floor = 0;
  /** Per base index: equal to `stamp` when that entity is in the snapshot's `removed`. */
  private dropped = new Uint32Array(INITIAL_CAPACITY);
  private stamp = 0;
  /** The frame being built and the visitor that fills it (one object: no closures per snapshot). */
  private target: Frame = EMPTY;
  private readonly visitor: SnapshotBodyVisitor = {
    delta: (id, dqx, dqy) => {
      const f = this.target;
      const i = f.indexOf(id);
      if (i < 0) throw new RangeError(`snapshot ${f.tick} moves entity ${id}, which its base does not have`);
      f.qx[i] = (f.qx[i] as number) + dqx;
      f.qy[i] = (f.qy[i] as number) + dqy;
    },
    full: (id, qx, qy, kind, flags) => {
      const f = this.target;
      const i = f.indexOf(id);
      if (i < 0) {
        f.add(id, qx, qy, kind, flags);
        return;
      }
      f.qx[i] = qx;
      f.qy[i] = qy;
      f.kind[i] = kind;
      f.flags[i] = flags;
    },
  };

  /**
   * Applies a snapshot. Throws a RangeError when its base is unknown or its body is malformed; the
   * client should then reconnect (the server will send a full snapshot). The store is unchanged
   * by a snapshot that throws. The ids that left are `removed[0 .. removedCount)` (a reused array
   * can be longer).
   */
  apply(tick: number, baseTick: number, body: Uint8Array, removed: ArrayLike<number>, removedCount = removed.length): SnapshotChanges {
    let base: Frame = EMPTY;
    if (baseTick !== 0) {
      const kept = this.ring[baseTick % KEPT_FRAMES];
      if (!kept || kept.tick !== baseTick) {
        throw new RangeError(`snapshot ${tick} is relative to tick ${baseTick}, which this client does not have`);
      }
      base = kept;
    }
    const frame = this.free.pop() ?? new Frame();
    frame.reset(tick, base.size);
    // The base less the removed entities.
    let stamp = ++this.stamp;
    if (stamp === 0xffffffff) {
      this.dropped.fill(0);
      this.stamp = stamp = 1;
    }
    if (this.dropped.length < base.capacity) this.dropped = new Uint32Array(base.capacity);
    const dropped = this.dropped;
    for (let r = 0; r < removedCount; r++) {
      const i = base.indexOf(removed[r] as number);
      if (i >= 0) dropped[i] = stamp;
    }
    for (let i = 0; i < base.size; i++) {
      if (dropped[i] !== stamp) {
        frame.add(base.ids[i] as number, base.qx[i] as number, base.qy[i] as number, base.kind[i] as number, base.flags[i] as number);
      }
    }
    this.target = frame;
    try {
      readSnapshotBody(body, this.visitor);
    } catch (err) {
      this.free.push(frame);
      throw err;
    } finally {
      this.target = EMPTY;
    }
    let changes: SnapshotChanges | undefined;
    const slot = tick % KEPT_FRAMES;
    const evicted = this.ring[slot];
    if (tick > this.latestTick) {
      const latest = this.latest;
      // `latest` stays as it is until the next snapshot (it becomes `previous`).
      changes = new NewestChanges(tick, frame, latest);
      const dropping = this.before;
      this.before = latest;
      this.latest = frame;
      this.latestTick = tick;
      this.ring[slot] = frame;
      this.release(dropping);
    } else if (tick > this.latestTick - KEPT_FRAMES && tick >= this.floor) {
      // Late, but still a possible base for the server.
      this.ring[slot] = frame;
    } else {
      this.free.push(frame);
    }
    if (evicted && evicted !== frame) this.release(evicted);
    if (baseTick > this.floor) this.giveUpBefore(baseTick);
    return changes ?? { tick, entered: NONE, left: NONE, frame: this.latest };
  }

  /** The server based a snapshot on `floor`: it never uses an earlier tick again. */
  private giveUpBefore(floor: number): void {
    // A frame further back than the ring is long leaves when a later tick takes its slot.
    for (let t = Math.max(this.floor, floor - KEPT_FRAMES); t < floor; t++) {
      const f = this.ring[t % KEPT_FRAMES];
      if (f?.tick === t) this.drop(f);
    }
    this.floor = floor;
  }

  /** Takes `f` out of the ring and puts it up for reuse unless still held. */
  private drop(f: Frame): void {
    this.ring[f.tick % KEPT_FRAMES] = undefined;
    this.release(f);
  }

  /** Puts a frame up for reuse unless something still holds it. */
  private release(f: Frame): void {
    if (f === EMPTY || f === this.latest || f === this.before || this.ring[f.tick % KEPT_FRAMES] === f) return;
    if (!this.free.includes(f)) this.free.push(f);
  }

  /** The newest view. */
  get current(): Frame {
    return this.latest;
  }

  /** The view before the newest (for interpolation; empty before the second snapshot). */
  get previous(): Frame {
    return this.before;
  }
}
