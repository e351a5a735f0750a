// The client address behind a proxy (AETHEX_HTTP_TRUST_PROXY): the per-address budgets key on the
// right-most X-Forwarded-For entry the trusted proxy appended, never on what the client wrote
// to the left of it, and an untrusted peer's header is not read at all.
import { afterAll, beforeAll, expect, test } from 'vitest';
import { loadConfig } from '../src/config.js';
import { call, dropSchema, startPlane, type TestPlane, testEnv } from './harness.js';

const BUDGET = 3;
let plane: TestPlane;
beforeAll(async () => {
  // 127.0.0.2 is the proxy; every other loopback address is a client of its own.
  plane = await startPlane({ AETHEX_HTTP_TRUST_PROXY: '127.0.0.2', AETHEX_AUTH_SIGNUP_ADDRESS_BUDGET: String(BUDGET) });
});
afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

/** Guest sign-ins (each spends the address's signup budget) until refused; their statuses. */
async function guests(n: number, tag: string, o: { from: string; forwardedFor?: (i: number) => string }): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < n; i++) {
    const r = await call(plane.url, 'POST', '/api/v1/auth/guest', {
      from: o.from,
      headers: o.forwardedFor ? { 'x-forwarded-for': o.forwardedFor(i) } : {},
      body: { device_id: `device-${tag}-${i}-${Date.now()}` },
    });
    statuses.push(r.status);
  }
  return statuses;
}

const spent = [...Array(BUDGET).fill(200), 429];

test('behind a trusted proxy the budget is the forwarded client’s, whatever the client wrote to the left', async () => {
  // The client forges a new address each time; the proxy appends the one it saw, 198.51.100.7.
  expect(await guests(BUDGET + 1, 'forged', { from: '127.0.0.2', forwardedFor: (i) => `203.0.113.${i}, 198.51.100.7` })).toEqual(spent);
  // Another client behind the same proxy has a budget of its own.
  expect(await guests(1, 'other', { from: '127.0.0.2', forwardedFor: () => '198.51.100.8' })).toEqual([200]);
});

test('an untrusted peer’s X-Forwarded-For is not read: the budget is the peer’s', async () => {
  expect(await guests(BUDGET + 1, 'untrusted', { from: '127.0.0.3', forwardedFor: (i) => `203.0.113.${i}` })).toEqual(spent);
});

test('trusting every hop (true) is refused, and a bad entry is named', () => {
  const base = plane.vars;
  expect(() => loadConfig({ ...base, AETHEX_HTTP_TRUST_PROXY: 'true' })).toThrow(
    "AETHEX_HTTP_TRUST_PROXY: list the proxies' addresses or CIDR blocks (10.0.0.0/8): true would take the client address from what the client writes itself",
  );
  expect(() => loadConfig({ ...base, AETHEX_HTTP_TRUST_PROXY: '10.0.0.0/8, 10.0.0.300' })).toThrow(
    'AETHEX_HTTP_TRUST_PROXY: "10.0.0.300" (entry 2 of 2) is not an IP address or a CIDR block (10.0.0.0/8, fd00::/8)',
  );
  expect(loadConfig({ ...base, AETHEX_HTTP_TRUST_PROXY: 'false' })['http.trust_proxy']).toBe('false');
});
