import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { type ShardKey, worldRef } from '@aethex/runtime';
import type pg from 'pg';

export interface StoredSnapshot {
  tick: number;
  state: Uint8Array;
}

/**
 * Where a shard's state blob lives: one current snapshot per shard, replaced by each save. A save
 * with a tick lower than the stored one is ignored, so a delayed write never rolls state back.
 */
export interface SnapshotStore {
  load(key: ShardKey): Promise<StoredSnapshot | undefined>;
  save(key: ShardKey, snapshot: StoredSnapshot): Promise<void>;
  /** Removes a shard's snapshot (the world was deleted). */
  remove(key: ShardKey): Promise<void>;
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
  PRIMARY KEY (world, instance, shard)
)`;

/** Snapshots as rows of PostgreSQL's `shard_snapshots` (one per shard). */
export class PostgresSnapshotStore implements SnapshotStore {
  constructor(private readonly pool: pg.Pool) {}

  async load(key: ShardKey): Promise<StoredSnapshot | undefined> {
    const { rows } = await this.pool.query<{ tick: string; state: Buffer }>(
      'SELECT tick, state FROM shard_snapshots WHERE world = $1 AND instance = $2 AND shard = $3',
      [worldRef(key.namespace, key.world), key.instance, key.shard],
    );
    const row = rows[0];
    return row ? { tick: Number(row.tick), state: new Uint8Array(row.state) } : undefined;
  }

  async save(key: ShardKey, snapshot: StoredSnapshot): Promise<void> {
    await this.pool.query(
      `INSERT INTO shard_snapshots (world, instance, shard, tick, state) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (world, instance, shard) DO UPDATE SET tick = EXCLUDED.tick, state = EXCLUDED.state, saved_at = now()
       WHERE shard_snapshots.tick <= EXCLUDED.tick`,
      [
        worldRef(key.namespace, key.world),
        key.instance,
        key.shard,
        snapshot.tick,
        Buffer.from(snapshot.state.buffer, snapshot.state.byteOffset, snapshot.state.byteLength),
      ],
    );
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
 * in a subdirectory named after the namespace when there is one. Writes go to a temporary file that
 * is then renamed over the old one, so a crash leaves either the old or the new snapshot, never half.
 */
export class DirectorySnapshotStore implements SnapshotStore {
  constructor(private readonly dir: string) {}

  private file(key: ShardKey): string {
    return join(this.dir, key.namespace, `${key.world}.${key.instance}.${key.shard}.snapshot`);
  }

  async load(key: ShardKey): Promise<StoredSnapshot | undefined> {
    let bytes: Buffer;
    try {
      bytes = await readFile(this.file(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    if (bytes.length < 8) throw new Error(`snapshot file ${this.file(key)} is truncated`);
    const tick = Number(bytes.readBigUInt64LE(0));
    return { tick, state: new Uint8Array(bytes.subarray(8)) };
  }

  async save(key: ShardKey, snapshot: StoredSnapshot): Promise<void> {
    const current = await this.load(key);
    if (current && current.tick > snapshot.tick) return;
    await mkdir(dirname(this.file(key)), { recursive: true });
    const header = Buffer.alloc(8);
    header.writeBigUInt64LE(BigInt(snapshot.tick));
    const tmp = `${this.file(key)}.${process.pid}.tmp`;
    await writeFile(tmp, Buffer.concat([header, snapshot.state]));
    await rename(tmp, this.file(key));
  }

  async remove(key: ShardKey): Promise<void> {
    await rm(this.file(key), { force: true });
  }
}
