import fc from 'fast-check';
import { expect, test } from 'vitest';
import { MODE_DORMANT, World } from '../sim/world.js';
import { Interest } from './aoi.js';
import { Grid, HELD_D2, selectNearest } from './grid.js';

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

/**
 * The slots brute force finds in range (`exclude` and, with `mode`, dormant ones left out), the
 * `cap` nearest of them when there are more: by squared distance, computed as the grid does (that of
 * a `held` slot times HELD_D2), ties to the lowest entity id. Sorted by slot.
 */
function nearestByBruteForce(
  w: World,
  px: number,
  py: number,
  r: number,
  exclude: number,
  cap: number,
  mode?: Uint8Array,
  held?: Set<number>,
): number[] {
  const d2 = (i: number) => {
    const dx = (w.x[i] as number) - px;
    const dy = (w.y[i] as number) - py;
    return (dx * dx + dy * dy) * (held?.has(i) ? HELD_D2 : 1);
  };
  return bruteForce(w, px, py, r, exclude)
    .filter((i) => mode === undefined || mode[i] !== MODE_DORMANT)
    .sort((a, b) => d2(a) - d2(b) || (w.id[a] as number) - (w.id[b] as number))
    .slice(0, cap)
    .sort((a, b) => a - b);
}

// Coordinates on a coarse lattice too: many entities at the same distance, or the same point.
const crowdCoord = fc.oneof(
  coord,
  fc.integer({ min: -8, max: 8 }).map((v) => v * 25),
);

