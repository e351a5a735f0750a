import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { aethex, MAX_CLIENT_VERSION_BYTES } from '@aethex/proto';
import { createLogger, freePortBlock, signJoinToken } from '@aethex/runtime';
import { testEnv } from '@aethex/testing';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, test } from 'vitest';
import { type ClientOptions, WebSocket } from 'ws';
import { loadConfig } from '../src/config.js';
import { MAX_FRAGMENTS } from '../src/net/gateway.js';
import { startShard } from '../src/shard.js';
import { moduleFile, startTestShard, type TestShard, testShardSettings, until } from './harness.js';

const { ClientMessage, ServerMessage, ReasonCode } = aethex.v1;

let t: TestShard | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

/** A raw socket to the gateway (`options`: ws's, e.g. another `localAddress`) that records the messages and the close code. */
async function raw(url: string, options: ClientOptions = {}) {
  const ws = new WebSocket(url, options);
  const messages: aethex.v1.ServerMessage[] = [];
  const closed = new Promise<{ code: number; at: number }>((resolve) => ws.on('close', (code) => resolve({ code, at: Date.now() })));
  ws.on('message', (data) => messages.push(ServerMessage.decode(data as Buffer)));
  ws.on('error', () => undefined);
  await once(ws, 'open');
  return {
    ws,
    messages,
    closed,
    kick: () => messages.find((m) => m.body === 'kick')?.kick,
    errors: () => messages.filter((m) => m.body === 'error').map((m) => m.error as aethex.v1.IError),
  };
}

/** How a WebSocket attempt that never opens ends: 'unexpected-response' gives the HTTP status, else the error's code. */
async function refused(url: string, options: ClientOptions = {}): Promise<string> {
  const ws = new WebSocket(url, options);
  return new Promise((resolve) => {
    ws.on('open', () => {
      resolve('opened');
      ws.terminate();
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(`HTTP ${res.statusCode}`);
      ws.terminate();
    });
    ws.on('error', (err: Error & { code?: string }) => resolve(err.code ?? err.message));
  });
}

/**
 * Opens connections to a shard allowing a burst of 3 and 2 a second per address (the tests' setting)
 * one after another, each closed and forgotten (`counted`: the address the shard counts them
 * against) before the next, until one is refused: however late a stalled process makes them, no
 * more open than the burst and what refilled since the first began. How many opened, and the refusal.
 */
async function openUntilRefused(url: string, options: ClientOptions, counted: string): Promise<{ opened: number; refusal: string }> {
  const first = performance.now();
  let opened = 0;
  for (;;) {
    const outcome = await refused(url, options);
    const elapsed = performance.now() - first;
    if (outcome !== 'opened') return { opened, refusal: outcome };
    opened++;
    expect(opened).toBeLessThanOrEqual(3 + (2 * elapsed) / 1000);
    expect(elapsed, 'still none refused').toBeLessThan(10_000);
    await until('the socket forgotten', () => socketsFrom(t as TestShard, counted) === 0);
  }
}

/** A plain TCP connection to the gateway's port from `localAddress`, and when it closed (epoch ms). */
function tcp(url: string, localAddress = '127.0.0.1'): { socket: Socket; closed: Promise<number> } {
  const socket = connect({ port: Number(new URL(url).port), host: '127.0.0.1', localAddress });
  socket.on('error', () => undefined);
  // Flowing, so that the shard's FIN is read and 'close' follows (a paused socket never sees it).
  socket.resume();
  return { socket, closed: new Promise((resolve) => socket.once('close', () => resolve(Date.now()))) };
}

/** The gateway's count of open TCP sockets from `address`, upgraded or not. */
const socketsFrom = (shard: TestShard, address = '127.0.0.1') =>
  (shard.shard.gateway as unknown as { perAddress: Map<string, number> }).perAddress.get(address) ?? 0;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `until` for a check that awaits (a metric): polls every 20 ms, failing after `timeoutMs` with `what`. */
async function untilAwaited(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

const now = () => Math.floor(Date.now() / 1000);

/** A join token for the harness's shard (test/test-0-0) with its own `iat` and `exp`, and `kid`. */
const timedToken = (key: KeyObject, iat: number, exp: number, kid?: string) =>
  new SignJWT({ world: 'test', instance: 0, shard: 'test-0-0' })
    .setProtectedHeader({ alg: 'EdDSA', ...(kid ? { kid } : {}) })
    .setSubject('p')
    .setIssuer('aethex-control-plane')
    .setAudience('aethex-shard')
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key);

/**
 * A client frame written by hand: `opcode`, FIN or not, masked with a zero key (the payload as
 * it is), for payloads under 126 bytes.
 */
const clientFrame = (opcode: number, payload: Uint8Array, fin: boolean) =>
  Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | payload.length, 0, 0, 0, 0, ...payload]);

/** `message` as `frames` WebSocket frames: an empty first one, empty continuations, and the bytes in the last. */
const fragmented = (message: Uint8Array, frames: number) =>
  Buffer.concat([
    clientFrame(2, new Uint8Array(0), false),
    ...Array.from({ length: frames - 2 }, () => clientFrame(0, new Uint8Array(0), false)),
    clientFrame(0, message, true),
  ]);

