import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aethex, PROTOCOL_VERSION } from '@aethex/proto';
import { signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { killProcesses, spawnSource, type TestProcess } from '@aethex/testing/process';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { duoMap, duoWorld, startTestShard, type TestShard, until } from './harness.js';

// The shard's drain, its signals and its readiness, on the real main.ts and real sockets.

const MAIN = join(import.meta.dirname, '../src/main.ts');
const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  await killProcesses();
  for (const stop of stops.splice(0)) await stop().catch(() => undefined);
});

interface Proc extends TestProcess {
  dir: string;
}

const keys = generateKeyPairSync('ed25519');
const publicKeyPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();

function run(env: Record<string, string>): Proc {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-drain-'));
  const p = spawnSource(MAIN, [], {
    nodeFlags: ['--no-parallel-scavenge'],
    env: {
      AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: publicKeyPem,
      AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir,
      // Only the final snapshot writes a file.
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '3600000',
      ...env,
    },
  });
  return Object.assign(p, { dir });
}

async function started(p: Proc): Promise<{ gateway: string; ops: string }> {
  return (await p.logged('shard started', 30_000)) as { gateway: string; ops: string };
}

const snapshotFiles = (p: Proc) => (existsSync(p.dir) ? readdirSync(p.dir) : []);

/** A shard map of two shards side by side (`duoMap`); this process is `duo-0-0`, its neighbour never runs. */
async function duoEnv(): Promise<Record<string, string>> {
  return (await duoMap()).envOf(0);
}

/** A joined player whose client then stops reading its socket: it never answers the close handshake. */
async function frozenPlayer(gateway: string, playerId: string): Promise<void> {
  const token = await signJoinToken(
    keys.privateKey,
    { playerId, world: 'local', instance: 0, shard: 'local-0-0' },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' },
  );
  let socket: WebSocket | undefined;
  const c = new RealtimeClient({
    url: gateway,
    joinToken: token,
    createSocket: (u) => {
      socket = new WebSocket(u);
      return socket as never;
    },
  });
  await c.connect();
  (socket as unknown as { _socket: { pause(): void } })._socket.pause();
}

test('a WebSocket to /shard-link that never says hello does not hold the drain: exit 0 with the final snapshot', async () => {
  const p = run({ ...(await duoEnv()), AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '2500' });
  const { gateway } = await started(p);
  const stray = new WebSocket(`${gateway}/shard-link`);
  stray.on('error', () => undefined);
  await once(stray, 'open');
  p.kill('SIGTERM');
  const exit = await p.exited;
  expect(exit, p.output()).toEqual({ code: 0, signal: null });
  expect(p.output()).toContain('drained; exiting');
  expect(snapshotFiles(p).length).toBeGreaterThan(0);
});

test('a client that stops reading does not hold the drain past ops.drain_timeout_ms: it is told why, and the snapshot is written', async () => {
  // The drain gives a client a second to close, then cuts it off (and a kicked client gets 2 s at
  // most anyway), writing the final snapshot meanwhile; a drain that waited for this one would be
  // ended by main's bound: exit 1. The bound leaves seconds past those, so a slow machine does not
  // end a drain that did not wait.
  const p = run({ AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '4000', AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '100' });
  const { gateway } = await started(p);
  await frozenPlayer(gateway, 'frozen');
  p.kill('SIGTERM');
  const exit = await p.exited;
  expect(exit, p.output()).toEqual({ code: 0, signal: null });
  expect(p.output()).toMatch(/"sessions":1[^\n]*"closed every session"/);
  expect(snapshotFiles(p).length).toBeGreaterThan(0);
});

test('a second SIGTERM or a SIGINT during a drain is logged and ignored: the drain ends with exit 0 and the snapshot', async () => {
  const p = run({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '100' });
  const { gateway } = await started(p);
  // A client that never answers the close handshake keeps the drain going for a while.
  await frozenPlayer(gateway, 'frozen');
  p.kill('SIGTERM');
  await until('the drain to begin', () => p.output().includes('"draining"'), 10_000);
  p.kill('SIGTERM');
  await until('the second signal to be seen', () => p.output().includes('already draining'), 10_000);
  p.kill('SIGINT');
  const exit = await p.exited;
  expect(exit, p.output()).toEqual({ code: 0, signal: null });
  expect(p.output()).toContain('drained; exiting');
  expect(snapshotFiles(p).length).toBeGreaterThan(0);
});

test('ops.drain_timeout_ms below 1000 is refused; at 1000 an idle shard drains with its final snapshot', async () => {
  const low = run({ AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '100' });
  await until('the process to exit or start', () => low.child.exitCode !== null || low.output().includes('"shard started"'), 30_000);
  expect(low.output()).not.toContain('"shard started"');
  expect((await low.exited).code).toBe(2);
  expect(low.output()).toContain('ops.drain_timeout_ms');
  const p = run({ AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '1000' });
  await started(p);
  await new Promise((r) => setTimeout(r, 1000));
  p.kill('SIGTERM');
  const exit = await p.exited;
  expect(exit, p.output()).toEqual({ code: 0, signal: null });
  expect(snapshotFiles(p).length).toBeGreaterThan(0);
});

