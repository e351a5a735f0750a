import type { Logger } from '@aethex/runtime';

/** How often, at most, a store that keeps failing is logged again (a summary line with a count). */
export const FAILURE_LOG_EVERY_MS = 10_000;

/**
 * The log of one kind of store failure, rate limited: the first failure is logged with its error
 * (and its stack), then — while it keeps failing — at most one summary line per `everyMs` with how
 * many failures came since the last line and the latest one's message, and one line when it works
 * again. So a store that is down for an hour is a handful of lines, not one per flush.
 */
export class FailureLog {
  /** Failures since it last worked. */
  private failures = 0;
  /** Failures not yet in a line. */
  private unlogged = 0;
  private firstAt = 0;
  private loggedAt = 0;

  constructor(
    private readonly log: Logger,
    /** What failed, for the recovery line: 'outbox append', 'presence update', … */
    private readonly what: string,
    private readonly now: () => number,
    private readonly everyMs = FAILURE_LOG_EVERY_MS,
  ) {}

  /** Whether it is failing (a failure since it last worked). */
  get failing(): boolean {
    return this.failures > 0;
  }

  /** Records a failure; logs it at `level` when it is the first, or when a summary is due. */
  failed(level: 'error' | 'warn', err: unknown, fields: Record<string, unknown>, message: string): void {
    const t = this.now();
    if (this.failures++ === 0) {
      this.firstAt = t;
      this.loggedAt = t;
      this.log[level]({ err, ...fields }, message);
      return;
    }
    this.unlogged++;
    if (t - this.loggedAt < this.everyMs) return;
    this.log[level](
      {
        ...fields,
        failures: this.unlogged,
        failing_for_ms: Math.round(t - this.firstAt),
        reason: err instanceof Error ? err.message : String(err),
      },
      `${message} (still failing: ${this.unlogged} more failures since the last line)`,
    );
    this.loggedAt = t;
    this.unlogged = 0;
  }

  /** It worked: one line if it had been failing, and the count starts again. */
  recovered(): void {
    if (this.failures === 0) return;
    this.log.info(
      { failures: this.failures, failing_for_ms: Math.round(this.now() - this.firstAt) },
      `${this.what} works again after ${this.failures} failures`,
    );
    this.failures = 0;
    this.unlogged = 0;
  }
}
