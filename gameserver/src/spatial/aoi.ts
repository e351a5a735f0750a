import { MODE_DORMANT, type World } from '../sim/world.js';
import type { Grid } from './grid.js';

/**
 * A subscriber's area of interest: the entities it sees, as world slots and ids in grid order. It is
 * recomputed for every snapshot, so one Interest serves all the clients a thread encodes, one after
 * another. What entered and left since an earlier tick is computed by the snapshot encoder against
 * the client's acknowledged frame (full records and `removed`). Buffers are allocated once; at
 * most `maxVisible` entities are tracked (the first found, in grid order, when more are in range).
 */
export class Interest {
  /** Visible entities after the last update: slots[0..count) and their ids[0..count). */
  readonly slots: Int32Array;
  readonly ids: Uint32Array;
  count = 0;

  constructor(readonly maxVisible: number) {
    this.slots = new Int32Array(maxVisible);
    this.ids = new Uint32Array(maxVisible);
  }

  /** Recomputes the visible set around (px, py), leaving out `selfSlot` (-1: none). */
  update(grid: Grid, world: Pick<World, 'id' | 'mode'>, px: number, py: number, radius: number, selfSlot: number): void {
    const n = grid.queryRadius(px, py, radius, this.slots, selfSlot);
    const { slots, ids } = this;
    const worldIds = world.id;
    const mode = world.mode;
    // Dormant entities (restored players who have not rejoined) are nobody's to see.
    let m = 0;
    for (let k = 0; k < n; k++) {
      const slot = slots[k] as number;
      if (mode[slot] === MODE_DORMANT) continue;
      slots[m] = slot;
      ids[m++] = worldIds[slot] as number;
    }
    this.count = m;
  }
}
