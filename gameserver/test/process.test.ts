import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aethex } from '@aethex/proto';
import { signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { killProcesses, spawnSource, type TestProcess } from '@aethex/testing/process';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { moduleFile, until } from './harness.js';

const MAIN = join(import.meta.dirname, '../src/main.ts');
afterEach(killProcesses);

/** `nodeFlags`: for node itself, before the script (as `--no-parallel-scavenge`). */
function run(env: Record<string, string>, args: string[] = [], nodeFlags: string[] = []): TestProcess {
  return spawnSource(MAIN, args, { env, nodeFlags });
}

async function addresses(p: TestProcess): Promise<{ gateway: string; ops: string }> {
  return (await p.logged('shard started', 20_000)) as { gateway: string; ops: string };
}

const keys = generateKeyPairSync('ed25519');
function shardEnv(dir: string): Record<string, string> {
  return {
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir,
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '200',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '40',
  };
}

async function joinShard(gateway: string, player: string): Promise<RealtimeClient> {
  const token = await signJoinToken(
    keys.privateKey,
    { playerId: player, world: 'local', instance: 0, shard: 'local-0-0' },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' },
  );
  const c = new RealtimeClient({ url: gateway, joinToken: token, createSocket: (u) => new WebSocket(u) as never });
  await c.connect();
  return c;
}

test('an invalid setting or flag stops the process with exit 2 and a message naming it', async () => {
  const bad = run({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '0', AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'x' });
  expect((await bad.exited).code).toBe(2);
  expect(bad.output()).toContain(
    'invalid configuration: engine.tick_rate_ms: expected an integer from 5 to 1000, got "0" (from AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS)',
  );
  // A key the shard could not verify with is a bad setting too, not a failed start.
  const key = run({ ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))), AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'not a key' });
  expect((await key.exited).code).toBe(2);
  expect(key.output()).toContain(
    'invalid configuration: auth.public_key: not a PEM public key: expected SPKI, beginning -----BEGIN PUBLIC KEY-----',
  );
  const flag = run({}, ['--nope']);
  expect((await flag.exited).code).toBe(2);
  expect(flag.output()).toContain("Unknown option '--nope'");
  const help = run({}, ['--help']);
  expect((await help.exited).code).toBe(0);
  expect(help.output()).toContain('usage: aethex-gameserver [--config <file.yaml>] [--help]');
  const missing = run({}, ['--config', '/nonexistent/shard.yaml']);
  expect((await missing.exited).code).toBe(2);
  expect(missing.output()).toContain('/nonexistent/shard.yaml: cannot read the configuration file (ENOENT)');
});

test('a shard map whose bounds the shard would refuse stops it with exit 2, naming the map', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  const map = join(dir, 'shard-map.json');
  const bounds = { minX: -2_000_000, minY: -2_000_000, maxX: 2_000_000, maxY: 2_000_000 };
  writeFileSync(
    map,
    JSON.stringify({
      world: 'far',
      bounds,
      instances: [{ instance: 0, shards: [{ shard: 0, name: 'far-0-0', region: bounds, neighbours: [], address: '127.0.0.1:1' }] }],
    }),
  );
  // The settings' own bounds are fine; the map's replace them.
  const far = run({ ...shardEnv(dir), AETHEX_GAMESERVER_SHARD_MAP_FILE: map, AETHEX_GAMESERVER_SHARD_NAME: 'far-0-0' });
  expect((await far.exited).code).toBe(2);
  expect(far.output()).toContain(`invalid configuration: shard.map_file: ${map}: its "bounds" are too far from 0 for engine.max_speed (5)`);
});

