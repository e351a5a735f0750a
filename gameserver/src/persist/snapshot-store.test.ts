import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { DirectorySnapshotStore } from './snapshot-store.js';

const key = { namespace: 'ns', world: 'w', instance: 0, shard: 'w-0-0' };

test('the directory check refuses a place the shard could not save in, naming why', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-snapdir-'));
  await new DirectorySnapshotStore(join(dir, 'fresh', 'snapshots')).check();
  expect(readdirSync(join(dir, 'fresh', 'snapshots'))).toEqual([]);
  // Root ignores file modes: a path under a plain file fails for everyone.
  writeFileSync(join(dir, 'file'), '');
  await expect(new DirectorySnapshotStore(join(dir, 'file', 'snapshots')).check()).rejects.toThrow(/ENOTDIR/);
});

test('a save the file system never answers fails within its timeout, and the next save still works', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-snapdir-'));
  const store = new DirectorySnapshotStore(dir, 300);
  // The snapshot's file is a FIFO: the save's read of the stored tick before its rename blocks
  // until a writer opens it, as a call into a hung mount would.
  mkdirSync(join(dir, 'ns'));
  const fifo = join(dir, 'ns', 'w.0.w-0-0.snapshot');
  execFileSync('mkfifo', [fifo]);
  const started = performance.now();
  await expect(store.save(key, { tick: 5, state: new Uint8Array([1]) })).rejects.toThrow('no answer from the file system within 300 ms');
  expect(performance.now() - started).toBeLessThan(5000);
  // While that write still hangs, no other write of the file starts (it could rename an older
  // snapshot over a newer one later, and each would hold its blob): the next save fails at once.
  await expect(store.save(key, { tick: 6, state: new Uint8Array([2]) })).rejects.toThrow(
    `an earlier write of ${fifo} that got no answer from the file system has not ended; not starting another`,
  );
  expect(readdirSync(join(dir, 'ns')).filter((f) => f.endsWith('.tmp'))).toHaveLength(1);
  // Release the blocked read (a writer that closes at once: it reads an empty file, and the save
  // given up on fails and removes its temporary file), then take the FIFO away.
  closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
  await new Promise((r) => setTimeout(r, 100));
  rmSync(fifo);
  await store.save(key, { tick: 6, state: new Uint8Array([2]) });
  expect((await store.load(key))?.tick).toBe(6);
  expect(readdirSync(join(dir, 'ns'))).toEqual(['w.0.w-0-0.snapshot']);
});
