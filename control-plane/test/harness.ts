import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '@aethex/runtime';
import { type TestEnv, testEnv, uniqueName } from '@aethex/testing';
import pg from 'pg';
import { generateSigningKeys, KeyRing } from '../src/auth/keys.js';
import { type ControlPlaneConfig, loadConfig } from '../src/config.js';
import { type App, buildApp } from '../src/http/app.js';
import { openStores, type Stores } from '../src/stores.js';

export { testEnv, uniqueName };

export interface TestPlane {
  app: App;
  url: string;
  config: ControlPlaneConfig;
  stores: Stores;
  keys: KeyRing;
  keysFile: string;
  /** The `AETHEX_*` variables this plane was configured with (for a child process to share its stores). */
  vars: Record<string, string>;
  close(): Promise<void>;
}

/**
 * The variables of a control plane on the test environment's servers, with its own PostgreSQL
 * schema, S3 bucket and Redis key prefix so tests never share state.
 */
export function planeVars(env: TestEnv, keysFile: string, overrides: Record<string, string> = {}): Record<string, string> {
  const name = uniqueName('cp').replaceAll('-', '_').toLowerCase();
  return {
    AETHEX_POSTGRES_URL: env.pgUrl,
    AETHEX_POSTGRES_SCHEMA: name,
    AETHEX_REDIS_URL: env.redisUrl,
    AETHEX_REDIS_KEY_PREFIX: `${name}:`,
    AETHEX_S3_ENDPOINT: env.s3.endpoint,
    AETHEX_S3_ACCESS_KEY: env.s3.accessKey,
    AETHEX_S3_SECRET_KEY: env.s3.secretKey,
    AETHEX_S3_BUCKET: name.replaceAll('_', '-'),
    AETHEX_AUTH_SIGNING_KEYS_FILE: keysFile,
    AETHEX_HTTP_LISTEN: '127.0.0.1:0',
    AETHEX_LOG_LEVEL: 'warn',
    ...overrides,
  };
}

/** Writes a fresh signing-key file (EdDSA unless told) and returns its path. */
export async function writeKeysFile(alg: 'EdDSA' | 'ES256' = 'EdDSA'): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-cp-keys-'));
  const file = join(dir, 'keys.json');
  writeFileSync(file, JSON.stringify(await generateSigningKeys(alg, 'test-key-1')));
  return file;
}

/** Builds the control plane in this process, listening on a free loopback port, on real stores. */
export async function startPlane(overrides: Record<string, string> = {}): Promise<TestPlane> {
  const env = testEnv();
  const keysFile = overrides.AETHEX_AUTH_SIGNING_KEYS_FILE ?? (await writeKeysFile());
  const vars = planeVars(env, keysFile, overrides);
  const config = loadConfig(vars);
  const log = createLogger('control-plane-test', 'warn');
  const keys = await KeyRing.fromFile(keysFile);
  const stores = await openStores(config, log);
  const app = await buildApp(config, { stores, log, keys });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    app,
    url,
    config,
    stores,
    keys,
    keysFile,
    vars,
    async close() {
      // Teardown: do not wait out keep-alive sockets of requests a failed test left in flight.
      app.server.closeAllConnections();
      await app.close();
      await stores.close();
    },
  };
}

/** A JSON call over a real socket; `from` picks the loopback source address (127.0.0.x). */
export function call(
  base: string,
  method: string,
  path: string,
  o: { token?: string; body?: unknown; from?: string; headers?: Record<string, string>; raw?: string | Buffer } = {},
  // biome-ignore lint/suspicious/noExplicitAny: response bodies are checked field by field by the tests
): Promise<{ status: number; body: any; headers: IncomingHttpHeaders }> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  const payload = o.raw ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method, headers, localAddress: o.from, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = text === '' ? null : JSON.parse(text);
        } catch {
          // not JSON (metrics, docs)
        }
        resolve({ status: res.statusCode ?? 0, body, headers: res.headers });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** Registers an account and returns its tokens and id. */
export async function register(
  base: string,
  email: string,
  password = 'correct horse battery',
): Promise<{ id: string; access: string; refresh: string }> {
  const r = await call(base, 'POST', '/api/v1/auth/register', { body: { email, password } });
  if (r.status !== 201) throw new Error(`register ${email}: ${r.status} ${JSON.stringify(r.body)}`);
  return { id: r.body.user.id, access: r.body.access_token, refresh: r.body.refresh_token };
}

/** Gives a user a role directly in the database (there is no API to become admin). */
export async function grantRole(plane: TestPlane, userId: string, role: string): Promise<void> {
  await plane.stores.pg.query('UPDATE users SET roles = array_append(roles, $2) WHERE id = $1', [userId, role]);
}

/** Drops the plane's schema: tests leave nothing behind. */
export async function dropSchema(env: TestEnv, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: env.pgUrl });
  await client.connect();
  await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await client.end();
}

/** Starts `control-plane/src/main.ts` as a child process; resolves with its URL once it listens. */
export async function spawnPlane(vars: Record<string, string>): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(
    process.execPath,
    ['--conditions=aethex-source', '--import', 'tsx', new URL('../src/main.ts', import.meta.url).pathname],
    {
      env: { ...process.env, ...vars, AETHEX_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d;
  });
  child.stderr?.on('data', (d) => {
    out += d;
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`control plane did not start:\n${out}`));
    }, 30_000);
    const check = () => {
      const m = /"address":"(http:\/\/[^"]+)"/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    };
    child.stdout?.on('data', check);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`control plane exited with ${code}:\n${out}`));
    });
  });
  return { child, url, output: () => out };
}
