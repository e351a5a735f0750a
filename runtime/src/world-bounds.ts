import type { Rect } from './settings.js';

/**
 * Where a world's bounds may lie, as the shard requires of them at start: the one rule for the
 * shard's configuration (`engine.world_bounds`, exit 2 when broken) and for the operator, which
 * refuses a GameWorld that would break it before it starts any shard.
 */

/** The shard's default `engine.position_scale`: the snapshot position quantum, in world units. */
export const DEFAULT_POSITION_SCALE = 0.125;

/**
 * Cell size of the shard's spatial grid as a fraction of the area-of-interest radius. Half the
 * radius makes a query scan about 6.25 r² of candidates instead of 9 r², over more (contiguous)
 * cells per row: measured faster.
 */
export const GRID_CELL_FACTOR = 0.5;

/** Cells the shard's spatial grid, which covers the whole world, has at most. */
export const MAX_GRID_CELLS = 1 << 20;

/**
 * The shard's ranges of the settings the rule reads (`engine.max_speed`, `engine.aoi_radius`,
 * `engine.position_scale`): its configuration, the CRD and the operator's hints state the same.
 */
export const WORLD_SETTING_RANGES = {
  maxSpeed: { min: 0.001, max: 10_000 },
  aoiRadius: { min: 1, max: 100_000 },
  positionScale: { min: 0.0001, max: 100 },
} as const;

/** Snapshots carry positions as int32 quanta: the farthest bound must be fewer quanta than this from 0. */
export const MAX_POSITION_QUANTA = 2 ** 31 - 1;

/** The settings a world's bounds are checked against (world units; `maxSpeed` per tick). */
export interface WorldLimits {
  bounds: Rect;
  maxSpeed: number;
  positionScale: number;
  aoiRadius: number;
}

/** Which rule `worldBoundsProblem` found broken, with the numbers for each caller's own message. */
export type WorldBoundsProblem =
  | {
      /** `farthest / positionScale` is not below `MAX_POSITION_QUANTA`. */
      rule: 'quanta';
      /** The farthest bound from 0 (absolute value). */
      farthest: number;
      positionScale: number;
      /** The smallest position scale (in steps of 1e-6) that fits the bounds. */
      minPositionScale: number;
      /** Bounds must lie strictly inside ±limit at this position scale (rounded down to 1e-6). */
      limit: number;
    }
  | {
      /** float32 positions at the farthest bound are more than `maxSpeed / 100` apart. */
      rule: 'float32';
      farthest: number;
      /** Distance between neighbouring float32 values at `farthest`. */
      spacing: number;
      maxSpeed: number;
      /** Bounds must lie strictly inside ±inside at this max speed. */
      inside: number;
      /** The smallest max speed these bounds allow (100 × spacing). */
      minMaxSpeed: number;
    }
  | {
      /** The grid (cells of aoiRadius × GRID_CELL_FACTOR) over the bounds has more than MAX_GRID_CELLS cells. */
      rule: 'grid';
      cells: number;
      width: number;
      height: number;
      /** The least area-of-interest radius at which the grid fits, rounded up to 0.001. */
      minAoiRadius: number;
    };

/**
 * The first rule the world's bounds break, or undefined when the shard accepts them. In order:
 *
 * 1. `quanta`: snapshots carry positions as int32 quanta of `positionScale`, so the farthest
 *    bound must be fewer than 2^31 − 1 quanta from 0 (past it, positions wrap).
 * 2. `float32`: positions are float32 and each move is rounded to the float32 spacing where the
 *    entity is; at the farthest bound that spacing must be at most `maxSpeed / 100`, so a
 *    full-speed step is off by at most 0.5% (one at a tenth of the speed by 5%).
 * 3. `grid`: the spatial grid over the bounds, cells of `aoiRadius × GRID_CELL_FACTOR`, has at
 *    most `MAX_GRID_CELLS` cells.
 *
 * Pure; expects finite numbers and min < max (what the settings and the CRD already ensure).
 */
export function worldBoundsProblem(w: WorldLimits): WorldBoundsProblem | undefined {
  const b = w.bounds;
  const farthest = Math.max(Math.abs(b.minX), Math.abs(b.maxX), Math.abs(b.minY), Math.abs(b.maxY));
  if (farthest / w.positionScale >= MAX_POSITION_QUANTA) {
    let minPositionScale = Math.ceil((farthest / MAX_POSITION_QUANTA) * 1e6) / 1e6;
    if (farthest / minPositionScale >= MAX_POSITION_QUANTA) minPositionScale += 1e-6;
    const limit = Math.floor(MAX_POSITION_QUANTA * w.positionScale * 1e6) / 1e6;
    return { rule: 'quanta', farthest, positionScale: w.positionScale, minPositionScale, limit };
  }
  // The spacing of float32 values in [2^k, 2^(k+1)) is 2^(k−23); the bound is taken as stored.
  const spacing = 2 ** (Math.floor(Math.log2(Math.fround(farthest))) - 23);
  if (spacing > w.maxSpeed / 100) {
    const inside = 2 ** (Math.floor(Math.log2(w.maxSpeed / 100)) + 24);
    return { rule: 'float32', farthest, spacing, maxSpeed: w.maxSpeed, inside, minMaxSpeed: spacing * 100 };
  }
  const width = b.maxX - b.minX;
  const height = b.maxY - b.minY;
  const cells = gridCells(width, height, w.aoiRadius * GRID_CELL_FACTOR);
  if (cells > MAX_GRID_CELLS) {
    let minAoiRadius = Math.ceil((leastCell(width, height) / GRID_CELL_FACTOR) * 1000) / 1000;
    while (gridCells(width, height, minAoiRadius * GRID_CELL_FACTOR) > MAX_GRID_CELLS)
      minAoiRadius = (Math.round(minAoiRadius * 1000) + 1) / 1000;
    return { rule: 'grid', cells, width, height, minAoiRadius };
  }
  return undefined;
}

function gridCells(width: number, height: number, cell: number): number {
  return Math.ceil(width / cell) * Math.ceil(height / cell);
}

/**
 * The least cell size whose grid fits MAX_GRID_CELLS. The count drops only where a side divides
 * into whole cells, so it is `width / k` or `height / k` for some k: the largest k that fits is
 * found for each side (fewer cells as k falls, so by bisection).
 */
function leastCell(width: number, height: number): number {
  const fits = (c: number) => gridCells(width, height, c) <= MAX_GRID_CELLS;
  // side / k may round so that side / (side / k) is just above k: then one ulp more is the cell.
  const cell = (side: number, k: number) =>
    fits(side / k) ? side / k : fits((side / k) * (1 + 2 ** -52)) ? (side / k) * (1 + 2 ** -52) : 0;
  const least = (side: number) => {
    if (!cell(side, 1)) return Number.POSITIVE_INFINITY;
    let lo = 1;
    let hi = MAX_GRID_CELLS + 1;
    while (hi - lo > 1) {
      const k = Math.floor((lo + hi) / 2);
      if (cell(side, k)) lo = k;
      else hi = k;
    }
    return cell(side, lo);
  };
  return Math.min(least(width), least(height));
}
