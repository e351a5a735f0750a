/**
 * Nearest-rank percentile `p` (0–100) of values sorted ascending; NaN for none. The one definition
 * every benchmark uses, so their p50/p95/p99 mean the same thing.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}
