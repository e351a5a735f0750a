import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type ShardKey, worldRef } from '@aethex/runtime';
import type pg from 'pg';
import { settledWithin } from './settled.js';

export interface StoredSnapshot {
  tick: number;
  state: Uint8Array;
  /** When the store took it (Unix ms, the store's clock), where the store knows (on load). */
  savedAtMs?: number;
  /**
   * When the shard captured the state (Unix ms, the clock of the process that captured it — the
   * clock its outbox events carry), where the store keeps it (PostgreSQL; not the directory).
   */
  capturedAtMs?: number;
}

/**
 * Where a shard's state blob lives: one current snapshot per shard, replaced by each save. A save
 * with a tick lower than the stored one is refused (`StaleSnapshotError`), so a delayed write never
 * rolls state back and a save that changed nothing never passes for one that did.
 */
export interface SnapshotStore {
  load(key: ShardKey): Promise<StoredSnapshot | undefined>;
  /** Resolves once the snapshot is durable; rejects with `StaleSnapshotError` when a newer one is stored. */
  save(key: ShardKey, snapshot: StoredSnapshot): Promise<void>;
  /** Removes a shard's snapshot (the world was deleted). */
  remove(key: ShardKey): Promise<void>;
  /** Where the shard's snapshot lies, and how to move it aside (to start without it), for an error about it. */
  locate(key: ShardKey): { where: string; moveAside: string };
}

/** `s` as an SQL string literal. */
const literal = (s: string) => `'${s.replaceAll("'", "''")}'`;

/** The stored snapshot cannot be read as one (a file shorter than its header). */
export class UnreadableSnapshotError extends Error {
  override name = 'UnreadableSnapshotError';
}

/**
 * The store holds a snapshot with a higher tick than the one saved, which was not written: another
 * process of the shard got further, or the tick the shard restored was lower than the stored one's.
 */
export class StaleSnapshotError extends Error {
  constructor(
    readonly tick: number,
    readonly storedTick: number | undefined,
  ) {
    super(`snapshot at tick ${tick} refused: the store holds one at tick ${storedTick ?? '(unknown)'}, newer`);
    this.name = 'StaleSnapshotError';
  }
}

/**
 * One row per shard. `world` holds the world's `worldRef` — `<namespace>/<world>`, or the name alone
 * outside Kubernetes — so the table is the one builds from before namespaces made, and shards of
 * both builds write to it side by side during an upgrade (see `claimShardKey`).
 */
export const SNAPSHOT_TABLE_SQL = `
CREATE TABLE IF NOT EXISTS shard_snapshots (
  world      text        NOT NULL,
  instance   integer     NOT NULL,
  shard      text        NOT NULL,
  tick       bigint      NOT NULL,
  state      bytea       NOT NULL,
  saved_at   timestamptz NOT NULL DEFAULT now(),
  captured_at_ms double precision,
  captured_tick  bigint,
  PRIMARY KEY (world, instance, shard)
);
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_snapshots'::regclass AND attname = 'captured_at_ms' AND NOT attisdropped) THEN
    ALTER TABLE shard_snapshots ADD COLUMN captured_at_ms double precision;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'shard_snapshots'::regclass AND attname = 'captured_tick' AND NOT attisdropped) THEN
    ALTER TABLE shard_snapshots ADD COLUMN captured_tick bigint;
  END IF;
END $$`;

/** Snapshots as rows of PostgreSQL's `shard_snapshots` (one per shard). */
export class PostgresSnapshotStore implements SnapshotStore {
  constructor(private readonly pool: pg.Pool) {}

  async load(key: ShardKey): Promise<StoredSnapshot | undefined> {
    const { rows } = await this.pool.query<{ tick: string; state: Buffer; saved_at_ms: number; captured_at_ms: number | null }>(
      // The capture time only with the tick it was written with: a build before it (a rollback)
      // updates the row's tick and state and leaves an older capture time behind.
      `SELECT tick, state, (extract(epoch FROM saved_at) * 1000)::float8 AS saved_at_ms,
              CASE WHEN captured_tick = tick THEN captured_at_ms END AS captured_at_ms
         FROM shard_snapshots WHERE world = $1 AND instance = $2 AND shard = $3`,
      [worldRef(key.namespace, key.world), key.instance, key.shard],
    );
    const row = rows[0];
    if (!row) return undefined;
    return {
      tick: Number(row.tick),
      state: new Uint8Array(row.state),
      savedAtMs: row.saved_at_ms,
      // A row a build before it wrote (or last updated) has none.
      ...(row.captured_at_ms === null ? {} : { capturedAtMs: row.captured_at_ms }),
    };
  }

  async save(key: ShardKey, snapshot: StoredSnapshot): Promise<void> {
    const { rowCount } = await this.pool.query(
      `INSERT INTO shard_snapshots (world, instance, shard, tick, state, captured_at_ms, captured_tick) VALUES ($1, $2, $3, $4, $5, $6, $4)
       ON CONFLICT (world, instance, shard) DO UPDATE
         SET tick = EXCLUDED.tick, state = EXCLUDED.state, saved_at = now(), captured_at_ms = EXCLUDED.captured_at_ms,
             captured_tick = EXCLUDED.captured_tick
       WHERE shard_snapshots.tick <= EXCLUDED.tick`,
      [
        worldRef(key.namespace, key.world),
        key.instance,
        key.shard,
        snapshot.tick,
        Buffer.from(snapshot.state.buffer, snapshot.state.byteOffset, snapshot.state.byteLength),
        snapshot.capturedAtMs ?? null,
      ],
    );
    // No row changed: the stored tick is higher (the upsert's WHERE refused it).
    if (rowCount === 0) throw new StaleSnapshotError(snapshot.tick, (await this.load(key))?.tick);
  }

