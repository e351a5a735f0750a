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
