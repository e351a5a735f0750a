import { SnapshotBodyWriter } from '@aethex/proto';
import { SnapshotStore } from '@aethex/sdk';
import fc from 'fast-check';
import { expect, test } from 'vitest';
import { DeltaHistory, DeltaScratch, HISTORY_TICKS, QuantizedWorld } from '../src/net/delta-history.js';
import { World } from '../src/sim/world.js';
import { Interest } from '../src/spatial/aoi.js';
import { Grid } from '../src/spatial/grid.js';

const area = { minX: -100, minY: -100, maxX: 100, maxY: 100 };
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
          q.update(world, 8, tick);
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
              Math.round((world.x[s] as number) * 8) | 0,
              Math.round((world.y[s] as number) * 8) | 0,
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
