import fc from 'fast-check';
import { expect, test } from 'vitest';
import { MAX_RENDER_DELAY_MS, RenderBuffer, TickClock } from './render-buffer.js';
import { Frame } from './snapshots.js';

/** A view at `tick` with entities `[id, qx, qy]`. */
function frameOf(tick: number, entities: [number, number, number][]): Frame {
  const f = new Frame();
  f.reset(tick, entities.length);
  for (const [id, qx, qy] of entities) f.add(id, qx, qy, 1, 0);
  return f;
}

/** 50 Hz. */
const TICK_MS = 20;

/**
 * Entity 9 moving 4 quanta a tick along x, ticks 1..`last` sent `latency` ms after their tick's
 * time (1000 + 20 × tick); `late` maps a tick to how much later it left, and a snapshot never
 * arrives before the one ahead of it (one socket: those behind a late one come with it); ticks in
 * `lost` never come.
 */
function arrivals(last: number, late: Map<number, number>, lost: Set<number>, latency = 5): { tick: number; at: number }[] {
  const out: { tick: number; at: number }[] = [];
  let previous = 0;
  for (let tick = 1; tick <= last; tick++) {
    if (lost.has(tick)) continue;
    previous = Math.max(previous, 1000 + TICK_MS * tick + latency + (late.get(tick) ?? 0));
    out.push({ tick, at: previous });
  }
  return out;
}

/** x of entity 9 drawn at each of `times`, the snapshots pushed as they arrive. */
function drawn(buffer: RenderBuffer, schedule: { tick: number; at: number }[], times: number[]): number[] {
  const xs: number[] = [];
  let next = 0;
  for (const now of times) {
    for (; next < schedule.length && (schedule[next]?.at as number) <= now; next++) {
      const { tick, at } = schedule[next] as { tick: number; at: number };
      buffer.push(frameOf(tick, [[9, 4 * tick, 0]]), at, TICK_MS);
    }
    xs.push(buffer.sample(now, 1, 5).get(9)?.x as number);
  }
  return xs;
}

const range = (from: number, to: number, step: number) =>
  Array.from({ length: Math.floor((to - from) / step) + 1 }, (_, k) => from + k * step);

test('snapshots 60 and 50 ms late (those behind them coming with them), one 15 ms late, one lost: the entity is drawn exactly where it was 100 ms ago, moving evenly', () => {
  const buffer = new RenderBuffer(100);
  const schedule = arrivals(
    40,
    new Map([
      [15, 60],
      [30, 50],
      [35, 15],
    ]),
    new Set([24]),
  );
  // Ticks 15 to 18 all arrive at 1365, when 18 was due; 30 to 32 at 1655, 32 (the newest then) 10 ms late.
  expect(schedule.filter((s) => s.at === 1365).map((s) => s.tick)).toEqual([15, 16, 17, 18]);
  expect(schedule.filter((s) => s.at === 1655).map((s) => s.tick)).toEqual([30, 31, 32]);
  const times = range(1125, 1800, 5);
  const xs = drawn(buffer, schedule, times);
  // On the timeline of the on-time arrivals (tick t at 1005 + 20 t), 100 ms behind: 4 quanta a tick is 0.2 a ms.
  for (const [k, now] of times.entries()) expect(xs[k], `at ${now}`).toBeCloseTo((now - 1105) * 0.2, 9);
});

test('before the delay has passed the first snapshot is held; past the newest (a stall longer than the delay) the newest is held, not extrapolated', () => {
  const buffer = new RenderBuffer(100);
  const schedule = arrivals(10, new Map(), new Set());
  expect(drawn(buffer, schedule.slice(0, 3), [1025, 1060, 1100])).toEqual([4, 4, 4]);
  // Tick 10 arrives at 1205; nothing after. Render reaches tick 10 at 1305 and stays there.
  const rest = drawn(buffer, schedule, [1300, 1305, 1400, 5000]);
  expect(rest).toEqual([39, 40, 40, 40]);
});

