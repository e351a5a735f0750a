import fc from 'fast-check';
import { expect, test } from 'vitest';
import { insideMax } from './bounds.js';

test('insideMax is a float32 strictly below max, 1e-3 below where float32 can hold that', () => {
  expect(insideMax(1000)).toBe(Math.fround(1000 - 1e-3));
  expect(insideMax(20_000)).toBe(Math.fround(20_000 - 1e-3));
  // From 32,768 on, fround(max - 1e-3) is max itself.
  expect(Math.fround(40_000 - 1e-3)).toBe(40_000);
  expect(insideMax(40_000)).toBe(40_000 - 2 ** -8);
  expect(insideMax(0)).toBe(Math.fround(-1e-3));
});

test('property: insideMax(max) is a float32 below max, at most 1e-3 or one float32 step under it', () => {
  fc.assert(
    fc.property(fc.double({ min: -1e9, max: 1e9, noNaN: true }), (max) => {
      const hi = insideMax(max);
      expect(Math.fround(hi)).toBe(hi);
      expect(hi).toBeLessThan(max);
      // One float32 step at max is at most |max| * 2^-23 (plus rounding of max - 1e-3 itself).
      expect(max - hi).toBeLessThanOrEqual(Math.max(1e-3 + Math.abs(max) * 2 ** -23, Math.abs(max) * 2 ** -22) + 1e-9);
    }),
    { numRuns: 2000 },
  );
});
