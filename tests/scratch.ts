import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Vitest global setup for every project: one scratch directory per run, which becomes `TMPDIR`
 * for the test workers and every process they start (so `os.tmpdir()` and `mktemp` land in it),
 * removed with everything in it when the run ends. Tests write key files, snapshots and configs
 * there without cleaning up one by one, and no run leaves them behind in the machine's /tmp. */
export default function scratchDirectory(): () => void {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-test-'));
  process.env.TMPDIR = dir;
  return () => rmSync(dir, { recursive: true, force: true });
}