  locate(key: ShardKey): { where: string; moveAside: string } {
    const row = `world = ${literal(worldRef(key.namespace, key.world))} AND instance = ${key.instance} AND shard = ${literal(key.shard)}`;
    return {
      where: `PostgreSQL table shard_snapshots, row ${row}`,
      moveAside: `to start without it, move it aside: UPDATE shard_snapshots SET world = world || '.unreadable' WHERE ${row}`,
    };
  }

  async remove(key: ShardKey): Promise<void> {
    await this.pool.query('DELETE FROM shard_snapshots WHERE world = $1 AND instance = $2 AND shard = $3', [
      worldRef(key.namespace, key.world),
      key.instance,
      key.shard,
    ]);
  }
}

/**
 * The embedded default: one file per shard in a directory, `<world>.<instance>.<shard>.snapshot`,
 * in a subdirectory named after the namespace when there is one. A save writes a temporary file,
 * flushes it to disk, renames it over the old one and flushes the directory, so a crash or a power
 * loss leaves either the old or the new snapshot, never half, and a save that resolved survives
 * both. A save that fails removes its temporary file.
 */
/** How long a save to the snapshot directory may take (a 40 MB state on a slow disk takes seconds). */
export const DIRECTORY_SAVE_TIMEOUT_MS = 60_000;

export class DirectorySnapshotStore implements SnapshotStore {
  /** Numbers each save's temporary file: a save given up on (hung) never shares one with the next. */
  private saves = 0;
  /** Writes given up on (`save` timed out) that have not ended yet, by file. */
  private readonly abandoned = new Set<string>();

  /** `saveTimeoutMs`: how long a save may take (DIRECTORY_SAVE_TIMEOUT_MS by default). */
  constructor(
    private readonly dir: string,
    private readonly saveTimeoutMs = DIRECTORY_SAVE_TIMEOUT_MS,
  ) {}

  /**
   * Creates the directory and writes, syncs and removes a file in it: rejects when the shard could
   * not save there (read-only, no permission, not a directory), before the shard reports ready.
   */
  async check(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    const probe = join(this.dir, `.aethex-write-check.${process.pid}`);
    try {
      const out = await open(probe, 'w');
      try {
        await out.writeFile('ok');
        await out.sync();
      } finally {
        await out.close();
      }
    } finally {
      await rm(probe, { force: true });
    }
  }

  private file(key: ShardKey): string {
    return join(this.dir, key.namespace, `${key.world}.${key.instance}.${key.shard}.snapshot`);
  }

  async load(key: ShardKey): Promise<StoredSnapshot | undefined> {
    let bytes: Buffer;
    let savedAtMs: number;
    try {
      // One open file: the bytes and their time are the same file's, whatever a rename does meanwhile.
      const file = await open(this.file(key), 'r');
      try {
        bytes = await file.readFile();
        savedAtMs = (await file.stat()).mtimeMs;
      } finally {
        await file.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    if (bytes.length < 8) throw new UnreadableSnapshotError(`it is ${bytes.length} bytes, shorter than its 8-byte header`);
    const header = bytes.readBigUInt64LE(0);
    // Past 2^53 a tick is no exact number (tick + 1 === tick): a damaged header, not a world's age.
    if (header > BigInt(Number.MAX_SAFE_INTEGER))
      throw new UnreadableSnapshotError(`its tick header (${header}) is past 2^53, which no world reaches`);
    const tick = Number(header);
    return { tick, state: new Uint8Array(bytes.subarray(8)), savedAtMs };
  }

  /**
   * Bounded by `saveTimeoutMs`: a hung mount fails the save (counted, retried by the next)
   * instead of holding every later one. The write given up on goes on unawaited, and until it has
   * ended every save of that file fails at once: two writes of one file never overlap, so a
   * late one cannot put its older snapshot over a newer one stored between its check and its
   * rename, and a hung mount holds one write (its blob, a libuv thread), not one per attempt.
   */
  async save(key: ShardKey, snapshot: StoredSnapshot): Promise<void> {
    const file = this.file(key);
    if (this.abandoned.has(file)) {
      throw new Error(`an earlier write of ${file} that got no answer from the file system has not ended; not starting another`);
    }
    const writing = this.write(key, snapshot);
    if (!(await settledWithin(writing, this.saveTimeoutMs))) {
      this.abandoned.add(file);
      writing.then(
        () => this.abandoned.delete(file),
        () => this.abandoned.delete(file),
      );
      throw new Error(`no answer from the file system within ${this.saveTimeoutMs} ms`);
    }
    await writing;
  }

  private async write(key: ShardKey, snapshot: StoredSnapshot): Promise<void> {
    const file = this.file(key);
    await mkdir(dirname(file), { recursive: true });
    const header = Buffer.alloc(8);
    header.writeBigUInt64LE(BigInt(snapshot.tick));
    const tmp = `${file}.${process.pid}.${++this.saves}.tmp`;
    try {
      const out = await open(tmp, 'w');
      try {
        await out.writeFile(Buffer.concat([header, snapshot.state]));
        await out.sync();
      } finally {
        await out.close();
      }
      // Compared just before the rename, the written file ready: the window for a newer save between the two is short.
      const current = await this.load(key);
      if (current && current.tick > snapshot.tick) throw new StaleSnapshotError(snapshot.tick, current.tick);
      await rename(tmp, file);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    // The rename is durable once the directory's entry is.
    const dir = await open(dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

  async remove(key: ShardKey): Promise<void> {
    await rm(this.file(key), { force: true });
  }

  locate(key: ShardKey): { where: string; moveAside: string } {
    const file = this.file(key);
    return { where: `file ${file}`, moveAside: `to start without it, move it aside: mv ${file} ${file}.unreadable` };
  }
}
