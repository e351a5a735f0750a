import { aethex, SnapshotBodyWriter } from '@aethex/proto';
import { SnapshotStore } from '@aethex/sdk';
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { DeltaHistory, DeltaScratch, HISTORY_TICKS, QuantizedWorld, quantaOf } from '../src/net/delta-history.js';
import { SnapshotCutter } from '../src/net/snapshot-threads.js';
import { World } from '../src/sim/world.js';
import { Interest } from '../src/spatial/aoi.js';
import { Grid, HELD_D2 } from '../src/spatial/grid.js';

const area = { minX: -100, minY: -100, maxX: 100, maxY: 100 };
/** Eighths of a unit; a position just under 100 rounds to 800 quanta, which would read as 100: it is sent as 799. */
const quanta = quantaOf(area, 0.125);
const quantized = (v: number) => Math.min(quanta.maxX, Math.max(quanta.minX, Math.round(v * 8))) | 0;
const coord = fc.integer({ min: -100_000, max: 99_999 }).map((v) => v / 1000);
const op = fc.oneof(
  fc.record({ kind: fc.constant('move' as const), index: fc.nat(), x: coord, y: coord }),
  fc.record({ kind: fc.constant('spawn' as const), x: coord, y: coord }),
  fc.record({ kind: fc.constant('despawn' as const), index: fc.nat() }),
  fc.record({ kind: fc.constant('flags' as const), index: fc.nat(), flags: fc.nat({ max: 0xffffffff }) }),
);
// Per tick: some world changes, then which tick the client acknowledged (how far it lags, or lost).
const tickPlan = fc.record({
  ops: fc.array(op, { maxLength: 12 }),
  lag: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: HISTORY_TICKS + 5 })),
});

test('property: the client rebuilds exactly the server’s view from delta snapshots, whatever it acknowledged', () => {
  fc.assert(
    // A crowd of 80 arriving around the client at tick 3: more than its history holds at first (64),
    // so the history grows with frames in it.
    fc.property(
      fc.array(tickPlan, { minLength: 1, maxLength: 60 }),
      fc.tuple(coord, coord),
      fc.constantFrom(0, 80),
      (plan, [px, py], crowd) => {
        const world = new World(160);
        for (let i = 0; i < 20; i++) world.spawn(0, 0, 0);
        const grid = new Grid(area, 50, 160);
        const q = new QuantizedWorld(160);
        const interest = new Interest(160);
        const history = new DeltaHistory(160);
        const scratch = new DeltaScratch(8);
        const writer = new SnapshotBodyWriter(16);
        const client = new SnapshotStore();
        const applied: number[] = [];
        let acked = 0;
        let tick = 0;
        for (const { ops, lag } of plan) {
          for (const o of ops) {
            if (o.kind === 'spawn' && world.count < world.capacity) world.spawn(o.x, o.y, 1);
            if (world.count === 0) continue;
            const slot = 'index' in o ? o.index % world.count : 0;
            if (o.kind === 'move') {
              world.x[slot] = o.x;
              world.y[slot] = o.y;
            } else if (o.kind === 'despawn') {
              world.despawn(world.id[slot] as number);
            } else if (o.kind === 'flags') {
              world.flags[slot] = o.flags;
            }
          }
          tick++;
          if (tick === 3) for (let i = 0; i < crowd && world.count < world.capacity; i++) world.spawn(px, py, 0);
          grid.rebuild(world.x, world.y, world.count);
          q.update(world, quanta, tick);
          interest.update(grid, world, px, py, 60, -1);
          // The acknowledgement reaching the server is of a tick the client applied `lag` snapshots
          // ago (or none yet); as in the engine's ack(), an older one than it has changes nothing.
          acked = Math.max(acked, applied.length >= lag ? (applied[applied.length - lag] as number) : 0);
          const ack = acked;
          const r = history.encodeDelta(tick, ack, interest, q, writer, scratch);
          // A frame still kept is the base (also after the history grew): no needless full snapshots.
          if (ack > 0 && tick - ack < HISTORY_TICKS) expect(r.baseTick).toBe(ack);
          const view = client.apply(tick, r.baseTick, writer.bytes().slice(), scratch.removed.slice(0, r.removedCount));
          applied.push(tick);
          const expected = new Map<number, [number, number, number]>();
          for (let k = 0; k < interest.count; k++) {
            const s = interest.slots[k] as number;
            expected.set(world.id[s] as number, [
              quantized(world.x[s] as number),
              quantized(world.y[s] as number),
              world.flags[s] as number,
            ]);
          }
          const got = new Map([...view.frame].map(([id, e]) => [id, [e.qx, e.qy, e.flags] as [number, number, number]]));
          expect(got).toEqual(expected);
        }
      },
    ),
    { numRuns: 300 },
  );
});