/** The value of an unlabelled metric (or one with `labels`), or undefined when absent. */
async function metric(opsUrl: string, name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(`${opsUrl}/metrics`)).text();
  const at = new RegExp(`^${name}${labels.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
  return at ? Number(at[1]) : undefined;
}

/** A WebSocket upgrade request, whole. */
const upgradeRequest = () =>
  `GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/** `aether_bad_messages_total{reason}` once it reaches `count` (or after about 2 s, whatever it is). */
async function badMessages(opsUrl: string, reason: string, count: number): Promise<number> {
  for (let i = 0; ; i++) {
    const text = await (await fetch(`${opsUrl}/metrics`)).text();
    const seen = Number(new RegExp(`^aether_bad_messages_total\\{reason="${reason}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
    if (seen >= count || i === 100) return seen;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('gateway and engine over real sockets', () => {
  test('a player joins, receives one snapshot per tick, and its inputs are applied and acknowledged', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '50',
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '300',
    });
    const a = await t.client('alice');
    expect(a.welcome?.entityId).toBeGreaterThan(0);
    expect(a.welcome?.tickRateHz).toBe(40);
    // The exact tick and the largest message the shard takes, for the client to pace and size by.
    expect(a.welcome?.tickIntervalUs).toBe(25_000);
    expect(a.welcome?.maxMessageSize).toBe(4096);
    const ticks: number[] = [];
    a.on('snapshot', (tick) => ticks.push(tick));
    await until('20 snapshots', () => ticks.length >= 20);
    // At most one snapshot per tick, in order.
    expect(new Set(ticks).size).toBe(ticks.length);
    expect([...ticks].sort((x, y) => x - y)).toEqual(ticks);
    // A 300-unit radius covers all of a 200×200 world: 50 NPCs and alice are visible.
    expect(a.entities().size).toBe(51);
    // Rendering positions lie within the world, between snapshots.
    const drawn = a.interpolatedEntities();
    expect(drawn.size).toBe(51);
    for (const e of drawn.values()) expect(Math.abs(e.x) <= 100 && Math.abs(e.y) <= 100).toBe(true);

    // One input per tick, as a client sends them; the entity starts at least 10 units from the edge.
    const id = a.welcome?.entityId as number;
    const slot = t.shard.engine.world.indexOf(id);
    t.shard.engine.world.x[slot] = 0;
    await until('the moved start to show', () => Math.abs(a.entities().get(id)?.x ?? 1) < 0.2);
    for (let i = 0; i < 10; i++) {
      a.move(1, 0);
      await new Promise((r) => setTimeout(r, 25));
    }
    await until('all inputs acknowledged', () => a.lastAckedSeq === 10 && a.unacknowledged === 0);
    await until('the last move in a snapshot', () => Math.abs((a.entities().get(id)?.x ?? 0) - 10) < 0.2);
    expect(a.predicted.x).toBeCloseTo(10, 0);
    expect(a.takeLatencies()).toHaveLength(10);
  });

  test('a second player appears to the first (enter) and disappears when it leaves', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50' });
    const a = await t.client('alice');
    const entered: number[] = [];
    const left: number[] = [];
    a.on('enter', (id) => entered.push(id));
    a.on('leave', (id) => left.push(id));
    const b = await t.client('bob');
    const bobId = b.welcome?.entityId as number;
    await until('bob entering alice’s view', () => entered.includes(bobId));
    b.close();
    await until('bob leaving alice’s view', () => left.includes(bobId));
    expect(t.shard.engine.playerCount).toBe(1);
  });

  test('a speed hack is clamped to max speed and corrected; the correction is counted', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-1000,-1000,1000,1000', AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '5' });
    const a = await t.client('cheater');
    const corrections: { x: number; y: number }[] = [];
    a.on('correction', (p) => corrections.push(p));
    // The Correction messages themselves: the SDK also reports a snapshot's position as a 'correction'.
    const socket = (a as unknown as { socket: WebSocket }).socket;
    const sent: aethex.v1.ICorrection[] = [];
    socket.on('message', (data) => {
      const m = ServerMessage.decode(new Uint8Array(data as ArrayBuffer));
      if (m.body === 'correction') sent.push(m.correction as aethex.v1.ICorrection);
    });
    await until('a first snapshot', () => a.lastTick > 0);
    const id = a.welcome?.entityId as number;
    const before = a.entities().get(id) as { x: number; y: number };
    // Bypass the SDK's own clamp: send a raw teleport of 500 units.
    socket.send(ClientMessage.encode({ input: { seq: 1, move: { x: 500, y: 0 }, ackTick: a.lastTick } }).finish());
    await until('a correction', () => corrections.length > 0 && sent.length > 0);
    // As of the input it clamped: the client replays only the inputs after it.
    expect(sent[0]?.lastInputSeq).toBe(1);
    const slot = t.shard.engine.world.indexOf(id);
    expect(
      Math.hypot((t.shard.engine.world.x[slot] as number) - before.x, (t.shard.engine.world.y[slot] as number) - before.y),
    ).toBeLessThanOrEqual(5.2);
    const metrics = await t.shard.metrics.registry.getSingleMetricAsString('aether_corrections_total');
    expect(metrics).toMatch(/aether_corrections_total 1\b/);
  });

  test("at the world's edge the client predicts what the shard does: never past the wall, nothing to pull back", async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50', AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '4' });
    const a = await t.client('walker');
    const id = a.welcome?.entityId as number;
    const world = t.shard.engine.world;
    const slot = world.indexOf(id);
    world.x[slot] = 40;
    world.y[slot] = 0;
    await until('the moved start to show', () => Math.abs(a.predicted.x - 40) < 0.2 && a.unacknowledged === 0);
    // Walk east into the wall for 20 ticks, one input per tick, watching the prediction after every
    // move, snapshot and correction.
    let furthest = -Infinity;
    // Once at the wall, how far back any snapshot or correction pulled the prediction.
    let lowestAtWall = Infinity;
    const watch = () => {
      furthest = Math.max(furthest, a.predicted.x);
      if (furthest > 49.99) lowestAtWall = Math.min(lowestAtWall, a.predicted.x);
    };
    a.on('snapshot', watch);
    a.on('correction', watch);
    for (let i = 0; i < 20; i++) {
      a.move(4, 0);
      watch();
      await new Promise((r) => setTimeout(r, 25));
    }
    const step = a.welcome?.positionScale as number;
    await until('every input applied', () => a.unacknowledged === 0 && (a.entities().get(id)?.x ?? 0) > 50 - 1.5 * step);
    // Snapshot positions are quantized, to a quantum that reads inside the bounds: 49.875 for an
    // entity at 49.999, not 50, which is outside.
    expect(a.entities().get(id)?.x).toBe(50 - step);
    expect(furthest).toBeLessThanOrEqual(50 + step / 2);
    expect(furthest).toBeGreaterThan(49.9);
    // The shard stopped the entity at the wall and said so; the prediction is already there.
    expect(world.x[slot]).toBeCloseTo(50, 2);
    expect(Math.abs(a.predicted.x - (world.x[slot] as number))).toBeLessThanOrEqual(step / 2);
    // Never pulled back from it: the quantum the snapshots read (the one below the wall) is the
    // prediction's own.
    expect(lowestAtWall).toBe(world.x[slot]);
    expect(await t.shard.metrics.registry.getSingleMetricAsString('aether_corrections_total')).toMatch(/aether_corrections_total [1-9]/);
  });

  test('a client that stops acknowledging gets fewer snapshots, and catches up when it acknowledges again', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_SLOW_SKIP_TICKS: '8', AETHEX_GAMESERVER_GATEWAY_SLOW_DROP_TICKS: '400' });
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('stalled'), protocolVersion: 1 } }).finish());
    const snapshots = () => c.messages.filter((m) => m.body === 'snapshot').map((m) => m.snapshot?.tick as number);
    // It acknowledges nothing for 40 ticks: after the first 8 it gets one snapshot every 4 ticks.
    await until('40 ticks', () => (snapshots().at(-1) ?? 0) - (snapshots()[0] ?? 0) >= 40, 5000);
    const seen = snapshots();
    const start = seen[0] as number;
    const late = seen.filter((tick) => tick - start > 12);
    expect(late.length).toBeGreaterThan(3);
    for (let k = 1; k < late.length; k++) expect((late[k] as number) - (late[k - 1] as number)).toBe(4);
    // Acknowledging the newest it got brings it back to one snapshot per tick.
    const ack = () => c.ws.send(ClientMessage.encode({ ack: { ackTick: snapshots().at(-1) as number } }).finish());
    ack();
    await until(
      'snapshots every tick again',
      () => {
        ack();
        const s = snapshots().slice(-5);
        return s.length === 5 && s.every((tick, k) => k === 0 || tick - (s[k - 1] as number) === 1);
      },
      5000,
    );
    expect(c.kick()).toBeUndefined();
    c.ws.close();
  });

  test('an oversized frame is closed with 1009 before decoding; the smallest allowed size still takes a Join', async () => {
    // Below 1024 a Join with a signed token (about 330 bytes) could never fit: refused at start.
    expect(() => loadConfig({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'a key', AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE: '512' })).toThrow(
      /gateway\.max_message_size/,
    );
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE: '1024' });
    const joined = await t.client('a-player-with-a-rather-long-id-0123456789abcdef');
    expect(joined.welcome?.entityId).toBeGreaterThan(0);
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(new Uint8Array(4096));
    expect((await c.closed).code).toBe(1009);
  });

  test('an RPC over gateway.max_message_size is refused by the SDK before it is sent: the session and the entity stay', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE: '1024' });
    const kicks: string[] = [];
    const c = await t.client('big-rpc', {}, (c) => c.on('kick', (reason) => kicks.push(reason)));
    expect(c.welcome?.maxMessageSize).toBe(1024);
    const id = c.welcome?.entityId as number;
    const outcome = (p: Promise<Uint8Array>) =>
      p.then(
        () => 'ok',
        (e: Error & { code: string }) => `${e.code}: ${e.message}`,
      );
    expect(await outcome(c.rpc('save', new Uint8Array(2000)))).toBe(
      "MESSAGE_TOO_LARGE: rpc save: its message is 2014 bytes, over the shard's limit of 1024 bytes (gateway.max_message_size); not sent",
    );
    // The next call goes out on the same connection and is answered (no game module: no handler).
    expect(await outcome(c.rpc('save', new Uint8Array(900)))).toBe('UNKNOWN_METHOD: rpc save failed: UNKNOWN_METHOD');
    expect(kicks).toEqual([]);
    expect(c.ended).toBe(false);
    expect(c.welcome?.entityId).toBe(id);
    expect(t.shard.engine.world.indexOf(id)).toBeGreaterThanOrEqual(0);
  });

  test('Join.client_version over 64 bytes is a bad message naming the field, and the connection may Join again; one that fits is on the `player joined` line, control characters replaced', async () => {
    const keys = generateKeyPairSync('ed25519');
    const lines: string[] = [];
    const settings = testShardSettings({ AETHEX_GAMESERVER_LOG_LEVEL: 'info' }, keys);
    const shard = await startShard(settings, {
      log: createLogger('gameserver-test', 'info', { write: (line: string) => void lines.push(line) }),
    });
    try {
      const token = await signJoinToken(
        keys.privateKey,
        { playerId: 'versioned', world: 'test', instance: 0, shard: 'test-0-0' },
        { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' },
      );
      const c = await raw(shard.gatewayUrl);
      // 65 bytes: 63 ASCII and one two-byte character.
      const tooLong = `${'v'.repeat(63)}é`;
      expect(Buffer.byteLength(tooLong)).toBe(MAX_CLIENT_VERSION_BYTES + 1);
      c.ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1, clientVersion: tooLong } }).finish());
      await until('the Error', () => c.errors().length === 1);
      expect(c.errors()[0]).toMatchObject({ reason: ReasonCode.REASON_CODE_PROTOCOL_ERROR });
      expect(c.errors()[0]?.message).toMatch(/^Join\.client_version is 65 bytes; at most 64 /);
      expect(c.messages.some((m) => m.body === 'welcome')).toBe(false);
      // 64 bytes with a line break and an escape in it: taken, and logged without them.
      const fits = `game 1.2\n\u001b[31m${'x'.repeat(50)}`;
      expect(Buffer.byteLength(fits)).toBe(64);
      c.ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1, clientVersion: fits } }).finish());
      await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
      await until('the join logged', () => lines.some((l) => l.includes('"player joined"')));
      const joined = JSON.parse(lines.find((l) => l.includes('"player joined"')) as string);
      expect(joined).toMatchObject({ player: 'versioned', clientVersion: `game 1.2??[31m${'x'.repeat(50)}` });
      expect(await badMessages(shard.opsUrl, 'bad_join', 1)).toBe(1);
      c.ws.close(1000);
    } finally {
      await shard.drain();
    }
  });

  test('a joined player whose frame the shard refuses (1009, 1002, 1007) leaves at once, kicked; one that closes with 1002 itself drops', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE: '1024' });
    const shard = t.shard;
    const { engine } = shard;
    const joined = async (playerId: string) => {
      const c = await raw(shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: await (t as TestShard).token(playerId), protocolVersion: 1 } }).finish());
      await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
      return { ...c, id: c.messages.find((m) => m.body === 'welcome')?.welcome?.entityId as number };
    };
    const kicks = async (reason: string) =>
      Number(
        new RegExp(`aether_kicks_total\\{reason="${reason}"\\} (\\d+)`).exec(
          await shard.metrics.registry.getSingleMetricAsString('aether_kicks_total'),
        )?.[1] ?? 0,
      );
    const cases: [string, (c: Awaited<ReturnType<typeof joined>>) => void, number, string][] = [
      ['big', (c) => c.ws.send(new Uint8Array(4096)), 1009, 'message_too_large'],
      [
        'unmasked',
        (c) => (c.ws as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x82, 0x01, 0x00])),
        1002,
        'protocol_error',
      ],
      ['not-utf8', (c) => c.ws.send(Buffer.from([0xff, 0xfe]), { binary: false }), 1007, 'protocol_error'],
    ];
    let protocolErrors = 0;
    for (const [playerId, misbehave, code, reason] of cases) {
      const c = await joined(playerId);
      const before = await kicks(reason);
      misbehave(c);
      expect((await c.closed).code).toBe(code);
      // Gone the moment the shard closed: no session, no entity waiting for a rejoin, no place kept.
      expect(engine.playerCount).toBe(0);
      expect(engine.waitingPlayers).toBe(0);
      expect(engine.world.indexOf(c.id)).toBe(-1);
      expect(await kicks(reason)).toBe(before + 1);
      if (reason === 'protocol_error') protocolErrors++;
    }
    // The same code sent by the client is the client's own close: a drop, not a kick.
    const d = await joined('closes-1002');
    d.ws.close(1002);
    expect((await d.closed).code).toBe(1002);
    await until('the dropped player to wait for a rejoin', () => engine.waitingPlayers === 1);
    expect(engine.world.indexOf(d.id)).toBeGreaterThanOrEqual(0);
    expect(await kicks('protocol_error')).toBe(protocolErrors);
    await until('every connection closed and forgotten', () => shard.gateway.connectionCount === 0, 3000);
  });

  test('a client that stops reading is held to gateway.max_buffered_bytes: pings unanswered, then an RPC result ends it TOO_SLOW', async () => {
    const cap = 65_536;
    const game = moduleFile('export default { rpc: { big() { return new Uint8Array(12_000).fill(7); } } };');
    t = await startTestShard({
      AETHEX_GAMESERVER_GAME_MODULE: game,
      AETHEX_GAMESERVER_GATEWAY_MAX_BUFFERED_BYTES: String(cap),
      AETHEX_GAMESERVER_RPC_MAX_PER_SECOND: '100',
      AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '200',
      AETHEX_GAMESERVER_GATEWAY_MESSAGE_BURST: '400',
    });
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('reader'), protocolVersion: 1 } }).finish());
    await until('the Welcome', () => c.messages.some((m) => m.body === 'welcome'));
    // The client stops reading; it goes on calling and pinging within its rates.
    (c.ws as unknown as { _socket: Socket })._socket.pause();
    const { connections } = t.shard.gateway as unknown as { connections: Map<number, { ws: WebSocket }> };
    const conn = () => [...connections.values()][0];
    let most = 0;
    let callId = 0;
    const started = Date.now();
    while (conn() !== undefined && Date.now() - started < 30_000) {
      for (let i = 0; i < 4; i++) {
        c.ws.send(ClientMessage.encode({ rpc: { callId: ++callId, method: 'big' } }).finish());
        c.ws.send(ClientMessage.encode({ ping: { clientTimeMs: Date.now() } }).finish());
        c.ws.ping();
      }
      most = Math.max(most, conn()?.ws.bufferedAmount ?? 0);
      await sleep(50);
    }
    expect(conn(), `still open after ${callId} calls`).toBeUndefined();
    // Queued in the process at most: the cap and one message (an RPC result, the kick).
    expect(most).toBeLessThanOrEqual(cap + 12_100);
    expect(await metric(t.shard.opsUrl, 'aether_kicks_total', '{reason="too_slow"}')).toBe(1);
  });

  test('a flooding client is closed with 1008 well within 2 s', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '50', AETHEX_GAMESERVER_GATEWAY_MESSAGE_BURST: '50' });
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('flood'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    const started = Date.now();
    const ping = ClientMessage.encode({ ping: { clientTimeMs: 1 } }).finish();
    const flood = setInterval(() => {
      for (let i = 0; i < 20; i++) if (c.ws.readyState === 1) c.ws.send(ping);
    }, 5);
    const { code, at } = await c.closed;
    clearInterval(flood);
    expect(code).toBe(1008);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_RATE_LIMITED);
    expect(at - started).toBeLessThan(2000);
  });

  test('an unauthenticated socket is closed at the auth deadline', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '300' });
    const started = Date.now();
    const c = await raw(t.shard.gatewayUrl);
    const { code, at } = await c.closed;
    expect(code).toBe(1008);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_AUTH_TIMEOUT);
    expect(at - started).toBeGreaterThanOrEqual(280);
  });

  test('the auth deadline counts from the arrival: a socket sending pings within the message rate but no Join is kicked AUTH_TIMEOUT on time', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '1000' });
    const started = Date.now();
    const c = await raw(t.shard.gatewayUrl);
    // A Ping message and a WebSocket ping every 100 ms: 20 frames a second, far within the rate (120).
    const ping = ClientMessage.encode({ ping: { clientTimeMs: 1 } }).finish();
    const chatter = setInterval(() => {
      if (c.ws.readyState !== 1) return;
      c.ws.send(ping);
      c.ws.ping();
    }, 100);
    const closed = await Promise.race([c.closed, sleep(5000).then(() => undefined)]);
    clearInterval(chatter);
    expect(closed?.code).toBe(1008);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_AUTH_TIMEOUT);
    // The sweep runs every 100 ms; the rest is room for a loaded machine (counted from the last
    // message, it would never come while the pings go on).
    expect((closed?.at ?? Number.NaN) - started).toBeGreaterThanOrEqual(980);
    expect((closed?.at ?? Number.NaN) - started).toBeLessThan(3000);
    // Its pings were read and answered all along.
    expect(c.messages.filter((m) => m.body === 'pong').length).toBeGreaterThanOrEqual(5);
  });

  test('bad join tokens are refused, each with a kick that says why and nothing of the token or the shard’s settings', async () => {
    const keys = generateKeyPairSync('ed25519');
    t = await startTestShard({}, keys);
    const claims = { playerId: 'p', world: 'test', instance: 0, shard: 'test-0-0' };
    const signed = { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' as const };
    const { AUTH_FAILED, WRONG_SHARD } = {
      AUTH_FAILED: ReasonCode.REASON_CODE_AUTH_FAILED,
      WRONG_SHARD: ReasonCode.REASON_CODE_WRONG_SHARD,
    };
    const cases: [string, string, aethex.v1.ReasonCode, RegExp][] = [
      ['garbage', 'garbage', AUTH_FAILED, /malformed/],
      ['expired', await t.token('p', { ttlSeconds: -120 }), AUTH_FAILED, /expired/],
      ['wrong audience', await signJoinToken(keys.privateKey, claims, { ...signed, audience: 'elsewhere' }), AUTH_FAILED, /wrong audience/],
      ['wrong issuer', await signJoinToken(keys.privateKey, claims, { ...signed, issuer: 'someone' }), AUTH_FAILED, /wrong issuer/],
      ['another key', await signJoinToken(generateKeyPairSync('ed25519').privateKey, claims, signed), AUTH_FAILED, /bad signature/],
      [
        'another algorithm (ES256 for an Ed25519 key)',
        await signJoinToken(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, claims, { ...signed, alg: 'ES256' }),
        AUTH_FAILED,
        /bad signature/,
      ],
      ['issued in the future', await timedToken(keys.privateKey, now() + 600, now() + 900), AUTH_FAILED, /issued in the future \(iat\)/],
      [
        'living for years',
        await timedToken(keys.privateKey, now(), now() + 3 * 365 * 86400),
        AUTH_FAILED,
        /lifetime exp - iat of \d+ s is too long/,
      ],
      [
        'no world claim',
        await signJoinToken(keys.privateKey, { ...claims, world: undefined as unknown as string }, signed),
        AUTH_FAILED,
        /lacks world, instance or shard/,
      ],
      ['another shard', await t.token('p', { shard: 'test-0-1' }), WRONG_SHARD, /another shard/],
    ];
    for (const [what, token, reason, why] of cases) {
      const c = await raw(t.shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
      expect((await c.closed).code, what).toBe(1008);
      const kick = c.kick();
      expect(kick?.reason, what).toBe(reason);
      expect(kick?.message, what).toMatch(why);
      for (const secret of [token, 'aethex-control-plane', 'aethex-shard', 'test-0-0']) expect(kick?.message, what).not.toContain(secret);
    }
    expect(t.shard.engine.playerCount).toBe(0);
  });

  test('each bad message is answered with an Error saying what was wrong, a burst of them at most; the connection stays usable', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_PROTOCOL_ERRORS: '40' });
    const c = await raw(t.shard.gatewayUrl);
    const cases: [Uint8Array | string, RegExp][] = [
      [new Uint8Array([0xff, 0xff, 0xff]), /not a ClientMessage/],
      ['hello', /text frame/],
      [ClientMessage.encode({ input: { seq: 1 } }).finish(), /Input before the Welcome/],
      [new Uint8Array([]), /without a body/],
      [ClientMessage.encode({ ack: { ackTick: 1 } }).finish(), /Ack before the Welcome/],
    ];
    for (const [k, [bytes, why]] of cases.entries()) {
      c.ws.send(bytes);
      await until(`the Error for bad message ${k + 1}`, () => c.errors().length === k + 1);
      const error = c.errors()[k];
      expect(error?.reason).toBe(ReasonCode.REASON_CODE_PROTOCOL_ERROR);
      expect(error?.message).toMatch(why);
      expect(error?.message).toContain(`bad message ${k + 1}; at 40 the connection is closed`);
    }
    // 30 more at once: replies stop at the burst (10), however many bad messages are allowed.
    for (let i = 0; i < 30; i++) c.ws.send(new Uint8Array([0xff, 0xff, 0xff]));
    expect(await badMessages(t.shard.opsUrl, 'undecodable', 31)).toBe(31);
    await sleep(200);
    expect(c.errors().length).toBeGreaterThanOrEqual(10);
    expect(c.errors().length).toBeLessThanOrEqual(12);
    // Still open, and a Join is still taken.
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('after-errors'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    expect(c.kick()).toBeUndefined();
  });

  test('a message the gateway writes itself (an Error) is counted: one message, its payload bytes, not the frame header', async () => {
    t = await startTestShard();
    const c = await raw(t.shard.gatewayUrl);
    const payloads: number[] = [];
    c.ws.on('message', (data) => payloads.push((data as Buffer).length));
    // Not joined: no snapshot, nothing else is sent to anyone.
    const messages = (await metric(t.shard.opsUrl, 'aether_messages_sent_total')) ?? 0;
    const bytes = (await metric(t.shard.opsUrl, 'aether_bytes_sent_total')) ?? 0;
    c.ws.send(ClientMessage.encode({ input: { seq: 1 } }).finish());
    await until('the Error', () => c.errors().length === 1);
    expect(payloads).toHaveLength(1);
    // The frame on the wire is 2 bytes more (a header for under 126 bytes); the metric counts payloads, as for snapshots.
    expect(payloads[0]).toBeLessThan(126);
    expect(await metric(t.shard.opsUrl, 'aether_messages_sent_total')).toBe(messages + 1);
    expect(await metric(t.shard.opsUrl, 'aether_bytes_sent_total')).toBe(bytes + (payloads[0] as number));
  });

  test('WebSocket pings spend the message rate: a ping flood gets pongs only within it, then RATE_LIMITED', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '50', AETHEX_GAMESERVER_GATEWAY_MESSAGE_BURST: '50' });
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('pinger'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    let pongs = 0;
    c.ws.on('pong', () => pongs++);
    // 5,000 masked empty ping frames, 100 to a write, straight onto the client's TCP socket.
    const socket = (c.ws as unknown as { _socket: Socket })._socket;
    const pings = Buffer.concat(Array.from({ length: 100 }, () => Buffer.from([0x89, 0x80, 1, 2, 3, 4])));
    const started = Date.now();
    for (let i = 0; i < 50 && c.ws.readyState === 1; i++) {
      socket.write(pings);
      await sleep(5);
    }
    const closed = await Promise.race([c.closed, sleep(5000).then(() => undefined)]);
    expect(closed?.code).toBe(1008);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_RATE_LIMITED);
    // The burst and the rate over the flood, with room to spare: nowhere near one per ping.
    expect(pongs).toBeLessThanOrEqual(50 + (50 * ((closed?.at ?? Date.now()) - started)) / 1000 + 10);
  });

  test('an idle kick closes with 4010 and its entity waits for a rejoin; a replaced session closes with 4009', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '1000' });
    const join = async (c: Awaited<ReturnType<typeof raw>>, playerId: string) => {
      c.ws.send(ClientMessage.encode({ join: { joinToken: await (t as TestShard).token(playerId), protocolVersion: 1 } }).finish());
      await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    };
    const idle = await raw(t.shard.gatewayUrl);
    await join(idle, 'idle');
    expect((await idle.closed).code).toBe(4010);
    expect(idle.kick()?.reason).toBe(ReasonCode.REASON_CODE_IDLE_TIMEOUT);
    await until('the idle player to wait for a rejoin', () => t?.shard.engine.waitingPlayers === 1);

    // The replacement on a shard with the default idle timeout (15 s): with 1 s, a stall between
    // the two joins would let the sweep kick `first` for idleness before the second join is read.
    await t.stop();
    t = await startTestShard();
    const first = await raw(t.shard.gatewayUrl);
    await join(first, 'twice');
    const second = await raw(t.shard.gatewayUrl);
    await join(second, 'twice');
    expect((await first.closed).code).toBe(4009);
    expect(first.kick()?.reason).toBe(ReasonCode.REASON_CODE_REPLACED);
    second.ws.close(1000);
  });

  test('traffic keeps a joined player from the idle kick: one sending inputs and acks outlives gateway.idle_timeout_ms, a silent one is kicked IDLE_TIMEOUT', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '2000' });
    const kicks: string[] = [];
    const active = await t.client('active', {}, (c) => c.on('kick', (reason) => kicks.push(reason)));
    const joined = Date.now();
    // An input every 50 ms; the SDK acknowledges snapshots on its own between them.
    const moving = setInterval(() => active.move(1, 0), 50);
    const silent = await raw(t.shard.gatewayUrl);
    silent.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('silent'), protocolVersion: 1 } }).finish());
    await until('welcome', () => silent.messages.some((m) => m.body === 'welcome'));
    expect((await silent.closed).code).toBe(4010);
    expect(silent.kick()?.reason).toBe(ReasonCode.REASON_CODE_IDLE_TIMEOUT);
    // The active one, well past the timeout since its Welcome, is still there (2 s: a stall of this
    // process, shard and client alike, would have to last that long to look like silence).
    await sleep(joined + 5000 - Date.now());
    clearInterval(moving);
    expect(kicks).toEqual([]);
    expect(t.shard.gateway.connectionCount).toBe(1);
    expect(active.lastAckedSeq).toBeGreaterThan(40);
  });

  test('a shard in a namespace refuses tokens for the same-named world in another namespace, or in none', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_SHARD_NAMESPACE: 'prod' });
    for (const namespace of ['staging', '']) {
      const c = await raw(t.shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('p', { namespace }), protocolVersion: 1 } }).finish());
      expect((await c.closed).code).toBe(1008);
      expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_WRONG_SHARD);
    }
    expect(t.shard.engine.playerCount).toBe(0);
    await t.client('p');
    expect(t.shard.engine.playerCount).toBe(1);
  });

  test('random bytes are rejected and counted; repeat offenders are closed; the shard keeps ticking', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_PROTOCOL_ERRORS: '5' });
    const c = await raw(t.shard.gatewayUrl);
    for (const bytes of [[0xff, 0xff, 0xff], [0x0a, 0x50, 0x01], [0x12], [0x08, 0x80], [0x1a, 0x05, 0x01]])
      c.ws.send(new Uint8Array(bytes));
    expect((await c.closed).code).toBe(1002);
    const before = t.shard.engine.tick;
    await until('more ticks', () => t !== undefined && t.shard.engine.tick > before + 2);
  });

  test('inputs: refused before joining, applied after, non-finite moves refused; the in-place and generated decoders agree', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
      AETHEX_GAMESERVER_GATEWAY_MAX_PROTOCOL_ERRORS: '50',
    });
    const shard = t.shard;
    const refused = (reason: string, count: number) => badMessages(shard.opsUrl, reason, count);
    const c = await raw(shard.gatewayUrl);
    // `extra`: bytes after the message, here an unknown ClientMessage field (9, a varint), which
    // the in-place reader leaves to the generated decoder.
    const input = (seq: number, x: number, extra: number[] = []) =>
      new Uint8Array([...ClientMessage.encode({ input: { seq, move: { x, y: 0 } } }).finish(), ...extra]);
    const unknownField = [0x48, 0x01];
    c.ws.send(input(1, 1));
    c.ws.send(input(1, 1, unknownField));
    expect(await refused('not_joined', 2)).toBe(2);

    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('raw'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    const id = c.messages.find((m) => m.body === 'welcome')?.welcome?.entityId as number;
    const world = shard.engine.world;
    const at = () => world.indexOf(id);
    // A move moves the player by exactly that much (within max speed), once; with no input it stands.
    const x0 = world.x[at()] as number;
    c.ws.send(input(2, 0.5));
    await until('the in-place input applied', () => world.lastSeq[at()] === 2);
    c.ws.send(input(3, 0.25, unknownField));
    await until('the decoded input applied', () => world.lastSeq[at()] === 3);
    await new Promise((r) => setTimeout(r, 100));
    expect(world.x[at()]).toBeCloseTo(x0 + 0.75, 4);
    // NaN, by either path, is refused and counted; the player stays where it was.
    c.ws.send(input(4, Number.NaN));
    c.ws.send(input(5, Number.NaN, unknownField));
    expect(await refused('invalid_input', 2)).toBe(2);
    expect(world.lastSeq[at()]).toBe(5);
    expect(world.x[at()]).toBeCloseTo(x0 + 0.75, 4);
  });

  test('frames: binary ones read by the gateway however TCP cuts them; pings, text, fragments and unmasked frames still handled by ws', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100',
      AETHEX_GAMESERVER_GATEWAY_MAX_PROTOCOL_ERRORS: '50',
    });
    const shard = t.shard;
    const c = await raw(shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('frames'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    const id = c.messages.find((m) => m.body === 'welcome')?.welcome?.entityId as number;
    const world = shard.engine.world;
    const lastSeq = () => world.lastSeq[world.indexOf(id)];
    const input = (seq: number) => ClientMessage.encode({ input: { seq, move: { x: 0.5, y: 0 } } }).finish();
    // A client's binary frame (under 126 bytes), masked with a zero key, or not masked at all.
    const frame = (payload: Uint8Array, masked = true) =>
      Buffer.from([0x82, (masked ? 0x80 : 0) | payload.length, ...(masked ? [0, 0, 0, 0] : []), ...payload]);
    // Under `ws`, the client's TCP socket: frames written to it by hand, cut where a test wants.
    const socket = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
    socket.setNoDelay(true);

    // One input a byte per TCP write, then two inputs in one write.
    const one = frame(input(1));
    for (let i = 0; i < one.length; i++) {
      socket.write(one.subarray(i, i + 1));
      await new Promise((r) => setTimeout(r, 5));
    }
    await until('the input cut into single bytes applied', () => lastSeq() === 1);
    socket.write(Buffer.concat([frame(input(2)), frame(input(3))]));
    await until('both inputs of one write applied', () => lastSeq() === 3);

    // A ping is ws's: it answers with a pong.
    const pong = once(c.ws, 'pong');
    c.ws.ping(Buffer.from('are you there'));
    expect(String((await pong)[0])).toBe('are you there');
    // A message in two fragments is put together by ws and handled like any other.
    const fragmented = input(4);
    c.ws.send(fragmented.subarray(0, 3), { fin: false });
    c.ws.send(fragmented.subarray(3), { fin: true });
    await until('the fragmented input applied', () => lastSeq() === 4);
    // A text frame is refused and counted.
    c.ws.send('hello');
    expect(await badMessages(shard.opsUrl, 'text_frame', 1)).toBe(1);
    // Inputs still go the gateway's way after all that, and the close handshake is ws's.
    c.ws.send(input(5));
    await until('an input after the rest applied', () => lastSeq() === 5);
    c.ws.close(1000);
    expect((await c.closed).code).toBe(1000);

    // A client frame without a mask breaks the protocol: ws closes with 1002.
    const d = await raw(shard.gatewayUrl);
    const dSocket = (d.ws as unknown as { _socket: import('node:net').Socket })._socket;
    dSocket.write(frame(input(1), false));
    expect((await d.closed).code).toBe(1002);
  });

  test('a joined connection does not keep its upgrade request (headers, URL, token) alive', async () => {
    t = await startTestShard();
    // biome-ignore lint/suspicious/noExplicitAny: the test watches the gateway's own HTTP server
    const http = (t.shard.gateway as any).http as Server;
    const requests: WeakRef<IncomingMessage>[] = [];
    http.prependListener('upgrade', (req: IncomingMessage) => requests.push(new WeakRef(req)));
    const a = await t.client('alice');
    await until('a snapshot', () => a.entities().size > 0);
    expect(requests).toHaveLength(1);
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // A WeakRef's target lives to the end of the job that made or read it: collect in later turns.
    for (let i = 0; i < 3 && requests[0]?.deref() !== undefined; i++) {
      await new Promise((r) => setImmediate(r));
      gc();
    }
    expect(requests[0]?.deref()).toBeUndefined();
    expect(t.shard.gateway.connectionCount).toBe(1);
  });

  test('connection caps count TCP sockets from their arrival, upgraded or not; one never upgraded is closed at the auth deadline', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS: '4',
      AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '1500',
    });
    const url = t.shard.gatewayUrl;
    // Two TCP sockets from 127.0.0.1 that send nothing take its whole allowance...
    const opened = Date.now();
    const silent = [tcp(url), tcp(url)];
    await until('both silent sockets counted', () => socketsFrom(t as TestShard) === 2);
    // ...so another from it is closed as it arrives, before any handshake.
    expect(await refused(url)).toMatch(/ECONNRESET|socket hang up/);
    // Other addresses are not held to it, up to the total: two more, then the fifth is closed.
    const other = await raw(url, { localAddress: '127.0.0.2' });
    const otherTcp = tcp(url, '127.0.0.2');
    await until('two sockets from 127.0.0.2', () => socketsFrom(t as TestShard, '127.0.0.2') === 2);
    expect(await refused(url, { localAddress: '127.0.0.3' })).toMatch(/ECONNRESET|socket hang up/);
    // The silent ones never upgraded: closed at the auth deadline (1.5 s, swept every 100 ms),
    // counted from their arrival. Node's own header timeout (3 s from the arrival, checked every
    // second) would close them too, no earlier than 3 s: the bound is just under it, with 1.4 s to
    // spare for a loaded machine.
    for (const s of silent) {
      const at = await Promise.race([s.closed, sleep(10_000).then(() => Number.NaN)]);
      expect(at - opened).toBeGreaterThanOrEqual(1400);
      expect(at - opened).toBeLessThan(2950);
    }
    expect((await other.closed).code).toBe(1008);
    await otherTcp.closed;
    // Its allowance back, the address connects again.
    await until('the sockets forgotten', () => socketsFrom(t as TestShard) + socketsFrom(t as TestShard, '127.0.0.2') === 0);
    expect(await refused(url)).toBe('opened');
  });

  test('a socket sending its upgrade request slowly is closed by the HTTP server within seconds; joined ones stay', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '120000' });
    const player = await t.client('stays');
    const slow = tcp(t.shard.gatewayUrl);
    const opened = Date.now();
    slow.socket.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n');
    const drip = setInterval(() => slow.socket.write('X-Slow: 1\r\n'), 500);
    const at = await Promise.race([slow.closed, sleep(15_000).then(() => Number.NaN)]);
    clearInterval(drip);
    expect(at - opened).toBeLessThan(10_000);
    // The joined player's socket outlived Node's request timeouts.
    expect(t.shard.gateway.connectionCount).toBe(1);
    expect(player.welcome).toBeDefined();
    expect(t.shard.engine.playerCount).toBe(1);
  });

  test('one address far over its cap cannot fill gateway.max_connections: another address still joins', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS: '20',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2',
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '100000',
    });
    const url = t.shard.gatewayUrl;
    // From 127.0.0.1, 500 whole upgrade requests a second, by clients that never answer a close.
    const attackers: Socket[] = [];
    const attack = setInterval(() => {
      for (let k = 0; k < 10; k++) {
        const a = tcp(url);
        a.socket.write(upgradeRequest());
        attackers.push(a.socket);
      }
    }, 20);
    try {
      // Over 100 of them (a stalled process runs the interval late, not more often), refused as they
      // arrive beyond the cap.
      await until('over 100 attackers', () => attackers.length > 100);
      await untilAwaited(
        'over 90 attackers refused',
        async () => ((await metric((t as TestShard).shard.opsUrl, 'aether_kicks_total', '{reason="too_many_connections"}')) ?? 0) > 90,
      );
      expect(socketsFrom(t)).toBeLessThanOrEqual(2);
      const c = await raw(url, { localAddress: '127.0.0.2' });
      c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('legit'), protocolVersion: 1 } }).finish());
      await until('welcome or kick', () => c.messages.some((m) => m.body === 'welcome' || m.body === 'kick'));
      expect(c.kick()).toBeUndefined();
      expect(t.shard.gateway.connectionCount).toBeLessThanOrEqual(3);
      expect(attackers.length).toBeGreaterThan(100);
    } finally {
      clearInterval(attack);
      for (const a of attackers) a.destroy();
    }
  });

  test('an address opening connections faster than gateway.connections_per_address_per_second has the rest closed as they arrive', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '3',
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '2',
    });
    const url = t.shard.gatewayUrl;
    // One after another, each closed before the next (never more than one open: the cap is not what
    // refuses them). A burst of 3 (the per-address cap) opens, then 2 a second: however late a stalled
    // process makes them, no more open than the burst and what refilled since the first began, and
    // one is soon refused as it arrives (each takes milliseconds, a refill 500).
    const { opened, refusal } = await openUntilRefused(url, {}, '127.0.0.1');
    expect(refusal).toMatch(/ECONNRESET|socket hang up/);
    expect(opened).toBeGreaterThanOrEqual(3);
    // Another address is not held to it.
    expect(await refused(url, { localAddress: '127.0.0.2' })).toBe('opened');
    // Two a second: a new one within a second.
    await sleep(600);
    expect(await refused(url)).toBe('opened');
  });

  test('drain answers new upgrades 503, tells every player SHUTTING_DOWN and closes with 1001', async () => {
    t = await startTestShard();
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('d'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    t.shard.gateway.stopAccepting();
    expect(await refused(t.shard.gatewayUrl)).toBe('HTTP 503');
    await t.shard.drain();
    expect((await c.closed).code).toBe(1001);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_SHUTTING_DOWN);
  });
});

describe('the network edge', () => {
  test('every frame spends the message rate, fragments too; a message in more than MAX_FRAGMENTS frames is refused with 1008', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '50', AETHEX_GAMESERVER_GATEWAY_MESSAGE_BURST: '50' });
    const joined = async (playerId: string) => {
      const c = await raw((t as TestShard).shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: await (t as TestShard).token(playerId), protocolVersion: 1 } }).finish());
      await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
      return { ...c, socket: (c.ws as unknown as { _socket: Socket })._socket };
    };
    const ping = (n: number) => ClientMessage.encode({ ping: { clientTimeMs: n } }).finish();
    // A message in two fragments is one a client may send: answered.
    const fine = await joined('two-fragments');
    fine.socket.write(fragmented(ping(7), 2));
    await until('the pong', () => fine.messages.some((m) => m.body === 'pong'));
    // Four messages of MAX_FRAGMENTS frames each, 64 frames at once: over a burst of 50.
    const c = await joined('fragments');
    c.socket.write(Buffer.concat([1, 2, 3, 4].map((n) => fragmented(ping(n), MAX_FRAGMENTS))));
    const { code } = await c.closed;
    expect(c.messages.filter((m) => m.body === 'pong').length).toBeLessThan(4);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_RATE_LIMITED);
    expect(code).toBe(1008);
    // One message in one frame more than MAX_FRAGMENTS: ws refuses it (1008), the player is kicked.
    const d = await joined('too-many-fragments');
    d.socket.write(fragmented(ping(1), MAX_FRAGMENTS + 1));
    expect((await d.closed).code).toBe(1008);
    expect(d.messages.some((m) => m.body === 'pong')).toBe(false);
    expect(await metric(t.shard.opsUrl, 'aether_kicks_total', '{reason="protocol_error"}')).toBe(1);
    expect(t.shard.engine.playerCount).toBe(1);
  });

  test('plain HTTP on the players’ port is answered once per connection, then the connection is closed', async () => {
    t = await startTestShard();
    const { socket, closed } = tcp(t.shard.gatewayUrl);
    let answer = '';
    socket.on('data', (d: Buffer) => {
      answer += d.toString('latin1');
    });
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(500));
    await Promise.race([closed, sleep(3000)]);
    expect(answer.match(/HTTP\/1\.1 426/g)?.length).toBe(1);
    expect(socket.destroyed).toBe(true);
    expect(answer).toMatch(/connection: close/i);
  });

  test('on a dual-stack port an IPv4 client counts as its IPv4 address, apart from IPv6 clients (grouped by prefix)', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '[::]:0', AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2' });
    const port = Number(new URL(t.shard.gatewayUrl).port);
    // Node sees these as ::ffff:127.0.0.1 and counts them as 127.0.0.1.
    const silent = [tcp(`ws://127.0.0.1:${port}`), tcp(`ws://127.0.0.1:${port}`)];
    await until('both IPv4 sockets counted as 127.0.0.1', () => socketsFrom(t as TestShard) === 2);
    expect(await refused(`ws://127.0.0.1:${port}`)).toMatch(/ECONNRESET|socket hang up/);
    // ::1 is another address (its /64, ::/64).
    expect(await refused(`ws://[::1]:${port}`)).toBe('opened');
    for (const s of silent) s.socket.destroy();
  });
});

/** Through a proxy: the upgrade request carries `X-Forwarded-For: forwardedFor`. */
const forwarded = (forwardedFor: string, options: ClientOptions = {}): ClientOptions => ({
  ...options,
  headers: { 'x-forwarded-for': forwardedFor },
});

/** The gateway's open connections: each one's client address and the proxy it came through. */
const connectionAddresses = (shard: TestShard) =>
  [...(shard.shard.gateway as unknown as { connections: Map<number, { address: string; via?: string }> }).connections.values()].map(
    (c) => ({ address: c.address, via: c.via }),
  );

describe('behind a proxy (gateway.trusted_proxies)', () => {
  test('a trusted proxy’s connections count against the client it forwards: 40 clients through one proxy, one client still held to its cap', async () => {
    // The defaults otherwise: 16 open sockets and 20 new ones a second per address.
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '127.0.0.1, 10.0.0.0/8' });
    const url = t.shard.gatewayUrl;
    // 40 players, each its own address, all from the proxy's 127.0.0.1: all open at once.
    const attempts = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => raw(url, forwarded(`203.0.113.${i + 1}`))));
    const players = attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
    expect(players.length, 'clients through the proxy whose connection opened').toBe(40);
    expect(t.shard.gateway.connectionCount).toBe(40);
    expect(socketsFrom(t)).toBe(0);
    expect(socketsFrom(t, '203.0.113.7')).toBe(1);
    // Every connection (and so every line it logs) is its client's, through the proxy.
    expect(connectionAddresses(t)).toContainEqual({ address: '203.0.113.7', via: '127.0.0.1' });
    // One client through it is held to its 16, whether the proxy is the last hop or another trusted
    // one (10.1.2.3) is: the right-most address that is no trusted proxy is the client's.
    const same = await Promise.all(
      Array.from({ length: 16 }, (_, i) => raw(url, forwarded(i % 2 === 0 ? '198.51.100.7' : '192.0.2.1, 198.51.100.7, 10.1.2.3'))),
    );
    expect(socketsFrom(t, '198.51.100.7')).toBe(16);
    // Refused at the upgrade with an answer the proxy can pass on (a direct socket is reset on arrival).
    expect(await refused(url, forwarded('198.51.100.7'))).toBe('HTTP 429');
    expect(await refused(url, forwarded('198.51.100.7, 10.1.2.3'))).toBe('HTTP 429');
    expect(await metric(t.shard.opsUrl, 'aether_kicks_total', '{reason="too_many_connections"}')).toBe(2);
    // Others through the same proxy are not.
    expect(await refused(url, forwarded('203.0.113.200'))).toBe('opened');
    // Without a header, or with one that is malformed, the proxy's own address counts.
    const unforwarded = await raw(url);
    const malformed = await raw(url, forwarded('198.51.100.7, not-an-address'));
    await until('both counted as the proxy', () => socketsFrom(t as TestShard) === 2);
    expect(connectionAddresses(t).filter((c) => c.address === '127.0.0.1')).toEqual([
      { address: '127.0.0.1', via: '127.0.0.1' },
      { address: '127.0.0.1', via: '127.0.0.1' },
    ]);
    for (const c of [...players, ...same, unforwarded, malformed]) c.ws.close();
    await until('the sockets forgotten', () => socketsFrom(t as TestShard, '198.51.100.7') + socketsFrom(t as TestShard) === 0);
  });

  test('a client behind a trusted proxy opening connections faster than gateway.connections_per_address_per_second has the rest closed', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '127.0.0.1',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '3',
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '2',
    });
    const url = t.shard.gatewayUrl;
    // As for an address of its own (above): one after another, a burst of 3, then 2 a second.
    const { opened, refusal } = await openUntilRefused(url, forwarded('198.51.100.7'), '198.51.100.7');
    expect(refusal).toBe('HTTP 429');
    expect(opened).toBeGreaterThanOrEqual(3);
    // Another client through the same proxy is not held to it.
    for (let i = 1; i <= 5; i++) expect(await refused(url, forwarded(`203.0.113.${i}`))).toBe('opened');
  });

  test('an untrusted peer’s X-Forwarded-For is ignored: a forged one does not get past the per-address cap', async () => {
    // Nothing trusted (the default), or only addresses the peer is not.
    const nothingTrusted: Record<string, string> = {};
    for (const trusted of [nothingTrusted, { AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.2' }]) {
      t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2', ...trusted });
      const url = t.shard.gatewayUrl;
      const held = [await raw(url, forwarded('203.0.113.1')), await raw(url, forwarded('203.0.113.2, 10.1.2.3'))];
      expect(socketsFrom(t), 'sockets counted against the peer, 127.0.0.1').toBe(2);
      expect(socketsFrom(t, '203.0.113.1')).toBe(0);
      expect(connectionAddresses(t)).toEqual([
        { address: '127.0.0.1', via: undefined },
        { address: '127.0.0.1', via: undefined },
      ]);
      expect(await refused(url, forwarded('203.0.113.3'))).toMatch(/ECONNRESET|socket hang up/);
      expect(await refused(url, forwarded('203.0.113.4, 127.0.0.2'))).toMatch(/ECONNRESET|socket hang up/);
      for (const c of held) c.ws.close();
      await t.stop();
      t = undefined;
    }
  });

  test('gateway.client_address_header: forwarded: through HAProxy in HTTP mode each client counts as the for= appended; their own Forwarded and X-Forwarded-For are not', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '127.0.0.1',
      AETHEX_GAMESERVER_GATEWAY_CLIENT_ADDRESS_HEADER: 'forwarded',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2',
    });
    const shardUrl = t.shard.gatewayUrl;
    // HAProxy 2.6 has no `option forwarded`: it appends the element itself, as a proxy on the way does.
    const proxy = await haproxyInFront(Number(new URL(shardUrl).port), {
      http: { mode: 'http', lines: ['http-request add-header Forwarded for=%[src]'] },
    });
    try {
      // Clients on other loopback addresses, one writing both headers to pass as someone else.
      const forger = { forwarded: 'for=203.0.113.9;proto=https', 'x-forwarded-for': '203.0.113.10' };
      const a = await raw(proxy.http, { localAddress: '127.0.0.2', headers: forger });
      const b = await raw(proxy.http, { localAddress: '127.0.0.3' });
      await until(
        'both counted as their clients',
        () => socketsFrom(t as TestShard, '127.0.0.2') + socketsFrom(t as TestShard, '127.0.0.3') === 2,
      );
      expect(connectionAddresses(t)).toEqual([
        { address: '127.0.0.2', via: '127.0.0.1' },
        { address: '127.0.0.3', via: '127.0.0.1' },
      ]);
      for (const forged of ['203.0.113.9', '203.0.113.10', '127.0.0.1']) expect(socketsFrom(t, forged), forged).toBe(0);
      // The client's own cap holds through it, answered 429 through the proxy.
      const second = await raw(proxy.http, { localAddress: '127.0.0.2', headers: forger });
      expect(await refused(proxy.http, { localAddress: '127.0.0.2' })).toBe('HTTP 429');
      // A player joins through it and plays.
      const player = await raw(proxy.http, { localAddress: '127.0.0.5' });
      player.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('through-forwarded'), protocolVersion: 1 } }).finish());
      await until('the Welcome', () => player.messages.some((m) => m.body === 'welcome'));
      // The trusted proxy writing an IPv6 client (quoted, with a port), counted by its /64; an
      // X-Forwarded-For alone is not the header named: the proxy itself is counted.
      const v6 = await raw(shardUrl, { headers: { forwarded: 'for="[2001:db8::7]:443";proto=https' } });
      const xff = await raw(shardUrl, forwarded('198.51.100.7'));
      await until(
        'counted as the IPv6 client and as the proxy',
        () => socketsFrom(t as TestShard, '2001:db8:0:0:0:0:0:0/64') === 1 && socketsFrom(t as TestShard) === 1,
      );
      expect(socketsFrom(t, '198.51.100.7')).toBe(0);
      for (const c of [a, b, second, player, v6, xff]) c.ws.close();
    } finally {
      await proxy.stop();
    }
  });
});