test('a restored shard of a sharded world is not ready while it refuses joins NOT_READY', async () => {
  const world = await duoWorld({ AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-ready-')) });
  let a: TestShard = await world.start(0);
  stops.push(() => a.stop());
  await a.client('alice');
  // alice is kept, dormant, in the final snapshot: the restarted shard waits to settle with its neighbour.
  await a.stop();
  a = await world.start(0);
  expect(a.shard.sharding?.settled).toBe(false);
  expect((await fetch(`${a.shard.opsUrl}/readyz`)).status).toBe(503);
  const notReadyBefore = await joinsNotReady(a);
  // A join before the shard settled (its neighbour never answers: the settle timeout, 3 s, ends the wait).
  const refused = await refusedJoin(a.shard.gatewayUrl, await a.token('bob'));
  expect(refused.welcomed).toBe(false);
  expect(refused.kick).toBe(aethex.v1.ReasonCode.REASON_CODE_NOT_READY);
  expect(refused.code).toBe(1013);
  expect(a.shard.sharding?.settled).toBe(false);
  expect(await joinsNotReady(a)).toBe(notReadyBefore + 1);
  await until('the shard to settle', () => a.shard.sharding?.settled === true, 15_000);
  expect((await fetch(`${a.shard.opsUrl}/readyz`)).status).toBe(200);
  const bob = await a.client('bob');
  expect(bob.welcome?.entityId).toBeGreaterThan(0);
  expect(await joinsNotReady(a)).toBe(notReadyBefore + 1);
});

/** `aether_joins_total{result="not_ready"}` on the shard's /metrics (0 before the first). */
async function joinsNotReady(t: TestShard): Promise<number> {
  const text = await (await fetch(`${t.shard.opsUrl}/metrics`)).text();
  return Number(/^aether_joins_total\{result="not_ready"\} (\d+)$/m.exec(text)?.[1] ?? 0);
}

/**
 * A raw WebSocket's Join with `token`: whether the shard welcomed it (then the socket is closed
 * here), else the Kick's reason and the close code that followed it.
 */
async function refusedJoin(url: string, token: string): Promise<{ welcomed: boolean; kick?: aethex.v1.ReasonCode; code?: number }> {
  const ws = new WebSocket(url);
  const messages: aethex.v1.ServerMessage[] = [];
  ws.on('message', (data) => messages.push(aethex.v1.ServerMessage.decode(data as Buffer)));
  ws.on('error', () => undefined);
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  await once(ws, 'open');
  ws.send(aethex.v1.ClientMessage.encode({ join: { joinToken: token, protocolVersion: PROTOCOL_VERSION } }).finish());
  await until('a Welcome or a Kick', () => messages.some((m) => m.body === 'welcome' || m.body === 'kick'));
  if (messages.some((m) => m.body === 'welcome')) {
    ws.close(1000);
    return { welcomed: true };
  }
  return { welcomed: false, kick: messages.find((m) => m.body === 'kick')?.kick?.reason ?? undefined, code: await closed };
}

test('with auth.jwks_url: not ready until the key set loads, then ready and joins verify; a failed load is a warning', async () => {
  let serving = false;
  const jwk = { ...keys.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA', use: 'sig' };
  let asked = 0;
  const jwks = createServer((_req, res) => {
    asked++;
    if (!serving) res.writeHead(404).end('not found');
    else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] }));
  });
  jwks.listen(0, '127.0.0.1');
  await once(jwks, 'listening');
  stops.push(async () => {
    jwks.close();
  });
  const p = run({
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: '',
    AETHEX_GAMESERVER_AUTH_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks`,
  });
  const { ops, gateway } = await started(p);
  await until('the key set to be asked for', () => asked > 0, 10_000);
  expect((await fetch(`${ops}/readyz`)).status).toBe(503);
  await until('a warning about the keys', () => /"level":40[^\n]*join-token keys/.test(p.output()), 10_000);
  serving = true;
  const deadline = Date.now() + 20_000;
  while ((await fetch(`${ops}/readyz`)).status !== 200) {
    if (Date.now() > deadline) throw new Error(`not ready 20 s after the key set is served:\n${p.output()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const token = await signJoinToken(
    keys.privateKey,
    { playerId: 'p1', world: 'local', instance: 0, shard: 'local-0-0' },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA', kid: 'k1' },
  );
  const c = new RealtimeClient({ url: gateway, joinToken: token, createSocket: (u) => new WebSocket(u) as never });
  await c.connect();
  c.close();
  p.kill('SIGTERM');
  expect((await p.exited).code).toBe(0);
});

test('aether_tick_duration_seconds covers the whole of a tick’s work on the tick thread', async () => {
  // The span from the tick's start to its end, timed here: it holds the engine's step, the
  // sharding's work and the periodic state capture (and a CPU-clock read, microseconds).
  let whole = 0;
  let ticks = 0;
  let measuring = false;
  let began = 0;
  const t = await startTestShard(
    { AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '8000', AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '100' },
    keys,
    () => {
      if (measuring && began > 0) {
        whole += performance.now() - began;
        ticks++;
      }
      began = 0;
    },
    () => {
      began = performance.now();
    },
  );
  stops.push(() => t.stop());
  const histogram = async () => {
    const { values } = await t.shard.metrics.tickDuration.get();
    const sum = values.find((v) => v.metricName === 'aether_tick_duration_seconds_sum')?.value ?? 0;
    const count = values.find((v) => v.metricName === 'aether_tick_duration_seconds_count')?.value ?? 0;
    return { sum, count };
  };
  await new Promise((r) => setTimeout(r, 300));
  // Between two reads of the histogram on this thread, whole ticks only.
  const h0 = await histogram();
  measuring = true;
  await new Promise((r) => setTimeout(r, 2000));
  measuring = false;
  const h1 = await histogram();
  expect(Math.abs(h1.count - h0.count - ticks)).toBeLessThanOrEqual(1);
  // The histogram times most of that span (the rest: the callbacks and a CPU-clock read, some
  // microseconds a tick), not the engine's step alone.
  expect((h1.sum - h0.sum) * 1000).toBeGreaterThanOrEqual(whole * 0.85);
  expect((h1.sum - h0.sum) * 1000).toBeLessThanOrEqual(whole * 1.01);
});
