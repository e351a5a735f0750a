import type pg from 'pg';
import { AppError } from '../errors.js';
import { quotaCheck, writeAllowed } from './domain.js';

export interface SaveMeta {
  slot: string;
  version: number;
  size: number;
  stored_size: number;
  checksum: string;
  device_id: string;
  game_version: string;
  engine_version: string;
  restored_from: number | null;
  created_at: string;
}

export interface StoredVersion extends SaveMeta {
  object_key: string;
  object_version: string;
}

interface VersionRow {
  slot: string;
  version: string;
  size: string;
  stored_size: string;
  checksum: string;
  device_id: string;
  game_version: string;
  engine_version: string;
  restored_from: string | null;
  created_at: Date;
  object_key: string;
  object_version: string;
}

const VERSION_COLUMNS =
  'v.slot, v.version, v.size, v.stored_size, v.checksum, v.device_id, v.game_version, v.engine_version, v.restored_from, v.created_at, v.object_key, v.object_version';

function toStored(r: VersionRow): StoredVersion {
  return {
    slot: r.slot,
    version: Number(r.version),
    size: Number(r.size),
    stored_size: Number(r.stored_size),
    checksum: r.checksum,
    device_id: r.device_id,
    game_version: r.game_version,
    engine_version: r.engine_version,
    restored_from: r.restored_from === null ? null : Number(r.restored_from),
    created_at: r.created_at.toISOString(),
    object_key: r.object_key,
    object_version: r.object_version,
  };
}

/** Strips storage internals from a stored version: what clients see. */
export function metaView(v: StoredVersion): SaveMeta {
  const { object_key: _k, object_version: _v, ...meta } = v;
  return meta;
}

export interface Limits {
  quotaBytes: number;
  maxSlots: number;
  historyLimit: number;
}

export interface NewVersion {
  objectKey: string;
  objectVersion: string;
  size: number;
  storedSize: number;
  checksum: string;
  deviceId: string;
  gameVersion: string;
  engineVersion: string;
  restoredFrom: number | null;
}

export type CommitResult =
  | { kind: 'ok'; meta: SaveMeta; unreferenced: { key: string; versionId: string }[] }
  | { kind: 'conflict'; current: SaveMeta | null };

/**
 * Save metadata in PostgreSQL. Every change to a user's saves runs in one transaction that first
 * locks the user's row, so writes to one user are serialized: each version number has exactly
 * one winner, and quota checks see a consistent total.
 */
export class SavesRepository {
  constructor(private readonly pool: pg.Pool) {}

  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  private static async lockUser(c: pg.PoolClient, userId: string): Promise<void> {
    const r = await c.query('SELECT 1 FROM users WHERE id = $1 FOR UPDATE', [userId]);
    if (r.rowCount === 0) throw new AppError('USER_NOT_FOUND', 'no such user');
  }

  private static async version(
    c: pg.PoolClient | pg.Pool,
    userId: string,
    slot: string,
    version: number,
  ): Promise<StoredVersion | undefined> {
    const r = await c.query<VersionRow>(
      `SELECT ${VERSION_COLUMNS} FROM save_versions v WHERE v.user_id = $1 AND v.slot = $2 AND v.version = $3`,
      [userId, slot, version],
    );
    return r.rows[0] ? toStored(r.rows[0]) : undefined;
  }

  /** The current version of a slot, or a given one; undefined when there is none. */
  async get(userId: string, slot: string, version?: number): Promise<StoredVersion | undefined> {
    if (version !== undefined) return SavesRepository.version(this.pool, userId, slot, version);
    const r = await this.pool.query<VersionRow>(
      `SELECT ${VERSION_COLUMNS} FROM save_slots s JOIN save_versions v ON v.user_id = s.user_id AND v.slot = s.slot AND v.version = s.version
        WHERE s.user_id = $1 AND s.slot = $2`,
      [userId, slot],
    );
    return r.rows[0] ? toStored(r.rows[0]) : undefined;
  }

  /** The user's slots with their current metadata, by slot name, after `after`, at most `limit`. */
  async list(userId: string, after: string | undefined, limit: number): Promise<SaveMeta[]> {
    const r = await this.pool.query<VersionRow>(
      `SELECT ${VERSION_COLUMNS} FROM save_slots s JOIN save_versions v ON v.user_id = s.user_id AND v.slot = s.slot AND v.version = s.version
        WHERE s.user_id = $1 AND ($2::text IS NULL OR s.slot > $2) ORDER BY s.slot LIMIT $3`,
      [userId, after ?? null, limit],
    );
    return r.rows.map((x) => metaView(toStored(x)));
  }

  /** Kept versions of a slot, newest first, older than `before`, at most `limit`. */
  async history(userId: string, slot: string, before: number | undefined, limit: number): Promise<SaveMeta[]> {
    const r = await this.pool.query<VersionRow>(
      `SELECT ${VERSION_COLUMNS} FROM save_versions v WHERE v.user_id = $1 AND v.slot = $2 AND ($3::bigint IS NULL OR v.version < $3)
        ORDER BY v.version DESC LIMIT $4`,
      [userId, slot, before ?? null, limit],
    );
    return r.rows.map((x) => metaView(toStored(x)));
  }