/** One way through HAProxy to the shard: its mode, and lines of its backend (the server line's options first). */
interface HaproxyRoute {
  mode: 'tcp' | 'http';
  server?: string;
  lines?: string[];
}

/** HAProxy in front of the shard as a layer-4 load balancer: `v1` sends a PROXY v1 header (`send-proxy`), `v2` a v2 one. */
const PROXY_PROTOCOL_ROUTES = { v1: { mode: 'tcp', server: 'send-proxy' }, v2: { mode: 'tcp', server: 'send-proxy-v2' } } as const;

/**
 * HAProxy in front of `shardPort`: a frontend per route, each on its own port (its URL under the
 * route's name). HAProxy connects to the shard from 127.0.0.1; stopped with `stop()`.
 */
async function haproxyInFront<K extends string>(
  shardPort: number,
  routes: Record<K, HaproxyRoute>,
): Promise<Record<K, string> & { stop: () => Promise<void> }> {
  const names = Object.keys(routes) as K[];
  const base = await freePortBlock(names.length);
  const dir = mkdtempSync(join(tmpdir(), 'aethex-haproxy-'));
  const config = join(dir, 'haproxy.cfg');
  const section = (name: K, i: number) => {
    const r: HaproxyRoute = routes[name];
    return (
      `frontend ${name}\n  mode ${r.mode}\n  bind 127.0.0.1:${base + i}\n  default_backend ${name}_shard\n` +
      `backend ${name}_shard\n  mode ${r.mode}\n${(r.lines ?? []).map((l) => `  ${l}\n`).join('')}` +
      `  server shard 127.0.0.1:${shardPort} ${r.server ?? ''}\n`
    );
  };
  writeFileSync(
    config,
    'global\n  maxconn 256\ndefaults\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 30s\n' +
      names.map(section).join(''),
  );
  const proc: ChildProcess = spawn(testEnv().haproxy, ['-db', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr?.on('data', (d) => {
    stderr += d;
  });
  const exited = once(proc, 'exit');
  const urls = {} as Record<K, string>;
  for (const [i, name] of names.entries()) {
    await until(
      `HAProxy listening on ${base + i} (${stderr.trim() || 'no output'})`,
      () => proc.exitCode === null && listening(base + i),
      5000,
    );
    urls[name] = `ws://127.0.0.1:${base + i}`;
  }
  return {
    ...urls,
    stop: async () => {
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Whether something accepts connections on 127.0.0.1:`port` (checked in the background, true once seen). */
const seenListening = new Set<number>();
function listening(port: number): boolean {
  if (seenListening.has(port)) return true;
  const probe = connect({ port, host: '127.0.0.1' });
  probe.on('connect', () => {
    seenListening.add(port);
    probe.destroy();
  });
  probe.on('error', () => undefined);
  return false;
}

describe('behind a layer-4 load balancer sending the PROXY protocol (gateway.proxy_protocol)', () => {
  let lb: Awaited<ReturnType<typeof haproxyInFront<keyof typeof PROXY_PROTOCOL_ROUTES>>> | undefined;
  afterEach(async () => {
    await lb?.stop();
    lb = undefined;
  });

  test('through HAProxy each client counts and logs as itself, v1 and v2; the load balancer without a header is closed; other peers send none', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '127.0.0.1',
      AETHEX_GAMESERVER_GATEWAY_PROXY_PROTOCOL: 'true',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2',
    });
    const shardUrl = t.shard.gatewayUrl;
    lb = await haproxyInFront(Number(new URL(shardUrl).port), PROXY_PROTOCOL_ROUTES);
    // Clients on other loopback addresses; HAProxy reaches the shard from 127.0.0.1.
    const v2Client = await raw(lb.v2, { localAddress: '127.0.0.2' });
    const v1Client = await raw(lb.v1, { localAddress: '127.0.0.3' });
    await until(
      'both counted as their clients',
      () => socketsFrom(t as TestShard, '127.0.0.2') + socketsFrom(t as TestShard, '127.0.0.3') === 2,
    );
    expect(socketsFrom(t)).toBe(0);
    expect(connectionAddresses(t)).toEqual([
      { address: '127.0.0.2', via: '127.0.0.1' },
      { address: '127.0.0.3', via: '127.0.0.1' },
    ]);
    // The client's own cap holds through the load balancer: a third from 127.0.0.2 is refused as
    // it arrives (there is no request to answer yet), and another client is not.
    const second = await raw(lb.v2, { localAddress: '127.0.0.2' });
    expect(await refused(lb.v2, { localAddress: '127.0.0.2' })).toMatch(/ECONNRESET|socket hang up/);
    expect(await metric(t.shard.opsUrl, 'aether_kicks_total', '{reason="too_many_connections"}')).toBe(1);
    expect(await refused(lb.v1, { localAddress: '127.0.0.4' })).toBe('opened');
    // A player joins through it and plays.
    const player = await raw(lb.v2, { localAddress: '127.0.0.5' });
    player.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('through-lb'), protocolVersion: 1 } }).finish());
    await until('the Welcome', () => player.messages.some((m) => m.body === 'welcome'));
    // The load balancer's address speaking HTTP directly (no header) is refused; an untrusted peer's
    // connection carries no header and is read as it is.
    const direct = tcp(shardUrl, '127.0.0.1');
    direct.socket.write(upgradeRequest());
    await direct.closed;
    await untilAwaited(
      'the refusal counted',
      async () => (await metric(t?.shard.opsUrl as string, 'aether_kicks_total', '{reason="protocol_error"}')) === 1,
    );
    expect(await refused(shardUrl, { localAddress: '127.0.0.6' })).toBe('opened');
    for (const c of [v2Client, v1Client, second, player]) c.ws.close();
    await until('the sockets forgotten', () => ['127.0.0.2', '127.0.0.3', '127.0.0.5'].every((a) => socketsFrom(t as TestShard, a) === 0));
  });

  test('the header and the upgrade in one segment or cut anywhere, v1 and v2; a malformed header or none within 3 s is closed', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '127.0.0.1', AETHEX_GAMESERVER_GATEWAY_PROXY_PROTOCOL: 'true' });
    const url = t.shard.gatewayUrl;
    const v1 = Buffer.from('PROXY TCP4 198.51.100.9 127.0.0.1 5000 7700\r\n');
    // v2, PROXY command, TCP over IPv6, then a TLV (type 0xEA, as an AWS NLB adds one).
    const v2 = Buffer.from([
      ...[0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x21, 0, 36 + 7],
      ...[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9],
      ...Array(16).fill(0),
      ...[0x13, 0x88, 0x1e, 0x14, 0xea, 0, 4, 1, 2, 3, 4],
    ]);
    // What the client counts against: an IPv6 one by its /64 (gateway.ipv6_prefix_length).
    for (const [header, client] of [
      [v1, '198.51.100.9'],
      [v2, '2001:db8:0:0:0:0:0:0/64'],
    ] as const) {
      const request = Buffer.from(upgradeRequest());
      const whole = Buffer.concat([header, request]);
      for (const cuts of [[], [5], [header.length - 1], [header.length], [header.length + 10], [3, 20, header.length + 1]]) {
        const c = tcp(url, '127.0.0.1');
        let answer = '';
        c.socket.on('data', (d) => {
          answer += d.toString('latin1');
        });
        let at = 0;
        for (const cut of [...cuts, whole.length]) {
          c.socket.write(whole.subarray(at, cut));
          at = cut;
          await sleep(5);
        }
        await until(`the upgrade through a header cut at ${cuts}`, () => answer.includes('\r\n\r\n'));
        expect(answer.split('\r\n')[0], `cut at ${cuts}`).toBe('HTTP/1.1 101 Switching Protocols');
        await until('counted as the client it named', () => socketsFrom(t as TestShard, client) === 1);
        c.socket.destroy();
        await until('forgotten', () => socketsFrom(t as TestShard, client) === 0);
      }
    }
    const bad = tcp(url, '127.0.0.1');
    bad.socket.write('PROXY TCP4 198.51.100.9 nowhere 5000 7700\r\n');
    await bad.closed;
    const silent = tcp(url, '127.0.0.1');
    silent.socket.write(v2.subarray(0, 10));
    const openedAt = Date.now();
    const closedAt = await silent.closed;
    expect(closedAt - openedAt).toBeGreaterThanOrEqual(2900);
    expect(await metric(t.shard.opsUrl, 'aether_kicks_total', '{reason="protocol_error"}')).toBe(2);
    // A header that names no client (a load balancer's own connection): counted against the load
    // balancer at the upgrade, and the X-Forwarded-For a client may have written is not read.
    const unnamed = tcp(url, '127.0.0.1');
    let unnamedAnswer = '';
    unnamed.socket.on('data', (d) => {
      unnamedAnswer += d.toString('latin1');
    });
    const forged = upgradeRequest().replace('\r\n\r\n', '\r\nX-Forwarded-For: 203.0.113.99\r\n\r\n');
    unnamed.socket.write(`PROXY UNKNOWN\r\n${forged}`);
    await until('the unnamed upgrade', () => unnamedAnswer.includes('\r\n\r\n'));
    expect(unnamedAnswer.split('\r\n')[0]).toBe('HTTP/1.1 101 Switching Protocols');
    expect(socketsFrom(t, '127.0.0.1')).toBe(1);
    expect(socketsFrom(t, '203.0.113.99')).toBe(0);
    unnamed.socket.destroy();
    // A peer that is no trusted proxy cannot name another address: its header is no HTTP.
    const stranger = tcp(url, '127.0.0.7');
    let answer = '';
    stranger.socket.on('data', (d) => {
      answer += d.toString('latin1');
    });
    stranger.socket.write(Buffer.concat([v1, Buffer.from(upgradeRequest())]));
    await stranger.closed;
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(socketsFrom(t, '198.51.100.9')).toBe(0);
  });
});