test('the render clock only moves forward, at 0.9–1.1 × real time, under any arrival jitter up to 40 ms and isolated losses', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 150, maxLength: 150 }),
      fc.array(fc.boolean(), { minLength: 150, maxLength: 150 }),
      fc.integer({ min: 0, max: 30 }),
      (jitter, dropped, latency) => {
        const late = new Map(jitter.map((ms, k) => [k + 1, ms]));
        // Never two in a row, nor the first or the last.
        const lost = new Set(dropped.flatMap((d, k) => (d && k > 0 && k < 149 && !dropped[k - 1] ? [k + 1] : [])));
        const buffer = new RenderBuffer(100);
        const times = range(1000, 1000 + 20 * 150, 7);
        const xs = drawn(buffer, arrivals(150, late, lost, latency), times);
        // Once the first 500 ms are over (the clock settles while the first snapshot is held).
        for (let k = 1; k < times.length; k++) {
          if ((times[k] as number) < 1500) continue;
          const speed = ((xs[k] as number) - (xs[k - 1] as number)) / 7 / 0.2;
          if (!(speed >= 0.9 - 1e-9 && speed <= 1.1 + 1e-9)) return false;
        }
        return true;
      },
    ),
    { numRuns: 200 },
  );
});

test('a TickClock closes a gap at 10% of elapsed time at most, then smoothly; anchor sets it at once', () => {
  const clock = new TickClock();
  clock.anchor(100, 0);
  expect(clock.offset(-10)).toBe(100);
  clock.steer(0, 0);
  // 100 ms away: 10% of elapsed time until 50 ms away (after 500 ms), then with a time constant of 500 ms.
  expect(clock.offset(100)).toBeCloseTo(90, 9);
  expect(clock.offset(500)).toBeCloseTo(50, 9);
  expect(clock.offset(1000)).toBeCloseTo(50 * Math.exp(-1), 9);
  for (let t = 0; t < 5000; t += 3) expect(clock.offset(t) - clock.offset(t + 3)).toBeLessThanOrEqual(0.3 + 1e-9);
  // Steering from part way keeps the value it had reached.
  clock.steer(200, 500);
  expect(clock.offset(500)).toBeCloseTo(50, 9);
  expect(clock.offset(600)).toBeCloseTo(60, 9);
  clock.anchor(-7, 700);
  expect(clock.offset(800)).toBe(-7);
});

test('after reset (another shard, a restart) the new ticks start over: held at the first of them, never drawn between the two shards', () => {
  const buffer = new RenderBuffer(100);
  for (let tick = 500; tick <= 520; tick++) buffer.push(frameOf(tick, [[9, 4 * tick, 0]]), 20 * tick - 8000, TICK_MS);
  // Without a reset, a lower tick is not newer: ignored.
  buffer.push(frameOf(3, [[9, 9999, 0]]), 2410, TICK_MS);
  expect(buffer.ticks().at(-1)).toBe(520);
  expect(buffer.sample(2410, 1, 5).get(9)?.x).toBeCloseTo(4 * 515.5, 9);

  buffer.reset();
  expect(buffer.size).toBe(0);
  expect(buffer.sample(2410, 1, 5).size).toBe(0);
  buffer.push(frameOf(3, [[9, 2200, 0]]), 2450, TICK_MS);
  expect(buffer.ticks()).toEqual([3]);
  // Held at the new shard's first snapshot for the delay; then on between its own ticks only.
  for (const now of [2450, 2500, 2549]) expect(buffer.sample(now, 1, 5).get(9)?.x).toBe(2200);
  for (let tick = 4; tick <= 10; tick++) buffer.push(frameOf(tick, [[9, 2200 + 4 * (tick - 3), 0]]), 2450 + 20 * (tick - 3), TICK_MS);
  expect(buffer.sample(2560, 1, 5).get(9)?.x).toBeCloseTo(2202, 9);
  expect(buffer.sample(2610, 1, 5).get(9)?.x).toBeCloseTo(2212, 9);
});

test('a second snapshot of a tick already held changes nothing: not kept, not drawn, the clock not moved', () => {
  const buffer = new RenderBuffer(100);
  for (let tick = 1; tick <= 10; tick++) buffer.push(frameOf(tick, [[9, 4 * tick, 0]]), 1000 + 20 * tick, TICK_MS);
  const times = [1200, 1250, 1290, 1300, 1400];
  const before = times.map((now) => buffer.sample(now, 1, 5).get(9));
  expect(before.at(-1)?.x).toBe(40);
  // Tick 10 again, different, and late.
  buffer.push(frameOf(10, [[9, 9999, 0]]), 1290, TICK_MS);
  expect([buffer.size, buffer.ticks()]).toEqual([10, range(1, 10, 1)]);
  expect(times.map((now) => buffer.sample(now, 1, 5).get(9))).toEqual(before);
});

