import { quantumRange, type SnapshotBodyWriter } from '@aethex/proto';
import { type Rect, sharedArray, type World } from '../sim/world.js';
import type { Interest } from '../spatial/aoi.js';
import type { HeldMarks } from '../spatial/grid.js';

/** Snapshots kept per client as delta bases: 32 ticks (0.8 s at 40 Hz). Older acks get a full snapshot. */
export const HISTORY_TICKS = 32;

/** What encoding reads of the world: the World itself, or a snapshot thread's view of it. */
export type EntityTable = Pick<World, 'count' | 'id' | 'mode' | 'x' | 'y' | 'kind' | 'flags' | 'lastSeq' | 'indexOf'>;

/**
 * How positions become quanta: `q = round(position × invScale)` (invScale = 1 / engine.position_scale),
 * held to the quanta whose position (`q × scale`, as clients read it) is inside the world's
 * bounds [min, max): the largest position the shard keeps, just under max, would otherwise round up
 * to exactly max.
 */
export interface Quanta {
  invScale: number;
  minX: number;
  maxX: number;
  minY: number;
  maxY: number;
}

/** The Quanta of a world with `bounds`, at `scale` world units a quantum (`quantumRange` on each axis). */
export function quantaOf(bounds: Rect, scale: number): Quanta {
  const x = quantumRange(bounds.minX, bounds.maxX, scale);
  const y = quantumRange(bounds.minY, bounds.maxY, scale);
  return { invScale: 1 / scale, minX: x.lo, maxX: x.hi, minY: y.lo, maxY: y.hi };
}

/** A QuantizedWorld's shared rows, sent to snapshot threads. */
export interface QuantizedShare {
  capacity: number;
  rows: Int32Array[];
  rowTick: Uint32Array;
}

/** Int32 fields per slot in a QuantizedWorld row: qx, qy, kind, flags. */
const ROW = 4;

/**
 * The world's entities quantized once per tick and kept for the last HISTORY_TICKS ticks, shared by
 * every client's encoding: a client's sent frame then needs only (id, slot) per entity, and its
 * base positions are read from the row of the tick it acknowledged. Each row interleaves qx, qy,
 * kind and flags per slot, so one entity is one cache line; the per-slot scratch marks that match a
 * client's base frame against its current view are interleaved the same way. With thousands of
 * clients per tick, memory traffic — not arithmetic — is what encoding costs.
 */
export class QuantizedWorld {
  /** rows[t % HISTORY_TICKS]: slot s at [s*4 .. s*4+4) = qx, qy, kind, flags (as int32 bits). */
  readonly rows: Int32Array[];
  /** The tick each row holds (2^32 - 1: none); unsigned, as the protocol's ticks are. */
  readonly rowTick: Uint32Array;
  /** Scratch for `encodeDelta`: marks[s*2] says slot s is in the base frame, marks[s*2+1] its slot there. */
  readonly marks: Int32Array;
  private nextStamp = 0;
  world: EntityTable | undefined;

  /** `shared`: another thread's rows (from `share()`), read here with marks of this thread's own. */
  constructor(
    readonly capacity: number,
    shared?: QuantizedShare,
  ) {
    this.rows = shared?.rows ?? Array.from({ length: HISTORY_TICKS }, () => sharedArray(Int32Array, capacity * ROW));
    this.rowTick = shared?.rowTick ?? sharedArray(Uint32Array, HISTORY_TICKS).fill(0xffffffff);
    this.marks = new Int32Array(capacity * 2);
  }

  share(): QuantizedShare {
    return { capacity: this.capacity, rows: this.rows, rowTick: this.rowTick };
  }

  /** Two fresh stamp values: "in the base" and "in the base and seen now". */
  takeStamps(): number {
    if (this.nextStamp >= 0x3ffffff0) {
      this.marks.fill(0);
      this.nextStamp = 0;
    }
    this.nextStamp += 2;
    return this.nextStamp;
  }

  /** Quantizes the world as it is at `tick` (see Quanta). */
  update(world: EntityTable, quanta: Quanta, tick: number): void {
    this.world = world;
    const { x, y, kind, flags } = world;
    const { invScale, minX, maxX, minY, maxY } = quanta;
    const at = tick % HISTORY_TICKS;
    const row = this.rows[at] as Int32Array;
    this.rowTick[at] = tick;
    for (let i = 0, r = 0; i < world.count; i++, r += ROW) {
      row[r] = Math.min(maxX, Math.max(minX, Math.round((x[i] as number) * invScale)));
      row[r + 1] = Math.min(maxY, Math.max(minY, Math.round((y[i] as number) * invScale)));
      row[r + 2] = kind[i] as number;
      row[r + 3] = flags[i] as number;
    }
  }

