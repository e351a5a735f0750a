// The snapshot store against the protocol's rule, written as plainly as possible (a Map per tick):
// start from the base frame, drop `removed`, apply the records (docs/protocol.md).
import { SnapshotBodyWriter } from '@aethex/proto';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { type EntityRecord, SnapshotStore } from './snapshots.js';

type View = Map<number, EntityRecord>;

const entity = fc.record({
  id: fc.integer({ min: 1, max: 150 }),
  qx: fc.integer({ min: -40_000, max: 40_000 }),
  qy: fc.integer({ min: -40_000, max: 40_000 }),
  kind: fc.integer({ min: 0, max: 3 }),
  flags: fc.constantFrom(0, 1, 0xffffffff),
});
/** One tick: what is in view, how old the acknowledgement reaching the server is, the record order. */
const step = fc.record({
  view: fc.uniqueArray(entity, { selector: (e) => e.id, maxLength: 100, size: 'max' }),
  lag: fc.integer({ min: 0, max: 40 }),
  reverse: fc.boolean(),
  // Ticks the client missed; 64 and 128 land on the ring slot of the view it holds.
  skip: fc.constantFrom(1, 1, 1, 2, 3, 64, 128),
});

/** What a server sends for `view` against `base`: deltas where they fit, else full records. */
function encode(view: View, base: View | undefined, reverse: boolean, w: SnapshotBodyWriter): { body: Uint8Array; removed: number[] } {
  w.reset();
  const ids = [...view.keys()];
  if (reverse) ids.reverse();
  for (const id of ids) {
    const e = view.get(id) as EntityRecord;
    const b = base?.get(id);
    const dx = b ? e.qx - b.qx : 0;
    const dy = b ? e.qy - b.qy : 0;
    if (b && b.kind === e.kind && b.flags === e.flags && Math.abs(dx) < 32_000 && Math.abs(dy) < 32_000) {
      if (dx !== 0 || dy !== 0) w.delta(id, dx, dy);
    } else w.full(id, e.qx, e.qy, e.kind, e.flags);
  }
  const removed = base ? [...base.keys()].filter((id) => !view.has(id)) : [];
  return { body: w.bytes().slice(), removed };
}

const asMap = (frame: ReadonlyMap<number, EntityRecord>): View => new Map(frame);

