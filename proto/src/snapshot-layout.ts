/**
 * Snapshot body layout 1: the packed entity records inside `Snapshot.entities` (see
 * docs/protocol.md). Records come in any order, each entity at most once; each starts with an
 * unsigned LEB128 varint `zigzag(id - previousId) * 4 + mode` (previousId is 0 before the first
 * record; zigzag maps 0, -1, 1, -2 … to 0, 1, 2, 3 …) and `mode` says what follows:
 *
 * | mode | name       | payload (little-endian)                              | meaning |
 * | ---- | ---------- | ---------------------------------------------------- | ------- |
 * | 0    | delta8     | int8 dqx, int8 dqy                                   | moved by (dqx, dqy) quanta since the base snapshot |
 * | 1    | delta16    | int16 dqx, int16 dqy                                 | the same, for larger moves |
 * | 2    | full       | int32 qx, int32 qy, varint kind, varint flags        | entered, changed kind/flags, moved past int16 quanta, or no base |
 *
 * Positions are quantized: q = round(position × (1 / position_scale)), position_scale from
 * Welcome, held to the quanta that read inside the world's bounds (`quantumRange`).
 * Unchanged entities have no record; entities that left are in `Snapshot.removed`.
 */
export const SNAPSHOT_LAYOUT = 1;

export const MODE_DELTA8 = 0;
export const MODE_DELTA16 = 1;
export const MODE_FULL = 2;

/** Reusable writer of layout-1 bodies: grows its buffer as needed, never shrinks it. */
export class SnapshotBodyWriter {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;
  private prevId = 0;

  constructor(initialBytes = 1024) {
    this.buf = new Uint8Array(initialBytes);
    this.view = new DataView(this.buf.buffer);
  }

  /** Starts a new body. */
  reset(): void {
    this.pos = 0;
    this.prevId = 0;
  }

  /** The bytes written since reset (a view: copy it before the next reset if it must be kept). */
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }

  get length(): number {
    return this.pos;
  }

  private grow(n: number): void {
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.pos + n));
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  /** Unsigned LEB128; integer arithmetic below 2^31 (nearly always), float arithmetic above (up to 2^53). */
  private varint(value: number): void {
    const buf = this.buf;
    let pos = this.pos;
    let v = value;
    while (v >= 0x80000000) {
      buf[pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    while (v > 0x7f) {
      buf[pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[pos++] = v;
    this.pos = pos;
  }

  private head(id: number, mode: number): void {
    const d = id - this.prevId;
    this.varint((d >= 0 ? d * 2 : -d * 2 - 1) * 4 + mode);
    this.prevId = id;
  }

  /**
   * A move of (dqx, dqy) quanta since the base snapshot; picks the smallest encoding. The hot path
   * of every snapshot (one call per moving entity per client per tick): the head varint is written
   * inline for values below 2^21 (ids within ~260,000 of the previous record).
   */
  delta(id: number, dqx: number, dqy: number): void {
    let mode: number;
    if (dqx >= -128 && dqx <= 127 && dqy >= -128 && dqy <= 127) mode = MODE_DELTA8;
    else if (dqx >= -32768 && dqx <= 32767 && dqy >= -32768 && dqy <= 32767) mode = MODE_DELTA16;
    else throw new RangeError(`delta (${dqx}, ${dqy}) does not fit 16 bits; send a full record`);
    if (this.pos + 16 > this.buf.length) this.grow(16);
    const d = id - this.prevId;
    this.prevId = id;
    const h = (d >= 0 ? d * 2 : -d * 2 - 1) * 4 + mode;
    const buf = this.buf;
    let p = this.pos;
    if (h < 0x80) {
      buf[p++] = h;
    } else if (h < 0x4000) {
      buf[p++] = (h & 0x7f) | 0x80;
      buf[p++] = h >>> 7;
    } else if (h < 0x200000) {
      buf[p++] = (h & 0x7f) | 0x80;
      buf[p++] = ((h >>> 7) & 0x7f) | 0x80;
      buf[p++] = h >>> 14;
    } else {
      this.varint(h);
      p = this.pos;
    }
    if (mode === MODE_DELTA8) {
      buf[p] = dqx;
      buf[p + 1] = dqy;
      this.pos = p + 2;
    } else {
      buf[p] = dqx;
      buf[p + 1] = dqx >> 8;
      buf[p + 2] = dqy;
      buf[p + 3] = dqy >> 8;
      this.pos = p + 4;
    }
  }

  /** An entity as a whole: absolute quantized position, kind and flags. */
  full(id: number, qx: number, qy: number, kind: number, flags: number): void {
    if (this.pos + 32 > this.buf.length) this.grow(32);
    this.head(id, MODE_FULL);
    this.view.setInt32(this.pos, qx, true);
    this.view.setInt32(this.pos + 4, qy, true);
    this.pos += 8;
    this.varint(kind);
    this.varint(flags >>> 0);
  }
}

/** Called for each record of a body, in order. */
export interface SnapshotBodyVisitor {
  delta(id: number, dqx: number, dqy: number): void;
  full(id: number, qx: number, qy: number, kind: number, flags: number): void;
}

/**
 * Reads a layout-1 body, calling the visitor per record. Throws a RangeError on truncated or
 * malformed input before calling the visitor for a bad record.
 */
/** Position in a body being read. (A class, not closures: tsx names closures with a
 * defineProperty call each time they are created, which costs on every snapshot.) */
class BodyCursor {
  pos = 0;
  constructor(readonly body: Uint8Array) {}

  varint(): number {
    const body = this.body;
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= body.length) throw new RangeError('truncated snapshot body');
      const b = body[this.pos++] as number;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 0x80;
    }
    throw new RangeError('varint too long in snapshot body');
  }

  need(n: number): void {
    if (this.pos + n > this.body.length) throw new RangeError('truncated snapshot body');
  }
}

export function readSnapshotBody(body: Uint8Array, visitor: SnapshotBodyVisitor): void {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const c = new BodyCursor(body);
  let id = 0;
  while (c.pos < body.length) {
    const headValue = c.varint();
    const mode = headValue % 4;
    const z = Math.floor(headValue / 4);
    id += z % 2 === 0 ? z / 2 : -(z + 1) / 2;
    if (id < 0 || id > 0xffffffff) throw new RangeError('entity id out of range in snapshot body');
    if (mode === MODE_DELTA8) {
      c.need(2);
      visitor.delta(id, view.getInt8(c.pos), view.getInt8(c.pos + 1));
      c.pos += 2;
    } else if (mode === MODE_DELTA16) {
      c.need(4);
      visitor.delta(id, view.getInt16(c.pos, true), view.getInt16(c.pos + 2, true));
      c.pos += 4;
    } else if (mode === MODE_FULL) {
      c.need(8);
      const qx = view.getInt32(c.pos, true);
      const qy = view.getInt32(c.pos + 4, true);
      c.pos += 8;
      const kind = c.varint();
      const flags = c.varint();
      if (kind > 0xffff || flags > 0xffffffff) throw new RangeError('kind or flags out of range in snapshot body');
      visitor.full(id, qx, qy, kind, flags);
    } else {
      throw new RangeError(`unknown record mode ${mode} in snapshot body`);
    }
  }
}
