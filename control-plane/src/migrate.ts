import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import type pg from 'pg';

/** Where the versioned SQL files live: `NNN_name.sql`, applied in order, never edited once released. */
export const MIGRATIONS_DIR = new URL('../migrations/', import.meta.url);

export interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

/** Reads the migration files; refuses gaps, duplicates and names that do not match `NNN_name.sql`. */
export function readMigrations(dir: URL = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort();
  return files.map((file, i) => {
    const m = /^(\d{3})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!m) throw new Error(`migration file ${file} is not named NNN_name.sql`);
    const version = Number(m[1]);
    if (version !== i + 1) throw new Error(`migration ${file}: expected version ${i + 1} (no gaps, no duplicates)`);
    const sql = readFileSync(new URL(file, dir), 'utf8');
    return { version, name: m[2] as string, sql, checksum: createHash('sha256').update(sql).digest('hex') };
  });
}

/**
 * Applies the pending migrations in `schema`, each in its own transaction. Safe with several
 * replicas starting at once: a session advisory lock serializes them, and a replica that waited
 * finds the work done. An applied migration whose file changed since is refused.
 */
export async function migrate(pool: pg.Pool, schema: string, migrations: Migration[] = readMigrations()): Promise<number[]> {
  const client = await pool.connect();
  const applied: number[] = [];
  try {
    await client.query("SELECT pg_advisory_lock(hashtext('aethex-control-plane-migrations'), hashtext($1))", [schema]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await client.query(`SET search_path TO ${schema}`);
      await client.query(
        `CREATE TABLE IF NOT EXISTS schema_migrations (
           version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const done = new Map<number, string>();
      for (const row of (await client.query<{ version: number; checksum: string }>('SELECT version, checksum FROM schema_migrations'))
        .rows) {
        done.set(row.version, row.checksum);
      }
      for (const m of migrations) {
        const have = done.get(m.version);
        if (have !== undefined) {
          if (have !== m.checksum) throw new Error(`migration ${m.version} (${m.name}) was changed after it was applied`);
          continue;
        }
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [
            m.version,
            m.name,
            m.checksum,
          ]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw new Error(`migration ${m.version} (${m.name}) failed: ${(err as Error).message}`, { cause: err });
        }
        applied.push(m.version);
      }
    } finally {
      await client
        .query("SELECT pg_advisory_unlock(hashtext('aethex-control-plane-migrations'), hashtext($1))", [schema])
        .catch(() => undefined);
    }
  } finally {
    client.release(true);
  }
  return applied;
}
