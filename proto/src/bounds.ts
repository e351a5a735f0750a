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

/**
 * The smallest position a shard keeps an entity at under an inclusive `min`: `min` itself where
 * float32 holds it, else the float32 just above it (a float32 rounded to nearest could land just
 * below: -999.9 is stored as -999.9000244). With `insideMax`, what every clamp to the world's
 * bounds or a shard's region uses, so that a stored position is inside them as a neighbour checks.
 */
export function insideMin(min: number): number {
  f32[0] = min;
  if ((f32[0] as number) < min) {
    // One float32 step up (rounding to nearest left it at most one step below).
    if ((f32[0] as number) > 0) u32[0] = (u32[0] as number) + 1;
    else if (f32[0] === 0) f32[0] = 1.401298464324817e-45;
    else u32[0] = (u32[0] as number) - 1;
  }
  return f32[0] as number;
}

/** `v` clamped into [min, max) as a float32 position keeps it: between `insideMin(min)` and `insideMax(max)`. */
export function clampInside(v: number, min: number, max: number): number {
  return Math.min(Math.max(v, insideMin(min)), insideMax(max));
}

/**
 * The quanta a position in [min, max) is sent as, at `scale` world units a quantum: `lo` and `hi`,
 * the lowest and highest `q` whose position as clients read it (`q × scale`) is inside. A shard
 * quantizes as `round(p × (1 / scale))` held to this range — the largest position it keeps, just
 * under `max`, would otherwise round to the quantum that reads exactly `max` — and a client
 * predicting a position does the same before comparing it with a snapshot's.
 */
export function quantumRange(min: number, max: number, scale: number): { lo: number; hi: number } {
  let lo = Math.ceil(min / scale);
  while (lo * scale < min) lo++;
  while ((lo - 1) * scale >= min) lo--;
  let hi = Math.ceil(max / scale) - 1;
  while (hi * scale >= max) hi--;
  while ((hi + 1) * scale < max) hi++;
  return { lo, hi };
}