/** A world of `points`, whose entity ids are a shuffle (`idOrder`) unrelated to the slots. */
function shuffledWorld(points: [number, number, boolean?][], idOrder: number[]): World {
  const w = new World(points.length);
  const ids = points.map((_, k) => k + 1);
  for (let k = 0; k < ids.length; k++) {
    const j = k + ((idOrder[k] ?? 0) % (ids.length - k));
    [ids[k], ids[j]] = [ids[j] as number, ids[k] as number];
  }
  points.forEach(([x, y, dormant], k) => {
    w.spawn(x, y, 1, ids[k]);
    if (dormant) w.mode[k] = MODE_DORMANT;
  });
  return w;
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

test('an entity exactly at the radius is in range, as brute force counts it; one just past it is not', () => {
  const w = new World(8);
  for (const [x, y] of [
    [100, 0],
    [0, -100],
    [60, 80],
    [-80, 60],
    [100.5, 0],
    [0, 101],
  ])
    w.spawn(x as number, y as number, 0);
  const grid = new Grid(area, 50, w.capacity);
  grid.rebuild(w.x, w.y, w.count);
  const out = new Int32Array(8);
  const n = grid.queryRadius(0, 0, 100, out);
  expect([...out.subarray(0, n)].sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
  expect(bruteForce(w, 0, 0, 100, -1)).toEqual([0, 1, 2, 3]);
});

test('queries stop at the size of the output buffer', () => {
  const w = new World(100);
  for (let i = 0; i < 100; i++) w.spawn(0, 0, 0);
  const grid = new Grid(area, 50, 100);
  grid.rebuild(w.x, w.y, w.count);
  expect(grid.queryRadius(0, 0, 10, new Int32Array(16))).toBe(16);
});

/**
 * The interest of the entity at slot `selfPick % w.count` (made not dormant) over a grid of `w`,
 * radius 200, `maxVisible` at most; with its position.
 */
function interestOf(w: World, selfPick: number, maxVisible: number) {
  const self = selfPick % w.count;
  w.mode[self] = 0;
  const grid = new Grid(area, 50, w.capacity);
  grid.rebuild(w.x, w.y, w.count);
  const interest = new Interest(maxVisible);
  const px = w.x[self] as number;
  const py = w.y[self] as number;
  interest.update(grid, w, px, py, 200, self);
  return { self, px, py, interest };
}

test('property: a query with more in range than its output holds keeps the nearest, ties to the lowest id, as brute force; those its client was last sent (held) counted 10 % nearer', () => {
  let capped = 0;
  let heldMattered = 0;
  fc.assert(
    fc.property(
      // Per point: x, y, dormant, sent to the client last time.
      fc.array(fc.tuple(crowdCoord, crowdCoord, fc.boolean(), fc.boolean()), { minLength: 50, maxLength: 300 }),
      fc.array(fc.nat(), { maxLength: 300 }),
      fc.tuple(crowdCoord, crowdCoord),
      fc.integer({ min: 50_000, max: 400_000 }).map((v) => v / 1000),
      fc.integer({ min: 1, max: 30 }),
      fc.constantFrom(25, 50, 100, 333),
      // Whether the query is told what was sent (the snapshot encoder tells it only when that view
      // was full): mostly, as held marks are what this property is most about.
      fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
      (points, idOrder, [px, py], radius, cap, cell, withHeld) => {
        const w = shuffledWorld(
          points.map(([x, y, dormant]) => [x, y, dormant]),
          idOrder,
        );
        const grid = new Grid(area, cell, w.capacity);
        grid.rebuild(w.x, w.y, w.count);
        // Marks as the snapshot encoder leaves them: other stamps on other slots too.
        const marks = new Int32Array(w.capacity * 2);
        const held = new Set<number>();
        points.forEach(([, , , wasSent], i) => {
          if (wasSent && withHeld) {
            marks[i * 2] = 6;
            held.add(i);
          } else marks[i * 2] = i % 3 === 0 ? 4 : 0;
        });
        const out = new Int32Array(cap);
        const before = grid.capped;
        const inRange = bruteForce(w, px, py, radius, 0).filter((i) => w.mode[i] !== MODE_DORMANT).length;
        const n = grid.queryRadius(px, py, radius, out, 0, w.mode, 0, w.id, withHeld ? { marks, stamp: 6 } : undefined);
        expect(n).toBe(Math.min(cap, inRange));
        const got = [...out.subarray(0, n)].sort((a, b) => a - b);
        expect(got).toEqual(nearestByBruteForce(w, px, py, radius, 0, cap, w.mode, held));
        // Counted exactly when something was left out.
        expect(grid.capped - before).toBe(inRange > cap ? 1 : 0);
        if (inRange > cap) {
          capped++;
          if (withHeld && got.join() !== nearestByBruteForce(w, px, py, radius, 0, cap, w.mode).join()) heldMattered++;
        }
      },
    ),
    { numRuns: 800 },
  );
  // Many runs have more in range than fit: the property is about them; in many what was sent
  // changed what is kept.
  expect(capped).toBeGreaterThan(130);
  expect(heldMattered).toBeGreaterThan(15);
});

test('property: a capped interest holds its own entity first, then the nearest others by brute force', () => {
  let capped = 0;
  fc.assert(
    fc.property(
      fc.array(fc.tuple(crowdCoord, crowdCoord, fc.boolean()), { minLength: 40, maxLength: 150 }),
      fc.array(fc.nat(), { maxLength: 150 }),
      fc.nat(),
      fc.integer({ min: 1, max: 20 }),
      (points, idOrder, selfPick, maxVisible) => {
        const w = shuffledWorld(points, idOrder);
        const { self, px, py, interest } = interestOf(w, selfPick, maxVisible);
        const others = nearestByBruteForce(w, px, py, 200, self, maxVisible - 1, w.mode);
        const got = [...interest.slots.subarray(0, interest.count)];
        expect(got[0]).toBe(self);
        expect(got.slice(1).sort((a, b) => a - b)).toEqual(others);
        const inRange = bruteForce(w, px, py, 200, self).filter((i) => w.mode[i] !== MODE_DORMANT).length;
        expect(interest.capped).toBe(inRange > maxVisible - 1);
        if (interest.capped) capped++;
        for (let k = 0; k < interest.count; k++) expect(interest.ids[k]).toBe(w.id[got[k] as number]);
      },
    ),
    { numRuns: 300 },
  );
  expect(capped).toBeGreaterThan(40);
});

test('property: the selection puts the k nearest first, with quickselect or with the heap it falls back to', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.integer({ min: 0, max: 20 }), fc.nat({ max: 1000 })), { minLength: 1, maxLength: 200 }),
      fc.nat(),
      fc.constantFrom(0, 1, 2, 3, undefined),
      fc.constantFrom('random', 'sorted', 'reversed'),
      (entries, kPick, rounds, order) => {
        // Distinct keys (as ids and slots are), distances with many ties.
        const all = entries.map(([d, key], i) => [d, key * 1000 + i] as const);
        if (order !== 'random') all.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        if (order === 'reversed') all.reverse();
        const n = all.length;
        const k = kPick % (n + 1);
        const slot = Int32Array.from(all, (_, i) => i);
        const key = Uint32Array.from(all, (e) => e[1]);
        const d2 = Float64Array.from(all, (e) => e[0]);
        selectNearest(slot, key, d2, n, k, rounds);
        const want = [...all].sort((a, b) => a[0] - b[0] || a[1] - b[1]).slice(0, k);
        const got = [...key.subarray(0, k)].sort((a, b) => a - b);
        expect(got).toEqual(want.map((e) => e[1]).sort((a, b) => a - b));
        // Still a permutation, the arrays still in step.
        expect([...slot].sort((a, b) => a - b)).toEqual(all.map((_, i) => i));
        for (let i = 0; i < n; i++) expect(key[i]).toBe((all[slot[i] as number] as readonly [number, number])[1]);
      },
    ),
    { numRuns: 500 },
  );
});