test('an address the shard cannot listen on stops it with a message naming the setting', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  // Not an address at all: a configuration error (exit 2), before anything starts.
  const malformed = run({ ...shardEnv(dir), AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '999.999.999.999:47001' });
  expect((await malformed.exited).code).toBe(2);
  expect(malformed.output()).toContain(
    'invalid configuration: gateway.bind_addr: expected host:port (an IP address or a host name, and a port from 0 to 65535): 999.999.999.999 is not an IPv4 address',
  );
  // TEST-NET-2 (RFC 5737): an address, but none of this machine's.
  const foreign = run({ ...shardEnv(dir), AETHEX_GAMESERVER_OPS_BIND_ADDR: '198.51.100.7:0' });
  expect((await foreign.exited).code).toBe(1);
  expect(foreign.output()).toContain(
    'aethex-gameserver: could not start: ops.bind_addr (198.51.100.7:0): no interface of this machine has that address (EADDRNOTAVAIL)',
  );
  const unresolved = run({ ...shardEnv(dir), AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: 'nowhere.invalid:0' });
  expect((await unresolved.exited).code).toBe(1);
  expect(unresolved.output()).toContain(
    'aethex-gameserver: could not start: gateway.bind_addr (nowhere.invalid:0): the host name does not resolve (ENOTFOUND)',
  );
  const taken = createServer().listen(0, '127.0.0.1');
  await once(taken, 'listening');
  const port = (taken.address() as AddressInfo).port;
  try {
    const busy = run({ ...shardEnv(dir), AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: `127.0.0.1:${port}` });
    expect((await busy.exited).code).toBe(1);
    expect(busy.output()).toContain(
      `aethex-gameserver: could not start: gateway.bind_addr (127.0.0.1:${port}): the address is in use (EADDRINUSE)`,
    );
  } finally {
    taken.close();
  }
});

test('SIGTERM drains: players are told SHUTTING_DOWN, the final snapshot is written, exit 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  const p = run(shardEnv(dir));
  const { gateway, ops, stores } = (await p.logged('shard started', 20_000)) as { gateway: string; ops: string; stores: unknown };
  // The start says what it stores in: here the local stand-ins.
  expect(stores).toEqual({ snapshots: `directory ${dir}`, presence: 'in-process', events: 'log (debug level)' });
  expect((await fetch(`${ops}/readyz`)).status).toBe(200);
  const player = await joinShard(gateway, 'drain-me');
  const kicks: string[] = [];
  player.on('kick', (reason) => kicks.push(reason));
  const started = Date.now();
  p.kill('SIGTERM');
  expect((await p.exited).code).toBe(0);
  expect(Date.now() - started).toBeLessThan(10_000);
  expect(kicks).toEqual(['SHUTTING_DOWN']);
  expect(readdirSync(dir).filter((f) => f.endsWith('.snapshot'))).toHaveLength(1);
  expect(p.output()).toContain('drained; exiting');
  // A connection's lines carry its id and address (its logger is made when it first logs).
  const lines = p
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'));
  const joined = JSON.parse(lines.find((l) => l.includes('"player joined"')) as string);
  expect(joined).toMatchObject({ conn: expect.any(Number), addr: '127.0.0.1', player: 'drain-me' });
  // The drain is one line, however many players it ends (each one's kick is at debug).
  expect(lines.filter((l) => l.includes('"kicked"'))).toEqual([]);
  const closed = lines.filter((l) => l.includes('"closed every session"')).map((l) => JSON.parse(l));
  expect(closed).toMatchObject([{ reason: 'shutting_down', sessions: 1 }]);
});

test('a drain whose game onLeave hooks are slow still ends within ops.drain_timeout_ms with its final snapshot: the hooks get part of the time', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  // Each onLeave takes 600 ms on the tick thread, where no timer can interrupt it.
  const game = moduleFile(
    'export default { onLeave() { const until = performance.now() + 600; while (performance.now() < until) {} } };\n',
  );
  const env = { ...shardEnv(dir), AETHEX_GAMESERVER_GAME_MODULE: game, AETHEX_GAMESERVER_OPS_DRAIN_TIMEOUT_MS: '3000' };
  const p = run(env);
  const { gateway } = await addresses(p);
  const players = await Promise.all(Array.from({ length: 6 }, (_, i) => joinShard(gateway, `slow-leave-${i}`)));
  const started = Date.now();
  p.kill('SIGTERM');
  expect(await p.exit(20_000), p.output()).toEqual({ code: 0, signal: null });
  expect(Date.now() - started).toBeLessThan(3000 + 1000);
  // Half of the 2,150 ms before the reserve: two hooks, the other four not called.
  const skipped = JSON.parse(
    p
      .output()
      .split('\n')
      .find((l) => l.includes('ran out of time for the game')) as string,
  );
  expect(skipped.skipped).toBeGreaterThanOrEqual(3);
  for (const c of players) c.close();
  // Every player is in the final snapshot.
  const again = run(env);
  const restored = (await again.logged('restored from snapshot')) as { players: number };
  expect(restored.players).toBe(6);
  again.kill('SIGTERM');
  expect((await again.exit()).code).toBe(0);
});