  /** The row holding `tick`, or undefined when it was overwritten (or never written). */
  row(tick: number): Int32Array | undefined {
    const at = tick % HISTORY_TICKS;
    return this.rowTick[at] === tick ? this.rows[at] : undefined;
  }
}

/** The outcome of `encodeDelta`: the body is in the writer, removed ids in the scratch's `removed[0..removedCount)`. */
export interface DeltaResult {
  baseTick: number;
  removedCount: number;
}

/**
 * Per-thread working memory of `encodeDelta`, shared by all the clients one thread encodes: what is
 * only needed while one snapshot is cut is not kept per client, where it would be thousands of cold
 * cache lines a tick.
 */
export class DeltaScratch {
  /** Current slot of each base entry (-1: gone), for the removal pass. */
  nowSlot: Int32Array;
  /** Ids that left the view, [0, removedCount) after `encodeDelta`. */
  removed: Uint32Array;

  constructor(maxVisible: number) {
    this.nowSlot = new Int32Array(maxVisible);
    this.removed = new Uint32Array(maxVisible);
  }

  ensure(n: number): void {
    if (n <= this.nowSlot.length) return;
    this.nowSlot = new Int32Array(n);
    this.removed = new Uint32Array(n);
  }
}

/** A frame's header words in a DeltaHistory log: its tick, then its entity count. */
const FRAME_HEAD = 2;
/** The tick of a frame that holds nothing. */
const NO_TICK = 0xffffffff;

/**
 * One client's sent-snapshot history. `encodeDelta` writes the client's visible entities at `tick`
 * as a layout-1 body against the frame the client acknowledged (`ackTick`), or as full records when
 * that frame is no longer kept, and remembers what it sent. All frames live in one array — per
 * frame its tick and count, then per entity its id and its slot at that tick — so a base frame,
 * header included, is a few contiguous cache lines, and a client's whole state one object and one
 * array (thousands of clients a tick: each extra cold line per client shows). It grows (all frames
 * at once) only when a client's visible set exceeds anything seen before.
 */
export class DeltaHistory {
  /** Frame f at [f*stride, (f+1)*stride): tick, count, then count (id, slot) pairs of uint32. */
  private log: Uint32Array;
  private stride: number;
  /** The tick of the last frame written, and whether that frame was full (`maxVisible`: likely a crowd, capped). */
  private lastTick = NO_TICK;
  private lastFull = false;
  /**
   * Per frame, whether it was cut since the last `reset`: its tick word alone cannot say, since
   * NO_TICK is also a tick (2^32 - 1), and a reset frame would pass for it.
   */
  private readonly cut = new Uint8Array(HISTORY_TICKS);

  constructor(readonly maxVisible: number) {
    this.stride = FRAME_HEAD + Math.min(64, maxVisible) * 2;
    this.log = new Uint32Array(HISTORY_TICKS * this.stride);
    this.reset();
  }

  /** Forgets every frame, so that a history can serve a new session (the engine reuses them). */
  reset(): void {
    this.lastTick = NO_TICK;
    this.lastFull = false;
    this.cut.fill(0);
    for (let o = 0; o < this.log.length; o += this.stride) {
      this.log[o] = NO_TICK;
      this.log[o + 1] = 0;
    }
  }

  private ensure(n: number): void {
    const cap = (this.stride - FRAME_HEAD) / 2;
    if (n <= cap) return;
    const stride = FRAME_HEAD + Math.min(this.maxVisible, Math.max(n, cap * 2)) * 2;
    const log = new Uint32Array(HISTORY_TICKS * stride);
    for (let f = 0; f < HISTORY_TICKS; f++) {
      const o = f * this.stride;
      log.set(this.log.subarray(o, o + FRAME_HEAD + (this.log[o + 1] as number) * 2), f * stride);
    }
    this.log = log;
    this.stride = stride;
  }