test('a teleport (further than max speed over the ticks between the two snapshots) is drawn where it landed; a move within it slides', () => {
  const buffer = new RenderBuffer(40);
  buffer.push(
    frameOf(1, [
      [1, 0, 0],
      [2, 0, 0],
    ]),
    1000,
    TICK_MS,
  );
  buffer.push(
    frameOf(3, [
      [1, 10, 0],
      [2, 1000, 0],
    ]),
    1040,
    TICK_MS,
  );
  // Render tick 2 at 1060: half way. Max speed 5 a tick over 2 ticks: 10 quanta slide, 1000 do not.
  const at = buffer.sample(1060, 0.5, 2.5);
  expect(at.get(1)).toEqual({ x: 2.5, y: 0, kind: 1, flags: 0 });
  expect(at.get(2)).toEqual({ x: 500, y: 0, kind: 1, flags: 0 });
});

test('entering and leaving follow the delayed view: an entity shows once render time reaches the snapshot before it entered, and goes when it reaches the one it left in', () => {
  const buffer = new RenderBuffer(100);
  for (let tick = 1; tick <= 12; tick++) {
    const entities: [number, number, number][] = [[1, tick, 0]];
    if (tick <= 5) entities.push([2, 50, 0]);
    if (tick >= 6) entities.push([3, 70, 0]);
    buffer.push(frameOf(tick, entities), 1000 + 20 * tick, TICK_MS);
  }
  // Render tick = (now − 1000 − 100) / 20.
  const ids = (renderTick: number) => [...buffer.sample(1100 + 20 * renderTick, 1).keys()].sort((a, b) => a - b);
  expect(ids(3.5)).toEqual([1, 2]); // 3 is in the newest snapshot, not yet in the delayed view
  expect(ids(4.99)).toEqual([1, 2]);
  expect(ids(5)).toEqual([1, 2, 3]); // between 5 and 6: 2 is still there, 3 has come
  expect(ids(5.5)).toEqual([1, 2, 3]);
  expect(buffer.sample(1100 + 20 * 5.5, 1).get(2)?.x).toBe(50);
  expect(buffer.sample(1100 + 20 * 5.5, 1).get(3)?.x).toBe(70);
  expect(ids(6)).toEqual([1, 3]);
});

test('the ring holds 2 × the delay’s ticks + 2 snapshots, at most about a second; copies, so the store reusing its frames changes nothing drawn', () => {
  const capacity = (delayMs: number, tickMs: number) => {
    const b = new RenderBuffer(delayMs);
    b.push(frameOf(1, []), 0, tickMs);
    return b.capacity;
  };
  expect(capacity(100, 25)).toBe(10);
  expect(capacity(100, 20)).toBe(12);
  expect(capacity(1, 25)).toBe(4);
  expect(capacity(MAX_RENDER_DELAY_MS, 25)).toBe(42);
  expect(capacity(MAX_RENDER_DELAY_MS, 1000 / 128) * (1000 / 128)).toBeLessThanOrEqual(1020);
  expect(new RenderBuffer(100).capacity).toBe(0);

  const buffer = new RenderBuffer(100);
  const reused = new Frame();
  for (let tick = 1; tick <= 1000; tick++) {
    reused.reset(tick, 1);
    reused.add(9, 4 * tick, 0, 1, 0);
    buffer.push(reused, 1000 + 25 * tick, 25);
    expect(buffer.size).toBe(Math.min(tick, 10));
  }
  expect(buffer.ticks()).toEqual(range(991, 1000, 1));
  // Render tick 998.5 (offset 1000, 100 ms = 4 ticks behind).
  const before = buffer.sample(1100 + 25 * 998.5, 1).get(9);
  expect(before?.x).toBeCloseTo(4 * 998.5, 9);
  reused.reset(1001, 1);
  reused.add(9, -1, -1, 0, 0);
  expect(buffer.sample(1100 + 25 * 998.5, 1).get(9)).toEqual(before);
  // A new tick length (a shard of another tick rate) starts over, sized for it.
  buffer.push(frameOf(5, []), 27_000, 20);
  expect([buffer.size, buffer.capacity]).toEqual([1, 12]);
});

test('delayMs must be above 0 and at most 500', () => {
  for (const bad of [0, -1, 501, Number.NaN, Number.POSITIVE_INFINITY]) {
    expect(() => new RenderBuffer(bad), String(bad)).toThrow(
      new RangeError(`delayMs must be a positive number of milliseconds up to 500, got ${String(bad)}`),
    );
  }
  expect(new RenderBuffer(500).delayMs).toBe(500);
});
