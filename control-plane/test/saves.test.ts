import { createHash, randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { Client as MinioClient } from 'minio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, dropSchema, grantRole, register, startPlane, type TestPlane, testEnv } from './harness.js';

let plane: TestPlane;
let a: { id: string; access: string };
beforeAll(async () => {
  plane = await startPlane({
    AETHEX_SAVES_MAX_BYTES: '4096',
    AETHEX_SAVES_QUOTA_BYTES: '10000',
    AETHEX_SAVES_MAX_SLOTS: '4',
    AETHEX_SAVES_HISTORY_LIMIT: '3',
  });
  a = await register(plane.url, 'saver@example.com');
});
afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

const b64 = (b: Buffer) => b.toString('base64');
const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const put = (slot: string, data: Buffer, expected: number | null, extra: Record<string, unknown> = {}, token = a.access, user = a.id) =>
  call(plane.url, 'PUT', `/api/v1/saves/${user}/${slot}`, { token, body: { data: b64(data), expected_version: expected, ...extra } });
const get = (path: string, token = a.access) => call(plane.url, 'GET', `/api/v1/saves/${a.id}${path}`, { token });

describe('saves', () => {
  it('creates, replaces with the version it names, and refuses a stale write with the current metadata', async () => {
    const v1 = Buffer.from('first');
    const c = await put('hero', v1, null, { device_id: 'pc-1', game_version: '1.2.0', engine_version: 'aethex-0.1' });
    expect(c.status).toBe(200);
    expect(c.body).toMatchObject({
      slot: 'hero',
      version: 1,
      size: 5,
      checksum: sha(v1),
      device_id: 'pc-1',
      game_version: '1.2.0',
      restored_from: null,
    });
    expect((await put('hero', Buffer.from('again'), null)).status).toBe(409);
    const v2 = Buffer.from('second');
    expect((await put('hero', v2, 1)).body.version).toBe(2);
    const stale = await put('hero', Buffer.from('stale'), 1);
    expect(stale.status).toBe(409);
    expect(stale.body.error.code).toBe('SAVES_VERSION_CONFLICT');
    expect(stale.body.error.data.current).toMatchObject({ version: 2, checksum: sha(v2) });
    const cur = await get('/hero');
    expect(Buffer.from(cur.body.data, 'base64')).toEqual(v2);
    expect(cur.body.meta.version).toBe(2);
    const old = await get('/hero?version=1');
    expect(Buffer.from(old.body.data, 'base64')).toEqual(v1);
    expect((await put('nothing-here', Buffer.from('x'), 5)).body.error).toMatchObject({
      code: 'SAVES_VERSION_CONFLICT',
      data: { current: null },
    });
  });

  it('stores gzip in a versioned bucket and round-trips every byte value', async () => {
    const data = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const r = await put('bytes', data, null);
    expect(r.body.stored_size).toBeGreaterThan(0);
    expect(Buffer.from((await get('/bytes')).body.data, 'base64')).toEqual(data);
    const env = testEnv();
    const url = new URL(env.s3.endpoint);
    const minio = new MinioClient({
      endPoint: url.hostname,
      port: Number(url.port),
      useSSL: false,
      accessKey: env.s3.accessKey,
      secretKey: env.s3.secretKey,
    });
    expect(await minio.getBucketVersioning(plane.config['s3.bucket'])).toMatchObject({ Status: 'Enabled' });
    const { rows } = await plane.stores.pg.query(
      "SELECT object_key, object_version FROM save_versions WHERE user_id = $1 AND slot = 'bytes'",
      [a.id],
    );
    expect(rows[0].object_key).toMatch(new RegExp(`^${a.id}/bytes/[0-9a-f-]{36}$`));
    const stream = await minio.getObject(plane.config['s3.bucket'], rows[0].object_key, { versionId: rows[0].object_version });
    const chunks: Buffer[] = [];
    for await (const ch of stream) chunks.push(ch as Buffer);
    expect(gunzipSync(Buffer.concat(chunks))).toEqual(data);
  });

  it('keeps history, restores an old version as a new one, and prunes past the history limit', async () => {
    const vs = ['h1', 'h2', 'h3'].map((s) => Buffer.from(s));
    await put('hist', vs[0] as Buffer, null);
    await put('hist', vs[1] as Buffer, 1);
    await put('hist', vs[2] as Buffer, 2);
    const h = await get('/hist/history?limit=2');
    expect(h.body.versions.map((v: { version: number }) => v.version)).toEqual([3, 2]);
    expect(h.body.next_before).toBe(2);
    expect((await get('/hist/history?before=2')).body.versions.map((v: { version: number }) => v.version)).toEqual([1]);
    const restored = await call(plane.url, 'POST', `/api/v1/saves/${a.id}/hist/restore`, {
      token: a.access,
      body: { version: 1, expected_version: 3 },
    });
    expect(restored.status).toBe(200);
    expect(restored.body).toMatchObject({ version: 4, restored_from: 1, checksum: sha(vs[0] as Buffer) });
    // History limit 3: version 1 is pruned, but its blob is still what version 4 points at.
    expect((await get('/hist?version=1')).status).toBe(404);
    expect(Buffer.from((await get('/hist')).body.data, 'base64')).toEqual(vs[0]);
    const staleRestore = await call(plane.url, 'POST', `/api/v1/saves/${a.id}/hist/restore`, {
      token: a.access,
      body: { version: 2, expected_version: 3 },
    });
    expect(staleRestore.status).toBe(409);
    const gone = await call(plane.url, 'POST', `/api/v1/saves/${a.id}/hist/restore`, {
      token: a.access,
      body: { version: 1, expected_version: 4 },
    });
    expect(gone.body.error.code).toBe('SAVES_NOT_FOUND');
  });

  it('deletes only at the named version', async () => {
    await put('doomed', Buffer.from('bye'), null);
    const stale = await call(plane.url, 'DELETE', `/api/v1/saves/${a.id}/doomed?expected_version=2`, { token: a.access });
    expect(stale.status).toBe(409);
    expect((await call(plane.url, 'DELETE', `/api/v1/saves/${a.id}/doomed?expected_version=1`, { token: a.access })).status).toBe(204);
    expect((await get('/doomed')).body.error.code).toBe('SAVES_NOT_FOUND');
    expect((await get('/doomed/history')).body.versions).toEqual([]);
    const { rows } = await plane.stores.pg.query("SELECT action, data FROM audit_log WHERE user_id = $1 AND action = 'save_deleted'", [
      a.id,
    ]);
    expect(rows).toEqual([{ action: 'save_deleted', data: { slot: 'doomed', version: 1 } }]);
  });

  it('enforces the size limit, the quota and the slot count with 413', async () => {
    const u = await register(plane.url, 'quota@example.com');
    const big = await put('big', randomBytes(4097), null, {}, u.access, u.id);
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('SAVES_TOO_LARGE');
    expect((await put('q1', randomBytes(4000), null, {}, u.access, u.id)).status).toBe(200);
    expect((await put('q2', randomBytes(4000), null, {}, u.access, u.id)).status).toBe(200);
    const over = await put('q3', randomBytes(4000), null, {}, u.access, u.id);
    expect(over.status).toBe(413);
    expect(over.body.error).toMatchObject({ code: 'SAVES_QUOTA_EXCEEDED', data: { quota_bytes: 10000, used_bytes: 8000 } });
    // Replacing a slot counts only the difference.
    expect((await put('q2', randomBytes(4096), 1, {}, u.access, u.id)).status).toBe(200);
    expect((await put('s3', Buffer.from('x'), null, {}, u.access, u.id)).status).toBe(200);
    expect((await put('s4', Buffer.from('x'), null, {}, u.access, u.id)).status).toBe(200);
    const slots = await put('s5', Buffer.from('x'), null, {}, u.access, u.id);
    expect(slots.body.error).toMatchObject({ code: 'SAVES_QUOTA_EXCEEDED', data: { max_slots: 4 } });
    const list = await call(plane.url, 'GET', `/api/v1/saves/${u.id}?limit=3`, { token: u.access });
    expect(list.body.saves.map((s: { slot: string }) => s.slot)).toEqual(['q1', 'q2', 's3']);
    expect(list.body.next_after).toBe('s3');
    const rest = await call(plane.url, 'GET', `/api/v1/saves/${u.id}?limit=3&after=s3`, { token: u.access });
    expect(rest.body).toEqual({ saves: [expect.objectContaining({ slot: 's4' })], next_after: null });
  });

  it('refuses bad input with the field named', async () => {
    expect((await put('bad slot', Buffer.from('x'), null)).status).toBe(400);
    const notB64 = await call(plane.url, 'PUT', `/api/v1/saves/${a.id}/s`, {
      token: a.access,
      body: { data: '!!!', expected_version: null },
    });
    expect(notB64.body.error.message).toContain('body/data');
    const badSum = await put('sum', Buffer.from('abc'), null, { checksum: sha(Buffer.from('abd')) });
    expect(badSum.status).toBe(400);
    expect(badSum.body.error.message).toContain('checksum');
    expect((await call(plane.url, 'GET', '/api/v1/saves/not-a-uuid', { token: a.access })).body.error.message).toContain('params/user_id');
    expect((await get('?limit=1000')).body.error.message).toContain('querystring/limit');
    const missing = await call(plane.url, 'PUT', `/api/v1/saves/${a.id}/s`, { token: a.access, body: { data: '' } });
    expect(missing.body.error.message).toContain('expected_version');
  });

  it('lets an admin act on another user, and 404s for a user that does not exist', async () => {
    const admin = await register(plane.url, 'admin@example.com');
    await grantRole(plane, admin.id, 'admin');
    const token = (
      await call(plane.url, 'POST', '/api/v1/auth/login', { body: { email: 'admin@example.com', password: 'correct horse battery' } })
    ).body.access_token;
    expect((await get('/hero', token)).status).toBe(200);
    const ghost = await put('x', Buffer.from('x'), null, {}, token, '00000000-0000-4000-8000-000000000000');
    expect(ghost.status).toBe(404);
    expect(ghost.body.error.code).toBe('USER_NOT_FOUND');
  });

  it('gives concurrent writers of one version exactly one winner', async () => {
    await put('race', Buffer.from('base'), null);
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => put('race', Buffer.from(`writer-${i}`), 1)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(11);
    const winner = results.find((r) => r.status === 200);
    expect((await get('/race')).body.meta.checksum).toBe(winner?.body.checksum);
  });
});
