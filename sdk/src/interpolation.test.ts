import { expect, test } from 'vitest';
import { interpolate } from './interpolation.js';

const rec = (qx: number, qy: number) => ({ qx, qy, kind: 0, flags: 0 });

test('lerps entities present in both snapshots and places new ones where they are', () => {
  const prev = new Map([
    [1, rec(0, 0)],
    [2, rec(80, 80)],
  ]);
  const curr = new Map([
    [1, rec(80, -40)],
    [3, rec(16, 16)],
  ]);
  const at = interpolate(prev, curr, 0.25, 0.125);
  expect(at.get(1)).toEqual({ x: 2.5, y: -1.25, kind: 0, flags: 0 });
  expect(at.get(3)).toEqual({ x: 2, y: 2, kind: 0, flags: 0 });
  // Entity 2 left: not drawn.
  expect(at.has(2)).toBe(false);
});

test('alpha is clamped to [0, 1], and a non-number means the current snapshot', () => {
  const prev = new Map([[1, rec(0, 0)]]);
  const curr = new Map([[1, rec(8, 8)]]);
  expect(interpolate(prev, curr, -3, 1).get(1)).toMatchObject({ x: 0, y: 0 });
  expect(interpolate(prev, curr, 7, 1).get(1)).toMatchObject({ x: 8, y: 8 });
  expect(interpolate(prev, curr, Number.NaN, 1).get(1)).toMatchObject({ x: 8, y: 8 });
});
