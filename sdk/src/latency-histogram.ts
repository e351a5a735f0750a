import { bucketPercentile } from '@aethex/runtime';

/** Buckets per millisecond (0.1 ms each), and their number: up to 1 s, later latencies in the last. */
const PER_MS = 10;
const BUCKETS = 1000 * PER_MS;

/**
 * Input→acknowledgement latencies of a bot run, counted in 0.1 ms buckets up to 1 s (later ones in
 * the last bucket), with the largest kept exactly: the same memory however long the run, where a
 * list of every latency grows by 144,000 an hour per bot.
 */
export class LatencyHistogram {
  private readonly counts = new Uint32Array(BUCKETS);
  /** Latencies counted. */
  count = 0;
  /** The largest latency counted, exactly (0 for none). */
  max = 0;

  add(ms: number): void {
    const i = Math.min(BUCKETS - 1, Math.max(0, Math.floor(ms * PER_MS)));
    this.counts[i] = (this.counts[i] as number) + 1;
    this.count++;
    if (ms > this.max) this.max = ms;
  }

  addAll(values: readonly number[]): void {
    for (const v of values) this.add(v);
  }

  /**
   * Nearest-rank percentile `p` (0–100) — the rank runtime's `percentile` takes in the sorted
   * latencies — to the bucket: its lower bound, so at most 0.1 ms below the latency itself (NaN for
   * none).
   */
  percentile(p: number): number {
    return bucketPercentile(this.counts, p) / PER_MS;
  }

  /** The counts in 1 ms buckets (the last: ≥ 999 ms), as `BotReport.raw.latency_hist` has them. */
  perMillisecond(): number[] {
    const out = new Array<number>(BUCKETS / PER_MS).fill(0);
    for (let i = 0; i < BUCKETS; i++) {
      const ms = Math.floor(i / PER_MS);
      out[ms] = (out[ms] as number) + (this.counts[i] as number);
    }
    return out;
  }
}
