// Notices when a thread is not run: a 2 ms timer that reports every wake-up later than 20 ms as a
// stall {at, ms} (epoch milliseconds). Run as a process of its own it is idle, and prints
// {"ready":true} and then each stall as one JSON line: tests that bound latencies run it beside the
// work under test, so that a stall of the whole shared machine (the VM paused, every core taken)
// is told apart from a stall of the process under test. `watchStalls` runs the same timer on the
// caller's thread, for the stalls of that thread itself (its GC, other work on it, its wait for a CPU).
import { pathToFileURL } from 'node:url';

export interface Stall {
  /** The timer's last wake-up before the late one, epoch ms. */
  at: number;
  /** From then to the late wake-up, ms. */
  ms: number;
}

/** Calls `report` for each stall of this thread from now on; the returned function stops watching. */
export function watchStalls(report: (stall: Stall) => void): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    if (now - last > 20) report({ at: performance.timeOrigin + last, ms: now - last });
    last = now;
  }, 2);
  return () => clearInterval(timer);
}

/** Milliseconds of `stalls` that fall within [from, to] (epoch ms). */
export function stalledWithin(stalls: readonly Stall[], from: number, to: number): number {
  return stalls.reduce((sum, s) => sum + Math.max(0, Math.min(to, s.at + s.ms) - Math.max(from, s.at)), 0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  watchStalls((s) => process.stdout.write(`${JSON.stringify(s)}\n`));
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
}
