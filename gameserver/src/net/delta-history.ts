import type { SnapshotBodyWriter } from '@aethex/proto';
import type { World } from '../sim/world.js';
import type { Interest } from '../spatial/aoi.js';

/** Snapshots kept per client as delta bases: 32 ticks (0.8 s at 40 Hz). Older acks get a full snapshot. */
export const HISTORY_TICKS = 32;

/** What one client was sent at one tick: ids ascending with quantized position, kind and flags. */
class Frame {
  tick = -1;
  count = 0;
  ids: Uint32Array;
  qx: Int32Array;
  qy: Int32Array;
  kind: Uint16Array;
  flags: Uint32Array;

  constructor(capacity: number) {
    this.ids = new Uint32Array(capacity);
    this.qx = new Int32Array(capacity);
    this.qy = new Int32Array(capacity);
    this.kind = new Uint16Array(capacity);
    this.flags = new Uint32Array(capacity);
  }

  ensure(n: number): void {
    if (n <= this.ids.length) return;
    const cap = Math.max(n, this.ids.length * 2);
    const grow = <T extends Uint32Array | Int32Array | Uint16Array>(a: T, make: (c: number) => T): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.ids = grow(this.ids, (c) => new Uint32Array(c));
    this.qx = grow(this.qx, (c) => new Int32Array(c));
    this.qy = grow(this.qy, (c) => new Int32Array(c));
    this.kind = grow(this.kind, (c) => new Uint16Array(c));
    this.flags = grow(this.flags, (c) => new Uint32Array(c));
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

  encodeDelta(tick: number, ackTick: number, interest: Interest, world: World, invScale: number, writer: SnapshotBodyWriter): DeltaResult {
    const base = this.frames[ackTick % HISTORY_TICKS] as Frame;
    const hasBase = ackTick > 0 && ackTick < tick && tick - ackTick < HISTORY_TICKS && base.tick === ackTick;
    const frame = this.frames[tick % HISTORY_TICKS] as Frame;
    const n = interest.count;
    frame.ensure(n);
    frame.tick = tick;
    frame.count = n;
    const { ids, slots } = interest;
    const { x, y, kind, flags } = world;
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      frame.ids[k] = ids[k] as number;
      frame.qx[k] = Math.round((x[slot] as number) * invScale);
      frame.qy[k] = Math.round((y[slot] as number) * invScale);
      frame.kind[k] = kind[slot] as number;
      frame.flags[k] = flags[slot] as number;
    }
    writer.reset();
    let records = 0;
    let removedCount = 0;
    const bn = hasBase ? base.count : 0;
    let a = 0;
    let b = 0;
    while (b < n) {
      const id = frame.ids[b] as number;
      while (a < bn && (base.ids[a] as number) < id) this.removed[removedCount++] = base.ids[a++] as number;
      if (a < bn && base.ids[a] === id) {
        const dqx = (frame.qx[b] as number) - (base.qx[a] as number);
        const dqy = (frame.qy[b] as number) - (base.qy[a] as number);
        if (
          frame.kind[b] !== base.kind[a] ||
          frame.flags[b] !== base.flags[a] ||
          dqx < -32768 ||
          dqx > 32767 ||
          dqy < -32768 ||
          dqy > 32767
        ) {
          writer.full(id, frame.qx[b] as number, frame.qy[b] as number, frame.kind[b] as number, frame.flags[b] as number);
          records++;
        } else if (dqx !== 0 || dqy !== 0) {
          writer.delta(id, dqx, dqy);
          records++;
        }
        a++;
      } else {
        writer.full(id, frame.qx[b] as number, frame.qy[b] as number, frame.kind[b] as number, frame.flags[b] as number);
        records++;
      }
      b++;
    }
    while (a < bn) this.removed[removedCount++] = base.ids[a++] as number;
    return { baseTick: hasBase ? ackTick : 0, records, removedCount };
  }
}
