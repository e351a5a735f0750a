import type { EntityRecord } from './snapshots.js';

export interface Positioned {
  x: number;
  y: number;
  kind: number;
  flags: number;
}

/**
 * Positions between two snapshots for smooth rendering, drawn one snapshot interval in the past:
 * `alpha` ∈ [0, 1] is the time since the current snapshot arrived ÷ the interval between the two
 * (their tick difference × the tick's milliseconds: a client sent every 4th snapshot interpolates
 * over 4 ticks). `scale` turns quanta into world units.
 *
 * - An entity in both is placed `alpha` of the way from `previous` to `current` — unless it moved
 *   further than `maxStep` quanta (max speed × the ticks between the snapshots, ÷ scale; a quantum
 *   of rounding allowed on each axis): a teleport or a respawn, drawn where `current` has it rather
 *   than sliding there.
 * - An entity only in `current` (it entered) is placed where `current` has it.
 * - An entity only in `previous` (it left) is drawn where it was until `alpha` reaches 1: the view
 *   is an interval behind, and at that time it was still there.
 */
export function interpolate(
  previous: ReadonlyMap<number, EntityRecord>,
  current: ReadonlyMap<number, EntityRecord>,
  alpha: number,
  scale: number,
  maxStep = Number.POSITIVE_INFINITY,
): Map<number, Positioned> {
  const a = Math.min(1, Math.max(0, Number.isFinite(alpha) ? alpha : 1));
  // Quantization may add up to a quantum on each axis at each end.
  const limit2 = (maxStep + 2) * (maxStep + 2);
  const out = new Map<number, Positioned>();
  for (const [id, c] of current) {
    const p = previous.get(id);
    const dx = p ? c.qx - p.qx : 0;
    const dy = p ? c.qy - p.qy : 0;
    const slide = p !== undefined && dx * dx + dy * dy <= limit2;
    const qx = slide ? p.qx + dx * a : c.qx;
    const qy = slide ? p.qy + dy * a : c.qy;
    out.set(id, { x: qx * scale, y: qy * scale, kind: c.kind, flags: c.flags });
  }
  if (a < 1) {
    for (const [id, p] of previous) {
      if (!current.has(id)) out.set(id, { x: p.qx * scale, y: p.qy * scale, kind: p.kind, flags: p.flags });
    }
  }
  return out;
}
