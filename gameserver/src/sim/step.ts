import { insideMax, insideMin } from '@aethex/proto';
import { IDLE_CREDIT, JITTER_BUFFER_STEPS, KIND_PLAYER, MAX_MOVES_PER_STEP, MAX_QUEUED_MOVES, type Rect, type World } from './world.js';

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
  /**
   * Where entities moved by input (players) may go, inside `bounds`: a sharded shard's region and
   * its neighbours' (`reachOf`), so that a player kept here while a neighbour is down never walks
   * on into a region no neighbour of this shard owns, which no handoff could reach. Default: `bounds`.
   */
  reach?: Rect;
}

/** The bounding box of a shard's region and its neighbours' (`MovementRules.reach`), inside `bounds`. */
export function reachOf(bounds: Rect, regions: readonly Rect[]): Rect {
  return {
    minX: Math.max(bounds.minX, Math.min(...regions.map((r) => r.minX))),
    minY: Math.max(bounds.minY, Math.min(...regions.map((r) => r.minY))),
    maxX: Math.min(bounds.maxX, Math.max(...regions.map((r) => r.maxX))),
    maxY: Math.min(bounds.maxY, Math.max(...regions.map((r) => r.maxY))),
  };
}

/** What became of one input. */
export type InputResult = 'applied' | 'stale' | 'invalid';

/**
 * Records a movement intent. Inputs whose `seq` is not above the entity's newest one (applied or
 * waiting) are `stale` and ignored (replays, reordering). A client sends one input per tick, but
 * the network delivers them unevenly — two between two steps and none before the next, or a batch
 * after a stall — and a client that rejoins or whose handoff rolled back re-sends what it made
 * meanwhile. So inputs wait in order, each applied whole by a step of its own (see `step` for how
 * a step catches up); sending faster never moves an entity faster. An input counts as applied —
 * `lastSeq`, which snapshots acknowledge — when the step that moves by it has run. With
 * `maxQueued` waiting (`MAX_QUEUED_MOVES`; more while the inputs an offer held wait, see
 * `ShardEngine.rollback`), a further input moves nothing and is answered with the newest one.
 * Non-finite moves are `invalid` and move nothing, but are answered with the input before them (at
 * once when none waits).
 */
export function applyInput(
  world: World,
  slot: number,
  seq: number,
  moveX: number,
  moveY: number,
  maxQueued = MAX_QUEUED_MOVES,
): InputResult {
  const queue = world.hasNext[slot] === 1 ? world.queued.get(world.id[slot] as number) : undefined;
  const newest =
    queue !== undefined
      ? (queue[queue.length - 3] as number)
      : world.hasNext[slot] === 1
        ? world.nextSeq[slot]
        : world.hasMove[slot] === 1
          ? world.moveSeq[slot]
          : world.lastSeq[slot];
  if (seq <= (newest as number)) return 'stale';
  // As they are stored: a double beyond the float range would be an infinite move.
  const valid = Number.isFinite(Math.fround(moveX)) && Number.isFinite(Math.fround(moveY));
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
  const full = queue !== undefined && queue.length >= (maxQueued - 2) * 3;
  if (!valid || full) {
    // Answered with the newest waiting move: the sequence advances, nothing more moves.
    if (queue !== undefined) queue[queue.length - 3] = seq;
    else if (world.hasNext[slot] === 1) world.nextSeq[slot] = seq;
    else world.moveSeq[slot] = seq;
    return valid ? 'applied' : 'invalid';
  }
  if (world.hasNext[slot] === 0) {
    world.nextX[slot] = moveX;
    world.nextY[slot] = moveY;
    world.nextSeq[slot] = seq;
    world.hasNext[slot] = 1;
  } else if (queue === undefined) {
    world.queued.set(world.id[slot] as number, [seq, moveX, moveY]);
  } else {
    queue.push(seq, moveX, moveY);
  }
  return 'applied';
}

