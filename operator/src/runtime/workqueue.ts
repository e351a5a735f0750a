/** Exponential backoff with jitter: `base · 2^(failures-1)`, capped, ± `jitter` (a fraction). */
export function backoffMs(
  failures: number,
  o: { baseMs: number; maxMs: number; jitter: number },
  random: () => number = Math.random,
): number {
  const raw = Math.min(o.maxMs, o.baseMs * 2 ** Math.max(0, failures - 1));
  return Math.max(0, Math.round(raw * (1 + o.jitter * (2 * random() - 1))));
}

export interface WorkQueueOptions {
  workers: number;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  random?: () => number;
}

/**
 * A queue of keys, as controller-runtime's: a key waiting is queued once however often it is
 * added; a key is handled by one worker at a time (added while in flight, it runs again after);
 * a failed key comes back after exponential backoff with jitter, a success resets its backoff.
 * The handler returns a delay to look again later, or undefined to wait for the next change.
 */
export class WorkQueue<K extends string = string> {
  private readonly queue: K[] = [];
  private readonly queued = new Set<K>();
  private readonly inFlight = new Set<K>();
  private readonly dirty = new Set<K>();
  private readonly timers = new Map<K, NodeJS.Timeout>();
  private readonly failures = new Map<K, number>();
  private running = 0;
  private stopped = false;

  constructor(
    private readonly handle: (key: K) => Promise<number | undefined>,
    private readonly o: WorkQueueOptions,
    private readonly onError: (key: K, err: unknown, retryInMs: number) => void = () => undefined,
  ) {}

  /** Keys waiting (not counting those in flight or delayed). */
  get depth(): number {
    return this.queue.length;
  }

  add(key: K): void {
    if (this.stopped) return;
    if (this.inFlight.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.pump();
  }

  /** Adds `key` after `ms`; an earlier pending delay for it wins. */
  addAfter(key: K, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    if (this.timers.has(key)) return;
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.queue.length = 0;
    this.queued.clear();
  }

  private pump(): void {
    while (!this.stopped && this.running < this.o.workers && this.queue.length > 0) {
      const key = this.queue.shift() as K;
      this.queued.delete(key);
      this.inFlight.add(key);
      this.running++;
      void this.run(key);
    }
  }

  private async run(key: K): Promise<void> {
    let again: number | undefined;
    try {
      again = await this.handle(key);
      this.failures.delete(key);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      again = backoffMs(n, { baseMs: this.o.baseBackoffMs ?? 200, maxMs: this.o.maxBackoffMs ?? 30_000, jitter: 0.2 }, this.o.random);
      this.onError(key, err, again);
    } finally {
      this.inFlight.delete(key);
      this.running--;
    }
    if (this.dirty.delete(key)) this.add(key);
    else if (again !== undefined) this.addAfter(key, again);
    this.pump();
  }
}
