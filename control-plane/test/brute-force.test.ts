import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, dropSchema, register, startPlane, type TestPlane, testEnv } from './harness.js';

const ACCOUNT_BUDGET = 20;
const PAIR_BUDGET = 5;
const ADDRESSES = 20;
const ATTEMPTS = 2000;

let plane: TestPlane;
beforeAll(async () => {
  plane = await startPlane({
    AETHEX_AUTH_LOGIN_ACCOUNT_BUDGET: String(ACCOUNT_BUDGET),
    AETHEX_AUTH_LOGIN_PAIR_BUDGET: String(PAIR_BUDGET),
    AETHEX_AUTH_LOGIN_ADDRESS_BUDGET: '1000',
    AETHEX_AUTH_LOGIN_WINDOW_S: '600',
  });
});
afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

async function hashesComputed(): Promise<number> {
  const text = (await call(plane.url, 'GET', '/metrics')).body as string;
  const line = text.split('\n').find((l) => l.startsWith('aethex_auth_password_hashes_total{op="verify"}'));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('brute force', () => {
  it(`lets at most the budget of ${ATTEMPTS} wrong passwords from ${ADDRESSES} addresses reach the hasher; the owner still signs in`, async () => {
    await register(plane.url, 'victim@example.com', 'the real password');
    const before = await hashesComputed();
    const statuses = new Map<number, number>();
    let retryAfterMissing = 0;
    let next = 0;
    // 40 concurrent attackers, each request from one of 20 loopback addresses (127.0.0.2 …).
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        while (next < ATTEMPTS) {
          const i = next++;
          const r = await call(plane.url, 'POST', '/api/v1/auth/login', {
            from: `127.0.0.${2 + (i % ADDRESSES)}`,
            body: { email: 'victim@example.com', password: `guess-${i}-xxxx` },
          });
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
          if (r.status === 429 && !(Number(r.headers['retry-after']) >= 1)) retryAfterMissing++;
        }
      }),
    );
    const hashed = (await hashesComputed()) - before;
    // The account budget, plus at most one first attempt per address once it is spent.
    const budget = ACCOUNT_BUDGET + ADDRESSES;
    expect(hashed).toBeLessThanOrEqual(budget);
    expect(hashed).toBeGreaterThanOrEqual(ACCOUNT_BUDGET);
    expect(statuses.get(401)).toBe(hashed);
    expect(statuses.get(429)).toBe(ATTEMPTS - hashed);
    expect([...statuses.keys()].sort()).toEqual([401, 429]);
    expect(retryAfterMissing).toBe(0);

    // An attacking address stays locked out even with the right password …
    const locked = await call(plane.url, 'POST', '/api/v1/auth/login', {
      from: '127.0.0.2',
      body: { email: 'victim@example.com', password: 'the real password' },
    });
    expect(locked.status).toBe(429);
    // … while the owner, from an address that has not failed, gets in.
    const owner = await call(plane.url, 'POST', '/api/v1/auth/login', {
      from: '127.0.0.200',
      body: { email: 'victim@example.com', password: 'the real password' },
    });
    expect(owner.status).toBe(200);
    // Other accounts are not affected by the attack on this one.
    await register(plane.url, 'bystander@example.com', 'bystander password');
    const other = await call(plane.url, 'POST', '/api/v1/auth/login', {
      from: '127.0.0.3',
      body: { email: 'bystander@example.com', password: 'bystander password' },
    });
    expect(other.status).toBe(200);
  });
});
