import type { SnapshotBodyWriter } from '@aethex/proto';
import type { World } from '../sim/world.js';
import type { Interest } from '../spatial/aoi.js';

/** Snapshots kept per client as delta bases: 32 ticks (0.8 s at 40 Hz). Older acks get a full snapshot. */
export const HISTORY_TICKS = 32;

/**
 * The world's entities quantized once per tick, shared by every client's encoding: positions in
 * snapshot quanta and kind/flags folded into one number (kind × 2^32 + flags) so that a change of
 * either is one comparison.
 */
export class QuantizedWorld {
  readonly qx: Int32Array;
  readonly qy: Int32Array;
  readonly attr: Float64Array;

  constructor(capacity: number) {
    this.qx = new Int32Array(capacity);
    this.qy = new Int32Array(capacity);
    this.attr = new Float64Array(capacity);
  }

  update(world: World, invScale: number): void {
    const { x, y, kind, flags } = world;
    const { qx, qy, attr } = this;
    for (let i = 0; i < world.count; i++) {
      qx[i] = Math.round((x[i] as number) * invScale);
      qy[i] = Math.round((y[i] as number) * invScale);
      attr[i] = (kind[i] as number) * 4294967296 + (flags[i] as number);
    }
  }
}

/** What one client was sent at one tick: ids ascending with quantized position and attributes. */
class Frame {
  tick = -1;
  count = 0;
  ids: Uint32Array;
  qx: Int32Array;
  qy: Int32Array;
  attr: Float64Array;

  constructor(capacity: number) {
    this.ids = new Uint32Array(capacity);
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
  records: number;
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

  /** Forgets every frame (after a resume on another connection, for instance). */
  clear(): void {
    for (const f of this.frames) f.tick = -1;
  }

  encodeDelta(tick: number, ackTick: number, interest: Interest, q: QuantizedWorld, writer: SnapshotBodyWriter): DeltaResult {
    const base = this.frames[ackTick % HISTORY_TICKS] as Frame;
    const hasBase = ackTick > 0 && ackTick < tick && tick - ackTick < HISTORY_TICKS && base.tick === ackTick;
    const frame = this.frames[tick % HISTORY_TICKS] as Frame;
    const n = interest.count;
    frame.ensure(n);
    frame.tick = tick;
    frame.count = n;
    const { ids, slots } = interest;
    const fIds = frame.ids;
    const fqx = frame.qx;
    const fqy = frame.qy;
    const fAttr = frame.attr;
    const { qx, qy, attr } = q;
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      fIds[k] = ids[k] as number;
      fqx[k] = qx[slot] as number;
      fqy[k] = qy[slot] as number;
      fAttr[k] = attr[slot] as number;
    }
    writer.reset();
    const removed = this.removed;
    let records = 0;
    let removedCount = 0;
    const bn = hasBase ? base.count : 0;
    const bIds = base.ids;
    const bqx = base.qx;
    const bqy = base.qy;
    const bAttr = base.attr;
    let a = 0;
    for (let b = 0; b < n; b++) {
      const id = fIds[b] as number;
      while (a < bn && (bIds[a] as number) < id) removed[removedCount++] = bIds[a++] as number;
      if (a < bn && bIds[a] === id) {
        const dqx = (fqx[b] as number) - (bqx[a] as number);
        const dqy = (fqy[b] as number) - (bqy[a] as number);
        if (fAttr[b] !== bAttr[a] || dqx < -32768 || dqx > 32767 || dqy < -32768 || dqy > 32767) {
          this.full(writer, id, fqx[b] as number, fqy[b] as number, fAttr[b] as number);
          records++;
        } else if (dqx !== 0 || dqy !== 0) {
          writer.delta(id, dqx, dqy);
          records++;
        }
        a++;
      } else {
        this.full(writer, id, fqx[b] as number, fqy[b] as number, fAttr[b] as number);
        records++;
      }
    }
    while (a < bn) removed[removedCount++] = bIds[a++] as number;
    return { baseTick: hasBase ? ackTick : 0, records, removedCount };
  }

  private full(writer: SnapshotBodyWriter, id: number, qx: number, qy: number, attr: number): void {
    const kind = Math.floor(attr / 4294967296);
    writer.full(id, qx, qy, kind, attr - kind * 4294967296);
  }
}
