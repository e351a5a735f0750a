import { describe, expect, it, vi } from 'vitest';
import { backoffMs, WorkQueue } from './workqueue.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

describe('WorkQueue', () => {
  it('queues a waiting key once however often it is added', async () => {
    const seen: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const q = new WorkQueue(
      async (k) => {
        seen.push(k);
        if (k === 'block') await gate;
        return undefined;
      },
      { workers: 1 },
    );
    q.add('block');
    for (let i = 0; i < 5; i++) q.add('a');
    expect(q.depth).toBe(1);
    release();
    await tick(10);
    expect(seen).toEqual(['block', 'a']);
  });

  it('never runs one key twice at once, and reruns a key added while in flight', async () => {
    let running = 0;
    let maxRunning = 0;
    let runs = 0;
    const q = new WorkQueue(
      async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        runs++;
        await tick(20);
        running--;
        return undefined;
      },
      { workers: 4 },
    );
    q.add('w');
    await tick(5);
    q.add('w');
    q.add('w');
    await tick(80);
    expect(maxRunning).toBe(1);
    expect(runs).toBe(2);
  });

  it('retries a failing key with growing backoff and resets it on success', async () => {
    // Fake timers and clock: the backoffs are exact, however the machine schedules the test.
    vi.useFakeTimers();
    try {
      const at: number[] = [];
      const errors: number[] = [];
      const q = new WorkQueue(
        async () => {
          at.push(Date.now());
          // Three failures, a success, then one failure more.
          if (at.length < 4 || at.length === 5) throw new Error('boom');
          return undefined;
        },
        { workers: 1, baseBackoffMs: 20, maxBackoffMs: 1000, random: () => 0.5 },
        (_k, _e, retry) => errors.push(retry),
      );
      const start = Date.now();
      q.add('k');
      await vi.advanceTimersByTimeAsync(139);
      expect(at).toHaveLength(3);
      await vi.advanceTimersByTimeAsync(1);
      expect(errors).toEqual([20, 40, 80]);
      expect(at.map((t) => t - start)).toEqual([0, 20, 60, 140]);
      // Succeeded: no retry, and the next failure backs off from the start again.
      await vi.advanceTimersByTimeAsync(1000);
      expect(at).toHaveLength(4);
      q.add('k');
      await vi.advanceTimersByTimeAsync(20);
      expect(errors).toEqual([20, 40, 80, 20]);
      expect(at.map((t) => t - start)).toEqual([0, 20, 60, 140, 1140, 1160]);
      q.stop();
    } finally {
      vi.useRealTimers();
    }
  });
});

it('backoff is exponential, capped and jittered within bounds', () => {
  const o = { baseMs: 100, maxMs: 1000, jitter: 0.2 };
  expect([1, 2, 3, 4, 5, 10].map((n) => backoffMs(n, o, () => 0.5))).toEqual([100, 200, 400, 800, 1000, 1000]);
  expect(backoffMs(3, o, () => 0)).toBe(320);
  expect(backoffMs(3, o, () => 1)).toBe(480);
});
