/** A monotonic clock in milliseconds; `performance.now` in production, a counter in tests. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => performance.now() };

/**
 * Fixed-timestep accounting: ticks are due at start + n × stepMs. `due(now)` says how many to run
 * now — at most `maxCatchUp`; if the process stalled for longer, the excess ticks are dropped
 * (counted in `skipped`) instead of being run in a burst that would stall it again.
 */
export class FixedTimestep {
  private nextAt: number;

  constructor(
    readonly stepMs: number,
    readonly maxCatchUp: number,
    startAt: number,
  ) {
    if (!(stepMs > 0)) throw new RangeError(`stepMs must be positive, got ${stepMs}`);
    if (!Number.isInteger(maxCatchUp) || maxCatchUp < 1) throw new RangeError(`maxCatchUp must be a positive integer, got ${maxCatchUp}`);
    this.nextAt = startAt + stepMs;
  }

  due(now: number): { steps: number; skipped: number } {
    if (now < this.nextAt) return { steps: 0, skipped: 0 };
    const behind = Math.floor((now - this.nextAt) / this.stepMs) + 1;
    this.nextAt += behind * this.stepMs;
    const steps = Math.min(behind, this.maxCatchUp);
    return { steps, skipped: behind - steps };
  }

  /** Milliseconds until the next tick is due (0 if it already is). */
  msUntilNext(now: number): number {
    return Math.max(0, this.nextAt - now);
  }
}

/**
 * Turns of the event loop a step may wait for while `yieldFirst` asks for them (see `runLoop`).
 * libuv (since 1.45) accepts one connection per turn, so a loop whose every turn is a step — a
 * saturated shard, running late ticks back to back — would admit one connection per tick (40 a
 * second, while a burst of players times out in the accept queue). With 8 turns a step it admits
 * up to 9 per tick; each costs a fraction of a millisecond, and the step waits only while
 * connections keep arriving.
 */
export const MAX_YIELD_TURNS = 8;

/**
 * Drives `onStep` at the timestep's rate with timers until `stop()`. Catch-up steps (after a slow
 * step or a stall) run one per turn of the event loop (setImmediate), so sockets are read between
 * them: inputs, acknowledgements and joins that arrived meanwhile are seen by the next step instead
 * of waiting for a whole burst. Before a step, while `yieldFirst()` says so (the gateway: a
 * connection was accepted since it was last asked, so more may be queued), the step waits one more
 * turn, at most `MAX_YIELD_TURNS` times. A step that throws stops nothing: the error goes to
 * `onError` and the loop goes on.
 */
export function runLoop(
  timestep: FixedTimestep,
  clock: Clock,
  handlers: { onStep(): void; onSkip(ticks: number): void; onError(err: unknown): void; yieldFirst?(): boolean },
): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let immediate: NodeJS.Immediate | undefined;
  let stopped = false;
  let pending = 0;
  let yielded = 0;
  const runOne = () => {
    immediate = undefined;
    if (stopped) return;
    const { steps, skipped } = timestep.due(clock.now());
    if (skipped > 0) handlers.onSkip(skipped);
    pending += steps;
    if (pending > timestep.maxCatchUp) {
      handlers.onSkip(pending - timestep.maxCatchUp);
      pending = timestep.maxCatchUp;
    }
    if (pending > 0 && yielded < MAX_YIELD_TURNS && handlers.yieldFirst?.()) {
      yielded++;
      immediate = setImmediate(runOne);
      return;
    }
    if (pending > 0) {
      pending--;
      yielded = 0;
      try {
        handlers.onStep();
      } catch (err) {
        handlers.onError(err);
      }
    }
    if (pending > 0) immediate = setImmediate(runOne);
    else timer = setTimeout(runOne, timestep.msUntilNext(clock.now()));
  };
  timer = setTimeout(runOne, timestep.msUntilNext(clock.now()));
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
    },
  };
}