describe('SnapshotStore', () => {
  test('rebuilds every view the server sends, against any base it may choose, as a Map per tick would', () => {
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 120, size: 'medium' }), (steps) => {
        const store = new SnapshotStore();
        const writer = new SnapshotBodyWriter(16);
        const sent = new Map<number, View>();
        let tick = 0;
        let acked = 0;
        let previous: View = new Map();
        for (const s of steps) {
          tick += s.skip;
          const view: View = new Map(s.view.map((e) => [e.id, { qx: e.qx, qy: e.qy, kind: e.kind, flags: e.flags }]));
          // The server's rule: its base is the newest acknowledgement it received (an ack of a
          // tick it sent, `lag` ticks ago, arrives; an older one changes nothing), used while
          // within its 32-tick history, else none.
          if (s.lag > 0 && sent.has(tick - s.lag)) acked = Math.max(acked, tick - s.lag);
          const baseTick = acked > 0 && tick - acked < 32 ? acked : 0;
          const { body, removed } = encode(view, sent.get(baseTick), s.reverse, writer);
          const changes = store.apply(tick, baseTick, body, removed);
          sent.set(tick, view);
          expect(asMap(changes.frame)).toEqual(view);
          expect(changes.frame).toBe(store.current);
          expect(store.current.tick).toBe(tick);
          expect(new Set(changes.entered)).toEqual(new Set([...view.keys()].filter((id) => !previous.has(id))));
          expect(new Set(changes.left)).toEqual(new Set([...previous.keys()].filter((id) => !view.has(id))));
          // The frame before is still intact (interpolation draws between the two).
          expect(asMap(store.previous)).toEqual(previous);
          previous = view;
        }
      }),
      { numRuns: 200 },
    );
    // About 3 s alone; on two cores shared with other test files or a benchmark it took 7.8 s,
    // past the default 5 s.
  }, 30_000);

  test('keeps the 64 newest ticks as bases and refuses an older or unknown one, unchanged', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const views: View[] = [];
    for (let t = 1; t <= 100; t++) {
      const view: View = new Map([
        [7, { qx: t, qy: -t, kind: 1, flags: 0 }],
        [t + 100, { qx: 0, qy: 0, kind: 2, flags: t }],
      ]);
      const { body, removed } = encode(view, undefined, false, writer);
      store.apply(t, 0, body, removed);
      views[t] = view;
    }
    // Tick 37 is the oldest kept: a delta against it works, one against 36 does not.
    const next: View = new Map([[7, { qx: 40, qy: -40, kind: 1, flags: 0 }]]);
    const against37 = encode(next, views[37], false, writer);
    expect(() => store.apply(101, 36, against37.body, against37.removed)).toThrow(
      'snapshot 101 is relative to tick 36, which this client does not have',
    );
    expect(() => store.apply(101, 150, against37.body, against37.removed)).toThrow(/tick 150/);
    expect(asMap(store.current)).toEqual(views[100]);
    expect(asMap(store.apply(101, 37, against37.body, against37.removed).frame)).toEqual(next);
  });

  test('frames before the newest base are given up: a base older than that is refused', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const views: View[] = [];
    let base: number | undefined;
    for (let t = 1; t <= 10; t++) {
      const view: View = new Map([[7, { qx: t, qy: -t, kind: 1, flags: 0 }]]);
      const { body, removed } = encode(view, base ? views[base] : undefined, false, writer);
      store.apply(t, base ?? 0, body, removed);
      views[t] = view;
      base = t === 6 ? 5 : base;
    }
    // Snapshots 7 to 10 were relative to tick 5: it is kept, 4 is not; 5 to 10 serve as bases.
    const next: View = new Map([[7, { qx: 0, qy: 0, kind: 1, flags: 0 }]]);
    const against4 = encode(next, views[4], false, writer);
    expect(() => store.apply(11, 4, against4.body, against4.removed)).toThrow(
      'snapshot 11 is relative to tick 4, which this client does not have',
    );
    const against8 = encode(next, views[8], false, writer);
    expect(asMap(store.apply(11, 8, against8.body, against8.removed).frame)).toEqual(next);
    // Now 5 to 7 are gone too; the previous view (10) is intact.
    const against5 = encode(next, views[5], false, writer);
    expect(() => store.apply(12, 5, against5.body, against5.removed)).toThrow(/relative to tick 5/);
    expect(asMap(store.previous)).toEqual(views[10]);
    // A late snapshot older than the newest base is not kept as a base.
    store.apply(6, 0, encode(views[6] as View, undefined, false, writer).body, []);
    const against6 = encode(next, views[6], false, writer);
    expect(() => store.apply(12, 6, against6.body, against6.removed)).toThrow(/relative to tick 6/);
  });

  test('a malformed body or a move of an entity the base lacks throws and changes nothing', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const view: View = new Map([[5, { qx: 1, qy: 2, kind: 0, flags: 0 }]]);
    const first = encode(view, undefined, false, writer);
    store.apply(1, 0, first.body, first.removed);
    writer.reset();
    writer.delta(9, 1, 1);
    expect(() => store.apply(2, 1, writer.bytes().slice(), [])).toThrow('snapshot 2 moves entity 9, which its base does not have');
    // A move of an entity the same snapshot removes.
    writer.reset();
    writer.delta(5, 1, 1);
    expect(() => store.apply(2, 1, writer.bytes().slice(), [5])).toThrow(/moves entity 5/);
    expect(() => store.apply(2, 1, new Uint8Array([0x0b]), [])).toThrow('unknown record mode 3 in snapshot body');
    expect(() => store.apply(2, 1, new Uint8Array([0x08, 1]), [])).toThrow('truncated snapshot body');
    expect(store.latestTick).toBe(1);
    expect(asMap(store.current)).toEqual(view);
    // And the base still serves.
    writer.reset();
    writer.delta(5, 3, 4);
    expect(asMap(store.apply(2, 1, writer.bytes().slice(), []).frame)).toEqual(new Map([[5, { qx: 4, qy: 6, kind: 0, flags: 0 }]]));
  });

  test('a late snapshot is kept as a base but does not replace the newer view', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const a: View = new Map([[1, { qx: 0, qy: 0, kind: 0, flags: 0 }]]);
    const b: View = new Map([[2, { qx: 5, qy: 5, kind: 0, flags: 0 }]]);
    store.apply(10, 0, encode(b, undefined, false, writer).body, []);
    const late = store.apply(9, 0, encode(a, undefined, false, writer).body, []);
    expect(late.entered).toEqual([]);
    expect(asMap(late.frame)).toEqual(b);
    const c: View = new Map([[1, { qx: 3, qy: 0, kind: 0, flags: 0 }]]);
    const onLate = encode(c, a, false, writer);
    expect(asMap(store.apply(11, 9, onLate.body, onLate.removed).frame)).toEqual(c);
  });

  test('a snapshot repeating the newest tick leaves the view as it was, also after a late one', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const a: View = new Map([[1, { qx: 1, qy: 1, kind: 0, flags: 0 }]]);
    const b: View = new Map([[2, { qx: 2, qy: 2, kind: 0, flags: 0 }]]);
    const c: View = new Map([[3, { qx: 3, qy: 3, kind: 0, flags: 0 }]]);
    store.apply(10, 0, encode(a, undefined, false, writer).body, []);
    store.apply(10, 0, encode(b, undefined, false, writer).body, []);
    store.apply(9, 0, encode(c, undefined, false, writer).body, []);
    store.apply(8, 0, encode(c, undefined, false, writer).body, []);
    expect(store.current.tick).toBe(10);
    expect(asMap(store.current)).toEqual(a);
  });

  test('the view before the newest stays intact when the newest took its slot and a late one follows', () => {
    const store = new SnapshotStore();
    const writer = new SnapshotBodyWriter(16);
    const a: View = new Map([[1, { qx: 1, qy: 1, kind: 0, flags: 0 }]]);
    const b: View = new Map([[2, { qx: 2, qy: 2, kind: 0, flags: 0 }]]);
    const c: View = new Map([[3, { qx: 3, qy: 3, kind: 0, flags: 0 }]]);
    store.apply(1, 0, encode(a, undefined, false, writer).body, []);
    // Tick 65 goes where tick 1 was kept; tick 1 is still the view before the newest.
    store.apply(65, 0, encode(b, undefined, false, writer).body, []);
    store.apply(64, 0, encode(c, undefined, false, writer).body, []);
    expect(store.previous.tick).toBe(1);
    expect(asMap(store.previous)).toEqual(a);
    expect(asMap(store.current)).toEqual(b);
  });
});
