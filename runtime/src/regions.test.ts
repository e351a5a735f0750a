import fc from 'fast-check';
import { expect, it } from 'vitest';
import { regions } from './regions.js';

it('splits a 2×2 world into four quadrants, each neighbouring the other three', () => {
  const r = regions({ minX: 0, minY: 0, maxX: 100, maxY: 50 }, 2, 2);
  expect(r.map((x) => [x.shard, x.column, x.row, x.bounds, x.neighbours])).toEqual([
    [0, 0, 0, { minX: 0, minY: 0, maxX: 50, maxY: 25 }, [1, 2, 3]],
    [1, 1, 0, { minX: 50, minY: 0, maxX: 100, maxY: 25 }, [0, 2, 3]],
    [2, 0, 1, { minX: 0, minY: 25, maxX: 50, maxY: 50 }, [0, 1, 3]],
    [3, 1, 1, { minX: 50, minY: 25, maxX: 100, maxY: 50 }, [0, 1, 2]],
  ]);
});

it('tiles the world exactly, and neighbourhood is symmetric', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: -5000, max: 5000 }),
      fc.integer({ min: 1, max: 9999 }),
      (c, r, min, size) => {
        const rs = regions({ minX: min, minY: min, maxX: min + size, maxY: min + size * 2 }, c, r);
        expect(rs).toHaveLength(c * r);
        const area = rs.reduce((a, x) => a + (x.bounds.maxX - x.bounds.minX) * (x.bounds.maxY - x.bounds.minY), 0);
        expect(area).toBeCloseTo(size * size * 2, 3);
        expect(Math.max(...rs.map((x) => x.bounds.maxX))).toBe(min + size);
        for (const x of rs) for (const n of x.neighbours) expect(rs[n]?.neighbours).toContain(x.shard);
      },
    ),
  );
});
