import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { migrate, readMigrations } from '../src/migrate.js';
import { dropSchema, testEnv, uniqueName } from './harness.js';

const schemas: string[] = [];
afterAll(async () => {
  for (const s of schemas) await dropSchema(testEnv(), s);
});

describe('migrations', () => {
  it('apply once when several replicas start at the same moment, and are idempotent after', async () => {
    const schema = uniqueName('mig').replaceAll('-', '_');
    schemas.push(schema);
    const pools = Array.from({ length: 4 }, () => new pg.Pool({ connectionString: testEnv().pgUrl, max: 2 }));
    try {
      const applied = await Promise.all(pools.map((p) => migrate(p, schema)));
      const all = readMigrations().map((m) => m.version);
      // Exactly one replica applied each migration; the others found it done.
      expect(applied.flat().sort()).toEqual(all);
      expect(await migrate(pools[0] as pg.Pool, schema)).toEqual([]);
      const { rows } = await (pools[0] as pg.Pool).query(`SELECT version FROM ${schema}.schema_migrations ORDER BY version`);
      expect(rows.map((r) => r.version)).toEqual(all);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });

  it('refuse to run when an applied migration file was edited', async () => {
    const schema = uniqueName('mig').replaceAll('-', '_');
    schemas.push(schema);
    const pool = new pg.Pool({ connectionString: testEnv().pgUrl, max: 1 });
    try {
      await migrate(pool, schema);
      const edited = readMigrations().map((m, i) => (i === 0 ? { ...m, checksum: 'edited' } : m));
      await expect(migrate(pool, schema, edited)).rejects.toThrow(/migration 1 \(init\) was changed after it was applied/);
    } finally {
      await pool.end();
    }
  });
});
