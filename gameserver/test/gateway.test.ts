import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { aethex } from '@aethex/proto';
import { afterEach, describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { startTestShard, type TestShard, until } from './harness.js';

const { ClientMessage, ServerMessage, ReasonCode } = aethex.v1;

let t: TestShard | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

/** A raw socket to the gateway that records the messages and the close code. */
async function raw(url: string) {
  const ws = new WebSocket(url);
  const messages: aethex.v1.ServerMessage[] = [];
  const closed = new Promise<{ code: number; at: number }>((resolve) => ws.on('close', (code) => resolve({ code, at: Date.now() })));
  ws.on('message', (data) => messages.push(ServerMessage.decode(data as Buffer)));
  ws.on('error', () => undefined);
  await once(ws, 'open');
  return { ws, messages, closed, kick: () => messages.find((m) => m.body === 'kick')?.kick };
}

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
    await until('a first snapshot', () => a.lastTick > 0);
    const id = a.welcome?.entityId as number;
    const before = a.entities().get(id) as { x: number; y: number };
    // Bypass the SDK's own clamp: send a raw teleport of 500 units.
    (a as unknown as { socket: WebSocket }).socket.send(
      ClientMessage.encode({ input: { seq: 1, move: { x: 500, y: 0 }, ackTick: a.lastTick } }).finish(),
    );
    await until('a correction', () => corrections.length > 0);
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
    const watch = () => {
      furthest = Math.max(furthest, a.predicted.x);
    };
    a.on('snapshot', watch);
    a.on('correction', watch);
    for (let i = 0; i < 20; i++) {
      a.move(4, 0);
      watch();
      await new Promise((r) => setTimeout(r, 25));
    }
    await until('every input applied', () => a.unacknowledged === 0 && Math.abs((a.entities().get(id)?.x ?? 0) - 50) < 0.1);
    // Snapshot positions are quantized (a snapshot may put the entity at 50.0, not 49.999).
    const step = a.welcome?.positionScale as number;
    expect(furthest).toBeLessThanOrEqual(50 + step / 2);
    expect(furthest).toBeGreaterThan(49.9);
    // The shard stopped the entity at the wall and said so; the prediction is already there.
    expect(world.x[slot]).toBeCloseTo(50, 2);
    expect(Math.abs(a.predicted.x - (world.x[slot] as number))).toBeLessThanOrEqual(step / 2);
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

  test('an oversized frame is closed with 1009 before decoding', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE: '1024' });
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(new Uint8Array(4096));
    expect((await c.closed).code).toBe(1009);
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

  test('bad join tokens are refused: garbage, expired, another shard', async () => {
    t = await startTestShard();
    const cases: [string, aethex.v1.ReasonCode][] = [
      ['garbage', ReasonCode.REASON_CODE_AUTH_FAILED],
      [await t.token('p', { ttlSeconds: -120 }), ReasonCode.REASON_CODE_AUTH_FAILED],
      [await t.token('p', { shard: 'test-0-1' }), ReasonCode.REASON_CODE_WRONG_SHARD],
    ];
    for (const [token, reason] of cases) {
      const c = await raw(t.shard.gatewayUrl);
      c.ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
      expect((await c.closed).code).toBe(1008);
      expect(c.kick()?.reason).toBe(reason);
    }
    expect(t.shard.engine.playerCount).toBe(0);
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

  test('per-address connection cap', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '2' });
    const first = await raw(t.shard.gatewayUrl);
    const second = await raw(t.shard.gatewayUrl);
    const third = await raw(t.shard.gatewayUrl);
    expect((await third.closed).code).toBe(1013);
    expect(third.kick()?.reason).toBe(ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS);
    expect([first.ws.readyState, second.ws.readyState]).toEqual([1, 1]);
  });

  test('drain tells every player SHUTTING_DOWN and closes with 1001', async () => {
    t = await startTestShard();
    const c = await raw(t.shard.gatewayUrl);
    c.ws.send(ClientMessage.encode({ join: { joinToken: await t.token('d'), protocolVersion: 1 } }).finish());
    await until('welcome', () => c.messages.some((m) => m.body === 'welcome'));
    await t.shard.drain();
    expect((await c.closed).code).toBe(1001);
    expect(c.kick()?.reason).toBe(ReasonCode.REASON_CODE_SHUTTING_DOWN);
  });
});
