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
 * A command-line flag that must be an integer in [min, max]; throws an Error whose message names
 * the flag, the range and what was given (scripts print it and exit 2).
 */
export function intFlag(flag: string, raw: string | undefined, min: number, max: number): number {
  const n = Number(raw);
  if (raw === undefined || raw.trim() === '' || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`--${flag} must be an integer from ${min} to ${max}, got '${raw ?? ''}'`);
  }
  return n;
}