/**
 * Advances every entity by one tick. An entity with a move waiting goes by it, clamped to
 * `maxSpeed` and to `reach` (`bounds` unless sharded); its `lastSeq` becomes that move's input and the next one waits for
 * the next step (a one-move jitter buffer: two inputs in one tick move the entity over two steps,
 * as they were made). With more than that waiting — a batch after a stall, inputs re-sent after a
 * rejoin or a rolled-back handoff — the step goes by further moves while the entity has credit
 * (`World.credit`: steps it stood, or was kept frozen, with nothing to apply), each clamped on its
 * own, up to `MAX_MOVES_PER_STEP` moves a step, until one waits; and when one has been left
 * waiting after each of `JITTER_BUFFER_STEPS` steps in a row (a client sending one input a tick
 * whose inputs, after one came late, arrive a tick behind for good), by that one too, so the
 * buffer does not hold a tick of input lag for as long as the player walks (credit granted beyond
 * `IDLE_CREDIT` lapses when the burst does not begin within `CREDIT_LAPSE_TICKS`). So a burst is caught up on within
 * a few steps instead of lagging behind for good, and no entity moves further than `maxSpeed` for
 * each tick that passed plus its credit. Its velocity becomes the displacement actually applied. Players without
 * a move stand still (and earn credit); other entities keep moving by their velocity and bounce off
 * the region. Returns the number of entities whose move was clamped, with their ids in
 * `corrected[0..n)` so the gateway can send corrections. Pure apart from writing into `world` and
 * `corrected`; allocates nothing (apart from consuming a burst's queue).
 */
export function step(world: World, rules: MovementRules, corrected: Uint32Array): number {
  const reach = rules.reach ?? rules.bounds;
  const { maxX, maxY } = reach;
  // Positions are float32: min is inclusive, max exclusive, both as the stored value sees them.
  const minX = insideMin(reach.minX);
  const minY = insideMin(reach.minY);
  const hiX = insideMax(maxX);
  const hiY = insideMax(maxY);
  const maxSpeed = rules.maxSpeed;
  // A client clamps its moves to maxSpeed in doubles, and they travel as floats: a move that
  // rounding put a hair over the limit is not a speed hack.
  const maxSpeed2 = maxSpeed * maxSpeed * (1 + 1e-6);
  const r = rules.region ?? rules.bounds;
  const rLoX = insideMin(r.minX);
  const rLoY = insideMin(r.minY);
  const rHiX = insideMax(r.maxX);
  const rHiY = insideMax(r.maxY);
  const { x, y, vx, vy, kind, moveX, moveY, moveSeq, hasMove, nextX, nextY, nextSeq, hasNext, lastSeq, mode, credit, buffered } = world;
  let nCorrected = 0;
  for (let i = 0; i < world.count; i++) {
    // Ghosts, entities on offer and dormant ones are not simulated here.
    if (mode[i] !== 0) continue;
    if (hasMove[i] === 1) {
      const ox = x[i] as number;
      const oy = y[i] as number;
      let clamped = false;
      let moves = 0;
      for (;;) {
        let dx = moveX[i] as number;
        let dy = moveY[i] as number;
        const len2 = dx * dx + dy * dy;
        if (len2 > maxSpeed2) {
          const k = maxSpeed / Math.sqrt(len2);
          dx *= k;
          dy *= k;
          clamped = true;
        }
        const px = x[i] as number;
        const py = y[i] as number;
        let nx = px + dx;
        let ny = py + dy;
        if (nx < minX || nx > hiX || ny < minY || ny > hiY) {
          // Only a move outward is held: one already outside the reach (restored there, adopted
          // at its edge) walks back in freely rather than being pulled in at once.
          const cx = Math.min(Math.max(nx, Math.min(minX, px)), Math.max(hiX, px));
          const cy = Math.min(Math.max(ny, Math.min(minY, py)), Math.max(hiY, py));
          if (cx !== nx || cy !== ny) clamped = true;
          nx = cx;
          ny = cy;
        }
        x[i] = nx;
        y[i] = ny;
        lastSeq[i] = moveSeq[i] as number;
        moves++;
        if (hasNext[i] === 1) {
          moveX[i] = nextX[i] as number;
          moveY[i] = nextY[i] as number;
          moveSeq[i] = nextSeq[i] as number;
          hasNext[i] = 0;
          if (world.queued.size > 0) takeQueued(world, i);
        } else {
          moveX[i] = 0;
          moveY[i] = 0;
          hasMove[i] = 0;
          // Caught up: credit granted for frozen ticks is for the inputs re-sent after them, not
          // to be saved for a sprint later.
          if ((credit[i] as number) > IDLE_CREDIT) credit[i] = IDLE_CREDIT;
          if (world.creditLapse.size > 0) world.creditLapse.delete(world.id[i] as number);
          break;
        }
        // Catch up while more than one move still waits. One may: it is the jitter buffer — unless
        // it has stayed full for JITTER_BUFFER_STEPS steps in a row (the client's inputs arrive
        // steadily a tick behind), when a credit takes that tick back.
        if (moves >= MAX_MOVES_PER_STEP || credit[i] === 0) break;
        if (hasNext[i] === 0 && (buffered[i] as number) < JITTER_BUFFER_STEPS) break;
        credit[i] = (credit[i] as number) - 1;
      }
      const b = buffered[i] as number;
      buffered[i] = hasMove[i] === 0 ? 0 : b < 255 ? b + 1 : b;
      vx[i] = (x[i] as number) - ox;
      vy[i] = (y[i] as number) - oy;
      if (clamped && nCorrected < corrected.length) corrected[nCorrected++] = world.id[i] as number;
    } else {
      // A player moves only by its inputs: with none waiting it stands this step (its client
      // predicted no move; a late input then moves it by what it asks, a step later).
      if (kind[i] === KIND_PLAYER) {
        const c = credit[i] as number;
        if (c < IDLE_CREDIT) credit[i] = c + 1;
        // Granted credit whose burst never came is not kept standing either.
        else if (c > IDLE_CREDIT && world.creditLapsed(i)) credit[i] = IDLE_CREDIT;
        vx[i] = 0;
        vy[i] = 0;
        continue;
      }
      const dvx = vx[i] as number;
      const dvy = vy[i] as number;
      if (dvx === 0 && dvy === 0) continue;
      let nx = (x[i] as number) + dvx;
      let ny = (y[i] as number) + dvy;
      // Bounce off the region only when moving outward: an entity already outside it drifts back
      // in instead of sticking to the border.
      if ((nx < rLoX && dvx < 0) || (nx > rHiX && dvx > 0)) {
        vx[i] = -dvx;
        nx = Math.min(Math.max(nx, Math.min(rLoX, x[i] as number)), Math.max(rHiX, x[i] as number));
      }
      if ((ny < rLoY && dvy < 0) || (ny > rHiY && dvy > 0)) {
        vy[i] = -dvy;
        ny = Math.min(Math.max(ny, Math.min(rLoY, y[i] as number)), Math.max(rHiY, y[i] as number));
      }
      x[i] = nx;
      y[i] = ny;
    }
  }
  return nCorrected;
}

