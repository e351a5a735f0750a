import { KIND_PLAYER, type Rect, type World } from './world.js';

/** The movement rules of a shard: the region an owned entity must stay in and its top speed. */
export interface MovementRules {
  /** Where entities may be, in world units (the world's bounds). */
  bounds: Rect;
  /** Largest distance an entity may cover in one tick, in world units. */
  maxSpeed: number;
  /**
   * Where entities without input (NPCs drifting) stay: the shard's own region, so that only
   * players, who can be handed over, ever cross a border. Default: `bounds`.
   */
  region?: Rect;
}

/** What became of one input. */
export type InputResult = 'applied' | 'stale' | 'invalid';

/**
 * Records a movement intent. Inputs whose `seq` is not above the entity's newest one (applied or
 * waiting) are `stale` and ignored (replays, reordering). A client sends one input per tick, but
 * the network delivers them unevenly: two may arrive between two steps and none before the next.
 * So the first waits for the next step and the second for the step after (a one-input jitter
 * buffer); a third or later one in the same tick adds to the second, and the step clamps the sum:
 * sending faster never moves an entity faster. An input counts as applied — `lastSeq`, which
 * snapshots acknowledge — when the step that moves by it has run. Non-finite moves are `invalid`
 * and move nothing, but are answered with the input before them (at once when none waits).
 */
export function applyInput(world: World, slot: number, seq: number, moveX: number, moveY: number): InputResult {
  const newest = world.hasNext[slot] === 1 ? world.nextSeq[slot] : world.hasMove[slot] === 1 ? world.moveSeq[slot] : world.lastSeq[slot];
  if (seq <= (newest as number)) return 'stale';
  const valid = Number.isFinite(moveX) && Number.isFinite(moveY);
  if (world.hasMove[slot] === 0) {
    if (!valid) {
      world.lastSeq[slot] = seq;
      return 'invalid';
    }
    world.moveX[slot] = moveX;
    world.moveY[slot] = moveY;
    world.moveSeq[slot] = seq;
    world.hasMove[slot] = 1;
    return 'applied';
  }
  if (!valid) {
    if (world.hasNext[slot] === 1) world.nextSeq[slot] = seq;
    else world.moveSeq[slot] = seq;
    return 'invalid';
  }
  if (world.hasNext[slot] === 0) {
    world.nextX[slot] = moveX;
    world.nextY[slot] = moveY;
    world.hasNext[slot] = 1;
  } else {
    world.nextX[slot] = (world.nextX[slot] as number) + moveX;
    world.nextY[slot] = (world.nextY[slot] as number) + moveY;
  }
  world.nextSeq[slot] = seq;
  return 'applied';
}

/**
 * Advances every entity by one tick. Entities with a waiting move go by that move, clamped to
 * `maxSpeed` and to `bounds`; their velocity becomes the displacement actually applied, their
 * `lastSeq` that move's input, and the move after it (if any) waits for the next step. Players
 * without one stand still; other entities keep moving by their velocity and bounce off the
 * region. Returns the number of entities whose move was clamped, with their ids in
 * `corrected[0..n)` so the gateway can send corrections. Pure apart from writing into `world` and
 * `corrected`; allocates nothing.
 */
export function step(world: World, rules: MovementRules, corrected: Uint32Array): number {
  const { minX, minY, maxX, maxY } = rules.bounds;
  // Max is exclusive: keep positions strictly inside.
  const hiX = Math.fround(maxX - 1e-3);
  const hiY = Math.fround(maxY - 1e-3);
  const maxSpeed = rules.maxSpeed;
  const r = rules.region ?? rules.bounds;
  const rHiX = Math.fround(r.maxX - 1e-3);
  const rHiY = Math.fround(r.maxY - 1e-3);
  const { x, y, vx, vy, kind, moveX, moveY, moveSeq, hasMove, nextX, nextY, nextSeq, hasNext, lastSeq, mode } = world;
  let nCorrected = 0;
  for (let i = 0; i < world.count; i++) {
    // Ghosts, entities on offer and dormant ones are not simulated here.
    if (mode[i] !== 0) continue;
    if (hasMove[i] === 1) {
      let dx = moveX[i] as number;
      let dy = moveY[i] as number;
      let clamped = false;
      const len2 = dx * dx + dy * dy;
      if (len2 > maxSpeed * maxSpeed) {
        const k = maxSpeed / Math.sqrt(len2);
        dx *= k;
        dy *= k;
        clamped = true;
      }
      const ox = x[i] as number;
      const oy = y[i] as number;
      let nx = ox + dx;
      let ny = oy + dy;
      if (nx < minX || nx > hiX || ny < minY || ny > hiY) {
        nx = Math.min(Math.max(nx, minX), hiX);
        ny = Math.min(Math.max(ny, minY), hiY);
        clamped = true;
      }
      x[i] = nx;
      y[i] = ny;
      vx[i] = (x[i] as number) - ox;
      vy[i] = (y[i] as number) - oy;
      lastSeq[i] = moveSeq[i] as number;
      if (hasNext[i] === 1) {
        moveX[i] = nextX[i] as number;
        moveY[i] = nextY[i] as number;
        moveSeq[i] = nextSeq[i] as number;
        hasNext[i] = 0;
      } else {
        moveX[i] = 0;
        moveY[i] = 0;
        hasMove[i] = 0;
      }
      if (clamped && nCorrected < corrected.length) corrected[nCorrected++] = world.id[i] as number;
    } else {
      const dvx = vx[i] as number;
      const dvy = vy[i] as number;
      if (dvx === 0 && dvy === 0) continue;
      // A player moves only by its inputs: with none waiting it stands this step (its client
      // predicted no move; a late input then moves it by what it asks, a step later).
      if (kind[i] === KIND_PLAYER) {
        vx[i] = 0;
        vy[i] = 0;
        continue;
      }
      let nx = (x[i] as number) + dvx;
      let ny = (y[i] as number) + dvy;
      // Bounce off the region only when moving outward: an entity already outside it drifts back
      // in instead of sticking to the border.
      if ((nx < r.minX && dvx < 0) || (nx > rHiX && dvx > 0)) {
        vx[i] = -dvx;
        nx = Math.min(Math.max(nx, Math.min(r.minX, x[i] as number)), Math.max(rHiX, x[i] as number));
      }
      if ((ny < r.minY && dvy < 0) || (ny > rHiY && dvy > 0)) {
        vy[i] = -dvy;
        ny = Math.min(Math.max(ny, Math.min(r.minY, y[i] as number)), Math.max(rHiY, y[i] as number));
      }
      x[i] = nx;
      y[i] = ny;
    }
  }
  return nCorrected;
}

/** A deterministic 32-bit PRNG (mulberry32); returns floats in [0, 1). */
export function createRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Gives NPC-kind entities a new random heading with probability `turnChance` per tick, at `speed`
 * world units per tick. Deterministic for a given rng.
 */
export function wander(world: World, rng: () => number, npcKind: number, speed: number, turnChance: number): void {
  for (let i = 0; i < world.count; i++) {
    if (world.kind[i] !== npcKind || world.mode[i] !== 0) continue;
    if ((world.vx[i] === 0 && world.vy[i] === 0) || rng() < turnChance) {
      const a = rng() * Math.PI * 2;
      world.vx[i] = Math.cos(a) * speed;
      world.vy[i] = Math.sin(a) * speed;
    }
  }
}
