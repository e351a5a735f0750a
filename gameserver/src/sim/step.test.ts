import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { applyInput, createRng, step, wander } from './step.js';
import { KIND_NPC, KIND_PLAYER, World } from './world.js';

const rules = { bounds: { minX: -100, minY: -100, maxX: 100, maxY: 100 }, maxSpeed: 5 };
const corrected = new Uint32Array(64);

function player(x = 0, y = 0) {
  const w = new World(16);
  const id = w.spawn(x, y, KIND_PLAYER);
  return { w, id, slot: w.indexOf(id) };
}

describe('movement authority', () => {
  test('a move within the rules is applied exactly and not corrected', () => {
    const { w, slot } = player();
    expect(applyInput(w, slot, 1, 3, 4)).toBe('applied');
    expect(step(w, rules, corrected)).toBe(0);
    expect([w.x[slot], w.y[slot], w.lastSeq[slot]]).toEqual([3, 4, 1]);
  });

  test('a speed hack is clamped to maxSpeed and corrected', () => {
    const { w, id, slot } = player();
    applyInput(w, slot, 1, 300, 400);
    expect(step(w, rules, corrected)).toBe(1);
    expect(corrected[0]).toBe(id);
    expect(Math.hypot(w.x[slot] as number, w.y[slot] as number)).toBeCloseTo(5, 5);
  });

  test('many inputs in one tick add up and are clamped together', () => {
    const { w, slot } = player();
    for (let seq = 1; seq <= 10; seq++) applyInput(w, slot, seq, 5, 0);
    step(w, rules, corrected);
    expect(w.x[slot]).toBeCloseTo(5, 5);
    expect(w.lastSeq[slot]).toBe(10);
  });

  test('replayed and stale sequences are ignored', () => {
    const { w, slot } = player();
    applyInput(w, slot, 5, 1, 0);
    expect(applyInput(w, slot, 5, 1, 0)).toBe('stale');
    expect(applyInput(w, slot, 3, 1, 0)).toBe('stale');
    step(w, rules, corrected);
    expect(w.x[slot]).toBe(1);
  });

  test('non-finite moves are invalid and move nothing', () => {
    const { w, slot } = player();
    expect(applyInput(w, slot, 1, Number.NaN, 0)).toBe('invalid');
    expect(applyInput(w, slot, 2, Number.POSITIVE_INFINITY, 1)).toBe('invalid');
    step(w, rules, corrected);
    expect([w.x[slot], w.y[slot], w.lastSeq[slot]]).toEqual([0, 0, 2]);
  });

  test('world bounds hold and a move into them is corrected', () => {
    const { w, slot } = player(98, -98);
    applyInput(w, slot, 1, 4, -3);
    expect(step(w, rules, corrected)).toBe(1);
    expect(w.x[slot]).toBeLessThan(100);
    expect(w.y[slot]).toBe(-100);
  });

  test('property: whatever the inputs, no entity moves more than maxSpeed per tick or leaves the bounds', () => {
    const move = fc.double({ min: -1e6, max: 1e6, noNaN: true });
    fc.assert(
      fc.property(fc.array(fc.array(fc.tuple(move, move), { maxLength: 5 }), { minLength: 1, maxLength: 40 }), (ticks) => {
        const { w, slot } = player();
        let seq = 0;
        for (const inputs of ticks) {
          const bx = w.x[slot] as number;
          const by = w.y[slot] as number;
          for (const [dx, dy] of inputs) applyInput(w, slot, ++seq, dx, dy);
          step(w, rules, corrected);
          const x = w.x[slot] as number;
          const y = w.y[slot] as number;
          expect(Math.hypot(x - bx, y - by)).toBeLessThanOrEqual(rules.maxSpeed + 1e-4);
          expect(x >= -100 && x < 100 && y >= -100 && y < 100).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('determinism', () => {
  function run(seed: number) {
    const w = new World(600);
    const rng = createRng(seed);
    for (let i = 0; i < 500; i++) w.spawn(rng() * 200 - 100, rng() * 200 - 100, KIND_NPC);
    for (let i = 0; i < 50; i++) w.spawn(rng() * 200 - 100, rng() * 200 - 100, KIND_PLAYER);
    const inputRng = createRng(seed + 1);
    for (let tick = 1; tick <= 200; tick++) {
      wander(w, rng, KIND_NPC, 2, 0.05);
      for (let i = 0; i < w.count; i++) {
        if (w.kind[i] === KIND_PLAYER) applyInput(w, i, tick, inputRng() * 12 - 6, inputRng() * 12 - 6);
      }
      step(w, rules, corrected);
    }
    return w.stateHash();
  }

  test('the same seed and inputs give the same state hash; another seed does not', () => {
    expect(run(7)).toBe(run(7));
    expect(run(7)).not.toBe(run(8));
  });
});
