import fc from 'fast-check';
import { expect, test } from 'vitest';
import { interpolate } from './interpolation.js';
import { Frame } from './snapshots.js';

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
});

test('an entity that left is drawn where it was until the interval is over, not one interval early', () => {
  const prev = new Map([
    [1, rec(0, 0)],
    [2, rec(80, 80)],
  ]);
  const curr = new Map([[1, rec(8, 0)]]);
  expect(interpolate(prev, curr, 0, 0.125).get(2)).toEqual({ x: 10, y: 10, kind: 0, flags: 0 });
  expect(interpolate(prev, curr, 0.9, 0.125).get(2)).toEqual({ x: 10, y: 10, kind: 0, flags: 0 });
  expect(interpolate(prev, curr, 1, 0.125).has(2)).toBe(false);
  expect(interpolate(prev, curr, Number.NaN, 0.125).has(2)).toBe(false);
});

test('an entity that moved further than maxStep (a teleport) is drawn where it is now; one within it slides', () => {
  // Max speed 5 units a tick at 0.125 per quantum, 4 ticks between the snapshots: 160 quanta.
  const maxStep = (5 * 4) / 0.125;
  const prev = new Map([
    [1, rec(0, 0)],
    [2, rec(0, 0)],
    [3, rec(0, 0)],
  ]);
  const curr = new Map([
    [1, rec(160, 0)], // at max speed: slides
    [2, rec(161, 1)], // a quantum of rounding on each axis: still slides
    [3, rec(4000, 0)], // teleported
  ]);
  const at = interpolate(prev, curr, 0.5, 0.125, maxStep);
  expect(at.get(1)).toMatchObject({ x: 10, y: 0 });
  expect(at.get(2)).toMatchObject({ x: 80.5 * 0.125, y: 0.5 * 0.125 });
  expect(at.get(3)).toMatchObject({ x: 500, y: 0 });
  // Without a limit everything slides, as before.
  expect(interpolate(prev, curr, 0.5, 0.125).get(3)).toMatchObject({ x: 250, y: 0 });
});

test('the teleport limit is maxStep + 2 quanta exactly: a move of maxStep + 2 slides, one of maxStep + 3 is drawn where it landed', () => {
  const maxStep = 160;
  const prev = new Map([
    [1, rec(0, 0)],
    [2, rec(0, 0)],
    [3, rec(0, 0)],
    [4, rec(0, 0)],
  ]);
  const curr = new Map([
    [1, rec(maxStep + 2, 0)],
    [2, rec(maxStep + 3, 0)],
    [3, rec(0, -(maxStep + 2))],
    [4, rec(0, -(maxStep + 3))],
  ]);
  const at = interpolate(prev, curr, 0.5, 1, maxStep);
  expect(at.get(1)).toMatchObject({ x: 81, y: 0 });
  expect(at.get(2)).toMatchObject({ x: 163, y: 0 });
  expect(at.get(3)).toMatchObject({ x: 0, y: -81 });
  expect(at.get(4)).toMatchObject({ x: 0, y: -163 });
});

test('alpha is clamped to [0, 1], and a non-number means the current snapshot', () => {
  const prev = new Map([[1, rec(0, 0)]]);
  const curr = new Map([[1, rec(8, 8)]]);
  expect(interpolate(prev, curr, -3, 1).get(1)).toMatchObject({ x: 0, y: 0 });
  expect(interpolate(prev, curr, 7, 1).get(1)).toMatchObject({ x: 8, y: 8 });
  expect(interpolate(prev, curr, Number.NaN, 1).get(1)).toMatchObject({ x: 8, y: 8 });
});

test('two Frames, read through their arrays, are drawn exactly as the same views as Maps', () => {
  const view = fc.uniqueArray(
    fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: -500, max: 500 }), fc.integer({ min: -500, max: 500 })),
    {
      selector: ([id]) => id,
      maxLength: 30,
    },
  );
  const frameOf = (entities: [number, number, number][]) => {
    const f = new Frame(1);
    f.reset(1, 1);
    for (const [id, qx, qy] of entities) f.add(id, qx, qy, id % 3, id * 7);
    return f;
  };
  fc.assert(
    fc.property(
      view,
      view,
      fc.double({ min: -0.5, max: 1.5, noNaN: true }),
      fc.constantFrom(100, 160, Number.POSITIVE_INFINITY),
      (p, c, alpha, maxStep) => {
        const [fp, fcur] = [frameOf(p), frameOf(c)];
        const fromFrames = interpolate(fp, fcur, alpha, 0.125, maxStep);
        const fromMaps = interpolate(new Map(fp), new Map(fcur), alpha, 0.125, maxStep);
        expect([...fromFrames]).toEqual([...fromMaps]);
      },
    ),
  );
});
