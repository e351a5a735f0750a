import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { aethex } from '@aethex/proto';
import { createLogger, signJoinToken } from '@aethex/runtime';
import { RealtimeClient } from '@aethex/sdk';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { UNJOINED_LOGGED_BURST, UNJOINED_LOGGED_PER_S } from '../src/net/gateway.js';
import { type RunningShard, startShard } from '../src/shard.js';
import { moduleFile, testShardSettings, until } from './harness.js';

const { ClientMessage, ServerMessage } = aethex.v1;
const keys = generateKeyPairSync('ed25519');
const forger = generateKeyPairSync('ed25519');

let shard: RunningShard | undefined;
afterEach(async () => {
  await shard?.drain();
  shard = undefined;
});

/** A shard on loopback ports whose log lines (info and up) are kept in `lines`; `token` signs a player's join token for it. */
async function loggedShard(env: Record<string, string> = {}): Promise<{
  shard: RunningShard;
  lines: () => Record<string, unknown>[];
  token: (playerId: string) => Promise<string>;
}> {
  const text: string[] = [];
  const settings = testShardSettings(env, keys);
  shard = await startShard(settings, { log: createLogger('gameserver-test', 'info', { write: (line: string) => void text.push(line) }) });
  const token = (playerId: string) =>
    signJoinToken(
      keys.privateKey,
      { playerId, namespace: settings['shard.namespace'], world: settings['shard.world'], instance: 0, shard: settings['shard.name'] },
      { issuer: settings['auth.issuer'], audience: settings['auth.audience'], alg: 'EdDSA' },
    );
  return { shard, lines: () => text.map((line) => JSON.parse(line) as Record<string, unknown>), token };
}

/** Joins with `token` on a fresh connection and resolves once the shard answered (its Kick, or Welcome). */
async function attempt(url: string, token: string): Promise<aethex.v1.IServerMessage> {
  const ws = new WebSocket(url);
  ws.on('error', () => undefined);
  await once(ws, 'open');
  const answer = new Promise<aethex.v1.IServerMessage>((resolve) =>
    ws.on('message', (data) => resolve(ServerMessage.decode(data as Buffer))),
  );
  ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
  const message = await answer;
  ws.terminate();
  return message;
}

