import { expect, test } from 'vitest';
import { unwrapTick } from './ticks.js';

test('a wire tick is read as the tick with its low 32 bits nearest to the one known', () => {
  expect(unwrapTick(7, 0)).toBe(7);
  expect(unwrapTick(2 ** 32 - 1, 0)).toBe(2 ** 32 - 1);
  expect(unwrapTick(105, 100)).toBe(105);
  expect(unwrapTick(95, 100)).toBe(95);
  // Across the wrap, both ways.
  expect(unwrapTick(3, 2 ** 32 - 2)).toBe(2 ** 32 + 3);
  expect(unwrapTick(2 ** 32 - 2, 2 ** 32 + 3)).toBe(2 ** 32 - 2);
  // Far on: the 40th wrap.
  const near = 40 * 2 ** 32 + 17;
  expect(unwrapTick(near % 2 ** 32, near)).toBe(near);
  expect(unwrapTick((near + 1000) % 2 ** 32, near)).toBe(near + 1000);
  expect(unwrapTick((near - 1000) % 2 ** 32, near)).toBe(near - 1000);
  // Never before tick 0.
  expect(unwrapTick(2 ** 31 + 1, 1)).toBe(2 ** 31 + 1);
  expect(unwrapTick(2 ** 32 - 5, 10)).toBe(2 ** 32 - 5);
  // Its low 32 bits are always the wire's.
  for (const [w, n] of [
    [0, 5],
    [2 ** 31, 1],
    [2 ** 31 + 1, 2 ** 32],
    [123456, 2 ** 40 + 99],
  ] as const) {
    expect(unwrapTick(w, n) % 2 ** 32).toBe(w);
    expect(Math.abs(unwrapTick(w, n) - n)).toBeLessThanOrEqual(2 ** 31);
  }
});
