import type { Logger } from '@aethex/runtime';
import { FAILURE_LOG_EVERY_MS, FailureLog } from '../persist/failure-log.js';

/**
 * The log of the tick loop falling behind (ticks dropped past `engine.max_catch_up_ticks`), rate
 * limited as a failing store's is (FailureLog): the first drop is a line, then — while drops go on
 * — at most one line per `everyMs` with how many drops came since the last line (`failures`) and
 * the ticks dropped since the first (`dropped`), and one line (`tick loop works again after N
 * failures`) once the loop has kept up for `everyMs`. A shard that cannot keep up drops ticks on
 * most wake-ups: one line each was hundreds of lines a minute, saying nothing new.
 */
export class BehindLog {
  private readonly failures: FailureLog;
  /** Ticks dropped since the loop last kept up. */
  private dropped = 0;
  private lastDropAt = 0;

  constructor(
    log: Logger,
    private readonly now: () => number,
    private readonly everyMs = FAILURE_LOG_EVERY_MS,
  ) {
    this.failures = new FailureLog(log, 'tick loop', now, everyMs);
  }

  /** The loop dropped `ticks` ticks. */
  skipped(ticks: number): void {
    this.dropped += ticks;
    this.lastDropAt = this.now();
    this.failures.failed('warn', `${ticks} ticks dropped`, { ticks, dropped: this.dropped }, 'tick loop fell behind; ticks dropped');
  }

  /** A tick ran: after `everyMs` without a drop, the loop has kept up again. */
  stepped(): void {
    if (!this.failures.failing || this.now() - this.lastDropAt < this.everyMs) return;
    this.failures.recovered();
    this.dropped = 0;
  }
}