/** Per tick of a crowd: steps of a random walk for some of the 50 entities, who despawns or spawns, and how many snapshots late the client acknowledges. */
const crowdPlan = fc.array(
  fc.record({
    moves: fc.array(fc.tuple(fc.nat(), fc.integer({ min: -15, max: 15 }), fc.integer({ min: -15, max: 15 })), { maxLength: 30 }),
    despawn: fc.option(fc.nat(), { nil: undefined }),
    spawn: fc.option(fc.tuple(coord, coord), { nil: undefined }),
    lag: fc.integer({ min: 1, max: 4 }),
  }),
  { minLength: 5, maxLength: 40 },
);
const crowdStart = fc.array(fc.tuple(fc.integer({ min: -60, max: 60 }), fc.integer({ min: -60, max: 60 })), {
  minLength: 50,
  maxLength: 50,
});

/** A world of 100 slots: the client's own entity (`me`) at the middle of 50 others at `start`. */
function crowdWorld(start: [number, number][]) {
  const world = new World(100);
  const me = world.spawn(0, 0, 0);
  for (const [x, y] of start) world.spawn(x, y, 1);
  return { world, me };
}

/** One tick of a crowd plan's changes (the client's own entity never despawns). */
function stepCrowd(world: World, me: number, step: { moves: [number, number, number][]; despawn?: number; spawn?: [number, number] }) {
  for (const [pick, dx, dy] of step.moves) {
    const slot = pick % world.count;
    world.x[slot] = Math.max(-99, Math.min(99, (world.x[slot] as number) + dx));
    world.y[slot] = Math.max(-99, Math.min(99, (world.y[slot] as number) + dy));
  }
  if (step.despawn !== undefined) {
    const id = world.id[step.despawn % world.count] as number;
    if (id !== me) world.despawn(id);
  }
  if (step.spawn && world.count < world.capacity) world.spawn(step.spawn[0], step.spawn[1], 1);
}

/** A client of `cutter`: cuts its snapshot of `tick` as the engine does and applies it as the SDK does; returns what changed. */
function cutAndApply(cutter: SnapshotCutter, history: DeltaHistory, client: SnapshotStore, slot: number, tick: number, acked: number) {
  const snapshot = aethex.v1.ServerMessage.decode(cutter.cut(history, slot, tick, acked)).snapshot as aethex.v1.Snapshot;
  return client.apply(tick, snapshot.baseTick, snapshot.entities, snapshot.removed);
}

test('at the edge of a crowded view, two entities about as far that take turns being nearer do not take turns being sent: one clearly nearer does', () => {
  // Room for the client's own entity and one other; two others at 100 and 100.5 that swap every tick.
  const world = new World(8);
  const me = world.spawn(0, 0, 0);
  const a = world.spawn(100, 0, 1);
  const b = world.spawn(0, 100.5, 1);
  const grid = new Grid(area, 50, 8);
  const q = new QuantizedWorld(8);
  const cutter = new SnapshotCutter(grid, q, 150, 2, (n) => new Uint8Array(n));
  const history = new DeltaHistory(2);
  const client = new SnapshotStore();
  const seen: number[] = [];
  let churn = 0;
  for (let tick = 1; tick <= 40; tick++) {
    const near = tick % 2 === 1 ? 100 : 100.5;
    const far = tick % 2 === 1 ? 100.5 : 100;
    world.x[world.indexOf(a)] = near;
    world.y[world.indexOf(b)] = far;
    if (tick === 30) world.y[world.indexOf(b)] = 85; // clearly nearer: 15 % (HELD_D2 asks for 10 %)
    if (tick > 30) world.y[world.indexOf(b)] = tick % 2 === 1 ? 89 : 88;
    grid.rebuild(world.x, world.y, world.count);
    q.update(world, quanta, tick);
    const changes = cutAndApply(cutter, history, client, world.indexOf(me), tick, tick - 1);
    if (tick > 1) churn += changes.entered.length + changes.left.length;
    seen.push([...changes.frame.keys()].find((id) => id !== me) as number);
  }
  // a, nearer at the first tick, stays while b is no more than 0.5 % nearer; from tick 30 b is.
  expect(seen).toEqual([...Array(29).fill(a), ...Array(11).fill(b)]);
  // One swap: b entering, a leaving.
  expect(churn).toBe(2);
  expect(HELD_D2).toBeLessThan(0.9 ** 2 + 1e-9);
});

