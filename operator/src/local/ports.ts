/**
 * Port slots of the local runtime. Slot k is the pair (base + 2k: players, base + 2k + 1: ops).
 * Slots are handed out in the order the shards are listed (worlds in file order, then instances,
 * then shards), each new shard taking the lowest free slot; a shard keeps its slot for as long as
 * it is wanted or its process still runs, so scaling, updates and restarts never move a running
 * shard to another port. A fresh start therefore numbers the shards 0, 1, 2, … in listing order.
 */
export function allocateSlots(
  previous: ReadonlyMap<string, number>,
  wanted: readonly string[],
  running: Iterable<string>,
): Map<string, number> {
  const keep = new Set([...wanted, ...running]);
  const out = new Map<string, number>();
  for (const [name, slot] of previous) if (keep.has(name)) out.set(name, slot);
  const used = new Set(out.values());
  let next = 0;
  for (const name of wanted) {
    if (out.has(name)) continue;
    while (used.has(next)) next++;
    out.set(name, next);
    used.add(next);
  }
  return out;
}

/** The ports of slot `slot`, or undefined when they would be above 65535. */
export function slotPorts(basePort: number, slot: number): { gateway: number; ops: number } | undefined {
  const gateway = basePort + 2 * slot;
  return gateway + 1 > 65_535 ? undefined : { gateway, ops: gateway + 1 };
}
