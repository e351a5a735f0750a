import { createLogger } from '@aethex/runtime';
import { Client as MinioClient } from 'minio';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyRing, remoteKeySet } from '../src/auth/keys.js';
import { loadConfig } from '../src/config.js';
import { buildApp } from '../src/http/app.js';
import { openStores } from '../src/stores.js';
import { call, dropSchema, planeVars, register, spawnPlane, startPlane, testEnv, writeKeysFile } from './harness.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

describe('service shape', () => {
  it('gives every API route schemas for its params, query, body and responses', async () => {
    const plane = await startPlane();
    cleanups.push(
      () => plane.close(),
      () => dropSchema(testEnv(), plane.config['postgres.schema']),
    );
    const api = plane.app.routeTable.filter((r) => r.url.startsWith('/api/') || r.url.startsWith('/.well-known/'));
    expect(api.length).toBeGreaterThanOrEqual(14);
    for (const r of api) {
      const where = `${r.method} ${r.url}`;
      expect(r.schemas, where).toContain('response');
      expect(r.responses, where).toEqual(expect.arrayContaining(['400', '429', '500']));
      if (r.url.includes(':')) expect(r.schemas, where).toContain('params');
      if (['POST', 'PUT', 'PATCH'].includes(r.method)) expect(r.schemas, where).toContain('body');
      if (r.method === 'GET' && /saves\/:user_id(\/:slot(\/history)?)?$/.test(r.url)) expect(r.schemas, where).toContain('querystring');
    }
    // Latency per route pattern (not per URL) shows up in /metrics.
    const u = await register(plane.url, 'metrics@example.com');
    await call(plane.url, 'GET', '/api/v1/auth/me', { token: u.access });
    const metrics = (await call(plane.url, 'GET', '/metrics')).body as string;
    expect(metrics).toMatch(/aethex_http_request_duration_seconds_count\{method="GET",route="\/api\/v1\/auth\/me",status_code="200"\} 1/);
    const unknown = await call(plane.url, 'GET', '/api/v1/nope');
    expect(unknown.body).toEqual({ error: { code: 'NOT_FOUND', message: 'no route GET /api/v1/nope' } });
  });

  it('runs auth and saves as separate processes: saves verifies tokens from the auth JWKS', async () => {
    const env = testEnv();
    const keysFile = await writeKeysFile('ES256');
    const vars = planeVars(env, keysFile, { AETHEX_SERVICES: 'auth' });
    const auth = await spawnPlane(vars);
    cleanups.push(async () => {
      auth.child.kill('SIGKILL');
    });
    // The saves process shares the stores but has no private key: only the JWKS URL.
    const savesConfig = loadConfig({
      ...vars,
      AETHEX_SERVICES: 'saves',
      AETHEX_AUTH_SIGNING_KEYS_FILE: '',
      AETHEX_AUTH_JWKS_URL: `${auth.url}/.well-known/jwks.json`,
    });
    const log = createLogger('saves-test', 'warn');
    const stores = await openStores(savesConfig, log);
    const saves = await buildApp(savesConfig, { stores, log, verifyKeys: remoteKeySet(savesConfig['auth.jwks_url']) });
    const savesUrl = await saves.listen({ host: '127.0.0.1', port: 0 });
    cleanups.push(
      async () => {
        await saves.close();
        await stores.close();
      },
      () => dropSchema(env, vars.AETHEX_POSTGRES_SCHEMA as string),
    );
    expect((await call(savesUrl, 'POST', '/api/v1/auth/login', { body: { email: 'a@b.co', password: 'whatever1' } })).status).toBe(404);
    expect((await call(auth.url, 'GET', `/api/v1/saves/${crypto.randomUUID()}`)).status).toBe(404);
    const u = await register(auth.url, 'split@example.com');
    const put = await call(savesUrl, 'PUT', `/api/v1/saves/${u.id}/main`, {
      token: u.access,
      body: { data: 'aGk=', expected_version: null },
    });
    expect(put.status).toBe(200);
    // A token signed by a key the auth service does not publish is refused by the saves process.
    const stranger = await KeyRing.fromFile(await writeKeysFile('ES256'));
    const forged = await stranger.sign(
      { user_id: u.id, sid: 'x', roles: [], permissions: ['read:saves'] },
      u.id,
      Math.floor(Date.now() / 1000),
      900,
      'aethex',
      'aethex-api',
    );
    expect((await call(savesUrl, 'GET', `/api/v1/saves/${u.id}`, { token: forged })).status).toBe(401);
    // Logout through the auth process ends the session in the saves process too (shared Redis).
    await call(auth.url, 'POST', '/api/v1/auth/logout', { token: u.access, body: {} });
    expect((await call(savesUrl, 'GET', `/api/v1/saves/${u.id}`, { token: u.access })).status).toBe(401);
  });

  it('reports not ready, naming the store, when the bucket is gone', async () => {
    const plane = await startPlane();
    cleanups.push(
      () => plane.close(),
      () => dropSchema(testEnv(), plane.config['postgres.schema']),
    );
    expect((await call(plane.url, 'GET', '/readyz')).status).toBe(200);
    const env = testEnv();
    const url = new URL(env.s3.endpoint);
    const minio = new MinioClient({
      endPoint: url.hostname,
      port: Number(url.port),
      useSSL: false,
      accessKey: env.s3.accessKey,
      secretKey: env.s3.secretKey,
    });
    await minio.removeBucket(plane.config['s3.bucket']);
    const r = await call(plane.url, 'GET', '/readyz');
    expect(r.status).toBe(503);
    expect(r.body.error.message).toMatch(/^S3: bucket .* is missing$/);
    expect((await call(plane.url, 'GET', '/healthz')).status).toBe(200);
  });

  it('exits 2 naming the variable on bad configuration, and 0 on SIGTERM after draining', async () => {
    const env = testEnv();
    const bad = spawnPlane(planeVars(env, '/nonexistent', { AETHEX_AUTH_ACCESS_TTL_S: '5' }));
    await expect(bad).rejects.toThrow(
      /exited with 2:[\s\S]*auth\.access_ttl_s: expected an integer from 60 to 3600, got "5" \(from AETHEX_AUTH_ACCESS_TTL_S\)/,
    );

    const vars = planeVars(env, await writeKeysFile());
    cleanups.push(() => dropSchema(env, vars.AETHEX_POSTGRES_SCHEMA as string));
    const p = await spawnPlane(vars);
    expect((await call(p.url, 'GET', '/healthz')).status).toBe(200);
    const exited = new Promise<number | null>((resolve) => p.child.on('exit', (code) => resolve(code)));
    p.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(p.output()).toContain('shutting down');
  });

  it('exits 1 naming http.listen when its address cannot be listened on, and 2 when it is not an address', async () => {
    const env = testEnv();
    const vars = planeVars(env, await writeKeysFile());
    cleanups.push(() => dropSchema(env, vars.AETHEX_POSTGRES_SCHEMA as string));
    // TEST-NET-2 (RFC 5737): an address, but none of this machine's.
    await expect(spawnPlane({ ...vars, AETHEX_HTTP_LISTEN: '198.51.100.7:0' })).rejects.toThrow(
      /exited with 1:[\s\S]*control-plane: could not start: http\.listen \(198\.51\.100\.7:0\): no interface of this machine has that address \(EADDRNOTAVAIL\)/,
    );
    await expect(spawnPlane({ ...vars, AETHEX_HTTP_LISTEN: '-.-:7400' })).rejects.toThrow(
      /exited with 2:[\s\S]*http\.listen: expected host:port .*-\.- is not a host name/,
    );
  });
});
