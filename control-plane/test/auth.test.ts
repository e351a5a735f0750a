import { hash } from '@node-rs/argon2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, dropSchema, register, startPlane, type TestPlane, testEnv } from './harness.js';

let plane: TestPlane;
beforeAll(async () => {
  plane = await startPlane();
});
afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

const metric = async (name: string): Promise<number> => {
  const text = (await call(plane.url, 'GET', '/metrics')).body as string;
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
};

describe('accounts', () => {
  it('registers, logs in, reads and updates the profile', async () => {
    const r = await call(plane.url, 'POST', '/api/v1/auth/register', {
      body: { email: 'Ada@Example.com', password: 'correct horse battery', display_name: 'Ada' },
    });
    expect(r.status).toBe(201);
    expect(r.body.user).toMatchObject({ email: 'ada@example.com', display_name: 'Ada', roles: ['player'] });
    expect(r.body.expires_in).toBe(900);
    expect(r.body.refresh_token).toMatch(/^rt_[A-Za-z0-9_-]{43}$/);
    const login = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'ada@example.com', password: 'correct horse battery' },
    });
    expect(login.status).toBe(200);
    const me = await call(plane.url, 'GET', '/api/v1/auth/me', { token: login.body.access_token });
    expect(me.body).toMatchObject({ id: r.body.user.id, permissions: ['read:profile', 'read:saves', 'write:profile', 'write:saves'] });
    const patched = await call(plane.url, 'PATCH', '/api/v1/auth/me', {
      token: login.body.access_token,
      body: { display_name: 'Countess' },
    });
    expect(patched.body.display_name).toBe('Countess');
    expect(
      (await call(plane.url, 'POST', '/api/v1/auth/register', { body: { email: 'ada@example.com', password: 'another password' } })).body
        .error.code,
    ).toBe('AUTH_EMAIL_TAKEN');
  });

  it('gives an unknown email and a wrong password the same answer', async () => {
    await register(plane.url, 'known@example.com');
    const wrong = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'known@example.com', password: 'not the password' },
    });
    const unknown = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'nobody@example.com', password: 'not the password' },
    });
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(unknown.body).toEqual(wrong.body);
    expect(Object.keys(unknown.headers).sort()).toEqual(Object.keys(wrong.headers).sort());
  });

  it('validates bodies and names the field', async () => {
    const r = await call(plane.url, 'POST', '/api/v1/auth/register', { body: { email: 'x@example.com', password: 'short' } });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
    expect(r.body.error.message).toContain('body/password');
    const extra = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'x@example.com', password: 'long enough', admin: true },
    });
    expect(extra.status).toBe(400);
    const notJson = await call(plane.url, 'POST', '/api/v1/auth/login', {
      raw: '{"email":',
      headers: { 'content-type': 'application/json' },
    });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('BAD_REQUEST');
    const big = await call(plane.url, 'POST', '/api/v1/auth/login', {
      raw: JSON.stringify({ email: 'x@example.com', password: 'p'.repeat(40_000) }),
      headers: { 'content-type': 'application/json' },
    });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('signs in guests by device id and upgrades them to players keeping the same id', async () => {
    const device = `device-${Date.now()}-abcdef`;
    const g1 = await call(plane.url, 'POST', '/api/v1/auth/guest', { body: { device_id: device } });
    const g2 = await call(plane.url, 'POST', '/api/v1/auth/guest', { body: { device_id: device } });
    expect(g1.status).toBe(200);
    expect(g2.body.user.id).toBe(g1.body.user.id);
    expect(g1.body.user.roles).toEqual(['guest']);
    const up = await call(plane.url, 'POST', '/api/v1/auth/upgrade', {
      token: g1.body.access_token,
      body: { email: 'guest@example.com', password: 'guest password' },
    });
    expect(up.status).toBe(200);
    expect(up.body.user).toMatchObject({ id: g1.body.user.id, email: 'guest@example.com', roles: ['player'] });
    const again = await call(plane.url, 'POST', '/api/v1/auth/upgrade', {
      token: up.body.access_token,
      body: { email: 'other@example.com', password: 'guest password' },
    });
    expect(again.body.error.code).toBe('AUTH_ALREADY_REGISTERED');
    const login = await call(plane.url, 'POST', '/api/v1/auth/login', { body: { email: 'guest@example.com', password: 'guest password' } });
    expect(login.body.user.id).toBe(g1.body.user.id);
  });

  it('rehashes a password stored with weaker argon2 parameters at the next login', async () => {
    const u = await register(plane.url, 'legacy@example.com', 'legacy password');
    const weak = await hash('legacy password', { algorithm: 2, memoryCost: 4096, timeCost: 1, parallelism: 1 });
    await plane.stores.pg.query('UPDATE users SET password_hash = $2 WHERE id = $1', [u.id, weak]);
    const login = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'legacy@example.com', password: 'legacy password' },
    });
    expect(login.status).toBe(200);
    const { rows } = await plane.stores.pg.query('SELECT password_hash FROM users WHERE id = $1', [u.id]);
    expect(rows[0].password_hash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
  });
});

