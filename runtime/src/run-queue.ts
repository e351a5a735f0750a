import { readFileSync } from 'node:fs';

/** The calling thread's schedstat fields, ms: time on a CPU, time runnable but not run. */
function schedstat(): [number, number] {
  const fields = readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ');
  const on = Number(fields[0]);
  const waited = Number(fields[1]);
  if (!Number.isFinite(on) || !Number.isFinite(waited))
    throw new Error(`/proc/thread-self/schedstat: unexpected contents '${fields.join(' ')}'`);
  return [on / 1e6, waited / 1e6];
}

/**
 * Milliseconds the calling thread has spent runnable but not run (waiting for a CPU) since it
 * started, from Linux's schedstat. Tests and benchmarks on the shared 2-core machine use the
 * difference over an interval to tell "the process was not given a CPU" from "the process was slow".
 */
export function runQueueWaitMs(): number {
  return schedstat()[1];
}

/**
 * Milliseconds the calling thread has spent on a CPU since it started (schedstat): unlike
 * `process.cpuUsage()`, none of the process's other threads' time.
 */
export function threadCpuMs(): number {
  return schedstat()[0];
}

/**
 * CPU a process used over a span, in whole % of one core: `usage` is `process.cpuUsage(start)`
 * (user + system, µs), `wallMs` the span's wall time.
 */
export function cpuPercent(usage: NodeJS.CpuUsage, wallMs: number): number {
  if (!(wallMs > 0)) throw new RangeError(`wallMs must be positive, got ${wallMs}`);
  return Math.round(((usage.user + usage.system) / 1000 / wallMs) * 100);
}
