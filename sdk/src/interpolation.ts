import type { EntityRecord } from './snapshots.js';

export interface Positioned {
  x: number;
  y: number;
  kind: number;
  flags: number;
}

/**
 * Positions between two snapshots for smooth rendering: each entity present in both is placed at
 * `alpha` ∈ [0, 1] of the way from `previous` to `current`; an entity only in `current` (it just
 * entered) is placed where `current` has it. `scale` turns quanta into world units. Renderers draw
 * one snapshot interval in the past, with alpha = time since the current snapshot ÷ interval.
 */
export function interpolate(
  previous: ReadonlyMap<number, EntityRecord>,
  current: ReadonlyMap<number, EntityRecord>,
  alpha: number,
  scale: number,
): Map<number, Positioned> {
  const a = Math.min(1, Math.max(0, Number.isFinite(alpha) ? alpha : 1));
  const out = new Map<number, Positioned>();
  for (const [id, c] of current) {
    const p = previous.get(id);
    const qx = p ? p.qx + (c.qx - p.qx) * a : c.qx;
    const qy = p ? p.qy + (c.qy - p.qy) * a : c.qy;
    out.set(id, { x: qx * scale, y: qy * scale, kind: c.kind, flags: c.flags });
  }
  return out;
}
