import fc from 'fast-check';
import $protobuf from 'protobufjs/minimal.js';
import { expect, test } from 'vitest';
import { aethex } from './gen/aethex.js';
import { checkHandMade, checkNoise, type Reader } from './in-place.testkit.js';
import { encodeSnapshotMessage, readSnapshotMessage, type SnapshotFields, snapshotFields } from './snapshot-message.js';

const { ServerMessage } = aethex.v1;
const u32 = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.nat({ max: 0xffffffff }));

test('property: the same bytes as the generated ServerMessage.encode, and both decoders read back the fields', () => {
  fc.assert(
    fc.property(
      u32,
      u32,
      u32,
      u32,
      fc.uint8Array({ maxLength: 3000 }),
      fc.array(u32, { maxLength: 300 }),
      (tick, baseTick, lastInputSeq, layout, entities, removedList) => {
        // Extra slack after removedCount: only the first removedCount ids are sent.
        const removed = Uint32Array.from([...removedList, 7, 8]);
        const bytes = encodeSnapshotMessage({ tick, baseTick, lastInputSeq, layout, entities, removed, removedCount: removedList.length });
        const generated = ServerMessage.encode({
          snapshot: { tick, baseTick, lastInputSeq, layout, entities, removed: removedList },
        }).finish();
        expect(Buffer.from(bytes).equals(Buffer.from(generated))).toBe(true);
        const expected = { tick, baseTick, lastInputSeq, layout, entities: [...entities], removed: removedList };
        expect(theirs(bytes)).toEqual(expected);
        expect(mine(bytes)).toEqual(expected);
      },
    ),
    { numRuns: 500 },
  );
});

test('uses the allocator it is given, at exactly the size written', () => {
  const sizes: number[] = [];
  const out = encodeSnapshotMessage(
    { tick: 5, baseTick: 4, lastInputSeq: 9, layout: 1, entities: new Uint8Array(3), removed: new Uint32Array([1]), removedCount: 1 },
    (n) => {
      sizes.push(n);
      return Buffer.allocUnsafe(n);
    },
  );
  expect(Buffer.isBuffer(out)).toBe(true);
  expect(sizes).toEqual([out.length]);
});

/** What the generated decoder makes of `bytes`, as plain values; undefined when it is not a snapshot. */
function theirs(bytes: Uint8Array) {
  let msg: aethex.v1.ServerMessage;
  try {
    msg = ServerMessage.decode(bytes);
  } catch {
    return undefined;
  }
  if (msg.body !== 'snapshot' || !msg.snapshot) return undefined;
  const s = msg.snapshot as aethex.v1.Snapshot;
  return {
    tick: s.tick,
    baseTick: s.baseTick,
    lastInputSeq: s.lastInputSeq,
    layout: s.layout,
    entities: [...s.entities],
    removed: [...s.removed],
  };
}

/** One reused output across every call, as a client uses it: each read must overwrite it all. */
const reused = snapshotFields();

function mine(bytes: Uint8Array, out: SnapshotFields = reused) {
  if (!readSnapshotMessage(bytes, out)) return undefined;
  return {
    tick: out.tick,
    baseTick: out.baseTick,
    lastInputSeq: out.lastInputSeq,
    layout: out.layout,
    entities: [...out.entities],
    removed: [...out.removed.subarray(0, out.removedCount)],
  };
}

test('entities is a view into the message, not a copy', () => {
  const bytes = encodeSnapshotMessage({
    tick: 3,
    baseTick: 0,
    lastInputSeq: 0,
    layout: 1,
    entities: new Uint8Array([1, 2, 3]),
    removed: new Uint32Array(0),
    removedCount: 0,
  });
  const out = snapshotFields();
  expect(readSnapshotMessage(bytes, out)).toBe(true);
  expect(out.entities.buffer).toBe(bytes.buffer);
  bytes[bytes.length - 1] = 9;
  expect([...out.entities]).toEqual([1, 2, 9]);
});

/** One field of a Snapshot as the wire may have it: any order, repeats, unknown and mistyped fields. */
type Field =
  | { kind: 'varint'; field: number; value: number }
  | { kind: 'entities'; value: Uint8Array }
  | { kind: 'packed'; ids: number[] }
  | { kind: 'unpacked'; id: number }
  | { kind: 'long-varint'; field: number }
  | { kind: 'unknown'; field: number; wire: 0 | 2 | 5 }
  | { kind: 'mistyped'; field: number };

