import fc from 'fast-check';
import { expect, it } from 'vitest';
import { DEFAULT_POSITION_SCALE, MAX_GRID_CELLS, type WorldLimits, worldBoundsProblem } from './world-bounds.js';

const square = (half: number) => ({ minX: -half, minY: -half, maxX: half, maxY: half });
const limits = (o: Partial<WorldLimits>): WorldLimits => ({
  bounds: square(1000),
  maxSpeed: 5,
  positionScale: DEFAULT_POSITION_SCALE,
  aoiRadius: 200,
  ...o,
});
/** A radius whose grid fits any world here: only the rule under test can fail. */
const wide = { aoiRadius: 100_000 };

it('float32: the spacing at the farthest bound may be exactly maxSpeed / 100, not more', () => {
  // float32 values in [2^18, 2^19) are 2^-5 apart, from 2^19 on 2^-4: a hundredth of 5 is 0.05.
  expect(worldBoundsProblem(limits({ ...wide, bounds: square(524_287) }))).toBeUndefined();
  expect(worldBoundsProblem(limits({ ...wide, bounds: square(524_288) }))).toEqual({
    rule: 'float32',
    farthest: 524_288,
    spacing: 2 ** -4,
    maxSpeed: 5,
    inside: 524_288,
    minMaxSpeed: 6.25,
  });
  // At 6.25 the spacing 2^-4 is exactly a hundredth of the speed: allowed; just below, not.
  expect(worldBoundsProblem(limits({ ...wide, bounds: square(524_288), maxSpeed: 6.25 }))).toBeUndefined();
  expect(worldBoundsProblem(limits({ ...wide, bounds: square(524_288), maxSpeed: 6.2499 }))).toMatchObject({ rule: 'float32' });
  // Only the farthest bound counts, on any side, as float32 stores it (524287.99 is 524288).
  expect(worldBoundsProblem(limits({ ...wide, bounds: { minX: 0, minY: -524_287.99, maxX: 1, maxY: 0 } }))).toMatchObject({
    rule: 'float32',
  });
  expect(worldBoundsProblem(limits({ ...wide, bounds: { minX: -2_000_000, minY: -2000, maxX: 2_000_000, maxY: 2000 } }))).toMatchObject({
    rule: 'float32',
    farthest: 2_000_000,
    spacing: 0.125,
    inside: 524_288,
    minMaxSpeed: 12.5,
  });
});

it('quanta: the farthest bound must be fewer than 2^31 − 1 position quanta from 0', () => {
  const fast = { maxSpeed: 10_000, aoiRadius: 1e9 };
  // (2^31 − 1) / 8 is exactly 2^31 − 1 quanta of 0.125.
  expect(worldBoundsProblem(limits({ ...fast, bounds: square((2 ** 31 - 1) / 8 - 0.125) }))).toBeUndefined();
  expect(worldBoundsProblem(limits({ ...fast, bounds: square((2 ** 31 - 1) / 8) }))).toEqual({
    rule: 'quanta',
    farthest: 268_435_455.875,
    positionScale: 0.125,
    minPositionScale: 0.125001,
    limit: 268_435_455.875,
  });
  // The gameserver's long-standing example: 300000 at a quantum of 0.0001 needs at least 0.00014.
  expect(worldBoundsProblem(limits({ bounds: square(300_000), aoiRadius: 2000, positionScale: 0.0001 }))).toMatchObject({
    rule: 'quanta',
    minPositionScale: 0.00014,
  });
  // The smallest scale offered is never one that lands exactly on the limit: 2147.483647 / 1e-6 is 2^31 − 1.
  const exact = worldBoundsProblem(limits({ ...wide, bounds: square(2147.483647), maxSpeed: 10_000, positionScale: 1e-7 }));
  expect(exact).toMatchObject({ rule: 'quanta' });
  expect(
    worldBoundsProblem(
      limits({
        ...wide,
        bounds: square(2147.483647),
        maxSpeed: 10_000,
        positionScale: (exact as { minPositionScale: number }).minPositionScale,
      }),
    ),
  ).toBeUndefined();
});

it('grid: at most 2^20 cells of half the area-of-interest radius', () => {
  // 102400 / 100 = 1024 cells a side: exactly 2^20.
  const edge = { minX: 0, minY: 0, maxX: 102_400, maxY: 102_400 };
  expect(worldBoundsProblem(limits({ bounds: edge }))).toBeUndefined();
  expect(worldBoundsProblem(limits({ bounds: { ...edge, maxY: 102_400.5 } }))).toEqual({
    rule: 'grid',
    cells: 1024 * 1025,
    width: 102_400,
    height: 102_400.5,
    // 100.0005 a cell: 1024 a side.
    minAoiRadius: 200.001,
  });
  expect(worldBoundsProblem(limits({ bounds: { ...edge, maxY: 102_400.5 }, aoiRadius: 200.001 }))).toBeUndefined();
  expect(worldBoundsProblem(limits({ bounds: { ...edge, maxY: 102_400.5 }, aoiRadius: 200 }))).toMatchObject({ rule: 'grid' });
});

it('checks int32 quanta first, then float32, then the grid (the order the shard reports them in)', () => {
  expect(worldBoundsProblem(limits({ bounds: square(3e8) }))?.rule).toBe('quanta');
  expect(worldBoundsProblem(limits({ bounds: square(3e6), aoiRadius: 1 }))?.rule).toBe('float32');
  expect(worldBoundsProblem(limits({ bounds: square(1e5), aoiRadius: 1 }))?.rule).toBe('grid');
});

it('property: the smallest radius and max speed a problem names are accepted, and the radius is the least that fits', () => {
  fc.assert(
    fc.property(
      fc.double({ min: 1, max: 1e6, noNaN: true }),
      fc.double({ min: 1, max: 1e6, noNaN: true }),
      fc.double({ min: -1e6, max: 1e6, noNaN: true }),
      fc.double({ min: 0.01, max: 5000, noNaN: true }),
      (width, height, minX, aoiRadius) => {
        const w = limits({ bounds: { minX, minY: 0, maxX: minX + width, maxY: height }, maxSpeed: 10_000, aoiRadius });
        const p = worldBoundsProblem(w);
        if (p?.rule !== 'grid') return;
        expect(p.cells).toBeGreaterThan(MAX_GRID_CELLS);
        expect(worldBoundsProblem({ ...w, aoiRadius: p.minAoiRadius })).toBeUndefined();
        // The least that fits, to 0.001.
        if (p.minAoiRadius > 0.001) expect(worldBoundsProblem({ ...w, aoiRadius: p.minAoiRadius - 0.001 })).toMatchObject({ rule: 'grid' });
      },
    ),
    { numRuns: 500 },
  );
  fc.assert(
    fc.property(fc.double({ min: 1, max: 1e9, noNaN: true }), fc.double({ min: 0.001, max: 10_000, noNaN: true }), (half, maxSpeed) => {
      const w = limits({ bounds: square(half), maxSpeed, positionScale: 100, aoiRadius: 1e9 });
      const p = worldBoundsProblem(w);
      if (p === undefined) return;
      expect(p.rule).toBe('float32');
      if (p.rule !== 'float32') return;
      expect(worldBoundsProblem({ ...w, maxSpeed: p.minMaxSpeed })).toBeUndefined();
      // What it says to keep the bounds inside is where the refusals start.
      expect(Math.fround(half)).toBeGreaterThanOrEqual(p.inside);
    }),
    { numRuns: 500 },
  );
});
