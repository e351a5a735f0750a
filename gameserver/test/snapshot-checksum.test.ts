import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testEnv, uniqueName } from '@aethex/testing';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { decodeState, stateChecksum } from '../src/persist/state-codec.js';

// A snapshot corrupted in its store after the shard wrote it: the real main.ts refuses to start
// from it (exit 1), naming the snapshot, the checksum mismatch and how to move it aside.
const MAIN = join(import.meta.dirname, '../src/main.ts');
const env = testEnv();
const schema = uniqueName('gsck').replaceAll('-', '_');
const keys = generateKeyPairSync('ed25519');
let admin: pg.Pool;
let pool: pg.Pool;
let pgUrl: string;

beforeAll(async () => {
  admin = new pg.Pool({ connectionString: env.pgUrl, max: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = new URL(env.pgUrl);
  url.searchParams.set('options', `-c search_path=${schema}`);
  pgUrl = url.toString();
  pool = new pg.Pool({ connectionString: pgUrl, max: 1 });
});

afterEach(killProcesses);

afterAll(async () => {
  await pool.end();
  await admin.query(`DROP SCHEMA ${schema} CASCADE`);
  await admin.end();
});

function run(shardEnv: Record<string, string>) {
  return spawnSource(MAIN, [], {
    env: {
      AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
      AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_SHARD_NAME: 'test-0-0',
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '20',
      ...shardEnv,
    },
  });
}

/** Starts the shard and drains it (SIGTERM, exit 0): it has written its final snapshot. */
async function startAndDrain(shardEnv: Record<string, string>): Promise<void> {
  const p = run(shardEnv);
  await p.logged('shard started', 30_000);
  p.kill('SIGTERM');
  expect(await p.exit(), p.output()).toEqual({ code: 0, signal: null });
}

/** The byte of the first entity's x in a version-3 blob: a bit flipped there restored it elsewhere, silently, before the checksum. */
const firstX = (blob: Uint8Array) => 36 + 4 * new DataView(blob.buffer, blob.byteOffset, blob.byteLength).getUint32(16, true) + 2;

describe('a snapshot corrupted in its store stops the start with exit 1, naming it, the checksum mismatch and how to move it aside', () => {
  test.each(['directory', 'PostgreSQL'] as const)('%s', async (kind) => {
    const world = uniqueName(`ck-${kind === 'directory' ? 'dir' : 'pg'}`);
    const dir = mkdtempSync(join(tmpdir(), 'aethex-checksum-'));
    const file = join(dir, `${world}.0.test-0-0.snapshot`);
    const row = `world = '${world}' AND instance = 0 AND shard = 'test-0-0'`;
    const shardEnv = {
      AETHEX_GAMESERVER_SHARD_WORLD: world,
      ...(kind === 'directory' ? { AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir } : { AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: pgUrl }),
    };
    // The real shard writes the snapshot (assembled off the tick, its checksum in).
    await startAndDrain(shardEnv);
    const stored = async (): Promise<Uint8Array> =>
      kind === 'directory'
        ? new Uint8Array(readFileSync(file).subarray(8))
        : new Uint8Array((await pool.query<{ state: Buffer }>(`SELECT state FROM shard_snapshots WHERE ${row}`)).rows[0]?.state as Buffer);
    const blob = await stored();
    expect(decodeState(blob, 10_000).world.count).toBe(20);
    // One bit of one byte flipped where it lies: in the file, or in the row's bytea.
    const at = firstX(blob);
    if (kind === 'directory') {
      const bytes = readFileSync(file);
      bytes[8 + at] = (bytes[8 + at] as number) ^ 0x01;
      writeFileSync(file, bytes);
    } else {
      await pool.query(`UPDATE shard_snapshots SET state = set_byte(state, $1, get_byte(state, $1) # 1) WHERE ${row}`, [at]);
    }
    const corrupted = await stored();
    expect(corrupted.length).toBe(blob.length);
    expect(corrupted.findIndex((b, i) => b !== blob[i])).toBe(at);

    const refused = run(shardEnv);
    expect(await refused.exit(), refused.output()).toEqual({ code: 1, signal: null });
    // Not started from it (without the checksum it was, silently, with that entity elsewhere).
    expect(refused.output()).not.toMatch(/"restored from snapshot"|"shard started"/);
    const where = kind === 'directory' ? `file ${file}` : `PostgreSQL table shard_snapshots, row ${row}`;
    const moveAside =
      kind === 'directory' ? `mv ${file} ${file}.unreadable` : `UPDATE shard_snapshots SET world = world || '.unreadable' WHERE ${row}`;
    const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
    const [storedCrc, computedCrc] = [new DataView(blob.buffer, blob.byteOffset).getUint32(32, true), stateChecksum(corrupted)];
    expect(storedCrc).toBe(stateChecksum(blob));
    expect(refused.output()).toContain(
      `aethex-gameserver: could not start: the snapshot in ${where} could not be restored: state blob checksum mismatch (stored CRC-32 ${hex(storedCrc)}, computed ${hex(computedCrc)} over its ${blob.length} bytes): it was corrupted or cut short in the store; to start without it, move it aside: ${moveAside}\n`,
    );

    // Moved aside as it says, the shard starts (without it) and writes a good one.
    if (kind === 'directory') renameSync(file, `${file}.unreadable`);
    else await pool.query(moveAside);
    await startAndDrain(shardEnv);
    expect(decodeState(await stored(), 10_000).world.count).toBe(20);
  });
});
