/**
 * Ticks are uint32 on the wire (snapshots, acknowledgements), and a world may run past 2^32 of
 * them: 3.4 years at 40 Hz, 248 days at 200 Hz. Each end counts them on in a plain number and
 * reads a wire tick as the tick with those low 32 bits nearest to one it knows (`near`: the
 * current tick, the last one seen; 0 when it knows none, which takes the wire tick as it is).
 */
export function unwrapTick(wire: number, near: number): number {
  if (near === 0) return wire >>> 0;
  // The signed 32-bit distance from `near` (ToInt32 is exact on integers below 2^53); ticks start at 0.
  const tick = near + ((wire - near) | 0);
  return tick < 0 ? tick + 2 ** 32 : tick;
}
