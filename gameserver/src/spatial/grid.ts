import { MAX_GRID_CELLS } from '@aethex/runtime';
import { MODE_DORMANT, type Rect, sharedArray } from '../sim/world.js';

/**
 * Cell size as a fraction of the area-of-interest radius (in @aethex/runtime: the operator checks a
 * world's grid against MAX_GRID_CELLS before it starts shards).
 */
export { GRID_CELL_FACTOR } from '@aethex/runtime';

/** Buckets of squared distance a capped query sorts its entities into (`Grid.nearest`). */
const NEAREST_BUCKETS = 64;

/**
 * A capped query counts the squared distance of an entity in its client's last snapshot
 * (`HeldMarks`: the last one cut for it, delivered or not) times this: 10 % nearer than it is. So
 * at the edge of a crowded view an entity is pushed out only by one clearly nearer, not each tick
 * by whichever of two about as far stepped closer — each swap a full record entering and a
 * removal, and a neighbour blinking in and out on the player's screen.
 */
export const HELD_D2 = 0.81;

/**
 * The entities in a client's last snapshot, for a capped query to prefer (`HELD_D2`): slot `s` was in
 * it when `marks[s * 2] === stamp` (the snapshot encoder's per-slot scratch, `QuantizedWorld.marks`).
 */
