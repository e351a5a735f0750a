import fc from 'fast-check';
import { expect, test } from 'vitest';
import { readSnapshotBody, SnapshotBodyWriter } from './snapshot-layout.js';

type Rec =
  | { kind: 'delta'; id: number; dqx: number; dqy: number }
  | { kind: 'full'; id: number; qx: number; qy: number; k: number; flags: number };

const record = fc.oneof(
  fc.record({
    kind: fc.constant('delta' as const),
    dqx: fc.integer({ min: -32768, max: 32767 }),
    dqy: fc.integer({ min: -32768, max: 32767 }),
  }),
  fc.record({
    kind: fc.constant('full' as const),
    qx: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    qy: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    k: fc.integer({ min: 0, max: 0xffff }),
    flags: fc.nat({ max: 0xffffffff }),
  }),
);
// Ids in any order (the shard writes them in grid order), each at most once.
const body = fc
  .uniqueArray(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 60 })
  .chain((ids) => fc.tuple(...ids.map((id) => record.map((r) => ({ ...r, id }) as Rec))));

function write(records: Rec[]): Uint8Array {
  const w = new SnapshotBodyWriter(8);
  w.reset();
  for (const r of records) {
    if (r.kind === 'delta') w.delta(r.id, r.dqx, r.dqy);
    else w.full(r.id, r.qx, r.qy, r.k, r.flags);
  }
  return w.bytes().slice();
}

function read(bytes: Uint8Array): Rec[] {
  const out: Rec[] = [];
  readSnapshotBody(bytes, {
    delta: (id, dqx, dqy) => out.push({ kind: 'delta', id, dqx, dqy }),
    full: (id, qx, qy, k, flags) => out.push({ kind: 'full', id, qx, qy, k, flags }),
  });
  return out;
}

test('property: every body reads back as the records written', () => {
  fc.assert(
    fc.property(body, (records) => {
      expect(read(write(records))).toEqual(records);
    }),
    { numRuns: 500 },
  );
});

test('small moves of ids within 2,000 of each other cost four bytes a record, in any order', () => {
  const w = new SnapshotBodyWriter();
  w.reset();
  const ids = [1500, 20, 1999, 700, 35, 1200, 900, 4, 1800, 60];
  for (const id of ids) w.delta(id, 12, -7);
  expect(w.length / ids.length).toBeLessThanOrEqual(4);
});

test('property: truncated or random bodies throw a RangeError or read fine, nothing else', () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 80 }),
        body.map((r) => write(r)).chain((b) => fc.nat({ max: b.length }).map((n) => b.subarray(0, n))),
      ),
      (bytes) => {
        try {
          read(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(RangeError);
        }
      },
    ),
    { numRuns: 1000 },
  );
});

test('refuses deltas too large for 16 bits', () => {
  const w = new SnapshotBodyWriter();
  w.reset();
  expect(() => w.delta(11, 40000, 0)).toThrow(/full record/);
});
