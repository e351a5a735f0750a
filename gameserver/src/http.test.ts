import { once } from 'node:events';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { afterEach, expect, test } from 'vitest';
import {
  createOpsServer,
  type OpsLimits,
  VIEWER_MAX_BUILDS_PER_SECOND,
  VIEWER_MAX_CONCURRENT,
  VIEWER_MAX_FOCUS_PER_STATE,
  type ViewerSource,
} from './http.js';

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
  // HEAD is taken as GET is (an uptime checker's probe), not refused.
  const head = await fetch(`${base}/healthz`, { method: 'HEAD' });
  expect([head.status, await head.text()]).toEqual([200, '']);
});

async function serveViewer(source: ViewerSource, limits?: OpsLimits) {
  const server = createOpsServer({ healthy: () => true, ready: () => true }, new Registry(), source, limits);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  close = () => {
    server.close();
    server.closeAllConnections();
  };
  served = server;
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

let served: import('node:http').Server | undefined;
const openSockets = () => new Promise<number>((resolve) => served?.getConnections((_err, n) => resolve(n)));

test('the viewer state is built at most once per tick and the same bytes serve every poller of that tick', async () => {
  let built = 0;
  let tick = 10;
  const base = await serveViewer({
    version: () => String(tick),
    state: () => ({ tick, built: ++built, entities: [1, 2, 3] }),
    focus: (id) => (id === 7 ? { id, visible: [1] } : undefined),
  });
  const bodies = await Promise.all(Array.from({ length: 20 }, () => fetch(`${base}/viewer/state`).then((r) => r.text())));
  expect(built).toBe(1);
  expect(new Set(bodies).size).toBe(1);
  expect(JSON.parse(bodies[0] as string)).toEqual({ tick: 10, built: 1, entities: [1, 2, 3] });
  // A focus adds the player's area of interest to the same state.
  expect(await (await fetch(`${base}/viewer/state?focus=7`)).json()).toEqual({
    tick: 10,
    built: 1,
    entities: [1, 2, 3],
    focus: { id: 7, visible: [1] },
  });
  expect(await (await fetch(`${base}/viewer/state?focus=8`)).json()).toEqual({ tick: 10, built: 1, entities: [1, 2, 3] });
  // The largest entity id (2^32 − 1) is one still.
  expect((await fetch(`${base}/viewer/state?focus=4294967295`)).status).toBe(200);
  // An entity id is decimal digits: what Number() would read otherwise (hex, exponents, spaces) is refused.
  for (const bad of ['0x7', '7e0', '%207', '-7', '7.0', '4294967296', '99999999999']) {
    const res = await fetch(`${base}/viewer/state?focus=${bad}`);
    expect([bad, res.status, await res.text()]).toEqual([bad, 400, 'focus must be an entity id (a non-negative integer)\n']);
  }
  expect(built).toBe(1);
  // A poll after the next tick sees that tick's state.
  tick = 11;
  expect(await (await fetch(`${base}/viewer/state`)).json()).toEqual({ tick: 11, built: 2, entities: [1, 2, 3] });
});

test('the viewer state is readable cross-origin only from loopback pages (a local world), never from any origin', async () => {
  const base = await serveViewer({ version: () => '1', state: () => ({ tick: 1 }), focus: () => undefined });
  const from = (origin: string) => fetch(`${base}/viewer/state`, { headers: { origin } });
  expect((await fetch(`${base}/viewer/state`)).headers.get('access-control-allow-origin')).toBeNull();
  expect((await from('https://evil.example')).headers.get('access-control-allow-origin')).toBeNull();
  expect((await from('http://127.0.0.1.evil.example:80')).headers.get('access-control-allow-origin')).toBeNull();
  expect((await from('http://127.0.0.1:7702')).headers.get('access-control-allow-origin')).toBe('http://127.0.0.1:7702');
  expect((await from('http://localhost:7702')).headers.get('access-control-allow-origin')).toBe('http://localhost:7702');
});

test('viewer state requests beyond the concurrent cap are answered 503 while the others are still being sent', async () => {
  // Bigger than what loopback socket buffers hold: a client that does not read keeps its response in flight.
  const big = 'x'.repeat(24 * 1024 * 1024);
  const base = await serveViewer({ version: () => '1', state: () => ({ big }), focus: () => undefined });
  const { port } = new URL(base);
  const stalled: Socket[] = [];
  try {
    for (let i = 0; i < VIEWER_MAX_CONCURRENT; i++) {
      const s = connect(Number(port), '127.0.0.1');
      stalled.push(s);
      await once(s, 'connect');
      s.pause();
      s.write('GET /viewer/state HTTP/1.1\r\nhost: x\r\n\r\n');
    }
    await new Promise((r) => setTimeout(r, 300));
    const refused = await fetch(`${base}/viewer/state`);
    expect(refused.status).toBe(503);
    expect(await refused.text()).toContain('viewer');
  } finally {
    for (const s of stalled) s.destroy();
  }
  // Once those are gone, the viewer answers again.
  let status = 0;
  for (let i = 0; i < 100 && status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    status = (await fetch(`${base}/viewer/state`)).status;
  }
  expect(status).toBe(200);
}, 30_000);

test('a response its reader stopped reading is cut after the idle timeout', async () => {
  const big = 'x'.repeat(24 * 1024 * 1024);
  const base = await serveViewer(
    { version: () => '1', state: () => ({ big }), focus: () => undefined },
    { maxConnections: 64, idleTimeoutMs: 1000 },
  );
  const s = connect(Number(new URL(base).port), '127.0.0.1');
  await once(s, 'connect');
  s.pause();
  s.write('GET /viewer/state HTTP/1.1\r\nhost: x\r\n\r\n');
  await new Promise((r) => setTimeout(r, 300));
  expect(await openSockets()).toBe(1);
  // The timeout, and the second Node gives it.
  const deadline = Date.now() + 4000;
  while ((await openSockets()) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  expect(await openSockets()).toBe(0);
  s.destroy();
}, 15_000);

test('states are built at most VIEWER_MAX_BUILDS_PER_SECOND a second: beyond it the last one serves, unless ownership changed since (then the next build)', async () => {
  let built = 0;
  let tick = 0;
  let ownership = 'a';
  let focused = 0;
  // Every poll finds a new tick.
  const base = await serveViewer({
    version: () => `${++tick}:${ownership}`,
    ownership: () => ownership,
    state: () => ({ built: ++built }),
    focus: (id) => (id === 7 ? { id, n: ++focused } : undefined),
  });
  const started = Date.now();
  const seen: number[] = [];
  // A second at least, and polls far beyond the budget's builds, however slowly the machine runs them.
  while (Date.now() - started < 1000 || seen.length <= 50) {
    const res = await fetch(`${base}/viewer/state?focus=7`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { built: number; focus: { id: number; n: number } };
    seen.push(body.built);
    // The focus is computed once per state built, and sent with it.
    expect(body.focus).toEqual({ id: 7, n: body.built });
  }
  // Polls over the budget were answered (the last state built), not made to wait for builds.
  expect(seen.length).toBeGreaterThan(built);
  expect(built).toBeLessThanOrEqual(2 + VIEWER_MAX_BUILDS_PER_SECOND * ((Date.now() - started) / 1000) + 1);
  expect(focused).toBe(built);
  // Over the budget: a poll gets the last state built, a few ticks old.
  let last = (await (await fetch(`${base}/viewer/state`)).json()) as { built: number };
  for (;;) {
    const next = (await (await fetch(`${base}/viewer/state`)).json()) as { built: number };
    if (next.built === last.built) break;
    last = next;
  }
  // Ownership changed (a handoff between ticks): a state built before is never served after; the
  // poll waits for the next build instead.
  ownership = 'b';
  const asked = performance.now();
  const res = await fetch(`${base}/viewer/state`);
  expect(res.status).toBe(200);
  expect(((await res.json()) as { built: number }).built).toBeGreaterThan(last.built);
  // The wait is one build's worth of the budget (about 100 ms), but a stalled test process delays
  // the server's timer as much: the bound, 20 builds' worth, only catches a poll left waiting.
  expect(performance.now() - asked).toBeLessThan((20 * 1000) / VIEWER_MAX_BUILDS_PER_SECOND);
});

test('a state works out at most VIEWER_MAX_FOCUS_PER_STATE areas of interest: another player’s is answered 503 until the next state', async () => {
  let focused = 0;
  let version = 1;
  const base = await serveViewer({
    version: () => String(version),
    state: () => ({ version }),
    focus: (id) => ({ id, n: ++focused }),
  });
  for (let id = 1; id <= VIEWER_MAX_FOCUS_PER_STATE; id++) expect((await fetch(`${base}/viewer/state?focus=${id}`)).status).toBe(200);
  // Those already worked out are served again; a new one is not worked out.
  expect((await (await fetch(`${base}/viewer/state?focus=1`)).json()) as object).toMatchObject({ focus: { id: 1, n: 1 } });
  const refused = await fetch(`${base}/viewer/state?focus=999`);
  expect([refused.status, refused.headers.get('retry-after'), await refused.text()]).toEqual([
    503,
    '1',
    `the viewer has worked out ${VIEWER_MAX_FOCUS_PER_STATE} players' areas of interest for this state already; try again\n`,
  ]);
  expect(focused).toBe(VIEWER_MAX_FOCUS_PER_STATE);
  // The next state starts over.
  version++;
  expect((await (await fetch(`${base}/viewer/state?focus=999`)).json()) as object).toMatchObject({ focus: { id: 999 } });
});

test('polls waiting for a state to be built count against the concurrent cap', async () => {
  let tick = 0;
  let ownership = 'a';
  const base = await serveViewer({
    version: () => `${++tick}:${ownership}`,
    ownership: () => ownership,
    state: () => ({ tick }),
    focus: () => undefined,
  });
  // Spend the build budget, then change ownership: every poll now waits for the next build.
  for (let i = 0; i < 5; i++) await fetch(`${base}/viewer/state`);
  ownership = 'b';
  const answers = await Promise.all(
    Array.from({ length: 3 * VIEWER_MAX_CONCURRENT }, () => fetch(`${base}/viewer/state`).then((r) => r.status)),
  );
  expect(answers.filter((s) => s === 200).length).toBeLessThanOrEqual(VIEWER_MAX_CONCURRENT);
  expect(answers.filter((s) => s === 503).length).toBeGreaterThanOrEqual(2 * VIEWER_MAX_CONCURRENT);
});
