import { type EntityRecord, Frame } from './snapshots.js';

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
 *
 * Two `Frame`s are read through their arrays (no record per entity): the client's own calls, every
 * render frame.
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
  if (previous instanceof Frame && current instanceof Frame) {
    for (let i = 0; i < current.size; i++) {
      const id = current.ids[i] as number;
      const j = previous.indexOf(id);
      const pqx = j < 0 ? undefined : (previous.qx[j] as number);
      const pqy = j < 0 ? 0 : (previous.qy[j] as number);
      out.set(
        id,
        placed(
          pqx,
          pqy,
          current.qx[i] as number,
          current.qy[i] as number,
          current.kind[i] as number,
          current.flags[i] as number,
          a,
          limit2,
          scale,
        ),
      );
    }
    if (a < 1) {
      for (let j = 0; j < previous.size; j++) {
        const id = previous.ids[j] as number;
        if (current.indexOf(id) < 0) {
          out.set(id, {
            x: (previous.qx[j] as number) * scale,
            y: (previous.qy[j] as number) * scale,
            kind: previous.kind[j] as number,
            flags: previous.flags[j] as number,
          });
        }
      }
    }
    return out;
  }
  for (const [id, c] of current) {
    const p = previous.get(id);
    out.set(id, placed(p?.qx, p?.qy ?? 0, c.qx, c.qy, c.kind, c.flags, a, limit2, scale));
  }
  if (a < 1) {
    for (const [id, p] of previous) {
      if (!current.has(id)) out.set(id, { x: p.qx * scale, y: p.qy * scale, kind: p.kind, flags: p.flags });
    }
  }
  return out;
}

/**
 * Where an entity at (cqx, cqy) in `current` is drawn: `a` of the way from (pqx, pqy) in `previous`
 * when it moved at most `limit2` squared quanta, else at (cqx, cqy); `pqx` undefined when it is not
 * in `previous`.
 */
function placed(
  pqx: number | undefined,
  pqy: number,
  cqx: number,
  cqy: number,
  kind: number,
  flags: number,
  a: number,
  limit2: number,
  scale: number,
): Positioned {
  const dx = pqx === undefined ? 0 : cqx - pqx;
  const dy = pqx === undefined ? 0 : cqy - pqy;
  const slide = pqx !== undefined && dx * dx + dy * dy <= limit2;
  const qx = slide ? pqx + dx * a : cqx;
  const qy = slide ? pqy + dy * a : cqy;
  return { x: qx * scale, y: qy * scale, kind, flags };
}