test('property: a capped view (more in range than engine.max_visible) reaches the client as exactly its own entity and the nearest others — what it was sent last counted HELD_D2 nearer — entering and leaving as they are pushed out', () => {
  const cap = 12;
  let cappedTicks = 0;
  let heldMattered = 0;
  let churn = 0;
  fc.assert(
    fc.property(crowdPlan, crowdStart, (plan, start) => {
      const { world, me } = crowdWorld(start);
      const grid = new Grid(area, 50, 100);
      const q = new QuantizedWorld(100);
      const cutter = new SnapshotCutter(grid, q, 80, cap, (n) => new Uint8Array(n));
      const history = new DeltaHistory(cap);
      const client = new SnapshotStore();
      const applied: number[] = [];
      let acked = 0;
      let tick = 0;
      let sent = new Set<number>();
      for (const step of plan) {
        stepCrowd(world, me, step);
        tick++;
        grid.rebuild(world.x, world.y, world.count);
        q.update(world, quanta, tick);
        const self = world.indexOf(me);
        const px = world.x[self] as number;
        const py = world.y[self] as number;
        // Brute force: the own entity, then the cap - 1 nearest others — those sent last time
        // counted HELD_D2 nearer when that view was full — ties to the lowest id.
        const full = sent.size === cap;
        const d2 = (i: number, withHeld: boolean) => {
          const dx = (world.x[i] as number) - px;
          const dy = (world.y[i] as number) - py;
          return (dx * dx + dy * dy) * (withHeld && full && sent.has(world.id[i] as number) ? HELD_D2 : 1);
        };
        const inRange: number[] = [];
        for (let i = 0; i < world.count; i++) if (i !== self && d2(i, false) <= 80 * 80) inRange.push(i);
        const pick = (withHeld: boolean) =>
          new Set([
            me,
            ...[...inRange]
              .sort((a, b) => d2(a, withHeld) - d2(b, withHeld) || (world.id[a] as number) - (world.id[b] as number))
              .slice(0, cap - 1)
              .map((i) => world.id[i] as number),
          ]);
        const want = pick(true);
        if (inRange.length > cap - 1) {
          cappedTicks++;
          if ([...want].some((id) => !pick(false).has(id))) heldMattered++;
        }
        acked = Math.max(acked, applied.length >= step.lag ? (applied[applied.length - step.lag] as number) : 0);
        const changes = cutAndApply(cutter, history, client, self, tick, acked);
        applied.push(tick);
        const got = new Map([...changes.frame].map(([id, e]) => [id, [e.qx, e.qy]]));
        expect(new Set(got.keys())).toEqual(want);
        for (const id of want) {
          const s = world.indexOf(id);
          expect(got.get(id)).toEqual([quantized(world.x[s] as number), quantized(world.y[s] as number)]);
        }
        // Entered and left are the differences between consecutive views: pushed out by someone
        // nearer is leaving, coming nearer than the farthest kept is entering.
        expect(new Set(changes.entered)).toEqual(new Set([...want].filter((id) => !sent.has(id))));
        expect(new Set(changes.left)).toEqual(new Set([...sent].filter((id) => !want.has(id))));
        churn += changes.entered.length + changes.left.length;
        sent = want;
      }
    }),
    { numRuns: 200 },
  );
  // The runs were crowded, the kept set changed under the cap, and what was sent changed what was kept.
  expect(cappedTicks).toBeGreaterThan(1000);
  expect(churn).toBeGreaterThan(1000);
  expect(heldMattered).toBeGreaterThan(200);
});
