import fc from 'fast-check';
import { expect, test } from 'vitest';
import { insideMax, insideMin } from './bounds.js';

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

test('insideMin is min where float32 holds it, else the float32 just above: never below an inclusive min', () => {
  expect(insideMin(-1000)).toBe(-1000);
  expect(insideMin(0)).toBe(0);
  // -999.9 is no float32: rounded to nearest it is below the minimum.
  expect(Math.fround(-999.9)).toBeLessThan(-999.9);
  expect(insideMin(-999.9)).toBe(-999.8999633789062);
  expect(Math.fround(0.1)).toBeGreaterThan(0.1);
  expect(insideMin(0.1)).toBe(Math.fround(0.1));
  expect(insideMin(1e-50)).toBe(1.401298464324817e-45);
  fc.assert(
    fc.property(fc.double({ min: -1e9, max: 1e9, noNaN: true }), (min) => {
      const lo = insideMin(min);
      expect(Math.fround(lo)).toBe(lo);
      expect(lo).toBeGreaterThanOrEqual(min);
      // The float32 nearest to min, or the one above it: within one step.
      expect(lo - min).toBeLessThanOrEqual(Math.max(Math.abs(min) * 2 ** -23, 1.5e-45));
      if (Math.fround(min) === min) expect(lo).toBe(min);
    }),
    { numRuns: 2000 },
  );
});
