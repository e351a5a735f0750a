import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { afterEach, expect, test } from 'vitest';
import { createOpsServer } from './http.js';

let close: (() => void) | undefined;
afterEach(() => close?.());

async function serve(ready: () => boolean) {
  const registry = new Registry();
  new Counter({ name: 'aether_test_total', help: 'a test counter', registers: [registry] }).inc(3);
  const server = createOpsServer({ healthy: () => true, ready }, registry);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  close = () => server.close();
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('healthz, readyz and metrics answer as the probes and the registry say', async () => {
  let ready = false;
  const base = await serve(() => ready);
  expect((await fetch(`${base}/healthz`)).status).toBe(200);
  expect((await fetch(`${base}/readyz`)).status).toBe(503);
  ready = true;
  expect((await fetch(`${base}/readyz`)).status).toBe(200);
  const metrics = await fetch(`${base}/metrics`);
  expect(metrics.headers.get('content-type')).toContain('text/plain');
  expect(await metrics.text()).toContain('aether_test_total 3');
  expect((await fetch(`${base}/nope`)).status).toBe(404);
  expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
});