describe('join-token keys from auth.jwks_url, on a real shard', () => {
  test('kept through an outage, refreshed in the background, rotated keys refused, failing fetches not multiplied by joins, the URL never logged whole', async () => {
    const keys = generateKeyPairSync('ed25519');
    const other = generateKeyPairSync('ed25519');
    const jwk = (k: KeyObject, kid: string) => ({ ...k.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' });
    const jwks = { status: 503, body: JSON.stringify({ keys: [jwk(keys.publicKey, 'k1')] }), fetches: 0, firstAt: 0 };
    const server = createServer((_req, res) => {
      if (jwks.fetches++ === 0) jwks.firstAt = performance.now();
      res.writeHead(jwks.status, { 'content-type': 'application/json' }).end(jwks.status === 200 ? jwks.body : 'down');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const lines: string[] = [];
    const settings = loadConfig({
      AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
      AETHEX_GAMESERVER_AUTH_JWKS_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks?access_token=TOPSECRET123`,
      AETHEX_GAMESERVER_SHARD_WORLD: 'test',
      AETHEX_GAMESERVER_SHARD_NAME: 'test-0-0',
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-gs-')),
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '100',
      AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '1000',
    });
    const shard = await startShard(settings, {
      log: createLogger('gameserver-test', 'info', { write: (line: string) => void lines.push(line) }),
      jwks: { refreshMs: 200, retryMs: 100 },
    });
    const attempt = async (token: string) => {
      const c = await raw(shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
      await until('welcome or kick', () => c.messages.some((m) => m.body === 'welcome' || m.body === 'kick'));
      return c;
    };
    const signed = (kid: string, key = keys.privateKey) =>
      signJoinToken(
        key,
        { playerId: `p-${kid}-${Math.random()}`, world: 'test', instance: 0, shard: 'test-0-0' },
        { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA', kid },
      );
    try {
      // Never loaded: a join is refused for the shard's keys, and the log shows the URL masked.
      await until('the first fetch', () => jwks.fetches > 0);
      const early = await attempt(await signed('k1'));
      expect(early.kick()?.message).toBe('join token could not be verified: the shard could not load its keys');
      await until('the refusal logged', () => lines.some((l) => l.includes('join refused')));
      expect(lines.filter((l) => l.includes('access_token=***')).length).toBeGreaterThan(0);
      expect(lines.filter((l) => l.includes('TOPSECRET123'))).toEqual([]);
      // 20 joins while the keys cannot be fetched make no fetch of their own: the fetches are the
      // start's, the first and its retries, 0.5 s after it and doubling (so by 0.5, 1.5, 3.5 s…),
      // however long the joins took.
      for (let i = 0; i < 20; i++) (await attempt(await signed(`forged-${i}`, other.privateKey))).ws.terminate();
      const sinceFirst = performance.now() - jwks.firstAt;
      let startFetches = 1;
      while (500 * (2 ** startFetches - 1) <= sinceFirst) startFetches++;
      expect(jwks.fetches).toBeLessThanOrEqual(startFetches);
      // Served: ready, and joins verify.
      jwks.status = 200;
      await until('ready', () => shard.engine !== undefined && lines.some((l) => l.includes('join-token keys loaded')), 15_000);
      expect((await fetch(`${shard.opsUrl}/readyz`)).status).toBe(200);
      const aliceToken = await signed('k1');
      const alice = await attempt(aliceToken);
      expect(alice.kick()).toBeUndefined();
      // Down for several refresh intervals: the last set stays in use, and its age shows it.
      jwks.status = 503;
      await sleep(800);
      const bob = await attempt(await signed('k1'));
      expect(bob.kick()).toBeUndefined();
      expect((await fetch(`${shard.opsUrl}/readyz`)).status).toBe(200);
      expect(await metric(shard.opsUrl, 'aether_join_keys_age_seconds')).toBeGreaterThanOrEqual(0.7);
      // k1 rotated out: within a refresh the remembered token of alice no longer joins.
      jwks.body = JSON.stringify({ keys: [jwk(other.publicKey, 'k2')] });
      const back = performance.now();
      jwks.status = 200;
      // The next refresh (within its back-off, 200 ms at most) loads the new set: its age falls below
      // the time since the key server came back (until then, it only grows older).
      await untilAwaited('the new set loaded', async () => {
        const since = (performance.now() - back) / 1000;
        return ((await metric(shard.opsUrl, 'aether_join_keys_age_seconds')) ?? Number.POSITIVE_INFINITY) < since;
      });
      const again = await attempt(aliceToken);
      expect(again.kick()?.message).toMatch(/bad signature/);
      expect((await attempt(await signed('k2', other.privateKey))).kick()).toBeUndefined();
      expect(lines.filter((l) => l.includes('TOPSECRET123'))).toEqual([]);
    } finally {
      await shard.drain();
      server.close();
    }
  });
});
