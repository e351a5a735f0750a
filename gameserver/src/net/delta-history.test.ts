import { insideMax, insideMin, readSnapshotBody, SnapshotBodyWriter } from '@aethex/proto';
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { World } from '../sim/world.js';
import { Interest } from '../spatial/aoi.js';
import { Grid } from '../spatial/grid.js';
import { DeltaHistory, DeltaScratch, QuantizedWorld, quantaOf } from './delta-history.js';

test('quanta: every position the shard keeps is sent as one a client reads inside the bounds [min, max)', () => {
  // The default: eighths of a unit in [-1000, 1000). The largest position kept (just under 1000)
  // rounds to 8000 eighths, exactly 1000: it is sent as 7999.
  expect(quantaOf({ minX: -1000, minY: -1000, maxX: 1000, maxY: 1000 }, 0.125)).toEqual({
    invScale: 8,
    minX: -8000,
    maxX: 7999,
    minY: -8000,
    maxY: 7999,
  });
  const world = new World(4);
  world.spawn(insideMax(1000), insideMin(-1000), 0);
  const q = new QuantizedWorld(4);
  q.update(world, quantaOf({ minX: -1000, minY: -1000, maxX: 1000, maxY: 1000 }, 0.125), 1);
  expect([q.rows[1]?.[0], q.rows[1]?.[1]]).toEqual([7999, -8000]);

  fc.assert(
    fc.property(
      fc.double({ min: -1e5, max: 1e5, noNaN: true }),
      fc.double({ min: 1, max: 1e5, noNaN: true }),
      fc.double({ min: 1e-4, max: 10, noNaN: true }),
      (min, size, scale) => {
        const max = min + size;
        fc.pre(size >= 2 * scale);
        const k = quantaOf({ minX: min, minY: min, maxX: max, maxY: max }, scale);
        // The extreme quanta read inside, and the next ones out: none inside is cut off.
        expect(k.minX * scale).toBeGreaterThanOrEqual(min);
        expect((k.minX - 1) * scale).toBeLessThan(min);
        expect(k.maxX * scale).toBeLessThan(max);
        expect((k.maxX + 1) * scale).toBeGreaterThanOrEqual(max);
      },
    ),
  );
});

test('at the wrap, a history reset (the session moved to another thread) has no frame of tick 2^32 - 1 to be a base', () => {
  const area = { minX: -100, minY: -100, maxX: 100, maxY: 100 };
  const world = new World(8);
  for (let i = 0; i < 3; i++) world.spawn(i * 10, 0, 0);
  const grid = new Grid(area, 50, 8);
  const q = new QuantizedWorld(8);
  const quanta = quantaOf(area, 0.125);
  const interest = new Interest(8);
  const history = new DeltaHistory(8);
  const cut = (tick: number, ack: number) => {
    grid.rebuild(world.x, world.y, world.count);
    q.update(world, quanta, tick);
    interest.update(grid, world, 0, 0, 60, -1);
    return history.encodeDelta(tick, ack, interest, q, new SnapshotBodyWriter(64), new DeltaScratch(8));
  };
  const last = 0xffffffff;
  expect(cut(last - 1, 0).baseTick).toBe(0);
  expect(cut(last, last - 1).baseTick).toBe(last - 1);
  // Cut at 2^32 - 1 and acknowledged, but the history was reset since: the next tick (0 on the
  // wire) is full. Taken against the reset frame it would be a "delta" naming no removal.
  history.reset();
  expect(cut(0, last).baseTick).toBe(0);
  // Without a reset, the frame of 2^32 - 1 is a base like any other.
  expect(cut(1, 0).baseTick).toBe(0);
  cut(last, 0);
  expect(cut(0, last).baseTick).toBe(last);
});

