// RealtimeClient against a real shard (gameserver's test harness): a game calling move() every
// render frame, and what connect() says when joining fails.
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { startTestShard, type TestShard, until } from '../../gameserver/test/harness.js';
import { type ConnectError, RealtimeClient } from '../src/index.js';

let t: TestShard | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

const createSocket = (u: string) => new WebSocket(u) as never;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('move() every frame at 144 Hz: no RATE_LIMITED kick, input→ack latency stays flat, the prediction ends exactly where the shard has the entity', async () => {
  const shard = await startTestShard({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100,-100,100,100' });
  t = shard;
  const kicks: string[] = [];
  const c = await shard.client('fast-frames', {}, (c) => c.on('kick', (reason) => kicks.push(reason)));
  const id = c.welcome?.entityId as number;
  const world = shard.shard.engine.world;
  const p50 = () => {
    const l = c.takeLatencies().sort((a, b) => a - b);
    return l[l.length >> 1] ?? 0;
  };
  const started = performance.now();
  const latencies: number[] = [];
  let frames = 0;
  let nextSecond = started + 1000;
  while (performance.now() - started < 4000) {
    // Two seconds into the world's north-east corner, faster than max speed: the shard's exact
    // position comes with its Correction (snapshots are quantized). Then a frame's share of 4 units
    // a tick, turning back every half second.
    const fast = (6 * 40) / 144;
    if (frames < 288) c.move(fast, fast);
    else c.move((Math.floor(frames / 72) % 2 === 0 ? -1 : 1) * ((4 * 40) / 144), -0.01);
    frames++;
    await sleep(Math.max(0, started + (frames * 1000) / 144 - performance.now()));
    if (performance.now() > nextSecond) {
      latencies.push(p50());
      nextSecond += 1000;
    }
  }
  await until('every input applied', () => c.unacknowledged === 0, 5000);
  await sleep(100);
  expect(kicks).toEqual([]);
  expect(c.ended).toBe(false);
  // One tick of merging, the loopback and the shard's tick: well under 100 ms, second after second.
  for (const ms of latencies) expect(ms).toBeLessThan(100);
  const slot = world.indexOf(id);
  expect(c.predicted).toEqual({ x: world.x[slot], y: world.y[slot] });
}, 30_000);

test('connect() rejects with the kick reason or the socket failure as code, the close code, and the socket error as cause', async () => {
  const shard = await startTestShard({ AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '1' });
  t = shard;
  const attempt = async (url: string, joinToken: string) => {
    const c = new RealtimeClient({ url, joinToken, createSocket, connectTimeoutMs: 3000 });
    const err = (await c.connect().then(
      () => undefined,
      (e: ConnectError) => e,
    )) as (ConnectError & { cause?: Error }) | undefined;
    c.close();
    return err && { code: err.code, closeCode: err.closeCode, cause: err.cause?.message };
  };
  const url = shard.shard.gatewayUrl;
  expect(await attempt('ws://127.0.0.1:1', await shard.token('a'))).toEqual({
    code: 'CONNECT_FAILED',
    closeCode: 1006,
    cause: expect.stringMatching(/ECONNREFUSED/),
  });
  expect(await attempt(url, await shard.token('a', { ttlSeconds: -120 }))).toEqual({
    code: 'AUTH_FAILED',
    closeCode: 1008,
    cause: undefined,
  });
  expect(await attempt(url, await shard.token('a', { shard: 'other-0-1' }))).toMatchObject({ code: 'WRONG_SHARD', closeCode: 1008 });
  await shard.client('first');
  expect(await attempt(url, await shard.token('second'))).toEqual({ code: 'SHARD_FULL', closeCode: 1013, cause: undefined });
  const draining = shard.shard.drain();
  expect(await attempt(url, await shard.token('third'))).toMatchObject({ code: 'CONNECT_FAILED', closeCode: 1006 });
  await draining;
}, 30_000);
