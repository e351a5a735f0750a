import { MODE_DORMANT, type World } from '../sim/world.js';
import type { Grid, HeldMarks } from './grid.js';

/**
 * A subscriber's area of interest: the entities it sees, as world slots and ids. It is recomputed
 * for every snapshot, so one Interest serves all the clients a thread encodes, one after another.
 * What entered and left since an earlier tick is computed by the snapshot encoder against the
 * client's acknowledged frame (full records and `removed`). Buffers are allocated once; at most
 * `maxVisible` entities are tracked: the subscriber's own entity first, then, when more are in
 * range, the nearest others (ties in distance to the lowest entity id; those it was last sent
 * counted a little nearer, `HELD_D2`).
 */
export class Interest {
  /** Visible entities after the last update: slots[0..count) and their ids[0..count). */
  readonly slots: Int32Array;
  readonly ids: Uint32Array;
  count = 0;
  /** The last update found more in range than `maxVisible` and kept the nearest. */
  capped = false;

  constructor(readonly maxVisible: number) {
    this.slots = new Int32Array(maxVisible);
    this.ids = new Uint32Array(maxVisible);
  }

  /**
   * Recomputes the visible set around (px, py). `selfSlot` (the subscriber's own entity, or -1) is
   * always in it, first: a crowd never pushes out the record its client reconciles its prediction
   * with. The others, when more are in range than fit, are the nearest (`Grid.queryRadius`).
   * Dormant entities (restored players who have not rejoined) are nobody's to see, and take no
   * place from those who are. `held`: what the subscriber was last sent, which a crowded view
   * prefers to keep (`HELD_D2`).
   */
  update(grid: Grid, world: Pick<World, 'id' | 'mode'>, px: number, py: number, radius: number, selfSlot: number, held?: HeldMarks): void {
    const { slots, ids } = this;
    const mode = world.mode;
    const worldIds = world.id;
    let n = 0;
    if (selfSlot >= 0 && mode[selfSlot] !== MODE_DORMANT) slots[n++] = selfSlot;
    const capped = grid.capped;
    n = grid.queryRadius(px, py, radius, slots, selfSlot, mode, n, worldIds, held);
    this.capped = grid.capped !== capped;
    for (let k = 0; k < n; k++) ids[k] = worldIds[slots[k] as number] as number;
    this.count = n;
  }
}
