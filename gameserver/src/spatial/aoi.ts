import type { World } from '../sim/world.js';
import type { Grid } from './grid.js';

/**
 * One subscriber's area of interest: the ids of the entities it sees, kept sorted so that the
 * change from one tick to the next is a linear merge. Buffers are allocated once, at most
 * `maxVisible` entities are tracked (the first found, in grid order, when more are in range).
 */
export class Interest {
  /** Sorted ids visible after the last update: ids[0..count). */
  ids: Uint32Array;
  count = 0;
  private next: Uint32Array;
  private readonly slots: Int32Array;
  /** Ids that entered / left in the last update: entered[0..enteredCount), left[0..leftCount). */
  readonly entered: Uint32Array;
  enteredCount = 0;
  readonly left: Uint32Array;
  leftCount = 0;

  constructor(readonly maxVisible: number) {
    this.ids = new Uint32Array(maxVisible);
    this.next = new Uint32Array(maxVisible);
    this.slots = new Int32Array(maxVisible);
    this.entered = new Uint32Array(maxVisible);
    this.left = new Uint32Array(maxVisible);
  }

  /**
   * Recomputes the visible set around (px, py) — leaving out `selfSlot` — and the entered and
   * left lists relative to the previous update.
   */
  update(grid: Grid, world: World, px: number, py: number, radius: number, selfSlot: number): void {
    const n = grid.queryRadius(world.x, world.y, px, py, radius, this.slots, selfSlot);
    const next = this.next;
    for (let k = 0; k < n; k++) next[k] = world.id[this.slots[k] as number] as number;
    next.subarray(0, n).sort();
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
