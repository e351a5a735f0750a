/**
 * Protobuf varints for the hand-written readers and writers of the hot messages (input-message.ts,
 * snapshot-message.ts). Reading takes only what the generated code reads the same way: a uint32 in
 * at most 5 bytes. Anything longer is left to the generated decoder, which truncates it.
 */

/** Where the last {@link readVarint32} ended; -1 when it did not end before `end` or exceeds a uint32. */
export let varintEnd = 0;

/** Reads a uint32 varint of at most 5 bytes at `pos` (before `end`), setting {@link varintEnd}. */
export function readVarint32(buf: Uint8Array, pos: number, end: number): number {
  let value = 0;
  // The place value of the next 7 bits (a product, not 2 ** shift: V8 calls its pow for that).
  let place = 1;
  for (let i = 0; i < 5; i++) {
    if (pos >= end) break;
    const b = buf[pos++] as number;
    // The fifth byte holds the top 4 bits; a longer varint goes to the generated decoder.
    if (i === 4 && b > 0x0f) break;
    value += (b & 0x7f) * place;
    place *= 128;
    if (b < 0x80) {
      varintEnd = pos;
      return value >>> 0;
    }
  }
  varintEnd = -1;
  return 0;
}

/** Bytes of a uint32 as a protobuf varint. */
export function varintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
}

/** Writes a uint32 varint at `pos`; returns where it ended. */
export function writeVarint32(buf: Uint8Array, pos: number, value: number): number {
  let v = value >>> 0;
  while (v > 0x7f) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v >>>= 7;
  }
  buf[pos++] = v;
  return pos;
}

/**
 * Where the body of `buf`'s one field starts when `buf` is exactly that field — the one-byte `tag`
 * of a length-delimited field whose length fills the rest — and -1 otherwise (another field, a
 * second field after it, a short or long length: left to the generated decoder).
 */
export function soleFieldStart(buf: Uint8Array, tag: number): number {
  const end = buf.length;
  if (end < 2 || buf[0] !== tag) return -1;
  const length = readVarint32(buf, 1, end);
  return varintEnd < 0 || varintEnd + length !== end ? -1 : varintEnd;
}
