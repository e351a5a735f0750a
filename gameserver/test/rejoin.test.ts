import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { aethex, CLOSE_CODE_CANNOT_READ } from '@aethex/proto';
import type { RealtimeClient, RealtimeOptions } from '@aethex/sdk';
import { afterEach, describe, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { MODE_DORMANT, MODE_OWNED } from '../src/sim/world.js';
import { moduleFile, startTestShard, type TestShard, until } from './harness.js';

const { ClientMessage, ServerMessage } = aethex.v1;

let t: TestShard | undefined;
let proxy: Server | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
  proxy?.close();
  proxy = undefined;
});

/**
 * A TCP proxy in front of the gateway whose connections can be cut (both ends just closed, no
 * WebSocket close frame: what a network cut or a crash looks like to the shard) or stalled (open,
 * but nothing passes either way: a network gone away without a word, a half-open connection), and
 * which can refuse new ones for a while (the network is down).
 */
async function cuttableProxy(target: string) {
  const { hostname, port } = new URL(target);
  const open = new Set<Socket>();
  let down = false;
  const server = createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = connect(Number(port), hostname);
    for (const [a, b] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      open.add(a);
      a.pipe(b);
      a.on('error', () => b.destroy());
      a.on('close', () => {
        open.delete(a);
        b.destroy();
      });
    }
  });
  proxy = server;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${address.port}`,
    cut() {
      down = true;
      for (const s of open) s.destroy();
    },
    stall() {
      for (const s of open) s.pause();
    },
    restore() {
      down = false;
    },
  };
}

/** A raw socket that joins as `playerId` and records what the shard sends. */
async function rawJoin(url: string, token: string) {
  const ws = new WebSocket(url);
  const messages: aethex.v1.ServerMessage[] = [];
  ws.on('message', (data) => messages.push(ServerMessage.decode(data as Buffer)));
  ws.on('error', () => undefined);
  await once(ws, 'open');
  ws.send(ClientMessage.encode({ join: { joinToken: token, protocolVersion: 1 } }).finish());
  await until('a welcome', () => messages.some((m) => m.body === 'welcome'));
  const welcome = messages.find((m) => m.body === 'welcome')?.welcome as aethex.v1.Welcome;
  return { ws, messages, entityId: welcome.entityId };
}

async function metric(t: TestShard, name: string): Promise<number> {
  const text = await t.shard.metrics.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1]);
}

/**
 * 'ann' joined through a cuttable proxy with the SDK's rejoin on, her entity put at the origin of
 * the world, and the corrections she gets from then on.
 */
async function annThroughProxy(shard: TestShard, options: Partial<RealtimeOptions> = {}) {
  const net = await cuttableProxy(shard.shard.gatewayUrl);
  const ann = await shard.client('ann', { url: net.url, rejoin: { joinToken: () => shard.token('ann'), maxDelayMs: 100 }, ...options });
  const id = ann.welcome?.entityId as number;
  const w = shard.shard.engine.world;
  w.x[w.indexOf(id)] = 0;
  w.y[w.indexOf(id)] = 0;
  await until('ann at the origin', () => Math.abs(ann.entities().get(id)?.x ?? 1) < 0.2);
  const corrections: unknown[] = [];
  ann.on('correction', (c) => corrections.push(c));
  return { net, ann, id, corrections };
}

/** `n` moves of one unit along x, one a tick, as a client sends them. */
async function walk(client: RealtimeClient, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    client.move(1, 0);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * After ann's rejoin: the Welcome names her entity `id` with `welcomedAt` applied, then every input
 * she made (through `walked`) is applied and she stands at x = `walked` on the shard and in her own
 * snapshots (one unit a move from the origin).
 */
async function backWhereSheWas(shard: TestShard, ann: RealtimeClient, id: number, welcomedAt: number, walked: number): Promise<void> {
  expect(ann.welcome?.entityId).toBe(id);
  expect(ann.welcome?.lastInputSeq).toBe(welcomedAt);
  await until(`inputs through ${walked} applied`, () => ann.lastAckedSeq === walked && ann.unacknowledged === 0);
  await until(`ann at ${walked} in her own snapshots`, () => Math.abs((ann.entities().get(id)?.x ?? 0) - walked) < 0.2);
  const w = shard.shard.engine.world;
  expect(w.x[w.indexOf(id)]).toBeCloseTo(walked, 4);
}

describe('a player whose connection drops', () => {
  test('gets their entity back where it stood when the SDK rejoins, with every input it predicted meanwhile', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50',
      AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '10000',
    });
    const shard = t;
    const { net, ann, id, corrections } = await annThroughProxy(shard);
    const bob = await shard.client('bob');
    const w = shard.shard.engine.world;
    const seenByBob: string[] = [];
    bob.on('enter', (e) => e === id && seenByBob.push('enter'));
    bob.on('leave', (e) => e === id && seenByBob.push('leave'));
    await until('ann in bob’s view', () => bob.entities().has(id));

    await walk(ann, 10);
    await until('ten inputs acknowledged', () => ann.lastAckedSeq === 10 && ann.unacknowledged === 0);
    const disconnected = new Promise((r) => ann.on('disconnected', r));
    net.cut();
    await disconnected;
    // Walking on while the network is down: predicted, held by the SDK.
    await walk(ann, 5);
    await until('ann out of bob’s view', () => seenByBob.includes('leave'));
    expect(await metric(shard, 'aether_players_awaiting_rejoin')).toBe(1);
    const slot = w.indexOf(id);
    expect(w.mode[slot]).toBe(MODE_DORMANT);
    expect(w.x[slot]).toBeCloseTo(10, 4);
    expect(w.lastSeq[slot]).toBe(10);

    const rejoined = new Promise((r) => ann.on('rejoined', r));
    net.restore();
    await rejoined;
    // The five moves made while the network was down are applied after the rejoin.
    await backWhereSheWas(shard, ann, id, 10, 15);
    expect(w.mode[w.indexOf(id)]).toBe(MODE_OWNED);
    expect(ann.predicted.x).toBeCloseTo(15, 4);
    expect(corrections).toEqual([]);
    await until('ann back in bob’s view', () => seenByBob.at(-1) === 'enter');
    expect(Math.abs((bob.entities().get(id)?.x ?? 0) - 15)).toBeLessThan(0.2);
    expect(await metric(shard, 'aether_players_awaiting_rejoin')).toBe(0);
    expect(shard.shard.engine.playerCount).toBe(2);
  });

  test('a cut or an idle kick keeps the entity for the window, a close with 1000 does not; after the window it goes', async () => {
    t = await startTestShard({
      AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: '1000',
      AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '1000',
    });
    const url = t.shard.gatewayUrl;
    const w = t.shard.engine.world;

    // Silent until the idle kick: waits, and a rejoin within the window takes it back.
    const quiet = await rawJoin(url, await t.token('quiet'));
    const [idleCode] = (await once(quiet.ws, 'close')) as [number];
    expect(quiet.messages.at(-1)?.kick?.reason).toBe(aethex.v1.ReasonCode.REASON_CODE_IDLE_TIMEOUT);
    // 4000 + the reason: a client reading only the close code does not take it for a leave.
    expect(idleCode).toBe(4000 + aethex.v1.ReasonCode.REASON_CODE_IDLE_TIMEOUT);
    expect(w.mode[w.indexOf(quiet.entityId)]).toBe(MODE_DORMANT);
    const quietAgain = await rawJoin(url, await t.token('quiet'));
    expect(quietAgain.entityId).toBe(quiet.entityId);
    quietAgain.ws.close(1000);

    // Cut (no close frame), and another close code: both wait; a normal close leaves at once, and
    // so does a client that cannot read this shard (it will not come back).
    const cut = await rawJoin(url, await t.token('cut'));
    const other = await rawJoin(url, await t.token('other'));
    const normal = await rawJoin(url, await t.token('normal'));
    const unreadable = await rawJoin(url, await t.token('unreadable'));
    cut.ws.terminate();
    other.ws.close(4000, 'app going away');
    normal.ws.close(1000);
    unreadable.ws.close(CLOSE_CODE_CANNOT_READ, 'protocol error');
    await until('normal gone', () => w.indexOf(normal.entityId) < 0);
    await until('cut and other waiting', () => [cut, other].every((c) => w.mode[w.indexOf(c.entityId)] === MODE_DORMANT));
    const dropped = Date.now();
    expect(w.indexOf(unreadable.entityId)).toBe(-1);
    expect(t.shard.engine.waitingPlayers).toBe(2);

    await until('the window over', () => w.indexOf(cut.entityId) < 0 && w.indexOf(other.entityId) < 0, 3000);
    expect(Date.now() - dropped).toBeGreaterThanOrEqual(800);
    expect(t.shard.engine.waitingPlayers).toBe(0);
    const cutAgain = await rawJoin(url, await t.token('cut'));
    expect(cutAgain.entityId).not.toBe(cut.entityId);
    cutAgain.ws.close(1000);
  });

  test('game hooks tell a drop and a rejoin from a leave and a join; the tag example never has two "it"s', async () => {
    const file = moduleFile(`
      globalThis.rejoinTestEvents = [];
      export default {
        onJoin(ctx, p, { rejoined }) { globalThis.rejoinTestEvents.push(['join', p.playerId, rejoined]); },
        onLeave(ctx, p, { dropped }) { globalThis.rejoinTestEvents.push(['leave', p.playerId, dropped]); },
      };`);
    t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
    const events = () => (globalThis as { rejoinTestEvents?: unknown[] }).rejoinTestEvents ?? [];
    const url = t.shard.gatewayUrl;
    const first = await rawJoin(url, await t.token('ann'));
    first.ws.terminate();
    await until('the drop', () => events().length === 2);
    const second = await rawJoin(url, await t.token('ann'));
    // The same player joining on another socket replaces the session: to the game, a drop and a rejoin.
    const third = await rawJoin(url, await t.token('ann'));
    expect(third.entityId).toBe(second.entityId);
    third.ws.close(1000);
    await until('the leave', () => events().length === 6);
    const fresh = await rawJoin(url, await t.token('ann'));
    expect(fresh.entityId).not.toBe(first.entityId);
    expect(events()).toEqual([
      ['join', 'ann', false],
      ['leave', 'ann', true],
      ['join', 'ann', true],
      ['leave', 'ann', true],
      ['join', 'ann', true],
      ['leave', 'ann', false],
      ['join', 'ann', false],
    ]);
    fresh.ws.close(1000);
    await t.stop();

    t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: join(import.meta.dirname, '../../examples/game/tag.mjs') });
    const w = t.shard.engine.world;
    const alice = await rawJoin(t.shard.gatewayUrl, await t.token('alice'));
    const bob = await rawJoin(t.shard.gatewayUrl, await t.token('bob'));
    const flagged = () =>
      Array.from({ length: w.count }, (_, i) => i)
        .filter((i) => w.flags[i] === 1)
        .map((i) => w.id[i]);
    await until('alice is "it"', () => flagged().join() === String(alice.entityId));
    alice.ws.terminate();
    await until('bob is "it"', () => flagged().join() === String(bob.entityId));
    expect(w.mode[w.indexOf(alice.entityId)]).toBe(MODE_DORMANT);
    const back = await rawJoin(t.shard.gatewayUrl, await t.token('alice'));
    expect(back.entityId).toBe(alice.entityId);
    await new Promise((r) => setTimeout(r, 100));
    expect(flagged()).toEqual([bob.entityId]);
    back.ws.close(1000);
    bob.ws.close(1000);
  });

  test('a connection that goes silent without closing: the SDK gives up on it, rejoins, and takes over its entity', async () => {
    t = await startTestShard({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50' });
    const shard = t;
    const { net, ann, id, corrections } = await annThroughProxy(shard, { silenceTimeoutMs: 500 });
    await walk(ann, 5);
    await until('five inputs acknowledged', () => ann.lastAckedSeq === 5 && ann.unacknowledged === 0);
    const disconnected = new Promise<[number, string]>((r) => ann.on('disconnected', (code, reason) => r([code, reason])));
    const rejoined = new Promise((r) => ann.on('rejoined', r));
    net.stall();
    // Moves made into the dead connection never reach the shard; they are re-sent after the rejoin.
    await walk(ann, 5);
    const [code, reason] = await disconnected;
    expect(code).toBe(4000);
    expect(reason).toMatch(/no message from the shard/);
    await rejoined;
    // The shard still had the old session (the stalled socket never closed): the rejoin replaced it.
    await backWhereSheWas(shard, ann, id, 5, 10);
    expect(corrections).toEqual([]);
    expect(shard.shard.engine.playerCount).toBe(1);
  });

  test('the most inputs the SDK holds (128), re-sent at once behind the rejoin’s Join, are all taken on the default message burst: no RATE_LIMITED kick', async () => {
    // Default gateway settings: gateway.message_burst is what the SDK's re-send must fit in.
    t = await startTestShard();
    const shard = t;
    // A clock moved on a tick per move below: the SDK sends (and holds) one input per tick.
    let skew = 0;
    const { net, ann, id, corrections } = await annThroughProxy(shard, { silenceTimeoutMs: 500, now: () => performance.now() + skew });
    const kicks: string[] = [];
    ann.on('kick', (reason) => kicks.push(reason));
    await walk(ann, 5);
    await until('five inputs acknowledged', () => ann.lastAckedSeq === 5 && ann.unacknowledged === 0);
    const disconnected = new Promise((r) => ann.on('disconnected', r));
    const resent = new Promise<number>((r) => ann.on('rejoined', () => r(ann.unacknowledged)));
    net.stall();
    // Five seconds of moves at 40 Hz into the dead connection, none acknowledged: the SDK keeps the
    // newest 128 and sends them all to the shard right after the rejoin's Welcome.
    for (let i = 0; i < 200; i++) {
      skew += 25;
      ann.move(1, 0);
    }
    await disconnected;
    expect(await resent).toBe(128);
    const last = 5 + 200;
    await until(
      `inputs through ${last} acknowledged, or the session over`,
      () => (ann.lastAckedSeq === last && ann.unacknowledged === 0) || ann.ended,
      10_000,
    );
    expect(kicks).toEqual([]);
    expect(ann.ended).toBe(false);
    // Each of the 128 moved her: from x = 5, where the shard had her, to 5 + 128.
    const w = shard.shard.engine.world;
    expect(w.lastSeq[w.indexOf(id)]).toBe(last);
    await until('ann at 133 on the shard', () => Math.abs((w.x[w.indexOf(id)] as number) - 133) < 1e-3);
    expect(ann.predicted.x).toBeCloseTo(133, 4);
    expect(corrections).toEqual([]);
    expect(shard.shard.engine.playerCount).toBe(1);
  });
});
