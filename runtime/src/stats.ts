/**
 * Nearest-rank percentile `p` (0–100) of values sorted ascending; NaN for none. The one definition
 * every benchmark uses, so their p50/p95/p99 mean the same thing.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] as number;
}

/**
 * Nearest-rank percentile `p` (0–100) of values counted in buckets (`counts[i]` values fell in
 * bucket i): the index of the bucket holding the value `percentile` would give for the values
 * themselves; NaN for none. The caller turns the index into its bucket's bound.
 */
export function bucketPercentile(counts: ArrayLike<number>, p: number): number {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i] as number;
  if (total === 0) return Number.NaN;
  const rank = Math.min(total, Math.max(1, Math.ceil((p / 100) * total)));
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i] as number;
    if (seen >= rank) return i;
  }
  return counts.length - 1;
}
