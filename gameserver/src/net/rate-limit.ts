/**
 * A token bucket: `ratePerS` tokens a second up to `burst`. `take(nowMs)` spends one token and says
 * whether there was one. Time is passed in, so tests drive it.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerS: number,
    private readonly burst: number,
    nowMs: number,
  ) {
    this.tokens = burst;
    this.at = nowMs;
  }

  take(nowMs: number): boolean {
    const elapsed = nowMs - this.at;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerS) / 1000);
      this.at = nowMs;
    }
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
