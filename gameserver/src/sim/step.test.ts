import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { applyInput, createRng, reachOf, step, wander } from './step.js';
import { IDLE_CREDIT, JITTER_BUFFER_STEPS, KIND_NPC, KIND_PLAYER, MAX_MOVES_PER_STEP, MAX_QUEUED_MOVES, World } from './world.js';

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

  test('a sharded shard keeps its players within its region and its neighbours’ (reach): a walk on is clamped and corrected', () => {
    // A 3 × 1 world: this shard owns x -100..-33, its one neighbour -33..33; x 33..100 is a third
    // shard's, which no handoff from here reaches.
    const reach = reachOf(rules.bounds, [
      { minX: -100, minY: -100, maxX: -33, maxY: 100 },
      { minX: -33, minY: -100, maxX: 33, maxY: 100 },
    ]);
    expect(reach).toEqual({ minX: -100, minY: -100, maxX: 33, maxY: 100 });
    const { w, id, slot } = player();
    w.x[slot] = 30;
    applyInput(w, slot, 1, 5, 0);
    expect(step(w, { ...rules, reach }, corrected)).toBe(1);
    expect(corrected[0]).toBe(id);
    expect(w.x[slot]).toBeLessThan(33);
    expect(w.x[slot]).toBeGreaterThan(32.99);
    // Without a reach, the world's bounds.
    applyInput(w, slot, 2, 5, 0);
    expect(step(w, rules, corrected)).toBe(0);
    expect(w.x[slot]).toBeGreaterThan(37);
    // One outside the reach (restored there) walks back in at its own pace, and no further out.
    w.x[slot] = 80;
    applyInput(w, slot, 3, -1, 0);
    expect(step(w, { ...rules, reach }, corrected)).toBe(0);
    expect(w.x[slot]).toBe(79);
    applyInput(w, slot, 4, 1, 1);
    expect(step(w, { ...rules, reach }, corrected)).toBe(1);
    expect([w.x[slot], w.y[slot]]).toEqual([79, 1]);
  });

  test('a second input in one tick waits for the next step, and is acknowledged only then', () => {
    const { w, slot } = player();
    applyInput(w, slot, 1, 4, 0);
    applyInput(w, slot, 2, 4, 0);
    expect(step(w, rules, corrected)).toBe(0);
    expect([w.x[slot], w.lastSeq[slot]]).toEqual([4, 1]);
    expect(step(w, rules, corrected)).toBe(0);
    expect([w.x[slot], w.lastSeq[slot]]).toEqual([8, 2]);
    expect(step(w, rules, corrected)).toBe(0);
    // Nothing waits: the player stands.
    expect([w.x[slot], w.lastSeq[slot], w.vx[slot]]).toEqual([8, 2, 0]);
  });

  test('a burst of inputs is applied whole, one move a step, and caught up on with the credit of the steps the player stood', () => {
    const { w, slot } = player();
    // Three steps standing: three moves of credit.
    for (let i = 0; i < 3; i++) step(w, rules, corrected);
    for (let seq = 1; seq <= 10; seq++) applyInput(w, slot, seq, 5, 0);
    const at: number[] = [];
    for (let i = 0; i < 8; i++) {
      expect(step(w, rules, corrected)).toBe(0);
      at.push(w.lastSeq[slot] as number);
    }
    // 1 + 3 caught up, then one a step; nothing lost, nothing clamped.
    expect(at).toEqual([4, 5, 6, 7, 8, 9, 10, 10]);
    expect(w.x[slot]).toBe(50);
  });

  test('a step applies at most MAX_MOVES_PER_STEP moves, whatever credit is left: the rest of a burst waits for the next steps', () => {
    const { w, slot } = player();
    for (let i = 0; i < IDLE_CREDIT; i++) step(w, rules, corrected);
    // More credit than one step may spend: only the cap stops the first steps.
    expect(w.credit[slot]).toBe(IDLE_CREDIT);
    expect(IDLE_CREDIT).toBeGreaterThanOrEqual(2 * MAX_MOVES_PER_STEP);
    for (let seq = 1; seq <= 10; seq++) applyInput(w, slot, seq, 5, 0);
    const at: number[] = [];
    for (let i = 0; i < 4; i++) {
      expect(step(w, rules, corrected)).toBe(0);
      at.push(w.lastSeq[slot] as number);
    }
    // Then, with the one the jitter buffer holds left to wait, one a step.
    expect(at).toEqual([MAX_MOVES_PER_STEP, 2 * MAX_MOVES_PER_STEP, 9, 10]);
    expect(w.x[slot]).toBe(50);
  });

  test('a client whose inputs arrive steadily a tick behind has that tick taken back after JITTER_BUFFER_STEPS steps, with a credit', () => {
    const { w, slot } = player();
    // One step standing: one credit. Then an input arrives late: two before the next step.
    step(w, rules, corrected);
    let seq = 0;
    applyInput(w, slot, ++seq, 1, 0);
    applyInput(w, slot, ++seq, 1, 0);
    const waiting: number[] = [];
    for (let t = 0; t < JITTER_BUFFER_STEPS + 10; t++) {
      expect(step(w, rules, corrected)).toBe(0);
      waiting.push(seq - (w.lastSeq[slot] as number));
      // And from then on one input a tick, exactly as fast as the shard steps.
      applyInput(w, slot, ++seq, 1, 0);
    }
    // The buffer held one move for JITTER_BUFFER_STEPS steps, then a step applied two: no move
    // waits after a step since, and each input is applied by the first step after it arrives.
    expect(waiting).toEqual([...Array(JITTER_BUFFER_STEPS).fill(1), ...Array(10).fill(0)]);
    expect(w.x[slot]).toBe(seq - 1);
    expect(w.credit[slot]).toBe(0);
  });

  test('without credit the jitter buffer stays full: a client that never stood cannot move faster by sending early', () => {
    const { w, slot } = player();
    // Two inputs before the first step: no step stood, no credit.
    let seq = 0;
    applyInput(w, slot, ++seq, 1, 0);
    applyInput(w, slot, ++seq, 1, 0);
    for (let t = 0; t < JITTER_BUFFER_STEPS * 3; t++) {
      step(w, rules, corrected);
      expect(seq - (w.lastSeq[slot] as number)).toBe(1);
      applyInput(w, slot, ++seq, 1, 0);
    }
    // One move a step, never two.
    expect(w.x[slot]).toBe(JITTER_BUFFER_STEPS * 3);
  });

  test('a burst of huge moves is clamped move by move: no overflow, no NaN', () => {
    const { w, id, slot } = player();
    for (let i = 0; i < 3; i++) step(w, rules, corrected);
    // Finite floats each, whose sum is not.
    for (let seq = 1; seq <= 3; seq++) expect(applyInput(w, slot, seq, 3e38, 0)).toBe('applied');
    expect(applyInput(w, slot, 4, 1e39, 0)).toBe('invalid');
    // Two now (one may wait), the third the step after, answered with the invalid one's sequence.
    expect(step(w, rules, corrected)).toBe(1);
    expect(corrected[0]).toBe(id);
    expect([w.x[slot], w.y[slot], w.lastSeq[slot]]).toEqual([10, 0, 2]);
    expect(step(w, rules, corrected)).toBe(1);
    expect([w.x[slot], w.y[slot], w.lastSeq[slot]]).toEqual([15, 0, 4]);
  });

  test('a move a float rounds a hair over maxSpeed is not corrected', () => {
    const { w, slot } = player();
    let over = 0;
    for (let k = 0; k < 1000; k++) {
      const a = (k / 1000) * 2 * Math.PI;
      const dx = Math.fround(Math.cos(a) * 5);
      const dy = Math.fround(Math.sin(a) * 5);
      if (dx * dx + dy * dy > 25) over++;
      applyInput(w, slot, k + 1, dx, dy);
      expect(step(w, rules, corrected)).toBe(0);
      w.x[slot] = 0;
      w.y[slot] = 0;
    }
    expect(over).toBeGreaterThan(100);
  });

  test('a full queue answers further inputs with its newest move: the sequence advances, nothing more moves', () => {
    const { w, slot } = player();
    for (let seq = 1; seq <= MAX_QUEUED_MOVES; seq++) expect(applyInput(w, slot, seq, 0.5, 0)).toBe('applied');
    expect(applyInput(w, slot, MAX_QUEUED_MOVES + 1, 5, 0)).toBe('applied');
    for (let i = 0; i < MAX_QUEUED_MOVES; i++) step(w, rules, corrected);
    expect(w.lastSeq[slot]).toBe(MAX_QUEUED_MOVES + 1);
    expect(w.x[slot]).toBeCloseTo(MAX_QUEUED_MOVES * 0.5, 3);
    expect(w.queued.size).toBe(0);
  });

  test('property: inputs of an honest client arriving up to a tick late are each applied whole and in order, uncorrected, one a step but for a jitter buffer full for JITTER_BUFFER_STEPS, and the player is where its acknowledged inputs put it', () => {
    const move = fc.double({ min: -3.5, max: 3.5, noNaN: true });
    // Per run, inputs late half the time, or rarely (1 in 40): long runs on time keep a buffer full.
    // (fast-check's default size makes short arrays: `size: 'max'` lets runs reach JITTER_BUFFER_STEPS.)
    const run = (late: fc.Arbitrary<boolean>) => fc.array(fc.tuple(move, move, late), { minLength: 1, maxLength: 120, size: 'max' });
    // Steps that applied two moves because the buffer had stayed full.
    let drained = 0;
    fc.assert(
      fc.property(fc.oneof(run(fc.boolean()), run(fc.nat(39).map((n) => n === 0))), (inputs) => {
        const { w, slot } = player();
        // Input k is sent before step k and arrives before step k or, a tick late, step k + 1 — in order.
        const arrival: number[] = [];
        for (const [k, [, , late]] of inputs.entries()) arrival.push(Math.max(arrival[k - 1] ?? 0, k + (late ? 1 : 0)));
        const at = [{ x: 0, y: 0 }];
        for (const [dx, dy] of inputs) {
          const last = at[at.length - 1] as { x: number; y: number };
          at.push({ x: last.x + dx, y: last.y + dy });
        }
        let next = 0;
        for (let tick = 0; tick < inputs.length + 2; tick++) {
          while (next < inputs.length && arrival[next] === tick) {
            const [dx, dy] = inputs[next] as [number, number, boolean];
            expect(applyInput(w, slot, next + 1, dx, dy)).toBe('applied');
            next++;
          }
          const seqBefore = w.lastSeq[slot] as number;
          const fullFor = w.buffered[slot] as number;
          expect(step(w, rules, corrected)).toBe(0);
          const seq = w.lastSeq[slot] as number;
          expect(seq - seqBefore).toBeLessThanOrEqual(fullFor >= JITTER_BUFFER_STEPS ? 2 : 1);
          if (seq - seqBefore === 2) drained++;
          // The step moved by exactly the inputs it acknowledges.
          let mx = 0;
          let my = 0;
          for (let k = seqBefore; k < seq; k++) {
            const [dx, dy] = inputs[k] as [number, number, boolean];
            mx += Math.fround(dx);
            my += Math.fround(dy);
          }
          expect(w.vx[slot]).toBeCloseTo(mx, 4);
          expect(w.vy[slot]).toBeCloseTo(my, 4);
          // And leaves at most the one the buffer holds.
          expect(next - seq).toBeLessThanOrEqual(1);
          // What a snapshot now acknowledges is exactly what moved the player (a tick with no
          // input moved it not at all): a client replaying its later inputs on this position
          // predicts what the shard will do.
          const acked = at[seq] as { x: number; y: number };
          expect(w.x[slot]).toBeCloseTo(acked.x, 3);
          expect(w.y[slot]).toBeCloseTo(acked.y, 3);
        }
        expect(w.lastSeq[slot]).toBe(inputs.length);
      }),
      { numRuns: 300 },
    );
    expect(drained).toBeGreaterThan(50);
  });

  test('a player with no input waiting stands still; an NPC keeps its velocity', () => {
    const w = new World(4);
    const p = w.indexOf(w.spawn(0, 0, KIND_PLAYER));
    const n = w.indexOf(w.spawn(10, 0, KIND_NPC));
    applyInput(w, p, 1, 3, 0);
    w.vx[n] = 2;
    step(w, rules, corrected);
    step(w, rules, corrected);
    step(w, rules, corrected);
    expect([w.x[p], w.vx[p], w.lastSeq[p]]).toEqual([3, 0, 1]);
    expect([w.x[n], w.vx[n]]).toEqual([16, 2]);
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

  test('bounds that are no float32 (-999.9) hold as stored: a player walking into the minimum stays at or above it, an NPC in its region too', () => {
    const odd = { bounds: { minX: -999.9, minY: -999.9, maxX: 999.9, maxY: 999.9 }, maxSpeed: 5 };
    // Rounded to nearest, -999.9 is stored below itself: outside the world, as a neighbour checks.
    expect(Math.fround(-999.9)).toBeLessThan(-999.9);
    const { w, slot } = player(-997, -997);
    const npc = w.spawn(-998, 0, KIND_NPC);
    const n = w.indexOf(npc);
    w.vx[n] = -4;
    // The NPC bounces off the region's edge (here the bounds) on its way out.
    let npcLowest = Number.POSITIVE_INFINITY;
    for (let seq = 1; seq <= 5; seq++) {
      applyInput(w, slot, seq, -4, -4);
      step(w, odd, corrected);
      npcLowest = Math.min(npcLowest, w.x[n] as number);
    }
    expect([w.x[slot], w.y[slot]]).toEqual([Math.fround(-999.8999633789062), Math.fround(-999.8999633789062)]);
    expect(w.x[slot]).toBeGreaterThanOrEqual(-999.9);
    expect(npcLowest).toBeGreaterThanOrEqual(-999.9);
    expect(npcLowest).toBeLessThan(-999.89);
    for (let seq = 6; seq <= 600; seq++) {
      applyInput(w, slot, seq, 4, 4);
      step(w, odd, corrected);
    }
    expect(w.x[slot]).toBeLessThan(999.9);
  });

  test('property: whatever the inputs, no entity travels further than maxSpeed for each tick it has been in the world, moves more than MAX_MOVES_PER_STEP moves in one, or leaves the bounds', () => {
    const move = fc.oneof(fc.double({ min: -12, max: 12, noNaN: true }), fc.double({ min: -3e38, max: 3e38, noNaN: true }));
    // Per run: up to 8 inputs a tick, or a steady client — one input a tick, and now and then a
    // hiccup: one tick without, the next with two (a client a tick behind from then on, whose
    // buffer a credit empties). Ticks are arrays of inputs.
    const input = fc.tuple(move, move);
    const steady = fc
      .array(
        fc.oneof(
          { weight: 40, arbitrary: input.map((m): [number, number][][] => [[m]]) },
          { weight: 1, arbitrary: fc.tuple(input, input).map(([a, b]): [number, number][][] => [[], [a, b]]) },
        ),
        { minLength: 1, maxLength: 120, size: 'max' },
      )
      .map((chunks) => chunks.flat(1));
    const any = fc.array(fc.array(input, { maxLength: 8 }), { minLength: 1, maxLength: 120, size: 'max' });
    let drained = 0;
    fc.assert(
      fc.property(fc.oneof(any, steady), (ticks) => {
        const { w, slot } = player();
        let seq = 0;
        let travelled = 0;
        for (const [tick, inputs] of ticks.entries()) {
          const bx = w.x[slot] as number;
          const by = w.y[slot] as number;
          for (const [dx, dy] of inputs) applyInput(w, slot, ++seq, dx, dy);
          // Exactly two waiting: before the change a step applied one and kept one (the buffer).
          const two = w.hasMove[slot] === 1 && w.hasNext[slot] === 1 && w.queued.size === 0;
          const nextSeq = w.nextSeq[slot];
          step(w, rules, corrected);
          if (two && w.lastSeq[slot] === nextSeq) drained++;
          const x = w.x[slot] as number;
          const y = w.y[slot] as number;
          const d = Math.hypot(x - bx, y - by);
          travelled += d;
          expect(d).toBeLessThanOrEqual(rules.maxSpeed * MAX_MOVES_PER_STEP + 1e-3);
          expect(travelled).toBeLessThanOrEqual(rules.maxSpeed * (tick + 1) + 1e-3 * (tick + 1));
          expect(x >= -100 && x < 100 && y >= -100 && y < 100).toBe(true);
        }
      }),
      { numRuns: 300 },
    );
    // Clients a tick behind had their buffer emptied by credit, and stayed within the rules.
    expect(drained).toBeGreaterThan(40);
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
