import fc from 'fast-check';
import { expect, test } from 'vitest';
import { MODE_DORMANT, World } from '../sim/world.js';
import { Interest } from './aoi.js';
import { Grid } from './grid.js';

const area = { minX: -500, minY: -500, maxX: 500, maxY: 500 };
// Integers scaled down spread points over the area; fc.double favours a few edge values.
const coord = fc.integer({ min: -600_000, max: 600_000 }).map((v) => v / 1000);

function bruteForce(w: World, px: number, py: number, r: number, exclude: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < w.count; i++) {
    if (i === exclude) continue;
    const dx = (w.x[i] as number) - px;
    const dy = (w.y[i] as number) - py;
    if (dx * dx + dy * dy <= r * r) out.push(i);
  }
  return out;
}

test('property: radius queries equal brute force, also for points outside the grid', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(coord, coord), { minLength: 1, maxLength: 300 }),
      fc.tuple(coord, coord),
      fc.integer({ min: 0, max: 400_000 }).map((v) => v / 1000),
      fc.constantFrom(25, 50, 100, 333),
      (points, [px, py], radius, cell) => {
        const w = new World(400);
        for (const [x, y] of points) w.spawn(x, y, 0);
        const grid = new Grid(area, cell, w.capacity);
        grid.rebuild(w.x, w.y, w.count);
        const out = new Int32Array(400);
        const exclude = w.count > 0 ? 0 : -1;
        const n = grid.queryRadius(px, py, radius, out, exclude);
        expect([...out.subarray(0, n)].sort((a, b) => a - b)).toEqual(bruteForce(w, px, py, radius, exclude));
      },
    ),
    { numRuns: 400 },
  );
});

test('queries stop at the size of the output buffer', () => {
  const w = new World(100);
  for (let i = 0; i < 100; i++) w.spawn(0, 0, 0);
  const grid = new Grid(area, 50, 100);
  grid.rebuild(w.x, w.y, w.count);
  expect(grid.queryRadius(0, 0, 10, new Int32Array(16))).toBe(16);
});

test('refuses a grid with more cells than allowed, naming the fix', () => {
  expect(() => new Grid(area, 0.01, 10)).toThrow(/raise the cell size/);
});

test('property: an interest holds exactly the brute-force visible set, with matching ids and slots', () => {
  const frames = fc.array(fc.array(fc.tuple(coord, coord), { minLength: 40, maxLength: 40 }), { minLength: 1, maxLength: 8 });
  fc.assert(
    fc.property(frames, fc.tuple(coord, coord), (ticks, [px, py]) => {
      const w = new World(40);
      for (let i = 0; i < 40; i++) w.spawn(0, 0, 0);
      // Despawn and respawn one entity so ids stop following slots.
      w.despawn(3);
      w.spawn(0, 0, 0);
      const grid = new Grid(area, 100, 40);
      const interest = new Interest(64);
      for (const frame of ticks) {
        frame.forEach(([x, y], i) => {
          w.x[i] = x;
          w.y[i] = y;
        });
        grid.rebuild(w.x, w.y, w.count);
        interest.update(grid, w, px, py, 150, -1);
        const truth = bruteForce(w, px, py, 150, -1)
          .map((i) => w.id[i] as number)
          .sort((a, b) => a - b);
        expect([...interest.ids.subarray(0, interest.count)].sort((a, b) => a - b)).toEqual(truth);
        for (let k = 0; k < interest.count; k++) expect(w.id[interest.slots[k] as number]).toBe(interest.ids[k]);
      }
    }),
    { numRuns: 200 },
  );
});

test('property: a full interest keeps its own entity first and gives no place to dormant entities', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(coord, coord, fc.boolean()), { minLength: 1, maxLength: 120 }),
      fc.nat(),
      fc.integer({ min: 1, max: 40 }),
      (points, selfPick, maxVisible) => {
        const w = new World(120);
        for (const [x, y, dormant] of points) {
          const id = w.spawn(x, y, 1);
          if (dormant) w.mode[w.indexOf(id)] = MODE_DORMANT;
        }
        const self = selfPick % w.count;
        w.mode[self] = 0;
        const grid = new Grid(area, 50, w.capacity);
        grid.rebuild(w.x, w.y, w.count);
        const interest = new Interest(maxVisible);
        const px = w.x[self] as number;
        const py = w.y[self] as number;
        interest.update(grid, w, px, py, 200, self);
        const seen = bruteForce(w, px, py, 200, self).filter((i) => w.mode[i] !== MODE_DORMANT);
        const got = [...interest.slots.subarray(0, interest.count)];
        expect(got[0]).toBe(self);
        expect(got.length).toBe(Math.min(maxVisible, seen.length + 1));
        expect(new Set(got).size).toBe(got.length);
        for (const slot of got.slice(1)) expect(seen).toContain(slot);
      },
    ),
    { numRuns: 300 },
  );
});

test('a NaN position lands in the first cell: every other entity is still indexed once and found', () => {
  const w = new World(8);
  for (let i = 0; i < 6; i++) w.spawn(-499 + i, -499, 0);
  w.x[2] = Number.NaN;
  const grid = new Grid(area, 50, w.capacity);
  grid.rebuild(w.x, w.y, w.count);
  expect([...grid.order()].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5]);
  const out = new Int32Array(8);
  const n = grid.queryRadius(-497, -499, 10, out);
  expect([...out.subarray(0, n)].sort((a, b) => a - b)).toEqual([0, 1, 3, 4, 5]);
});