  /**
   * Commits a new version of a slot if `expected` still names the current one (null: the slot must
   * not exist), within the quota; prunes versions past the history limit. `source` gives the
   * blob: a fresh upload, or `{ restore: n }` to point at version n's blob.
   */
  async commit(
    userId: string,
    slot: string,
    expected: number | null,
    source: NewVersion | { restore: number; deviceId: string },
    limits: Limits,
  ): Promise<CommitResult> {
    return this.tx(async (c) => {
      await SavesRepository.lockUser(c, userId);
      const cur = await c.query<{ version: string; size: string }>(
        'SELECT version, size FROM save_slots WHERE user_id = $1 AND slot = $2',
        [userId, slot],
      );
      const current = cur.rows[0] ? { version: Number(cur.rows[0].version), size: Number(cur.rows[0].size) } : undefined;
      if (!writeAllowed(current?.version, expected)) {
        const meta = current ? await SavesRepository.version(c, userId, slot, current.version) : undefined;
        return { kind: 'conflict' as const, current: meta ? metaView(meta) : null };
      }
      let v: NewVersion;
      if ('restore' in source) {
        const old = await SavesRepository.version(c, userId, slot, source.restore);
        if (!old) throw new AppError('SAVES_NOT_FOUND', `version ${source.restore} of slot ${slot} is not kept (pruned or never written)`);
        v = {
          objectKey: old.object_key,
          objectVersion: old.object_version,
          size: old.size,
          storedSize: old.stored_size,
          checksum: old.checksum,
          deviceId: source.deviceId,
          gameVersion: old.game_version,
          engineVersion: old.engine_version,
          restoredFrom: old.version,
        };
      } else {
        v = source;
      }
      const used = await c.query<{ bytes: string; slots: string }>(
        'SELECT coalesce(sum(size), 0) AS bytes, count(*) AS slots FROM save_slots WHERE user_id = $1',
        [userId],
      );
      quotaCheck({
        usedBytes: Number(used.rows[0]?.bytes),
        replacedBytes: current?.size ?? 0,
        newBytes: v.size,
        quotaBytes: limits.quotaBytes,
        slots: Number(used.rows[0]?.slots),
        newSlot: current === undefined,
        maxSlots: limits.maxSlots,
      });
      const version = (current?.version ?? 0) + 1;
      const inserted = await c.query<VersionRow>(
        `INSERT INTO save_versions AS v (user_id, slot, version, object_key, object_version, size, stored_size, checksum, device_id, game_version, engine_version, restored_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ${VERSION_COLUMNS}`,
        [
          userId,
          slot,
          version,
          v.objectKey,
          v.objectVersion,
          v.size,
          v.storedSize,
          v.checksum,
          v.deviceId,
          v.gameVersion,
          v.engineVersion,
          v.restoredFrom,
        ],
      );
      await c.query(
        `INSERT INTO save_slots (user_id, slot, version, size, updated_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (user_id, slot) DO UPDATE SET version = EXCLUDED.version, size = EXCLUDED.size, updated_at = EXCLUDED.updated_at`,
        [userId, slot, version, v.size],
      );
      const unreferenced = await SavesRepository.deleteVersions(c, userId, slot, `version <= $3`, [version - limits.historyLimit]);
      return { kind: 'ok' as const, meta: metaView(toStored(inserted.rows[0] as VersionRow)), unreferenced };
    });
  }

  /** Deletes a slot and all its versions if `expected` is current; returns the blobs nothing references now. */
  async remove(
    userId: string,
    slot: string,
    expected: number,
  ): Promise<{ kind: 'ok'; unreferenced: { key: string; versionId: string }[] } | { kind: 'conflict'; current: SaveMeta | null }> {
    return this.tx(async (c) => {
      await SavesRepository.lockUser(c, userId);
      const cur = await c.query<{ version: string }>('SELECT version FROM save_slots WHERE user_id = $1 AND slot = $2', [userId, slot]);
      const current = cur.rows[0] ? Number(cur.rows[0].version) : undefined;
      if (current === undefined) throw new AppError('SAVES_NOT_FOUND', `no save in slot ${slot}`);
      if (current !== expected) {
        const meta = await SavesRepository.version(c, userId, slot, current);
        return { kind: 'conflict' as const, current: meta ? metaView(meta) : null };
      }
      await c.query('DELETE FROM save_slots WHERE user_id = $1 AND slot = $2', [userId, slot]);
      const unreferenced = await SavesRepository.deleteVersions(c, userId, slot, 'true', []);
      return { kind: 'ok' as const, unreferenced };
    });
  }

  // Deletes version rows matching `where` and returns the object versions no remaining row uses.
  private static async deleteVersions(
    c: pg.PoolClient,
    userId: string,
    slot: string,
    where: string,
    args: unknown[],
  ): Promise<{ key: string; versionId: string }[]> {
    const gone = await c.query<{ object_key: string; object_version: string }>(
      `DELETE FROM save_versions WHERE user_id = $1 AND slot = $2 AND ${where} RETURNING object_key, object_version`,
      [userId, slot, ...args],
    );
    if (gone.rowCount === 0) return [];
    const still = await c.query<{ object_version: string }>(
      'SELECT DISTINCT object_version FROM save_versions WHERE user_id = $1 AND slot = $2 AND object_version = ANY($3::text[])',
      [userId, slot, gone.rows.map((r) => r.object_version)],
    );
    const kept = new Set(still.rows.map((r) => r.object_version));
    const out = new Map<string, { key: string; versionId: string }>();
    for (const r of gone.rows)
      if (!kept.has(r.object_version)) out.set(r.object_version, { key: r.object_key, versionId: r.object_version });
    return [...out.values()];
  }
}
