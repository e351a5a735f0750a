import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, dropSchema, grantRole, register, startPlane, type TestPlane, testEnv } from './harness.js';

/**
 * The authorization matrix: every route of the app, and who may call it. A route is public (no
 * user data), "self" (acts only on the caller's own account) or owned (acts on the user named in
 * the path). Owned routes are attacked by user B against user A's save; each attack must be
 * refused and leave A's saves exactly as they were. A route without an entry fails the test.
 */

type Res = Awaited<ReturnType<typeof call>>;

interface Account {
  id: string;
  email: string;
  token: string;
  refresh: string;
}

/** One call on an owned route, as `token` (undefined: no Authorization), against `owner`'s objects. */
type Attempt = (token: string | undefined, owner: Account) => Promise<Res>;

type Entry =
  | { public: string; probe: () => Promise<Res> }
  | { self: string; call: (token: string | undefined) => Promise<Res>; check: () => Promise<void> }
  | { owned: string; attempts: Record<string, Attempt> };

const PASSWORD = 'correct horse battery';
const SLOT = 'main';
const A_NAME = 'Alice the owner';
const V1 = randomBytes(700).toString('base64');
const V2 = randomBytes(900).toString('base64');
const EVIL = Buffer.from('B was here').toString('base64');

let plane: TestPlane;
let a: Account; // the victim: a save in slot main with 2 versions
let b: Account; // the attacker (a player; made admin at the very end)
let c: Account; // an owner for positive controls on the owned routes
let d: Account; // an owner whose saves the admin writes
let aBaseline: SavesState;

const url = () => plane.url;
const saves = (owner: Account, rest = '') => `/api/v1/saves/${owner.id}${rest}`;

async function signUp(email: string): Promise<Account> {
  const r = await register(plane.url, email, PASSWORD);
  return { id: r.id, email, token: r.access, refresh: r.refresh };
}

async function login(email: string): Promise<Res> {
  return call(url(), 'POST', '/api/v1/auth/login', { body: { email, password: PASSWORD } });
}

