import { readVarint32, soleFieldStart, varintEnd, varintSize, writeVarint32 } from './varint.js';

/**
 * The shard's per-client, per-tick message — `ServerMessage { snapshot: Snapshot {…} }` — written
 * in one pass, and read in place. Writing gives the same bytes the generated `ServerMessage.encode`
 * writes for these fields (tested against it), without the intermediate objects and length-prefix
 * forks: with thousands of clients per tick at 40 Hz, that overhead was a tenth of the shard's
 * tick. Reading fills a reused {@link SnapshotFields} where the generated decoder makes three
 * objects per snapshot (and its `body` oneof getter lists the message's keys); a bot process reads
 * tens of thousands a second.
 */
export interface SnapshotFields {
  tick: number;
  baseTick: number;
  lastInputSeq: number;
  layout: number;
  /** The packed layout body. */
  entities: Uint8Array;
  /** Ids that left: `removed[0 .. removedCount)`. */
  removed: Uint32Array;
  removedCount: number;
}

/** Bytes of a uint32 field (tag and value), 0 when it holds the default. (Top level, not a closure:
 * tsx wraps named closures in a defineProperty call, which costs on every call of the encoder.) */
function scalar(v: number): number {
  return v === 0 ? 0 : 1 + varintSize(v);
}

// Tags: ServerMessage.snapshot = 2 (length-delimited); Snapshot fields 1–4 varint, 5 bytes, 6 packed.
const TAG_SNAPSHOT = 0x12;
const TAG_TICK = 0x08;
const TAG_BASE_TICK = 0x10;
const TAG_LAST_INPUT_SEQ = 0x18;
const TAG_LAYOUT = 0x20;
const TAG_ENTITIES = 0x2a;
const TAG_REMOVED = 0x32;
/** `removed` one id per field (proto2's encoding of a repeated uint32), which decoders also accept. */
const TAG_REMOVED_UNPACKED = 0x30;

/**
 * Encodes `ServerMessage { snapshot }` into a buffer from `alloc` (Node: `Buffer.allocUnsafe`,
 * which hands out slices of a pooled slab). Values are uint32; as in proto3, zero values and empty
 * `entities` / `removed` are left out.
 */
export function encodeSnapshotMessage(f: SnapshotFields, alloc: (size: number) => Uint8Array = (n) => new Uint8Array(n)): Uint8Array {
  const { entities, removed, removedCount } = f;
  let removedBytes = 0;
  for (let i = 0; i < removedCount; i++) removedBytes += varintSize(removed[i] as number);
  // proto3: fields holding their default (0, empty) are not written.
  const inner =
    scalar(f.tick) +
    scalar(f.baseTick) +
    scalar(f.lastInputSeq) +
    scalar(f.layout) +
    (entities.length > 0 ? 1 + varintSize(entities.length) + entities.length : 0) +
    (removedCount > 0 ? 1 + varintSize(removedBytes) + removedBytes : 0);
  const buf = alloc(1 + varintSize(inner) + inner);
  let p = 0;
  buf[p++] = TAG_SNAPSHOT;
  p = writeVarint32(buf, p, inner);
  if (f.tick !== 0) {
    buf[p++] = TAG_TICK;
    p = writeVarint32(buf, p, f.tick);
  }
  if (f.baseTick !== 0) {
    buf[p++] = TAG_BASE_TICK;
    p = writeVarint32(buf, p, f.baseTick);
  }
  if (f.lastInputSeq !== 0) {
    buf[p++] = TAG_LAST_INPUT_SEQ;
    p = writeVarint32(buf, p, f.lastInputSeq);
  }
  if (f.layout !== 0) {
    buf[p++] = TAG_LAYOUT;
    p = writeVarint32(buf, p, f.layout);
  }
  if (entities.length > 0) {
    buf[p++] = TAG_ENTITIES;
    p = writeVarint32(buf, p, entities.length);
    buf.set(entities, p);
    p += entities.length;
  }
  if (removedCount > 0) {
    buf[p++] = TAG_REMOVED;
    p = writeVarint32(buf, p, removedBytes);
    for (let i = 0; i < removedCount; i++) p = writeVarint32(buf, p, removed[i] as number);
  }
  return buf;
}

const NO_ENTITIES = new Uint8Array(0);

/** A blank {@link SnapshotFields} to pass to {@link readSnapshotMessage}. */
export function snapshotFields(): SnapshotFields {
  return { tick: 0, baseTick: 0, lastInputSeq: 0, layout: 0, entities: NO_ENTITIES, removed: new Uint32Array(16), removedCount: 0 };
}

/** Appends `id` to `out.removed`, growing it when full. */
function pushRemoved(out: SnapshotFields, id: number): void {
  if (out.removedCount === out.removed.length) {
    const grown = new Uint32Array(out.removed.length * 2);
    grown.set(out.removed);
    out.removed = grown;
  }
  out.removed[out.removedCount++] = id;
}

/**
 * Reads `buf` as `ServerMessage { snapshot }` into `out` and returns true; returns false (with `out`
 * in an unspecified state) for anything else, which the caller hands to `ServerMessage.decode`.
 * Where this returns true the generated decoder reads the same fields (tested against it): it takes
 * the fields in any order, the last of a repeated scalar or `entities`, and `removed` packed or not,
 * concatenated; an unknown field, a field with another wire type, a varint longer than a uint32 or
 * a second top-level field go to the generated decoder. `out.entities` is a view into `buf`.
 */
export function readSnapshotMessage(buf: Uint8Array, out: SnapshotFields): boolean {
  const end = buf.length;
  // Exactly one field, the snapshot, filling the message.
  let pos = soleFieldStart(buf, TAG_SNAPSHOT);
  if (pos < 0) return false;
  out.tick = 0;
  out.baseTick = 0;
  out.lastInputSeq = 0;
  out.layout = 0;
  out.entities = NO_ENTITIES;
  out.removedCount = 0;
  while (pos < end) {
    const tag = buf[pos++];
    const value = readVarint32(buf, pos, end);
    if (varintEnd < 0) return false;
    pos = varintEnd;
    if (tag === TAG_TICK) out.tick = value;
    else if (tag === TAG_BASE_TICK) out.baseTick = value;
    else if (tag === TAG_LAST_INPUT_SEQ) out.lastInputSeq = value;
    else if (tag === TAG_LAYOUT) out.layout = value;
    else if (tag === TAG_ENTITIES) {
      if (pos + value > end) return false;
      out.entities = buf.subarray(pos, pos + value);
      pos += value;
    } else if (tag === TAG_REMOVED) {
      const packedEnd = pos + value;
      if (packedEnd > end) return false;
      while (pos < packedEnd) {
        const id = readVarint32(buf, pos, packedEnd);
        if (varintEnd < 0) return false;
        pos = varintEnd;
        pushRemoved(out, id);
      }
    } else if (tag === TAG_REMOVED_UNPACKED) pushRemoved(out, value);
    else return false;
  }
  return true;
}