  /**
   * When the last frame cut was full (`maxVisible` entities: a crowd, so the next view is likely
   * capped too), marks its entities' slots now in `held.marks` with a fresh stamp, for the next
   * query to prefer them (`HeldMarks`), and returns true; else false (and marks nothing: an
   * uncrowded client pays one field read for this).
   */
  markSent(q: QuantizedWorld, held: HeldMarks): boolean {
    if (!this.lastFull) return false;
    const log = this.log;
    const fo = (this.lastTick % HISTORY_TICKS) * this.stride;
    if (log[fo] !== this.lastTick) return false;
    const world = q.world as EntityTable;
    const worldIds = world.id;
    const marks = q.marks;
    const stamp = q.takeStamps();
    const n = log[fo + 1] as number;
    for (let a = 0, e = fo + FRAME_HEAD; a < n; a++, e += 2) {
      const id = log[e] as number;
      let slot = log[e + 1] as number;
      // Slots move only when something despawns: then the id map finds the entity, if it is still here.
      if (slot >= world.count || worldIds[slot] !== id) slot = world.indexOf(id);
      if (slot >= 0) marks[slot * 2] = stamp;
    }
    held.marks = marks;
    held.stamp = stamp;
    return true;
  }

  encodeDelta(
    tick: number,
    ackTick: number,
    interest: Interest,
    q: QuantizedWorld,
    writer: SnapshotBodyWriter,
    scratch: DeltaScratch,
  ): DeltaResult {
    const n = interest.count;
    this.ensure(n);
    const log = this.log;
    const fo = (tick % HISTORY_TICKS) * this.stride;
    const bo = (ackTick % HISTORY_TICKS) * this.stride;
    // Ticks are uint32 and wrap (after 2^32 ticks): the base's age is counted modulo 2^32.
    const age = (tick - ackTick) >>> 0;
    const baseRow =
      ackTick !== 0 && age > 0 && age < HISTORY_TICKS && log[bo] === ackTick && this.cut[ackTick % HISTORY_TICKS] === 1
        ? q.row(ackTick)
        : undefined;
    const row = q.row(tick) as Int32Array;
    const world = q.world as EntityTable;
    const worldIds = world.id;
    const marks = q.marks;
    const bn = baseRow ? (log[bo + 1] as number) : 0;
    scratch.ensure(bn);
    const nowSlot = scratch.nowSlot;
    const inBase = q.takeStamps();
    const seen = inBase + 1;
    // Mark where each base entity is now. Slots move only when something despawns; then the id
    // map finds the entity, and an entity that is gone is simply never marked.
    for (let a = 0, e = bo + FRAME_HEAD; a < bn; a++, e += 2) {
      const id = log[e] as number;
      const then = log[e + 1] as number;
      let slot = then;
      if (slot >= world.count || worldIds[slot] !== id) {
        slot = world.indexOf(id);
        nowSlot[a] = slot;
        if (slot < 0) continue;
      } else {
        nowSlot[a] = slot;
      }
      marks[slot * 2] = inBase;
      marks[slot * 2 + 1] = then;
    }

    log[fo] = tick;
    log[fo + 1] = n;
    this.cut[tick % HISTORY_TICKS] = 1;
    this.lastTick = tick;
    this.lastFull = n >= this.maxVisible;
    const { ids, slots } = interest;
    writer.reset();
    for (let k = 0, e = fo + FRAME_HEAD; k < n; k++, e += 2) {
      const slot = slots[k] as number;
      const id = ids[k] as number;
      log[e] = id;
      log[e + 1] = slot;
      const r = slot * ROW;
      const x = row[r] as number;
      const y = row[r + 1] as number;
      if (marks[slot * 2] === inBase) {
        marks[slot * 2] = seen;
        const br = (marks[slot * 2 + 1] as number) * ROW;
        const base = baseRow as Int32Array;
        const dqx = x - (base[br] as number);
        const dqy = y - (base[br + 1] as number);
        if (row[r + 2] !== base[br + 2] || row[r + 3] !== base[br + 3] || dqx < -32768 || dqx > 32767 || dqy < -32768 || dqy > 32767) {
          writer.full(id, x, y, row[r + 2] as number, row[r + 3] as number);
        } else if (dqx !== 0 || dqy !== 0) {
          writer.delta(id, dqx, dqy);
        }
      } else {
        writer.full(id, x, y, row[r + 2] as number, row[r + 3] as number);
      }
    }
    // Base entities not seen now have left the view (or the world).
    const removed = scratch.removed;
    let removedCount = 0;
    for (let a = 0; a < bn; a++) {
      const slot = nowSlot[a] as number;
      if (slot < 0 || marks[slot * 2] !== seen) removed[removedCount++] = log[bo + FRAME_HEAD + a * 2] as number;
    }
    return { baseTick: baseRow ? ackTick : 0, removedCount };
  }
}
