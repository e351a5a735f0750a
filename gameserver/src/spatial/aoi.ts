import type { World } from '../sim/world.js';
import type { Grid } from './grid.js';

/**
 * One subscriber's area of interest: the ids of the entities it sees, sorted, with their slots.
 * What entered and left since an earlier tick is the merge of two such sets, which the snapshot
 * encoder does against the client's acknowledged frame (full records and `removed`). Buffers are
 * allocated once; at most `maxVisible` entities are tracked (the first found, in grid order).
 */
export class Interest {
  /** Sorted ids visible after the last update: ids[0..count), and their world slots in slots[0..count). */
  readonly ids: Uint32Array;
  readonly slots: Int32Array;
  count = 0;

  constructor(readonly maxVisible: number) {
    this.ids = new Uint32Array(maxVisible);
    this.slots = new Int32Array(maxVisible);
  }

  /** Recomputes the visible set around (px, py), leaving out `selfSlot` (-1: none). */
  update(grid: Grid, world: World, px: number, py: number, radius: number, selfSlot: number): void {
    const slots = this.slots;
    const n = grid.queryRadius(world.x, world.y, px, py, radius, slots, selfSlot);
    const sorted = this.ids;
    const ids = world.id;
    // Insertion sort of (id, slot) by id: the grid yields short ascending runs (cells hold slots in
    // order, and ids mostly follow slots), which insertion sort handles in near-linear time.
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      const id = ids[slot] as number;
      let j = k - 1;
      while (j >= 0 && (sorted[j] as number) > id) {
        sorted[j + 1] = sorted[j] as number;
        slots[j + 1] = slots[j] as number;
        j--;
      }
      sorted[j + 1] = id;
      slots[j + 1] = slot;
    }
    this.count = n;
  }

  /** Forgets everything, as for a new subscriber. */
  reset(): void {
    this.count = 0;
  }
}