test('a query its cells make look crowded that is not gets every entity in range, in cell order, and is not counted capped', () => {
  const w = new World(200);
  // 190 in the query's cells but out of range, 3 in range: by the cells' density, 6 in range.
  for (let i = 0; i < 190; i++) w.spawn(45 + (i % 5) * 0.1, 45, 0);
  w.spawn(2, 0, 0);
  w.spawn(0, 3, 0);
  w.spawn(-1, -1, 0);
  const grid = new Grid(area, 50, w.capacity);
  grid.rebuild(w.x, w.y, w.count);
  const out = new Int32Array(5);
  const n = grid.queryRadius(0, 0, 10, out, -1, undefined, 0, w.id);
  expect(n).toBe(3);
  // In the order the common case (room for all in the cells) writes them.
  const roomy = new Int32Array(200);
  expect(grid.queryRadius(0, 0, 10, roomy, -1, undefined, 0, w.id)).toBe(3);
  expect([...out.subarray(0, n)]).toEqual([...roomy.subarray(0, 3)]);
  expect([...out.subarray(0, n)].sort((a, b) => a - b)).toEqual([190, 191, 192]);
  expect(grid.capped).toBe(0);
  // One place less than in range: the nearest two, counted.
  expect(grid.queryRadius(0, 0, 10, out.subarray(0, 2), -1, undefined, 0, w.id)).toBe(2);
  expect([...out.subarray(0, 2)].sort((a, b) => a - b)).toEqual([190, 192]);
  expect(grid.capped).toBe(1);
});

test('refuses a grid with more cells than allowed, naming the fix', () => {
  expect(() => new Grid(area, 0.01, 10)).toThrow(/raise the cell size/);
  // 10 × 10 cells: within a bound of 100, one past a bound of 99.
  expect(new Grid(area, 100, 10, 100).cols).toBe(10);
  expect(() => new Grid(area, 100, 10, 99)).toThrow('a 10×10 grid exceeds 99 cells; raise the cell size (the AOI radius)');
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
        const { self, px, py, interest } = interestOf(w, selfPick, maxVisible);
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