test('a SIGTERM while the shard starts (its game module still loading) drains it once started: exit 0, not killed by the signal', async () => {
  const game = moduleFile('await new Promise((r) => setTimeout(r, 1500));\nexport default {};\n');
  const p = run({ ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))), AETHEX_GAMESERVER_GAME_MODULE: game });
  // Logged before the start begins (the test runs node without the flag).
  await p.line((l) => l.includes('--no-parallel-scavenge'), 'the start to begin');
  p.kill('SIGTERM');
  expect(await p.exit(20_000), p.output()).toEqual({ code: 0, signal: null });
  const order = ['"starting":true,"msg":"draining"', '"msg":"shard started"', '"msg":"drained; exiting"'].map((m) => p.output().indexOf(m));
  expect(
    order.every((at) => at >= 0),
    p.output(),
  ).toBe(true);
  expect([...order].sort((a, b) => a - b)).toEqual(order);
});

test('after SIGKILL a restarted shard restores its last snapshot and the player gets their entity back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  const first = run(shardEnv(dir));
  const a = await addresses(first);
  // Started without the GC flag docs/gameserver.md asks for: it says so.
  expect(first.output()).toMatch(/"node runs without --no-parallel-scavenge/);
  const player = await joinShard(a.gateway, 'survivor');
  const entity = player.welcome?.entityId;
  // Until a periodic snapshot (every 200 ms) that includes the player is stored: one of a tick the
  // player was already sent, on however slow a machine.
  await until('a snapshot of the world with the player in it', () => player.lastTick > 0);
  const inWorld = player.lastTick;
  const savedTick = async () =>
    Number(/^aether_state_snapshot_last_saved_tick (\d+)$/m.exec(await (await fetch(`${a.ops}/metrics`)).text())?.[1] ?? 0);
  const deadline = Date.now() + 10_000;
  while ((await savedTick()) < inWorld) {
    if (Date.now() > deadline) throw new Error(`no snapshot of tick ${inWorld} or later stored within 10 s:\n${first.output()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  first.kill('SIGKILL');
  await first.exited;

  const second = run(shardEnv(dir), [], ['--no-parallel-scavenge']);
  const b = await addresses(second);
  expect(second.output()).toMatch(/"restored from snapshot"/);
  expect(second.output()).not.toMatch(/without --no-parallel-scavenge/);
  const again = await joinShard(b.gateway, 'survivor');
  expect(again.welcome?.entityId).toBe(entity);
  again.close();
  second.kill('SIGTERM');
  expect((await second.exited).code).toBe(0);
});

test('the protocol version is checked on join', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  const p = run(shardEnv(dir));
  const { gateway } = await addresses(p);
  const ws = new WebSocket(gateway);
  const messages: aethex.v1.ServerMessage[] = [];
  ws.on('message', (d) => messages.push(aethex.v1.ServerMessage.decode(d as Buffer)));
  await new Promise((r) => ws.on('open', r));
  ws.send(aethex.v1.ClientMessage.encode({ join: { joinToken: 'x', protocolVersion: 0 } }).finish());
  const code = await new Promise<number>((r) => ws.on('close', (c) => r(c)));
  expect(code).toBe(1002);
  expect(messages[0]?.kick?.message).toContain('protocol version 0 is not supported');
  p.kill('SIGTERM');
  expect((await p.exited).code).toBe(0);
});

test('with engine.snapshot_threads 2 both players get live snapshots (one cut by the worker thread) and SIGTERM still exits 0', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  const p = run({ ...shardEnv(dir), AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: '2', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,300,300' });
  const { gateway, ops } = await addresses(p);
  // Sessions go to the least-loaded thread that is up: the first here, the second to the worker
  // (and later, as measured costs say, the tick thread, which also writes every socket, may hand
  // its session to the worker too).
  const a = await joinShard(gateway, 'thread-a');
  const b = await joinShard(gateway, 'thread-b');
  const sample = (c: RealtimeClient) => [...c.entities()].map(([id, e]) => `${id}:${e.x},${e.y}`).join(' ');
  for (const c of [a, b]) {
    await until('NPCs in view', () => c.entities().size >= 15, 10_000);
    const before = sample(c);
    await until('the NPCs to move in the snapshots', () => sample(c) !== before, 5_000);
  }
  expect(p.output()).not.toContain('snapshot thread failed');
  const metrics = await (await fetch(`${ops}/metrics`)).text();
  const onThread = (t: number) => Number(new RegExp(`^aether_snapshot_thread_sessions\\{thread="${t}"\\} (\\d+)$`, 'm').exec(metrics)?.[1]);
  expect(onThread(1)).toBeGreaterThanOrEqual(1);
  expect(onThread(0) + onThread(1)).toBe(2);
  a.close();
  b.close();
  p.kill('SIGTERM');
  expect((await p.exited).code).toBe(0);
});

test('on Agones, a shard that cannot reach its SDK server dials it over gRPC and stops with a message naming it', async () => {
  const bad = run({ ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))), AGONES_SDK_GRPC_PORT: '9357x' });
  expect((await bad.exited).code).toBe(2);
  expect(bad.output()).toContain('invalid configuration: AGONES_SDK_GRPC_PORT: expected a port from 1 to 65535, got "9357x"');

  // A TCP listener that never answers: the shard must dial it with gRPC (HTTP/2) and give up after
  // agones.connect_timeout_ms, before it listens for players.
  const received: Buffer[] = [];
  const silent = createServer((socket) => socket.on('data', (d: Buffer) => received.push(d)));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const port = (silent.address() as AddressInfo).port;
  try {
    const started = Date.now();
    const p = run({
      ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))),
      AGONES_SDK_GRPC_PORT: String(port),
      AETHEX_GAMESERVER_AGONES_CONNECT_TIMEOUT_MS: '1500',
    });
    expect((await p.exited).code).toBe(1);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    expect(p.output()).toContain(
      `could not start: no Agones SDK server answered on localhost:${port} (AGONES_SDK_GRPC_PORT) within 1500 ms (agones.connect_timeout_ms)`,
    );
    expect(p.output()).not.toContain('shard started');
    expect(Buffer.concat(received).toString('latin1')).toMatch(/^PRI \* HTTP\/2\.0\r\n\r\nSM\r\n\r\n/);
  } finally {
    silent.close();
  }
});

test('a store that accepts connections and never answers stops the start, with a message naming it, within its timeout', async () => {
  // A TCP listener that never answers: Redis or PostgreSQL hung.
  const silent = createServer(() => undefined);
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  const port = (silent.address() as AddressInfo).port;
  try {
    const redis = run({
      ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))),
      AETHEX_GAMESERVER_PRESENCE_REDIS_URL: `redis://127.0.0.1:${port}`,
      AETHEX_GAMESERVER_PRESENCE_REDIS_CONNECT_TIMEOUT_MS: '1000',
    });
    expect((await redis.exited).code).toBe(1);
    expect(redis.output()).toContain(
      `could not start: Redis at 127.0.0.1:${port} (presence.redis_url) could not be used: no answer within 1000 ms (presence.redis_connect_timeout_ms 1000 ms, presence.redis_command_timeout_ms 2000 ms)`,
    );
    const postgres = run({
      ...shardEnv(mkdtempSync(join(tmpdir(), 'aethex-proc-'))),
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: `postgres://postgres@127.0.0.1:${port}/postgres`,
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_CONNECT_TIMEOUT_MS: '1000',
    });
    expect((await postgres.exited).code).toBe(1);
    expect(postgres.output()).toMatch(
      new RegExp(
        `could not start: PostgreSQL at 127\\.0\\.0\\.1:${port} \\(persistence\\.postgres_url\\) could not be used: .*timeout.* \\(persistence\\.postgres_connect_timeout_ms 1000 ms, persistence\\.postgres_query_timeout_ms 10000 ms\\)`,
      ),
    );
    for (const p of [redis, postgres]) expect(p.output()).not.toContain('shard started');
  } finally {
    silent.close();
  }
});

test('a snapshot directory the shard cannot write in stops the start with a message naming it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-proc-'));
  // Under a plain file (root ignores a read-only mode; this fails for everyone).
  writeFileSync(join(dir, 'file'), '');
  const p = run({ ...shardEnv(dir), AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: join(dir, 'file', 'snapshots') });
  expect((await p.exited).code).toBe(1);
  expect(p.output()).toMatch(
    new RegExp(
      `could not start: the snapshot directory ${join(dir, 'file', 'snapshots')} \\(persistence\\.directory\\) could not be written: ENOTDIR`,
    ),
  );
  expect(p.output()).not.toContain('shard started');
});