export interface HeldMarks {
  marks: Int32Array;
  stamp: number;
}

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
  /** Queries that found more in range than their output held, and kept the nearest (see `nearest`). */
  capped = 0;
  // `nearest`'s scratch: the entities in range, their tie-break keys, squared distances and
  // distance buckets, and how many fall in each bucket.
  private selSlot = new Int32Array(0);
  private selKey = new Uint32Array(0);
  private selD2 = new Float64Array(0);
  private selBucket = new Uint8Array(0);
  private readonly bucketCount = new Int32Array(NEAREST_BUCKETS);

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
   * `radius` of (px, py), in cell order, and returns the index after the last one written.
   * `exclude` (a slot, or -1) is left out, and so are dormant entities when `mode` (the world's
   * `mode` array) is given: they take no place in `out`. When more are in range than `out` has room
   * for, it is filled with the nearest of them (`nearest`), and `capped` counts the query.
   * `ids` (the world's `id` array) breaks ties in distance by entity id, lowest first; without it,
   * by slot. `held`: the entities the client was last sent, which a capped query counts nearer by
   * `HELD_D2` (none are beyond `radius` all the same).
   */
  queryRadius(
    px: number,
    py: number,
    radius: number,
    out: Int32Array,
    exclude = -1,
    mode?: Uint8Array,
    from = 0,
    ids?: Uint32Array,
    held?: HeldMarks,
  ): number {
    const r2 = radius * radius;
    const cx0 = this.cellX(px - radius);
    const cx1 = this.cellX(px + radius);
    const cy0 = this.cellY(py - radius);
    const cy1 = this.cellY(py + radius);
    const cols = this.cols;
    const start = this.cellStart;
    let n = from;
    const cap = out.length;
    // A crowd: more in the cells than there is room for, and by their density more in the circle
    // too. Then straight to `nearest`, rather than fill `out` to find that out and start again.
    let inCells = 0;
    for (let cy = cy0; cy <= cy1; cy++) inCells += (start[cy * cols + cx1 + 1] as number) - (start[cy * cols + cx0] as number);
    if (inCells > cap - n) {
      const cellsArea = (cx1 - cx0 + 1) * (cy1 - cy0 + 1) * this.cellSize * this.cellSize;
      if (inCells * Math.PI * r2 > (cap - n) * cellsArea)
        return this.nearest(px, py, r2, cx0, cx1, cy0, cy1, out, exclude, mode, from, ids, held);
    }
    n = this.fill(px, py, r2, cx0, cx1, cy0, cy1, out, exclude, mode, n);
    // One more than there is room for: start again, keeping the nearest (the rare case).
    return n >= 0 ? n : this.nearest(px, py, r2, cx0, cx1, cy0, cy1, out, exclude, mode, from, ids, held);
  }

  /**
   * `queryRadius`'s common case: writes the slots in range into `out` from `n`, in cell order, and
   * returns the index after the last; -1 as soon as one more is found than `out` holds. (Kept apart
   * from the rare cases, so that this loop keeps nothing else live.)
   */
  private fill(
    px: number,
    py: number,
    r2: number,
    cx0: number,
    cx1: number,
    cy0: number,
    cy1: number,
    out: Int32Array,
    exclude: number,
    mode: Uint8Array | undefined,
    n: number,
  ): number {
    const cols = this.cols;
    const start = this.cellStart;
    const { items, sx, sy } = this;
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
          if (n === cap) return -1;
          out[n++] = i;
        }
      }
    }
    return n;
  }

  /**
   * `queryRadius` with more in range than `out` holds from `from` (or likely to be): gathers them all into scratch
   * arrays (allocated once, at the first such query) with their squared distances, counted in
   * NEAREST_BUCKETS buckets of equal squared distance (a crowd spread evenly fills them evenly).
   * Every bucket below the one where the count reaches the room in `out` is kept whole, in grid
   * order; of that last bucket only, the nearest are selected (`selectNearest`). Distance ties go
   * to the lowest id (or slot): which entities a crowded client sees is then a function of the
   * world and of what it was sent last (`held`, counted nearer by `HELD_D2`), the same on every
   * thread and every run.
   */
  private nearest(
    px: number,
    py: number,
    r2: number,
    cx0: number,
    cx1: number,
    cy0: number,
    cy1: number,
    out: Int32Array,
    exclude: number,
    mode: Uint8Array | undefined,
    from: number,
    ids: Uint32Array | undefined,
    held: HeldMarks | undefined,
  ): number {
    if (this.selSlot.length < this.count) {
      const size = Math.max(this.count, this.selSlot.length * 2, 1024);
      this.selSlot = new Int32Array(size);
      this.selKey = new Uint32Array(size);
      this.selD2 = new Float64Array(size);
      this.selBucket = new Uint8Array(size);
    }
    const { selSlot, selKey, selD2, selBucket, bucketCount, items, sx, sy } = this;
    const cols = this.cols;
    const start = this.cellStart;
    // floor(d2 * toBucket) never decreases as d2 grows: a lower bucket is strictly nearer.
    const last = NEAREST_BUCKETS - 1;
    const toBucket = r2 > 0 ? NEAREST_BUCKETS / r2 : 0;
    const heldMarks = held?.marks;
    const heldStamp = held?.stamp ?? 0;
    bucketCount.fill(0);
    let m = 0;
    for (let cy = cy0; cy <= cy1; cy++) {
      const row = cy * cols;
      const to = start[row + cx1 + 1] as number;
      for (let k = start[row + cx0] as number; k < to; k++) {
        const dx = (sx[k] as number) - px;
        const dy = (sy[k] as number) - py;
        let d2 = dx * dx + dy * dy;
        if (d2 <= r2) {
          const i = items[k] as number;
          if (i === exclude || (mode !== undefined && mode[i] === MODE_DORMANT)) continue;
          if (heldMarks !== undefined && heldMarks[i * 2] === heldStamp) d2 *= HELD_D2;
          const b = Math.min(last, Math.floor(d2 * toBucket));
          selSlot[m] = i;
          selD2[m] = d2;
          selBucket[m] = b;
          bucketCount[b] = (bucketCount[b] as number) + 1;
          m++;
        }
      }
    }
    const keep = out.length - from;
    if (m <= keep) {
      // Not a crowd after all (`queryRadius` guessed from the cells): all of them, in grid order.
      for (let j = 0; j < m; j++) out[from + j] = selSlot[j] as number;
      return from + m;
    }
    this.capped++;
    // The bucket where the room runs out, and how many of it fit.
    let edge = 0;
    let room = keep;
    while (room > (bucketCount[edge] as number)) room -= bucketCount[edge++] as number;
    // Buckets below the edge go to `out` whole; the edge bucket is moved to the scratch's front.
    let n = from;
    let t = 0;
    for (let j = 0; j < m; j++) {
      const b = selBucket[j] as number;
      if (b < edge) {
        out[n++] = selSlot[j] as number;
      } else if (b === edge) {
        // Only the edge bucket's entities need their tie-break key (an id: a read from another array).
        const i = selSlot[j] as number;
        selSlot[t] = i;
        selKey[t] = ids === undefined ? i : (ids[i] as number);
        selD2[t] = selD2[j] as number;
        t++;
      }
    }
    selectNearest(selSlot, selKey, selD2, t, room);
    for (let j = 0; j < room; j++) out[n++] = selSlot[j] as number;
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

/**
 * Reorders the first `n` entries of the parallel arrays so that the `k` nearest (smallest `d2`,
 * then smallest `key`: a total order, the keys being distinct) are the first `k`, in no particular
 * order. Quickselect with a median-of-three pivot; should a range shrink too slowly (a pathological
 * order of input), the rest is selected with a heap instead, so the worst case stays O(n log n).
 */
export function selectNearest(
  slot: Int32Array,
  key: Uint32Array,
  d2: Float64Array,
  n: number,
  k: number,
  // Each round should about halve the range; twice the rounds of that, and the heap takes over.
  rounds = 2 * Math.ceil(Math.log2(n)) + 8,
): void {
  if (k <= 0 || k >= n) return;
  let lo = 0;
  let hi = n - 1;
  let budget = rounds;
  while (hi > lo) {
    if (budget-- === 0) {
      heapSelect(slot, key, d2, lo, hi, k);
      return;
    }
    // Median of three into `lo` as the pivot.
    const mid = (lo + hi) >>> 1;
    if (before(key, d2, mid, lo)) swap(slot, key, d2, mid, lo);
    if (before(key, d2, hi, lo)) swap(slot, key, d2, hi, lo);
    if (before(key, d2, hi, mid)) swap(slot, key, d2, hi, mid);
    // lo ≤ mid ≤ hi now: the median (mid) becomes the pivot, at lo.
    swap(slot, key, d2, mid, lo);
    const pd = d2[lo] as number;
    const pk = key[lo] as number;
    // Lomuto partition: [lo+1, store) before the pivot, the rest after it.
    let store = lo + 1;
    for (let j = lo + 1; j <= hi; j++) {
      const dj = d2[j] as number;
      if (dj < pd || (dj === pd && (key[j] as number) < pk)) {
        if (j !== store) swap(slot, key, d2, j, store);
        store++;
      }
    }
    const p = store - 1;
    swap(slot, key, d2, lo, p);
    // [0, p) are before the pivot, p is the (p+1)-th nearest.
    if (p === k || p === k - 1) return;
    if (p < k) lo = p + 1;
    else hi = p - 1;
  }
}

function before(key: Uint32Array, d2: Float64Array, a: number, b: number): boolean {
  const da = d2[a] as number;
  const db = d2[b] as number;
  return da < db || (da === db && (key[a] as number) < (key[b] as number));
}

function swap(slot: Int32Array, key: Uint32Array, d2: Float64Array, a: number, b: number): void {
  const s = slot[a] as number;
  slot[a] = slot[b] as number;
  slot[b] = s;
  const t = key[a] as number;
  key[a] = key[b] as number;
  key[b] = t;
  const d = d2[a] as number;
  d2[a] = d2[b] as number;
  d2[b] = d;
}

/**
 * Within [lo, hi] (which holds the boundary: [0, lo) are all among the k nearest, (hi, n) all
 * beyond them), moves the k - lo nearest of the range to its front: a max-heap of that many over
 * the range's start, each later entry nearer than the heap's farthest replacing it.
 */
function heapSelect(slot: Int32Array, key: Uint32Array, d2: Float64Array, lo: number, hi: number, k: number): void {
  const size = k - lo;
  for (let i = (size >>> 1) - 1; i >= 0; i--) siftDown(slot, key, d2, lo, size, i);
  for (let j = lo + size; j <= hi; j++) {
    if (before(key, d2, j, lo)) {
      swap(slot, key, d2, j, lo);
      siftDown(slot, key, d2, lo, size, 0);
    }
  }
}

/** Restores the max-heap (the farthest at its root) at `base`, of `size` entries, from entry `i` down. */
function siftDown(slot: Int32Array, key: Uint32Array, d2: Float64Array, base: number, size: number, i: number): void {
  for (;;) {
    const l = 2 * i + 1;
    if (l >= size) return;
    let c = l;
    if (l + 1 < size && before(key, d2, base + l, base + l + 1)) c = l + 1;
    if (!before(key, d2, base + i, base + c)) return;
    swap(slot, key, d2, base + i, base + c);
    i = c;
  }
}