describe('sessions', () => {
  it('rotates refresh tokens on every use and keeps the absolute expiry', async () => {
    const u = await register(plane.url, 'rotate@example.com');
    const r1 = await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } });
    expect(r1.status).toBe(200);
    expect(r1.body.refresh_token).not.toBe(u.refresh);
    const r2 = await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: r1.body.refresh_token } });
    expect(r2.status).toBe(200);
    expect(r2.body.refresh_expires_at).toBe(r1.body.refresh_expires_at);
    expect((await call(plane.url, 'GET', '/api/v1/auth/me', { token: r2.body.access_token })).status).toBe(200);
  });

  it('revokes the whole family when a spent refresh token comes back', async () => {
    const u = await register(plane.url, 'reuse@example.com');
    const before = await metric('aethex_auth_refresh_reuse_total');
    const good = await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } });
    const stolen = await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } });
    expect(stolen.status).toBe(401);
    expect(stolen.body.error.code).toBe('AUTH_REFRESH_INVALID');
    // The legitimate successor dies with its family, and so do the family's access tokens.
    expect((await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: good.body.refresh_token } })).status).toBe(401);
    expect((await call(plane.url, 'GET', '/api/v1/auth/me', { token: good.body.access_token })).status).toBe(401);
    expect(await metric('aethex_auth_refresh_reuse_total')).toBe(before + 1);
    // Other sessions of the same account are untouched.
    const other = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'reuse@example.com', password: 'correct horse battery' },
    });
    expect((await call(plane.url, 'GET', '/api/v1/auth/me', { token: other.body.access_token })).status).toBe(200);
  });

  it('lets exactly one of two concurrent refreshes with one token create a successor', async () => {
    for (let round = 0; round < 5; round++) {
      const u = await register(plane.url, `race${round}@example.com`);
      const [a, b] = await Promise.all([
        call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } }),
        call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } }),
      ]);
      expect([a.status, b.status].sort()).toEqual([200, 401]);
      const { rows } = await plane.stores.pg.query(
        'SELECT count(*)::int AS n FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE f.user_id = $1',
        [u.id],
      );
      expect(rows[0].n).toBe(2); // the original and exactly one successor
    }
  });

  it('logs out this session only, or every session within a second', async () => {
    const u = await register(plane.url, 'logout@example.com');
    const second = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'logout@example.com', password: 'correct horse battery' },
    });
    expect((await call(plane.url, 'POST', '/api/v1/auth/logout', { token: u.access, body: {} })).status).toBe(204);
    expect((await call(plane.url, 'GET', '/api/v1/auth/me', { token: u.access })).status).toBe(401);
    expect((await call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: u.refresh } })).status).toBe(401);
    expect((await call(plane.url, 'GET', '/api/v1/auth/me', { token: second.body.access_token })).status).toBe(200);

    const third = await call(plane.url, 'POST', '/api/v1/auth/login', {
      body: { email: 'logout@example.com', password: 'correct horse battery' },
    });
    expect((await call(plane.url, 'POST', '/api/v1/auth/logout', { token: third.body.access_token, body: { all: true } })).status).toBe(
      204,
    );
    const [a, b, c, d] = await Promise.all([
      call(plane.url, 'GET', '/api/v1/auth/me', { token: second.body.access_token }),
      call(plane.url, 'GET', '/api/v1/auth/me', { token: third.body.access_token }),
      call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: second.body.refresh_token } }),
      call(plane.url, 'POST', '/api/v1/auth/refresh', { body: { refresh_token: third.body.refresh_token } }),
    ]);
    expect([a.status, b.status, c.status, d.status]).toEqual([401, 401, 401, 401]);
  });

  it('serves its public keys and readiness', async () => {
    const jwks = await call(plane.url, 'GET', '/.well-known/jwks.json');
    expect(jwks.body.keys).toHaveLength(1);
    expect(jwks.body.keys[0]).toMatchObject({ kid: 'test-key-1', alg: 'EdDSA', kty: 'OKP' });
    expect(jwks.body.keys[0].d).toBeUndefined();
    expect((await call(plane.url, 'GET', '/readyz')).body).toEqual({ status: 'ready' });
    const docs = await call(plane.url, 'GET', '/docs/json');
    expect(Object.keys(docs.body.paths)).toContain('/api/v1/saves/{user_id}/{slot}');
  });
});