const field: fc.Arbitrary<Field> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('varint' as const), field: fc.constantFrom(1, 2, 3, 4), value: u32 }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('entities' as const), value: fc.uint8Array({ maxLength: 20 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('packed' as const), ids: fc.array(u32, { maxLength: 6 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('unpacked' as const), id: u32 }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('long-varint' as const), field: fc.constantFrom(1, 2, 3, 4) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('unknown' as const),
      field: fc.integer({ min: 7, max: 40 }),
      wire: fc.constantFrom(0 as const, 2 as const, 5 as const),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('mistyped' as const), field: fc.constantFrom(1, 2, 3, 4, 5) }) },
);

function encodeFields(fields: Field[]): Uint8Array {
  const w = $protobuf.Writer.create();
  for (const f of fields) {
    if (f.kind === 'varint') w.uint32(f.field << 3).uint32(f.value);
    else if (f.kind === 'entities') w.uint32((5 << 3) | 2).bytes(f.value);
    else if (f.kind === 'packed') {
      w.uint32((6 << 3) | 2).fork();
      for (const id of f.ids) w.uint32(id);
      w.ldelim();
    } else if (f.kind === 'unpacked') w.uint32(6 << 3).uint32(f.id);
    // A negative int32 as a uint32 field: ten bytes, which the generated decoder truncates.
    else if (f.kind === 'long-varint') w.uint32(f.field << 3).int32(-5);
    else if (f.kind === 'unknown') {
      w.uint32((f.field << 3) | f.wire);
      if (f.wire === 0) w.uint32(7);
      else if (f.wire === 2) w.bytes(new Uint8Array([1, 2]));
      else w.fixed32(7);
    } else if (f.field === 5) w.uint32(5 << 3).uint32(3);
    else w.uint32((f.field << 3) | 2).bytes(new Uint8Array([1]));
  }
  return w.finish();
}

const reader: Reader<NonNullable<ReturnType<typeof theirs>>> = {
  mine: (bytes) => mine(bytes),
  theirs,
  same: (a, b) => expect(b).toEqual(a),
};

test('property: hand-made snapshots (any order, repeats, unknown fields) are read as the generated decoder reads them, or left to it', () => {
  // After the snapshot, sometimes a pong or a kick: the reader must not take it as a snapshot.
  checkHandMade(
    reader,
    field,
    encodeFields,
    (f) => f.kind === 'varint' || f.kind === 'entities' || f.kind === 'packed' || f.kind === 'unpacked',
    [
      [0x22, 0],
      [0x22, 2, 8, 1],
      [0x3a, 2, 8, 4],
    ],
  );
});

test('property: random, truncated and altered bytes are never read as a snapshot the generated decoder does not see', () => {
  const valid = encodeSnapshotMessage({
    tick: 70_000,
    baseTick: 69_990,
    lastInputSeq: 300,
    layout: 1,
    entities: new Uint8Array([9, 8, 7, 6, 5]),
    removed: new Uint32Array([1, 300, 1 << 30]),
    removedCount: 3,
  });
  checkNoise(reader, valid, 100);
});

test('other messages, long varints and a wide tag are left to the generated decoder', () => {
  const out = snapshotFields();
  for (const other of [
    { welcome: { entityId: 4 } },
    { correction: { tick: 3, lastInputSeq: 2 } },
    { pong: { clientTimeMs: 5 } },
    { kick: { message: 'bye' } },
    {},
  ]) {
    expect(readSnapshotMessage(ServerMessage.encode(other).finish(), out)).toBe(false);
  }
  // tick as a 10-byte varint: the generated decoder reads 5 bytes and skips 5; the reader leaves it.
  const long = new Uint8Array([0x12, 11, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  expect(readSnapshotMessage(long, out)).toBe(false);
  expect(theirs(long)?.tick).toBe(0xffffffff);
  // The snapshot tag written in two bytes (0x92 0x00): valid protobuf, left to the generated decoder.
  const wide = new Uint8Array([0x92, 0x00, 2, 0x08, 7]);
  expect(readSnapshotMessage(wide, out)).toBe(false);
  expect(theirs(wide)?.tick).toBe(7);
  // The smallest snapshot: an empty body, every field at its default.
  expect(mine(new Uint8Array([0x12, 0]), out)).toEqual({ tick: 0, baseTick: 0, lastInputSeq: 0, layout: 0, entities: [], removed: [] });
});

test('removed grows past its initial room and keeps every id', () => {
  const ids = Array.from({ length: 1000 }, (_, i) => i * 7919);
  const bytes = encodeSnapshotMessage({
    tick: 2,
    baseTick: 1,
    lastInputSeq: 0,
    layout: 1,
    entities: new Uint8Array(0),
    removed: Uint32Array.from(ids),
    removedCount: ids.length,
  });
  expect(mine(bytes)?.removed).toEqual(ids);
});
