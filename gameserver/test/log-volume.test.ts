import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { aethex } from '@aethex/proto';
import { createLogger, signJoinToken } from '@aethex/runtime';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { REFUSALS_LOGGED_BURST } from '../src/net/gateway.js';
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

/** A shard on loopback ports whose log lines (info and up) are kept in `lines`. */
async function loggedShard(env: Record<string, string> = {}): Promise<{ shard: RunningShard; lines: () => Record<string, unknown>[] }> {
  const text: string[] = [];
  const settings = testShardSettings(env, keys);
  shard = await startShard(settings, { log: createLogger('gameserver-test', 'info', { write: (line: string) => void text.push(line) }) });
  return { shard, lines: () => text.map((line) => JSON.parse(line) as Record<string, unknown>) };
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
  for (let i = 0; i < attempts; i++) expect((await attempt(shard.gatewayUrl, forged)).kick?.message).toMatch(/bad signature/);
  const refused = () => lines().filter((l) => l.msg === 'join refused');
  expect(lines().filter((l) => l.msg === 'kicked')).toEqual([]);
  // The burst, and one a second after it while the attempts went on (they take well under 5 s).
  expect(refused().length).toBeGreaterThanOrEqual(REFUSALS_LOGGED_BURST);
  expect(refused().length).toBeLessThanOrEqual(REFUSALS_LOGGED_BURST + 5);
  expect(refused()[0]).toMatchObject({
    reason: 'auth_failed',
    message: expect.stringMatching(/^join token rejected: bad signature/),
    addr: '127.0.0.1',
  });
  expect(String(refused()[0]?.err)).toMatch(/signature verification failed/);
  // The next line logged says how many were left out; with it, every refusal is accounted for.
  await new Promise((r) => setTimeout(r, 1100));
  await attempt(shard.gatewayUrl, forged);
  await until('the next refusal logged', () => refused().length > 0 && refused().at(-1)?.unlogged !== undefined);
  const unlogged = refused().reduce((n, l) => n + Number(l.unlogged ?? 0), 0);
  expect(refused().length + unlogged).toBe(attempts + 1);
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
