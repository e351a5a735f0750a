import type { SnapshotBodyWriter } from '@aethex/proto';
import type { World } from '../sim/world.js';
import type { Interest } from '../spatial/aoi.js';

/** Snapshots kept per client as delta bases: 32 ticks (0.8 s at 40 Hz). Older acks get a full snapshot. */
export const HISTORY_TICKS = 32;

/**
 * The world's entities quantized once per tick, shared by every client's encoding: positions in
 * snapshot quanta and kind/flags folded into one number (kind × 2^32 + flags) so that a change of
 * either is one comparison. It also holds per-slot scratch marks that the encoder uses to match a
 * client's base frame against its current view without sorting.
 */
export class QuantizedWorld {
  readonly qx: Int32Array;
  readonly qy: Int32Array;
  readonly attr: Float64Array;
  /** Scratch for `encodeDelta`: stamp[slot] says the slot is in the base frame at baseAt[slot]. */
  readonly stamp: Uint32Array;
  readonly baseAt: Int32Array;
  private nextStamp = 0;
  world: World | undefined;

  constructor(capacity: number) {
    this.qx = new Int32Array(capacity);
    this.qy = new Int32Array(capacity);
    this.attr = new Float64Array(capacity);
    this.stamp = new Uint32Array(capacity);
    this.baseAt = new Int32Array(capacity);
  }

  /** Two fresh stamp values: "in the base" and "in the base and seen now". */
  takeStamps(): number {
    if (this.nextStamp >= 0xfffffff0) {
      this.stamp.fill(0);
      this.nextStamp = 0;
    }
    this.nextStamp += 2;
    return this.nextStamp;
  }

  update(world: World, invScale: number): void {
    this.world = world;
    const { x, y, kind, flags } = world;
    const { qx, qy, attr } = this;
    for (let i = 0; i < world.count; i++) {
      qx[i] = Math.round((x[i] as number) * invScale);
      qy[i] = Math.round((y[i] as number) * invScale);
      attr[i] = (kind[i] as number) * 4294967296 + (flags[i] as number);
    }
  }
}

/** What one client was sent at one tick: ids (and the slots they had) with position and attributes. */
class Frame {
  tick = -1;
  count = 0;
  ids: Uint32Array;
  slots: Int32Array;
  qx: Int32Array;
  qy: Int32Array;
  attr: Float64Array;

  constructor(capacity: number) {
    this.ids = new Uint32Array(capacity);
    this.slots = new Int32Array(capacity);
    this.qx = new Int32Array(capacity);
    this.qy = new Int32Array(capacity);
    this.attr = new Float64Array(capacity);
  }

  ensure(n: number): void {
    if (n <= this.ids.length) return;
    const cap = Math.max(n, this.ids.length * 2);
    const ids = new Uint32Array(cap);
    ids.set(this.ids);
    this.ids = ids;
    const slots = new Int32Array(cap);
    slots.set(this.slots);
    this.slots = slots;
    const qx = new Int32Array(cap);
    qx.set(this.qx);
    this.qx = qx;
    const qy = new Int32Array(cap);
    qy.set(this.qy);
    this.qy = qy;
    const attr = new Float64Array(cap);
    attr.set(this.attr);
    this.attr = attr;
  }
}

/** The outcome of `encodeDelta`: the body is in the writer, removed ids in `removed[0..removedCount)`. */
export interface DeltaResult {
  baseTick: number;
  removedCount: number;
}

/**
 * One client's sent-snapshot history. `encodeDelta` writes the client's visible entities at `tick`
 * as a layout-1 body against the frame the client acknowledged (`ackTick`), or as full records when
 * that frame is no longer kept, and remembers what it sent. Allocation happens only when a
 * client's visible set grows beyond anything seen before.
 */
export class DeltaHistory {
  private readonly frames: Frame[];
  readonly removed: Uint32Array;

  constructor(maxVisible: number) {
    const initial = Math.min(64, maxVisible);
    this.frames = Array.from({ length: HISTORY_TICKS }, () => new Frame(initial));
    this.removed = new Uint32Array(maxVisible);
  }

  /** Forgets every frame, so that a history can serve a new session (the engine reuses them). */
  reset(): void {
    for (const f of this.frames) {
      f.tick = -1;
      f.count = 0;
    }
  }

  encodeDelta(tick: number, ackTick: number, interest: Interest, q: QuantizedWorld, writer: SnapshotBodyWriter): DeltaResult {
    const base = this.frames[ackTick % HISTORY_TICKS] as Frame;
    const hasBase = ackTick > 0 && ackTick < tick && tick - ackTick < HISTORY_TICKS && base.tick === ackTick;
    const frame = this.frames[tick % HISTORY_TICKS] as Frame;
    const world = q.world as World;
    const worldIds = world.id;
    const { stamp, baseAt, qx, qy, attr } = q;
    const inBase = q.takeStamps();
    const seen = inBase + 1;
    // Mark where each base entity is now. Slots move only when something despawns; then the id
    // map finds the entity, and an entity that is gone is simply never marked.
    const bn = hasBase ? base.count : 0;
    const bIds = base.ids;
    const bSlots = base.slots;
    for (let a = 0; a < bn; a++) {
      let slot = bSlots[a] as number;
      if (slot >= world.count || worldIds[slot] !== bIds[a]) {
        slot = world.indexOf(bIds[a] as number);
        bSlots[a] = slot;
        if (slot < 0) continue;
      }
      stamp[slot] = inBase;
      baseAt[slot] = a;
    }
    const n = interest.count;
    frame.ensure(n);
    frame.tick = tick;
    frame.count = n;
    const { ids, slots } = interest;
    const fIds = frame.ids;
    const fSlots = frame.slots;
    const fqx = frame.qx;
    const fqy = frame.qy;
    const fAttr = frame.attr;
    const bqx = base.qx;
    const bqy = base.qy;
    const bAttr = base.attr;
    writer.reset();
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      const id = ids[k] as number;
      const x = qx[slot] as number;
      const y = qy[slot] as number;
      const at = attr[slot] as number;
      fIds[k] = id;
      fSlots[k] = slot;
      fqx[k] = x;
      fqy[k] = y;
      fAttr[k] = at;
      if (stamp[slot] === inBase) {
        stamp[slot] = seen;
        const a = baseAt[slot] as number;
        const dqx = x - (bqx[a] as number);
        const dqy = y - (bqy[a] as number);
        if (at !== bAttr[a] || dqx < -32768 || dqx > 32767 || dqy < -32768 || dqy > 32767) {
          this.full(writer, id, x, y, at);
        } else if (dqx !== 0 || dqy !== 0) {
          writer.delta(id, dqx, dqy);
        }
      } else {
        this.full(writer, id, x, y, at);
      }
    }
    // Base entities not seen now have left the view (or the world).
    const removed = this.removed;
    let removedCount = 0;
    for (let a = 0; a < bn; a++) {
      const slot = bSlots[a] as number;
      if (slot < 0 || stamp[slot] !== seen) removed[removedCount++] = bIds[a] as number;
    }
    return { baseTick: hasBase ? ackTick : 0, removedCount };
  }

  private full(writer: SnapshotBodyWriter, id: number, qx: number, qy: number, attr: number): void {
    const kind = Math.floor(attr / 4294967296);
    writer.full(id, qx, qy, kind, attr - kind * 4294967296);
  }
}
