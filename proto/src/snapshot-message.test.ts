import fc from 'fast-check';
import { expect, test } from 'vitest';
import { aethex } from './gen/aethex.js';
import { encodeSnapshotMessage } from './snapshot-message.js';

const { ServerMessage } = aethex.v1;
const u32 = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.nat({ max: 0xffffffff }));

test('property: the same bytes as the generated ServerMessage.encode, and they decode to the fields', () => {
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
        const mine = encodeSnapshotMessage({ tick, baseTick, lastInputSeq, layout, entities, removed, removedCount: removedList.length });
        const theirs = ServerMessage.encode({
          snapshot: { tick, baseTick, lastInputSeq, layout, entities, removed: removedList },
        }).finish();
        expect(Buffer.from(mine).equals(Buffer.from(theirs))).toBe(true);
        const decoded = ServerMessage.decode(mine).snapshot;
        expect(decoded?.tick).toBe(tick);
        expect(decoded?.baseTick).toBe(baseTick);
        expect(decoded?.lastInputSeq).toBe(lastInputSeq);
        expect(decoded?.layout).toBe(layout);
        expect(Buffer.from(decoded?.entities ?? []).equals(Buffer.from(entities))).toBe(true);
        expect(decoded?.removed).toEqual(removedList);
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