/** The current version of the owner's slot, read as the owner (set-up, not part of the attack). */
async function current(owner: Account, slot = SLOT): Promise<number> {
  const r = await call(url(), 'GET', saves(owner, `/${slot}`), { token: owner.token });
  if (r.status !== 200) throw new Error(`current ${slot}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.meta.version;
}

async function writeTwoVersions(owner: Account): Promise<void> {
  for (const [data, expected] of [
    [V1, null],
    [V2, 1],
  ] as const) {
    const r = await call(url(), 'PUT', saves(owner, `/${SLOT}`), {
      token: owner.token,
      body: { data, expected_version: expected, device_id: 'owner-device' },
    });
    if (r.status !== 200) throw new Error(`put: ${r.status} ${JSON.stringify(r.body)}`);
  }
}

interface SavesState {
  list: unknown;
  current: unknown;
  v1: unknown;
  history: unknown;
  blobs: string[];
  audit: number;
}

/** Everything an attack on A could change, read as the owner (and from S3 and the audit log). */
async function savesState(owner: Account): Promise<SavesState> {
  const o = { token: owner.token };
  const [list, cur, v1, history] = await Promise.all([
    call(url(), 'GET', saves(owner), o),
    call(url(), 'GET', saves(owner, `/${SLOT}`), o),
    call(url(), 'GET', saves(owner, `/${SLOT}?version=1`), o),
    call(url(), 'GET', saves(owner, `/${SLOT}/history`), o),
  ]);
  for (const r of [list, cur, v1, history]) expect(r.status, JSON.stringify(r.body)).toBe(200);
  const blobs: string[] = [];
  const s3 = plane.stores.s3;
  if (!s3) throw new Error('the plane has no S3');
  for await (const item of s3.client.listObjects(s3.bucket, `${owner.id}/`, true, { IncludeVersion: true })) {
    blobs.push(`${item.name}@${item.versionId}`);
  }
  const { rows } = await plane.stores.pg.query(
    `SELECT count(*)::int AS n FROM audit_log WHERE user_id = $1 AND action IN ('save_deleted', 'save_restored')`,
    [owner.id],
  );
  return { list: list.body, current: cur.body, v1: v1.body, history: history.body, blobs: blobs.sort(), audit: rows[0].n };
}

async function expectAUntouched(): Promise<void> {
  expect(await savesState(a), "A's saves changed").toEqual(aBaseline);
}

async function expectProfile(owner: Account, fields: Record<string, unknown>): Promise<void> {
  const me = await call(url(), 'GET', '/api/v1/auth/me', { token: owner.token });
  expect(me.status).toBe(200);
  expect(me.body).toMatchObject({ id: owner.id, ...fields });
}

const errorShape = (body: unknown) => {
  expect(body).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
};

const matrix: Record<string, Entry> = {
  // --- operations and documentation ------------------------------------------------------------
  'GET /healthz': { public: 'liveness probe; a constant body', probe: () => call(url(), 'GET', '/healthz') },
  'GET /readyz': { public: 'readiness probe; store reachability only', probe: () => call(url(), 'GET', '/readyz') },
  'GET /metrics': {
    public: 'operational counters; labels are route templates and status codes, never ids',
    probe: () => call(url(), 'GET', '/metrics'),
  },
  'GET /docs': { public: 'API documentation (swagger-ui)', probe: () => call(url(), 'GET', '/docs') },
  'GET /docs/static/index.html': { public: 'API documentation page', probe: () => call(url(), 'GET', '/docs/static/index.html') },
  'GET /docs/static/swagger-initializer.js': {
    public: 'API documentation script',
    probe: () => call(url(), 'GET', '/docs/static/swagger-initializer.js'),
  },
  'GET /docs/json': { public: 'the OpenAPI document', probe: () => call(url(), 'GET', '/docs/json') },
  'GET /docs/yaml': { public: 'the OpenAPI document', probe: () => call(url(), 'GET', '/docs/yaml') },
  'GET /docs/static/*': { public: 'swagger-ui static assets', probe: () => call(url(), 'GET', '/docs/static/swagger-ui.css') },
  'HEAD /docs/static/*': { public: 'swagger-ui static assets', probe: () => call(url(), 'HEAD', '/docs/static/swagger-ui.css') },
  'GET /.well-known/jwks.json': { public: 'public verification keys', probe: () => call(url(), 'GET', '/.well-known/jwks.json') },
  // --- sign-in: the credential in the body is the authorization ----------------------------------
  'POST /api/v1/auth/register': {
    public: 'creates a new account; returns only that account',
    probe: () => call(url(), 'POST', '/api/v1/auth/register', { body: { email: 'probe-register@example.com', password: PASSWORD } }),
  },
  'POST /api/v1/auth/login': {
    public: 'the password is the credential; returns only that account',
    probe: () => login(c.email),
  },
  'POST /api/v1/auth/guest': {
    public: 'the device id is the credential; returns only that guest',
    probe: () => call(url(), 'POST', '/api/v1/auth/guest', { body: { device_id: `probe-device-${Date.now()}` } }),
  },
  'POST /api/v1/auth/refresh': {
    public: 'the refresh token is the credential; returns only its account',
    probe: async () => {
      const g = await call(url(), 'POST', '/api/v1/auth/guest', { body: { device_id: `probe-refresh-${Date.now()}` } });
      return call(url(), 'POST', '/api/v1/auth/refresh', { body: { refresh_token: g.body.refresh_token } });
    },
  },
  // --- the caller's own account --------------------------------------------------------------------
  'GET /api/v1/auth/me': {
    self: "reads the token's own account; there is no user id to point elsewhere",
    call: (token) => call(url(), 'GET', '/api/v1/auth/me', { token }),
    check: async () => {
      const me = await call(url(), 'GET', '/api/v1/auth/me', { token: b.token });
      expect(me.status).toBe(200);
      expect(me.body).toMatchObject({ id: b.id, email: b.email });
      expect(JSON.stringify(me.body)).not.toContain(a.id);
      expect(JSON.stringify(me.body)).not.toContain(a.email);
    },
  },
  'PATCH /api/v1/auth/me': {
    self: "changes the token's own profile",
    call: (token) => call(url(), 'PATCH', '/api/v1/auth/me', { token, body: { display_name: 'Mallory' } }),
    check: async () => {
      const p = await call(url(), 'PATCH', '/api/v1/auth/me', { token: b.token, body: { display_name: 'Mallory' } });
      expect(p.status).toBe(200);
      expect(p.body).toMatchObject({ id: b.id, display_name: 'Mallory' });
      // No way to name another account in the body.
      for (const extra of [{ id: a.id }, { user_id: a.id }, { email: a.email }]) {
        const smuggled = await call(url(), 'PATCH', '/api/v1/auth/me', { token: b.token, body: { display_name: 'pwned', ...extra } });
        expect(smuggled.status, JSON.stringify(extra)).toBe(400);
        expect(smuggled.body.error.code).toBe('VALIDATION_FAILED');
      }
      await expectProfile(a, { display_name: A_NAME, email: a.email });
      await expectProfile(b, { display_name: 'Mallory' });
    },
  },
  'POST /api/v1/auth/logout': {
    self: "ends the token's own session (or all of its account's sessions)",
    call: (token) => call(url(), 'POST', '/api/v1/auth/logout', { token, body: {} }),
    check: async () => {
      const a2 = await login(a.email);
      const b2 = await login(b.email);
      expect([a2.status, b2.status]).toEqual([200, 200]);
      expect((await call(url(), 'POST', '/api/v1/auth/logout', { token: b2.body.access_token, body: {} })).status).toBe(204);
      expect((await call(url(), 'GET', '/api/v1/auth/me', { token: b2.body.access_token })).status).toBe(401);
      // Logging out every session of a (throwaway) attacker account touches no one else.
      const bx = await signUp('attacker-all@example.com');
      expect((await call(url(), 'POST', '/api/v1/auth/logout', { token: bx.token, body: { all: true } })).status).toBe(204);
      expect((await call(url(), 'GET', '/api/v1/auth/me', { token: bx.token })).status).toBe(401);
      // A's sessions all live: the main one, the second one, and its refresh token.
      await expectProfile(a, { display_name: A_NAME });
      expect((await call(url(), 'GET', '/api/v1/auth/me', { token: a2.body.access_token })).status).toBe(200);
      const refreshed = await call(url(), 'POST', '/api/v1/auth/refresh', { body: { refresh_token: a2.body.refresh_token } });
      expect(refreshed.status).toBe(200);
      expect(refreshed.body.user.id).toBe(a.id);
      // B's own other session survives a single-session logout.
      await expectProfile(b, {});
    },
  },
  'POST /api/v1/auth/upgrade': {
    self: "adds credentials to the token's own guest account",
    call: (token) =>
      call(url(), 'POST', '/api/v1/auth/upgrade', { token, body: { email: 'upgrade-unauth@example.com', password: PASSWORD } }),
    check: async () => {
      // A registered attacker cannot upgrade (so cannot re-point) anything.
      const already = await call(url(), 'POST', '/api/v1/auth/upgrade', {
        token: b.token,
        body: { email: a.email, password: 'new password!' },
      });
      expect(already.status).toBe(409);
      expect(already.body.error.code).toBe('AUTH_ALREADY_REGISTERED');
      // A guest cannot take A's email.
      const g = await call(url(), 'POST', '/api/v1/auth/guest', { body: { device_id: `attacker-guest-${Date.now()}` } });
      expect(g.status).toBe(200);
      const taken = await call(url(), 'POST', '/api/v1/auth/upgrade', {
        token: g.body.access_token,
        body: { email: a.email, password: 'new password!' },
      });
      expect(taken.status).toBe(409);
      expect(taken.body.error.code).toBe('AUTH_EMAIL_TAKEN');
      const guestMe = await call(url(), 'GET', '/api/v1/auth/me', { token: g.body.access_token });
      expect(guestMe.body).toMatchObject({ id: g.body.user.id, email: null, roles: ['guest'] });
      // A guest's upgrade changes only the guest.
      const ok = await call(url(), 'POST', '/api/v1/auth/upgrade', {
        token: g.body.access_token,
        body: { email: 'attacker-upgraded@example.com', password: PASSWORD },
      });
      expect(ok.status).toBe(200);
      expect(ok.body.user).toMatchObject({ id: g.body.user.id, email: 'attacker-upgraded@example.com', roles: ['player'] });
      // A is unchanged and still signs in with A's password, as A.
      await expectProfile(a, { email: a.email, display_name: A_NAME, roles: ['player'] });
      const again = await login(a.email);
      expect(again.status).toBe(200);
      expect(again.body.user.id).toBe(a.id);
      const wrong = await call(url(), 'POST', '/api/v1/auth/login', { body: { email: a.email, password: 'new password!' } });
      expect(wrong.status).toBe(401);
    },
  },
  // --- routes that name the owner in the path ----------------------------------------------------
  'GET /api/v1/saves/:user_id': {
    owned: 'lists the slots of the user in the path',
    attempts: {
      list: (token, owner) => call(url(), 'GET', saves(owner), { token }),
    },
  },
  'GET /api/v1/saves/:user_id/:slot': {
    owned: 'loads a save of the user in the path',
    attempts: {
      'load current': (token, owner) => call(url(), 'GET', saves(owner, `/${SLOT}`), { token }),
      'load ?version=1': (token, owner) => call(url(), 'GET', saves(owner, `/${SLOT}?version=1`), { token }),
    },
  },
  'PUT /api/v1/saves/:user_id/:slot': {
    owned: 'writes a save of the user in the path',
    attempts: {
      'put over the current version': async (token, owner) =>
        call(url(), 'PUT', saves(owner, `/${SLOT}`), {
          token,
          body: { data: EVIL, expected_version: await current(owner), device_id: 'attacker' },
        }),
      'put creating a new slot': (token, owner) =>
        call(url(), 'PUT', saves(owner, '/planted'), { token, body: { data: EVIL, expected_version: null, device_id: 'attacker' } }),
    },
  },
  'DELETE /api/v1/saves/:user_id/:slot': {
    owned: 'deletes a slot of the user in the path',
    attempts: {
      'delete at the current version': async (token, owner) =>
        call(url(), 'DELETE', saves(owner, `/${SLOT}?expected_version=${await current(owner)}`), { token }),
    },
  },
  'GET /api/v1/saves/:user_id/:slot/history': {
    owned: 'lists the versions of a save of the user in the path',
    attempts: {
      history: (token, owner) => call(url(), 'GET', saves(owner, `/${SLOT}/history`), { token }),
    },
  },
  'POST /api/v1/saves/:user_id/:slot/restore': {
    owned: 'restores a version of a save of the user in the path',
    attempts: {
      'restore version 1': async (token, owner) =>
        call(url(), 'POST', saves(owner, `/${SLOT}/restore`), {
          token,
          body: { version: 1, expected_version: await current(owner), device_id: 'attacker' },
        }),
    },
  },
};

const entries = Object.entries(matrix);
const publicEntries = entries.flatMap(([k, e]) => ('public' in e ? [{ route: k, ...e }] : []));
const selfEntries = entries.flatMap(([k, e]) => ('self' in e ? [{ route: k, ...e }] : []));
const METHOD_ORDER = ['GET', 'PUT', 'POST', 'DELETE'];
/** Every attempt on an owned route, reads first and the delete last (so an owner can run them in order). */
const ownedAttempts = entries
  .flatMap(([route, e]) =>
    'owned' in e ? Object.entries(e.attempts).map(([name, attempt]) => ({ route, name, label: `${route} (${name})`, attempt })) : [],
  )
  .sort((x, y) => METHOD_ORDER.indexOf(x.route.split(' ')[0] as string) - METHOD_ORDER.indexOf(y.route.split(' ')[0] as string));
/** Every non-public call, made with the given token (or none). */
const protectedCalls: { label: string; run: (token: string | undefined) => Promise<Res> }[] = [
  ...selfEntries.map((e) => ({ label: e.route, run: e.call })),
  ...ownedAttempts.map((x) => ({ label: x.label, run: (token: string | undefined) => x.attempt(token, a) })),
];

beforeAll(async () => {
  plane = await startPlane();
  a = await signUp('alice@example.com');
  b = await signUp('mallory@example.com');
  c = await signUp('carol@example.com');
  d = await signUp('dave@example.com');
  const named = await call(url(), 'PATCH', '/api/v1/auth/me', { token: a.token, body: { display_name: A_NAME } });
  if (named.status !== 200) throw new Error(`patch: ${named.status}`);
  for (const owner of [a, c, d]) await writeTwoVersions(owner);
  aBaseline = await savesState(a);
  // The baseline is what the set-up wrote: two versions, the second current.
  expect(aBaseline.current).toMatchObject({ meta: { slot: SLOT, version: 2 }, data: V2 });
  expect(aBaseline.v1).toMatchObject({ meta: { slot: SLOT, version: 1 }, data: V1 });
  expect((aBaseline.history as { versions: { version: number }[] }).versions.map((v) => v.version)).toEqual([2, 1]);
  expect((aBaseline.list as { saves: { slot: string }[] }).saves.map((s) => s.slot)).toEqual([SLOT]);
  expect(aBaseline.blobs).toHaveLength(2);
  expect(aBaseline.audit).toBe(0);
});

afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

describe('the matrix covers the route table', () => {
  it('has an entry for every route, and every entry is a route', () => {
    const table = new Set(plane.app.routeTable.map((r) => `${r.method} ${r.url}`));
    const missing = [...table].filter((k) => !(k in matrix));
    const stale = Object.keys(matrix).filter((k) => !table.has(k));
    expect(missing, `routes with no entry in the authorization matrix (add one): ${missing.join(', ')}`).toEqual([]);
    expect(stale, `matrix entries for routes the app does not have: ${stale.join(', ')}`).toEqual([]);
  });

  it('never calls a route under /api/v1/saves public', () => {
    expect(publicEntries.map((e) => e.route).filter((r) => r.includes('/api/v1/saves'))).toEqual([]);
  });

  it('agrees with the OpenAPI document: a route that declares bearer security is not public, and vice versa', async () => {
    const doc = await call(url(), 'GET', '/docs/json');
    expect(doc.status).toBe(200);
    const paths = doc.body.paths as Record<string, Record<string, { security?: unknown[] }>>;
    const seen: string[] = [];
    for (const [path, ops] of Object.entries(paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const key = `${method.toUpperCase()} ${path.replace(/\{([^}]+)\}/g, ':$1')}`;
        const entry = matrix[key];
        expect(entry, `${key} is documented but has no matrix entry`).toBeDefined();
        const bearer = (op.security ?? []).length > 0;
        expect(bearer, `${key}: documented security does not match the matrix`).toBe(!(entry && 'public' in entry));
        seen.push(key);
      }
    }
    expect(seen).toContain('PUT /api/v1/saves/:user_id/:slot');
  });
});

describe('public routes', () => {
  it.each(publicEntries)('$route: answers without a token and shows none of A’s data ($public)', async ({ probe }) => {
    const r = await probe();
    expect(r.status, JSON.stringify(r.body)).toBeGreaterThanOrEqual(200);
    expect(r.status, JSON.stringify(r.body)).toBeLessThan(400);
    const text = typeof r.body === 'string' ? r.body : JSON.stringify(r.body ?? '');
    for (const secret of [a.id, a.email, A_NAME, V1, V2]) expect(text).not.toContain(secret);
  });
});

describe('unauthenticated and badly authenticated calls', () => {
  it.each(protectedCalls)('$label without a token → 401 AUTH_REQUIRED', async ({ run }) => {
    const r = await run(undefined);
    expect(r.status, JSON.stringify(r.body)).toBe(401);
    errorShape(r.body);
    expect(r.body.error.code).toBe('AUTH_REQUIRED');
  });

  it.each(protectedCalls)('$label with a garbage token → 401 AUTH_INVALID_TOKEN', async ({ run }) => {
    const r = await run('not.a.token');
    expect(r.status, JSON.stringify(r.body)).toBe(401);
    errorShape(r.body);
    expect(r.body.error.code).toBe('AUTH_INVALID_TOKEN');
  });

  it('left A untouched', async () => {
    await expectAUntouched();
    await expectProfile(a, { display_name: A_NAME, email: a.email });
  });
});

describe('self routes act only on the caller', () => {
  it.each(selfEntries)('$route as B reads or changes only B ($self)', async ({ check }) => {
    await check();
    await expectAUntouched();
  });
});

describe('B against A’s saves', () => {
  it('B is an ordinary player', async () => {
    const me = await call(url(), 'GET', '/api/v1/auth/me', { token: b.token });
    expect(me.body.permissions).toEqual(['read:profile', 'read:saves', 'write:profile', 'write:saves']);
  });

  it.each(ownedAttempts)('$label as B → 403/404, and A’s saves are unchanged', async ({ attempt }) => {
    const r = await attempt(b.token, a);
    expect([403, 404], JSON.stringify(r.body)).toContain(r.status);
    errorShape(r.body);
    expect(['AUTH_FORBIDDEN', 'NOT_FOUND', 'USER_NOT_FOUND', 'SAVES_NOT_FOUND']).toContain(r.body.error.code);
    expect(JSON.stringify(r.body)).not.toContain(V1.slice(0, 40));
    expect(JSON.stringify(r.body)).not.toContain(V2.slice(0, 40));
    await expectAUntouched();
  });

  it.each([
    ['upper-case', (id: string) => id.toUpperCase()],
    ['urn:uuid: prefixed', (id: string) => `urn:uuid:${id}`],
    ['braced', (id: string) => `{${id}}`],
    ['without hyphens', (id: string) => id.replaceAll('-', '')],
  ])('B naming A by a %s id is refused too', async (_name, spell) => {
    const path = (rest = '') => `/api/v1/saves/${spell(a.id)}${rest}`;
    const t = { token: b.token };
    const version = 2; // A's current version (the baseline)
    const tries: [string, Promise<Res>][] = [
      ['list', call(url(), 'GET', path(), t)],
      ['load', call(url(), 'GET', path(`/${SLOT}`), t)],
      ['history', call(url(), 'GET', path(`/${SLOT}/history`), t)],
      ['put', call(url(), 'PUT', path(`/${SLOT}`), { ...t, body: { data: EVIL, expected_version: version } })],
      ['put new slot', call(url(), 'PUT', path('/planted'), { ...t, body: { data: EVIL, expected_version: null } })],
      ['restore', call(url(), 'POST', path(`/${SLOT}/restore`), { ...t, body: { version: 1, expected_version: version } })],
      ['delete', call(url(), 'DELETE', path(`/${SLOT}?expected_version=${version}`), t)],
    ];
    for (const [what, pending] of tries) {
      const r = await pending;
      expect([400, 403, 404], `${what}: ${r.status} ${JSON.stringify(r.body)}`).toContain(r.status);
    }
    await expectAUntouched();
  });
});

describe('positive controls: the same calls succeed when authorized', () => {
  it.each(ownedAttempts.filter((x) => x.route.startsWith('GET')))('the owner: $label on their own saves → 200', async ({ attempt }) => {
    const r = await attempt(c.token, c);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  });

  it('the owner can run every write of the matrix on their own saves, in order', async () => {
    for (const x of ownedAttempts.filter((y) => !y.route.startsWith('GET'))) {
      const r = await x.attempt(c.token, c);
      expect(r.status, `${x.label}: ${JSON.stringify(r.body)}`).toBe(x.route.startsWith('DELETE') ? 204 : 200);
    }
    const list = await call(url(), 'GET', saves(c), { token: c.token });
    expect(list.body.saves.map((s: { slot: string }) => s.slot)).toEqual(['planted']);
  });

  it('an admin (B given the admin role, signed in again) can read A’s saves', async () => {
    await grantRole(plane, b.id, 'admin');
    const relog = await login(b.email);
    expect(relog.status).toBe(200);
    const admin = relog.body.access_token as string;
    expect(relog.body.user.permissions).toContain('read:saves:any');
    const asA = await savesState(a);
    for (const x of ownedAttempts.filter((y) => y.route.startsWith('GET'))) {
      const r = await x.attempt(admin, a);
      expect(r.status, `${x.label}: ${JSON.stringify(r.body)}`).toBe(200);
    }
    // The admin sees what A sees.
    const list = await call(url(), 'GET', saves(a), { token: admin });
    expect(list.body).toEqual(asA.list);
    const load = await call(url(), 'GET', saves(a, `/${SLOT}`), { token: admin });
    expect(load.body).toEqual(asA.current);
    const history = await call(url(), 'GET', saves(a, `/${SLOT}/history`), { token: admin });
    expect(history.body).toEqual(asA.history);
    // …and can write another user's saves, which a player cannot.
    for (const x of ownedAttempts.filter((y) => !y.route.startsWith('GET'))) {
      const r = await x.attempt(admin, d);
      expect(r.status, `${x.label}: ${JSON.stringify(r.body)}`).toBe(x.route.startsWith('DELETE') ? 204 : 200);
    }
    // Reading is not writing: A is still untouched.
    await expectAUntouched();
  });
});

/**
 * `UserId` is `format: 'uuid'`, which also admits upper case and a `urn:uuid:` prefix. The
 * authorization check compares the path's id with the token's as strings, while PostgreSQL
 * compares uuids; these tests hold the routes to one spelling per user.
 */
describe('non-canonical spellings of a user id', () => {
  let root: string;
  beforeAll(async () => {
    const r = await signUp('root@example.com');
    await grantRole(plane, r.id, 'admin');
    const relog = await login(r.email);
    if (relog.status !== 200) throw new Error(`login root: ${relog.status}`);
    root = relog.body.access_token;
  });

  it('an owner naming themself in upper case is served (200) or refused as invalid (400), not forbidden', async () => {
    const r = await call(url(), 'GET', `/api/v1/saves/${c.id.toUpperCase()}`, { token: c.token });
    expect([200, 400], `${r.status} ${JSON.stringify(r.body)}`).toContain(r.status);
  });

  it('an admin naming a user as urn:uuid:<id> gets a 4xx or the user’s saves, never a 500', async () => {
    for (const [method, path, body] of [
      ['GET', `/api/v1/saves/urn:uuid:${d.id}`, undefined],
      ['PUT', `/api/v1/saves/urn:uuid:${d.id}/urn-slot`, { data: EVIL, expected_version: null }],
    ] as const) {
      const r = await call(url(), method, path, { token: root, body });
      expect(r.status, `${method} ${path}: ${JSON.stringify(r.body)}`).toBeLessThan(500);
    }
  });

  it('an admin writing a save under an upper-case id stores it under the canonical id (or is refused)', async () => {
    const r = await call(url(), 'PUT', `/api/v1/saves/${d.id.toUpperCase()}/upper-slot`, {
      token: root,
      body: { data: EVIL, expected_version: null },
    });
    expect([200, 400], `${r.status} ${JSON.stringify(r.body)}`).toContain(r.status);
    const { rows } = await plane.stores.pg.query('SELECT object_key FROM save_versions WHERE user_id = $1', [d.id]);
    const keys = rows.map((row: { object_key: string }) => row.object_key);
    expect(keys.length).toBeGreaterThan(0);
    // Every blob of the user lives under one prefix, so per-user listing and clean-up find them all.
    expect(keys.filter((k) => !k.startsWith(`${d.id}/`))).toEqual([]);
  });
});