test('quanta: a position is sent as its nearest quantum, whether that is above or below it', () => {
  const world = new World(4);
  // In eighths: 0.1 is 0.8 (up to 1), 1.2 is 9.6 (up to 10), -0.3 is -2.4 (up to -2), 0.05 is 0.4 (down to 0).
  world.spawn(0.1, 1.2, 0);
  world.spawn(-0.3, 0.05, 0);
  const q = new QuantizedWorld(4);
  q.update(world, quantaOf({ minX: -1000, minY: -1000, maxX: 1000, maxY: 1000 }, 0.125), 1);
  expect(Array.from(q.rows[1]?.subarray(0, 8) ?? [])).toEqual([1, 10, 0, 0, -2, 0, 0, 0]);
});

/**
 * One client at the origin with a view of 60 in a world of 8 slots, and `cut(tick, ack)` encoding
 * its snapshot into `writer`: the base tick and the ids removed.
 */
function originClient(world: World) {
  const area = { minX: -100, minY: -100, maxX: 100, maxY: 100 };
  const grid = new Grid(area, 50, 8);
  const q = new QuantizedWorld(8);
  const quanta = quantaOf(area, 0.125);
  const interest = new Interest(8);
  const history = new DeltaHistory(8);
  const scratch = new DeltaScratch(8);
  const writer = new SnapshotBodyWriter(64);
  const cut = (tick: number, ack: number) => {
    grid.rebuild(world.x, world.y, world.count);
    q.update(world, quanta, tick);
    interest.update(grid, world, 0, 0, 60, -1);
    const delta = history.encodeDelta(tick, ack, interest, q, writer, scratch);
    return { baseTick: delta.baseTick, removed: new Set(scratch.removed.subarray(0, delta.removedCount)) };
  };
  return { interest, writer, cut };
}

test('an entity still in the world that leaves the view is removed, as is one despawned', () => {
  const world = new World(8);
  const near = world.spawn(0, 0, 0);
  const leaving = world.spawn(10, 0, 0);
  const gone = world.spawn(20, 0, 0);
  const { interest, cut } = originClient(world);
  expect(cut(1, 0)).toEqual({ baseTick: 0, removed: new Set() });
  world.x[world.indexOf(leaving)] = 90;
  world.despawn(gone);
  expect(cut(2, 1)).toEqual({ baseTick: 1, removed: new Set([leaving, gone]) });
  expect(Array.from(interest.ids.subarray(0, interest.count))).toEqual([near]);
});

test('an entity that moves only in y (or only in x) gets a delta, and a client applying it lands where the shard has it', () => {
  const world = new World(8);
  const still = world.spawn(0, 0, 0);
  const upOnly = world.spawn(10, 0, 0);
  const acrossOnly = world.spawn(20, 0, 0);
  const origin = originClient(world);
  const client = new Map<number, [number, number]>();
  const records: string[] = [];
  const visitor = {
    delta(id: number, dqx: number, dqy: number) {
      records.push(`delta ${id}`);
      const at = client.get(id) as [number, number];
      client.set(id, [at[0] + dqx, at[1] + dqy]);
    },
    full(id: number, qx: number, qy: number) {
      records.push(`full ${id}`);
      client.set(id, [qx, qy]);
    },
  };
  const cut = (tick: number, ack: number) => {
    records.length = 0;
    const { baseTick } = origin.cut(tick, ack);
    readSnapshotBody(origin.writer.bytes(), visitor);
    return baseTick;
  };
  expect(cut(1, 0)).toBe(0);
  world.y[world.indexOf(upOnly)] = 2.5;
  world.x[world.indexOf(acrossOnly)] = 21.5;
  expect(cut(2, 1)).toBe(1);
  expect(new Set(records)).toEqual(new Set([`delta ${upOnly}`, `delta ${acrossOnly}`]));
  // In eighths: (10, 2.5) is (80, 20), (21.5, 0) is (172, 0).
  expect(client).toEqual(
    new Map([
      [still, [0, 0]],
      [upOnly, [80, 20]],
      [acrossOnly, [172, 0]],
    ]),
  );
});
