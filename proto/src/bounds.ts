const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * Rectangles in the protocol (a world's bounds, a shard's region) include their minimum and exclude
 * their maximum, and positions are float32. The largest position a shard keeps an entity at under
 * an exclusive `max`: 1e-3 below it, or, where float32 cannot hold that apart from `max` (from
 * 32,768 world units on), the float32 just below `max`. The shard's movement step and a client's
 * prediction use this one rule, so they agree at the edge.
 */
export function insideMax(max: number): number {
  const hi = Math.fround(max - 1e-3);
  if (hi < max) return hi;
  f32[0] = max;
  if (f32[0] >= max) {
    // One float32 step down (rounding to nearest left it at most one step above).
    if (f32[0] > 0) u32[0] = (u32[0] as number) - 1;
    else if (f32[0] === 0) f32[0] = -1.401298464324817e-45;
    else u32[0] = (u32[0] as number) + 1;
  }
  return f32[0] as number;
}
