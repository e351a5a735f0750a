import { MAX_GRID_CELLS } from '@aethex/runtime';
import { MODE_DORMANT, type Rect, sharedArray } from '../sim/world.js';

/**
 * Cell size as a fraction of the area-of-interest radius (in @aethex/runtime: the operator checks a
 * world's grid against MAX_GRID_CELLS before it starts shards).
 */
export { GRID_CELL_FACTOR } from '@aethex/runtime';

/**
 * A uniform grid over a rectangle, rebuilt from scratch every tick with a counting sort: O(n) with
 * no allocation, and no incremental bookkeeping to go wrong on joins or teleports. Points outside
 * the rectangle fall into the nearest edge cell, so queries stay correct for them too. The rebuild
 * also copies positions into cell order, so a query reads contiguous memory instead of jumping
 * through slots (thousands of queries per tick: cache misses were most of their cost).
 */
/** A grid's shared arrays and shape, sent to snapshot threads. */
export interface GridShare {
  area: Rect;
  cellSize: number;
  capacity: number;
  cellStart: Int32Array;
  items: Int32Array;
  sx: Float32Array;
  sy: Float32Array;
}

export class Grid {
  readonly cols: number;
  readonly rows: number;
  readonly cellSize: number;
  private readonly originX: number;
  private readonly originY: number;
  private readonly inv: number;
  /** items[cellStart[c] .. cellStart[c+1]) are the slots in cell c. */
  private readonly cellStart: Int32Array;
  private readonly items: Int32Array;
  /** Positions of items[k], in the same (cell) order. */
  private readonly sx: Float32Array;
  private readonly sy: Float32Array;
  private readonly cellOf: Int32Array;
  private count = 0;

  /**
   * `shared`: the arrays of a grid in another thread (from `share()`), for a read-only copy whose
   * size is set with `attachCount` after each rebuild there.
   */
  constructor(
    readonly area: Rect,
    cellSize: number,
    readonly capacity: number,
    maxCells = MAX_GRID_CELLS,
    shared?: GridShare,
  ) {
    if (!(cellSize > 0)) throw new RangeError(`cellSize must be positive, got ${cellSize}`);
    this.cellSize = cellSize;
    this.inv = 1 / cellSize;
    this.originX = area.minX;
    this.originY = area.minY;
    this.cols = Math.max(1, Math.ceil((area.maxX - area.minX) / cellSize));
    this.rows = Math.max(1, Math.ceil((area.maxY - area.minY) / cellSize));
    if (this.cols * this.rows > maxCells) {
      throw new RangeError(`a ${this.cols}×${this.rows} grid exceeds ${maxCells} cells; raise the cell size (the AOI radius)`);
    }
    this.cellStart = shared?.cellStart ?? sharedArray(Int32Array, this.cols * this.rows + 1);
    this.items = shared?.items ?? sharedArray(Int32Array, capacity);
    this.sx = shared?.sx ?? sharedArray(Float32Array, capacity);
    this.sy = shared?.sy ?? sharedArray(Float32Array, capacity);
    this.cellOf = new Int32Array(shared ? 0 : capacity);
  }

  /** What another thread needs to query this grid (see the constructor). */
  share(): GridShare {
    return {
      area: this.area,
      cellSize: this.cellSize,
      capacity: this.capacity,
      cellStart: this.cellStart,
      items: this.items,
      sx: this.sx,
      sy: this.sy,
    };
  }

  /** In a copy made from `share()`: the entity count of the owner's last rebuild. */
  attachCount(count: number): void {
    this.count = count;
  }

  // `!(c > 0)` puts NaN in the first cell: a NaN index would count the entity in no cell and
  // write another out of bounds (positions are checked where they come in; this keeps the grid
  // whole whatever gets past).
  private cellX(px: number): number {
    const c = Math.floor((px - this.originX) * this.inv);
    return !(c > 0) ? 0 : c >= this.cols ? this.cols - 1 : c;
  }

  private cellY(py: number): number {
    const c = Math.floor((py - this.originY) * this.inv);
    return !(c > 0) ? 0 : c >= this.rows ? this.rows - 1 : c;
  }

  /** Re-indexes slots [0, count) from their positions. */
  rebuild(x: Float32Array, y: Float32Array, count: number): void {
    if (count > this.items.length) throw new RangeError(`grid capacity ${this.items.length} is below ${count} entities`);
    const start = this.cellStart;
    start.fill(0);
    const cols = this.cols;
    for (let i = 0; i < count; i++) {
      const c = this.cellY(y[i] as number) * cols + this.cellX(x[i] as number);
      this.cellOf[i] = c;
      start[c + 1] = (start[c + 1] as number) + 1;
    }
    for (let c = 1; c < start.length; c++) start[c] = (start[c] as number) + (start[c - 1] as number);
    // Fill each cell from its end so that cellStart[c] ends where it started.
    for (let i = count - 1; i >= 0; i--) {
      const c = (this.cellOf[i] as number) + 1;
      const at = (start[c] as number) - 1;
      start[c] = at;
      this.items[at] = i;
      this.sx[at] = x[i] as number;
      this.sy[at] = y[i] as number;
    }
    // start[c+1] now holds the begin of cell c; shift back into cellStart form.
    for (let c = 0; c < start.length - 1; c++) start[c] = start[c + 1] as number;
    start[start.length - 1] = count;
    this.count = count;
  }

  /**
   * Writes into `out`, from index `from`, the slots whose position (at the last rebuild) is within
   * `radius` of (px, py), in cell order, and returns the index after the last one written; stops
   * when `out` is full. `exclude` (a slot, or -1) is left out, and so are dormant entities when
   * `mode` (the world's `mode` array) is given: they take no place in `out`.
   */
  queryRadius(px: number, py: number, radius: number, out: Int32Array, exclude = -1, mode?: Uint8Array, from = 0): number {
    const r2 = radius * radius;
    const cx0 = this.cellX(px - radius);
    const cx1 = this.cellX(px + radius);
    const cy0 = this.cellY(py - radius);
    const cy1 = this.cellY(py + radius);
    const cols = this.cols;
    const start = this.cellStart;
    const { items, sx, sy } = this;
    let n = from;
    const cap = out.length;
    for (let cy = cy0; cy <= cy1; cy++) {
      const row = cy * cols;
      // Consecutive cells of one row are contiguous in items.
      const first = start[row + cx0] as number;
      const to = start[row + cx1 + 1] as number;
      for (let k = first; k < to; k++) {
        const dx = (sx[k] as number) - px;
        const dy = (sy[k] as number) - py;
        if (dx * dx + dy * dy <= r2) {
          const i = items[k] as number;
          if (i === exclude || (mode !== undefined && mode[i] === MODE_DORMANT)) continue;
          if (n === cap) return n;
          out[n++] = i;
        }
      }
    }
    return n;
  }

  /** The slots indexed by the last rebuild, in cell order (a view: valid until the next rebuild). */
  order(): Int32Array {
    return this.items.subarray(0, this.count);
  }

  /** Entities indexed by the last rebuild. */
  get size(): number {
    return this.count;
  }
}
