import type { World } from '../sim/world.js';
import type { Grid } from './grid.js';

/** Slots must stay below this (the world's capacity is at most 2^20). */
const SLOT_SPACE = 1 << 20;

/**
 * One subscriber's area of interest: the ids of the entities it sees, kept sorted so that the
 * change from one tick to the next is a linear merge. Buffers are allocated once, at most
 * `maxVisible` entities are tracked (the first found, in grid order, when more are in range).
 */
export class Interest {
  /** Sorted ids visible after the last update: ids[0..count), and their world slots in slots[0..count). */
  ids: Uint32Array;
  readonly slots: Int32Array;
  count = 0;
  private next: Uint32Array;
  private readonly found: Int32Array;
  private readonly keys: Float64Array;
  /** Ids that entered / left in the last update: entered[0..enteredCount), left[0..leftCount). */
  readonly entered: Uint32Array;
  enteredCount = 0;
  readonly left: Uint32Array;
  leftCount = 0;

  constructor(readonly maxVisible: number) {
    this.ids = new Uint32Array(maxVisible);
    this.next = new Uint32Array(maxVisible);
    this.slots = new Int32Array(maxVisible);
    this.found = new Int32Array(maxVisible);
    this.keys = new Float64Array(maxVisible);
    this.entered = new Uint32Array(maxVisible);
    this.left = new Uint32Array(maxVisible);
  }

  /**
   * Recomputes the visible set around (px, py) — leaving out `selfSlot` (-1: none) — and the
   * entered and left lists relative to the previous update.
   */
  update(grid: Grid, world: World, px: number, py: number, radius: number, selfSlot: number): void {
    const n = grid.queryRadius(world.x, world.y, px, py, radius, this.found, selfSlot);
    const next = this.next;
    // Sort (id, slot) pairs by id as one float key: id < 2^32 and slot < 2^20 fit 52 bits exactly.
    const keys = this.keys;
    for (let k = 0; k < n; k++) {
      const slot = this.found[k] as number;
      keys[k] = (world.id[slot] as number) * SLOT_SPACE + slot;
    }
    keys.subarray(0, n).sort();
    for (let k = 0; k < n; k++) {
      const key = keys[k] as number;
      const id = Math.floor(key / SLOT_SPACE);
      next[k] = id;
      this.slots[k] = key - id * SLOT_SPACE;
    }
    // Merge the two sorted lists.
    const prev = this.ids;
    const prevCount = this.count;
    let a = 0;
    let b = 0;
    let e = 0;
    let l = 0;
    while (a < prevCount && b < n) {
      const pa = prev[a] as number;
      const nb = next[b] as number;
      if (pa === nb) {
        a++;
        b++;
      } else if (pa < nb) {
        this.left[l++] = pa;
        a++;
      } else {
        this.entered[e++] = nb;
        b++;
      }
    }
    while (a < prevCount) this.left[l++] = prev[a++] as number;
    while (b < n) this.entered[e++] = next[b++] as number;
    this.enteredCount = e;
    this.leftCount = l;
    this.next = prev;
    this.ids = next;
    this.count = n;
  }

  /** Forgets everything, as for a new subscriber. */
  reset(): void {
    this.count = 0;
    this.enteredCount = 0;
    this.leftCount = 0;
  }
}