test('a refused join is one line, and refusals are logged at a bounded rate, the lines left out counted', async () => {
  const { shard, lines } = await loggedShard({
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '1000',
    AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '1000',
  });
  const forged = await signJoinToken(
    forger.privateKey,
    { playerId: 'mallory', world: 'test', instance: 0, shard: 'test-0-0' },
    { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' },
  );
  // One address retrying a bad token as fast as the shard answers.
  const attempts = 60;
  const began = Date.now();
  for (let i = 0; i < attempts; i++) expect((await attempt(shard.gatewayUrl, forged)).kick?.message).toMatch(/bad signature/);
  const refused = () => lines().filter((l) => l.msg === 'join refused');
  expect(lines().filter((l) => l.msg === 'kicked')).toEqual([]);
  // The burst, and one a second after it while the attempts went on.
  const elapsedS = (Date.now() - began) / 1000;
  expect(refused().length).toBeGreaterThanOrEqual(UNJOINED_LOGGED_BURST);
  expect(refused().length).toBeLessThanOrEqual(UNJOINED_LOGGED_BURST + Math.ceil(elapsedS * UNJOINED_LOGGED_PER_S) + 1);
  expect(refused()[0]).toMatchObject({
    reason: 'auth_failed',
    message: expect.stringMatching(/^join token rejected: bad signature/),
    addr: '127.0.0.1',
  });
  expect(String(refused()[0]?.err)).toMatch(/signature verification failed/);
  // A second later the next refusal is logged again, saying how many were left out since the last
  // line (none, if that was the last attempt); with it, every refusal is accounted for.
  const loggedBefore = refused().length;
  await new Promise((r) => setTimeout(r, 1100));
  await attempt(shard.gatewayUrl, forged);
  await until('the next refusal logged', () => refused().length === loggedBefore + 1);
  const unlogged = refused().reduce((n, l) => n + Number(l.unlogged ?? 0), 0);
  expect(refused().length + unlogged).toBe(attempts + 1);
});

/** Opens a WebSocket to `url`, does `misbehave` on it before any Join, and resolves with the close code once the shard closed it. */
async function misbehaving(url: string, misbehave: (ws: WebSocket) => void = () => undefined): Promise<number> {
  const ws = new WebSocket(url);
  ws.on('error', () => undefined);
  const closed = once(ws, 'close').then(([code]) => code as number);
  await once(ws, 'open');
  misbehave(ws);
  return closed;
}

/** A connection joined with `token`, once its Welcome came. */
async function joined(url: string, token: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  ws.on('error', () => undefined);
  await once(ws, 'open');
  const welcome = new Promise<void>((resolve) =>
    ws.on('message', (data) => ServerMessage.decode(data as Buffer).body === 'welcome' && resolve()),
  );
  ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
  await welcome;
  return ws;
}

test("kicks of connections that never joined are logged at the refusals' bounded rate, the lines left out counted; a joined player's kick is always one line, with the player", async () => {
  const { shard, lines, token } = await loggedShard({
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '1000',
    AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '1000',
    AETHEX_GAMESERVER_GATEWAY_AUTH_TIMEOUT_MS: '1000',
    // A bad message ends the connection: a bad first frame is a kick.
    AETHEX_GAMESERVER_GATEWAY_MAX_PROTOCOL_ERRORS: '1',
  });
  const url = shard.gatewayUrl;
  const began = Date.now();
  // One address opening connections and misbehaving before any Join, as fast as the shard kicks them.
  const idle = Array.from({ length: 10 }, () => misbehaving(url));
  for (let i = 0; i < 20; i++) {
    expect(await misbehaving(url, (ws) => ws.send(Buffer.alloc(4097)))).toBe(1009);
    expect(await misbehaving(url, (ws) => ws.send(Buffer.from([0xff, 0xff, 0xff])))).toBe(1002);
    expect(await misbehaving(url, (ws) => Array.from({ length: 300 }, () => ws.ping()))).toBe(1008);
  }
  // The auth deadline passes for the ten that never sent anything.
  for (const code of await Promise.all(idle)) expect(code).toBe(1008);
  const elapsedS = (Date.now() - began) / 1000;
  const kickedUnjoined = () => lines().filter((l) => l.msg === 'kicked' && l.player === undefined);
  // The burst, and about one a second after it; not 70.
  expect(kickedUnjoined().length).toBeGreaterThanOrEqual(UNJOINED_LOGGED_BURST);
  expect(kickedUnjoined().length).toBeLessThanOrEqual(UNJOINED_LOGGED_BURST + Math.ceil(elapsedS * UNJOINED_LOGGED_PER_S) + 1);
  expect(kickedUnjoined()[0]).toMatchObject({
    reason: expect.any(String),
    message: expect.any(String),
    addr: '127.0.0.1',
    conn: expect.any(Number),
  });
  expect(new Set(kickedUnjoined().map((l) => l.reason))).toContain('message_too_large');

  // Players who joined and then break the protocol: one line each, whatever was left out before.
  for (const playerId of ['alice', 'bob', 'carol']) {
    const ws = await joined(url, await token(playerId));
    const closed = once(ws, 'close');
    ws.send('not a binary frame');
    await closed;
  }
  await until('the three players kicked', () => lines().filter((l) => l.msg === 'kicked' && l.player !== undefined).length === 3);
  for (const playerId of ['alice', 'bob', 'carol']) {
    const conn = lines().find((l) => l.msg === 'player joined' && l.player === playerId)?.conn;
    expect(lines().filter((l) => l.msg === 'kicked' && l.player === playerId)).toEqual([
      expect.objectContaining({ reason: 'protocol_error', conn, addr: '127.0.0.1' }),
    ]);
  }

  // A second later the next kick is logged again, saying how many were left out since the last line
  // (none, if that last line happened to be the phase's last kick); with it, every kick of the 71 is
  // accounted for.
  const loggedBefore = kickedUnjoined().length;
  await new Promise((r) => setTimeout(r, 1100));
  await misbehaving(url, (ws) => ws.send(Buffer.alloc(4097)));
  await until('the next kick logged', () => kickedUnjoined().length === loggedBefore + 1);
  const unlogged = kickedUnjoined().reduce((n, l) => n + Number(l.unlogged ?? 0), 0);
  expect(kickedUnjoined().length + unlogged).toBe(71);
});

test('a game hook that throws is logged with the player and connection whose action ran it, at most once a second a hook', async () => {
  const game = moduleFile(`
    export default {
      onJoin(ctx, player) { throw new Error('onJoin broke for ' + player.playerId); },
      onInput() { throw new Error('onInput broke'); },
      onLeave() { throw new Error('onLeave broke'); },
      onTick() { throw new Error('onTick broke'); },
      rpc: {
        now() { throw new Error('rpc.now broke'); },
        async later() { await new Promise((r) => setTimeout(r, 10)); throw new Error('rpc.later broke'); },
      },
    };`);
  const { shard, lines, token } = await loggedShard({ AETHEX_GAMESERVER_GAME_MODULE: game });
  const players = ['alice', 'bob', 'carol', 'dave'];
  const clients = await Promise.all(
    players.map(async (playerId) => {
      const client = new RealtimeClient({
        url: shard.gatewayUrl,
        joinToken: await token(playerId),
        createSocket: (url) => new WebSocket(url) as never,
      });
      await client.connect();
      return client;
    }),
  );
  // Every player moves every tick for 1.5 s: each input's onInput throws (about 240 times).
  const began = Date.now();
  const moving = setInterval(() => {
    for (const client of clients) client.move(1, 0);
  }, 25);
  await new Promise((r) => setTimeout(r, 1500));
  clearInterval(moving);
  const movedS = (Date.now() - began) / 1000;
  await expect(clients[0]?.rpc('now')).rejects.toMatchObject({ code: 'INTERNAL' });
  await expect(clients[1]?.rpc('later')).rejects.toMatchObject({ code: 'INTERNAL' });
  for (const client of clients) client.close();
  const failed = () => lines().filter((l) => String(l.msg).startsWith('game hook failed'));
  await until('onLeave failed', () => failed().some((l) => l.hook === 'onLeave'));

  const connOf = new Map(
    lines()
      .filter((l) => l.msg === 'player joined')
      .map((l) => [l.player, l.conn]),
  );
  expect(connOf.size).toBe(4);
  for (const hook of ['onJoin', 'onInput', 'onLeave', 'rpc.now', 'rpc.later']) {
    const ofHook = failed().filter((l) => l.hook === hook);
    expect(ofHook.length, hook).toBeGreaterThan(0);
    for (const line of ofHook) {
      expect(players, hook).toContain(line.player);
      expect(line.conn, hook).toBe(connOf.get(line.player));
    }
  }
  expect(failed().find((l) => l.hook === 'rpc.now')).toMatchObject({ player: 'alice', err: { message: 'rpc.now broke' } });
  expect(failed().find((l) => l.hook === 'rpc.later')).toMatchObject({ player: 'bob', err: { message: 'rpc.later broke' } });
  // onTick's has no player; it runs for nobody's action.
  const onTick = failed().filter((l) => l.hook === 'onTick');
  expect(onTick.length).toBeGreaterThan(0);
  for (const line of onTick) expect(line).not.toHaveProperty('player');
  // Hundreds of failures, a line a second a hook.
  const counted = (hook: string) => shard.metrics.hookErrors.get().then((m) => m.values.find((v) => v.labels.hook === hook)?.value ?? 0);
  expect(await counted('onInput')).toBeGreaterThan(100);
  expect(failed().filter((l) => l.hook === 'onInput').length).toBeLessThanOrEqual(Math.ceil(movedS) + 1);
});

test('a tick loop falling behind is logged once, then as a count at most every 10 s, not on every drop', async () => {
  // Every tick takes 60 ms of a 25 ms step: each wake-up drops ticks.
  const game = moduleFile(`
    export default { onTick() { const end = performance.now() + 60; while (performance.now() < end); } };`);
  const { shard, lines } = await loggedShard({
    AETHEX_GAMESERVER_GAME_MODULE: game,
    AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '25',
    AETHEX_GAMESERVER_ENGINE_MAX_CATCH_UP_TICKS: '1',
  });
  const dropped = () => shard.metrics.ticksSkipped.get().then((m) => m.values[0]?.value ?? 0);
  const started = await dropped();
  await new Promise((r) => setTimeout(r, 1500));
  // Many drops (a dozen or so), one line.
  expect((await dropped()) - started).toBeGreaterThan(5);
  const behind = lines().filter((l) => String(l.msg).startsWith('tick loop fell behind'));
  expect(behind).toHaveLength(1);
  expect(behind[0]).toMatchObject({ level: 40, ticks: expect.any(Number), dropped: expect.any(Number) });
});