/** Moves the first of the moves queued after `next` into `next` (a burst being consumed). */
function takeQueued(world: World, i: number): void {
  const id = world.id[i] as number;
  const queue = world.queued.get(id);
  if (queue === undefined) return;
  world.nextSeq[i] = queue[0] as number;
  world.nextX[i] = queue[1] as number;
  world.nextY[i] = queue[2] as number;
  world.hasNext[i] = 1;
  if (queue.length === 3) world.queued.delete(id);
  else queue.splice(0, 3);
}

/** A deterministic 32-bit PRNG: each call returns the next float in [0, 1). */
export interface Rng {
  (): number;
  /** Starts the sequence again from `seed`. */
  reseed(seed: number): void;
}

/** A mulberry32 generator (`Rng`). */
export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (() => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }) as Rng;
  next.reseed = (s) => {
    a = s >>> 0;
  };
  return next;
}

/**
 * The seed of tick `tick` in a run seeded `seed`. A shard draws each tick's random numbers from a
 * sequence of that tick's own, so a shard restored at a tick goes on exactly as the one that saved
 * it would have (the generator's position is nothing to persist). Mixed (murmur3's finalizer):
 * mulberry32 seeded with neighbouring values gives the same sequence shifted by one.
 */
export function tickSeed(seed: number, tick: number): number {
  let h = (seed ^ Math.imul(tick >>> 0, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
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
