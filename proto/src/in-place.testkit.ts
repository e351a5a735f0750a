// The properties both hand-written readers (input-message.ts, snapshot-message.ts) are tested for,
// against the generated decoder. Test code: imported only by their tests.
import fc from 'fast-check';
import $protobuf from 'protobufjs/minimal.js';
import { expect } from 'vitest';

export interface Reader<T> {
  /** The hand-written reader's fields, undefined when it leaves the bytes to the generated decoder. */
  mine(bytes: Uint8Array): T | undefined;
  /** The generated decoder's, in the same terms; undefined when the bytes are not that message. */
  theirs(bytes: Uint8Array): T | undefined;
  /** Asserts the reader agrees with the generated decoder. */
  same(theirs: T | undefined, mine: T | undefined): void;
}

/**
 * Hand-made messages — the top-level field 2 holding `encode(fields)`, sometimes followed by one
 * of `trailing` (another top-level field: the generated decoder then reports that body) — are
 * read as the generated decoder reads them, or left to it; plain ones (`plain` for every field,
 * nothing trailing) are always taken, and at least 300 of 3,000 are.
 */
export function checkHandMade<T, F>(
  reader: Reader<T>,
  field: fc.Arbitrary<F>,
  encode: (fields: F[]) => Uint8Array,
  plain: (f: F) => boolean,
  trailing: number[][],
): void {
  let taken = 0;
  const after = fc.oneof({ weight: 3, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom(...trailing) });
  fc.assert(
    fc.property(fc.array(field, { maxLength: 8 }), after, (fields, extra) => {
      const head = $protobuf.Writer.create()
        .uint32((2 << 3) | 2)
        .bytes(encode(fields))
        .finish();
      const bytes = extra ? new Uint8Array([...head, ...extra]) : head;
      const got = reader.mine(bytes);
      if (extra === null && fields.every(plain)) expect(got).toBeDefined();
      if (got) {
        taken++;
        reader.same(reader.theirs(bytes), got);
      }
    }),
    { numRuns: 3000 },
  );
  expect(taken).toBeGreaterThan(300);
}

/**
 * Random bytes, truncations of `valid` and `valid` with one byte changed are never read as a
 * message the generated decoder does not see; some of them (at least `minTaken`) are read.
 */
export function checkNoise<T>(reader: Reader<T>, valid: Uint8Array, minTaken: number): void {
  let taken = 0;
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 40 }),
        fc.nat({ max: valid.length - 1 }).map((n) => valid.subarray(0, n)),
        fc.tuple(fc.nat({ max: valid.length - 1 }), fc.nat({ max: 255 })).map(([i, b]) => {
          // A copy (a Buffer's slice would be a view of `valid`).
          const copy = new Uint8Array(valid);
          copy[i] = b;
          return copy;
        }),
      ),
      (bytes) => {
        const got = reader.mine(bytes);
        if (got) {
          taken++;
          reader.same(reader.theirs(bytes), got);
        }
      },
    ),
    { numRuns: 5000 },
  );
  expect(taken).toBeGreaterThanOrEqual(minTaken);
}
