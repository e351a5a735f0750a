import pg from 'pg';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { testEnv, uniqueName } from '../env.js';

const env = testEnv();
const schema = uniqueName('smoke').replaceAll('-', '_');
const pool = new pg.Pool({ connectionString: env.pgUrl, max: 2 });

beforeAll(async () => {
  await pool.query(`CREATE SCHEMA ${schema}`);
});
afterAll(async () => {
  await pool.query(`DROP SCHEMA ${schema} CASCADE`);
  await pool.end();
});

test('PostgreSQL 15 round-trips rows in a schema of its own', async () => {
  const { rows: version } = await pool.query<{ server_version_num: string }>('SHOW server_version_num');
  expect(Number(version[0]?.server_version_num)).toBeGreaterThanOrEqual(150000);

  await pool.query(`CREATE TABLE ${schema}.items (id serial PRIMARY KEY, name text NOT NULL, data jsonb)`);
  await pool.query(`INSERT INTO ${schema}.items (name, data) VALUES ($1, $2), ($3, $4)`, ['a', { n: 1 }, 'b', { n: 2 }]);
  const { rows } = await pool.query<{ name: string; data: { n: number } }>(`SELECT name, data FROM ${schema}.items ORDER BY id`);
  expect(rows).toEqual([
    { name: 'a', data: { n: 1 } },
    { name: 'b', data: { n: 2 } },
  ]);
});

test('PostgreSQL enforces transactions: a rolled-back insert is not visible', async () => {
  await pool.query(`CREATE TABLE ${schema}.tx (v int)`);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`INSERT INTO ${schema}.tx VALUES (1)`);
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM ${schema}.tx`);
  expect(rows[0]).toEqual({ n: 0 });
});
