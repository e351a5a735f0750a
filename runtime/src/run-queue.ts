import { readFileSync } from 'node:fs';

/**
 * Milliseconds the calling thread has spent runnable but not run (waiting for a CPU) since it
 * started, from Linux's schedstat. Tests and benchmarks on the shared 2-core machine use the
 * difference over an interval to tell "the process was not given a CPU" from "the process was slow".
 */
export function runQueueWaitMs(): number {
  const fields = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ');
  const ns = Number(fields[1]);
  if (!Number.isFinite(ns)) throw new Error(`/proc/thread-self/schedstat: unexpected contents '${fields.join(' ')}'`);
  return ns / 1e6;
}

/**
 * CPU a process used over a span, in whole % of one core: `usage` is `process.cpuUsage(start)`
 * (user + system, µs), `wallMs` the span's wall time.
 */
export function cpuPercent(usage: NodeJS.CpuUsage, wallMs: number): number {
  if (!(wallMs > 0)) throw new RangeError(`wallMs must be positive, got ${wallMs}`);
  return Math.round(((usage.user + usage.system) / 1000 / wallMs) * 100);
}
