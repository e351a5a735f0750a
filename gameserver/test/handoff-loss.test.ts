// A player's entity around a handoff when something else goes wrong at the same time: the
// redirect never reaches the client, the new shard drains before the client resumes there, the
// connection drops while the entity is on offer. docs/sharding.md: never duplicated, never lost
// while the player's client lives. Real shards, real SDK clients, a TCP proxy to stall or cut the
// client's connection.
import { mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { aethex } from '@aethex/proto';
import type { RealtimeClient } from '@aethex/sdk';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { type FaultProxy, startFaultProxy } from '../soak/fault-proxy.js';
import { decodeState } from '../src/persist/state-codec.js';
import type { Neighbour } from '../src/sharding/map.js';
import { MODE_OWNED } from '../src/sim/world.js';
import { linkedDuo, linksUp, moduleFile, type TestShard, until } from './harness.js';

let shards: TestShard[] = [];
let proxies: FaultProxy[] = [];
let timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  await Promise.all(proxies.map((p) => p.close()));
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  proxies = [];
  timers = [];
});

/**
 * A game that gives each new player a game state (7, 7) and leaves it alone after: a player who
 * keeps their entity keeps it, a new entity has none.
 */
const GAME = `export default { onJoin(ctx, p, { rejoined, handedOver }) { if (!rejoined && !handedOver) ctx.setState(p.entityId, new Uint8Array([7, 7])); } };`;

/** Two shards side by side (a = x 0..400, b = x 400..800, both y 0..400), linked; `start(k)` starts shard k (again). */
async function twoShards(env: Record<string, string> = {}) {
  return linkedDuo(
    {
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '50',
      AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
      AETHEX_GAMESERVER_GAME_MODULE: moduleFile(GAME),
      // One directory for both: a restarted shard finds its snapshot (each shard has its own file).
      AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-loss-')),
      ...env,
    },
    (s) => shards.push(s),
  );
}

/** A TCP proxy in front of a shard's players' port (its WebSocket URL is `url`), closed after the test. */
async function proxyTo(shardUrl: string): Promise<FaultProxy & { url: string }> {
  const { hostname: host, port } = new URL(shardUrl);
  const proxy = await startFaultProxy(() => ({ host, port: Number(port) }));
  proxies.push(proxy);
  return Object.assign(proxy, { url: `ws://${proxy.address}` });
}

/** What a client saw, in order. */
function record(c: RealtimeClient): string[] {
  const events: string[] = [];
  c.on('handoff', (h) => events.push(`handoff ${h.from}->${h.to}`));
  c.on('handoffFailed', (r) => events.push(`handoffFailed ${r}`));
  c.on('disconnected', (code, r) => events.push(`disconnected ${code} ${r}`));
  c.on('rejoined', (i) => events.push(`rejoined ${i.shard}`));
  c.on('kick', (r) => events.push(`kick ${r}`));
  return events;
}

/**
 * Every entity kept for the player on these shards, as `shard#entity`: what each shard's snapshot
 * would keep for them — their session's, a dropped session's waiting entity (also one that dropped
 * while on offer), an adopted one waiting for their resume.
 */
function playersEntities(playerId: string, ...ts: TestShard[]): string[] {
  const out: string[] = [];
  for (const t of ts) {
    const { engine, sharding } = t.shard;
    const kept = decodeState(engine.persistentState(sharding?.adoptedAwaitingResume()), engine.world.capacity).players;
    for (const [entityId, p] of kept) if (p === playerId) out.push(`duo-0-${t.shard.placement?.shard}#${entityId}`);
  }
  return out.sort();
}

const owned = (t: TestShard, id: number) => {
  const w = t.shard.engine.world;
  const i = w.indexOf(id);
  return i >= 0 && w.mode[i] === MODE_OWNED;
};

/** A loopback port nobody listens on (a connection to it is refused). */
async function freedPort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** `t` begins to drain the moment a neighbour's HandoffCommit reaches it (a SIGTERM at that instant). */
function drainOnCommit(t: TestShard): { started?: Promise<void> } {
  const s = t.shard.sharding as NonNullable<typeof t.shard.sharding>;
  const onMessage = s.onMessage.bind(s);
  const drain: { started?: Promise<void> } = {};
  s.onMessage = (from: Neighbour, msg: aethex.v1.ShardMessage) => {
    onMessage(from, msg);
    if (msg.body === 'handoffCommit' && !drain.started) drain.started = t.shard.drain();
  };
  return drain;
}

/** Walks the client east until the drain begins, and waits for the drain to end. */
async function walkUntilDrained(c: RealtimeClient, drain: { started?: Promise<void> }): Promise<void> {
  timers.push(
    setInterval(() => {
      if (!drain.started) c.move(4, 0);
    }, 25),
  );
  await until('B to drain', () => drain.started !== undefined, 30_000);
  await drain.started;
}

const tokenFor = (t: TestShard, playerId: string) => (s: { name: string }) => t.token(playerId, { shard: s.name });

test('a redirect that never reaches the client: its rejoin of the old shard is answered with the same redirect, and it resumes its entity on the new one', async () => {
  const { a, b } = await twoShards();
  const proxy = await proxyTo(a.shard.gatewayUrl);
  const c = await a.client('walker', {
    url: proxy.url,
    silenceTimeoutMs: 1000,
    rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 },
  });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  // Walk east; just before the border A's bytes stop reaching the client, so the redirect A
  // writes after its commit goes nowhere (the client's inputs still reach A).
  let stalledAt: number | undefined;
  timers.push(
    setInterval(() => {
      if (stalledAt === undefined && c.predicted.x >= 396) {
        stalledAt = c.predicted.x;
        proxy.stall();
      }
      c.move(4, 0);
    }, 25),
  );
  await until('the client on an entity again', () => events.some((e) => e.startsWith('rejoined') || e.startsWith('handoff ')), 30_000);
  expect(stalledAt).toBeDefined();
  // The redirect was lost: the client heard nothing, gave up on A and dialled it again, and that
  // second connection carried the redirect.
  expect(proxy.connections).toBe(2);
  expect(c.welcome?.entityId).toBe(original);
  expect(c.shardName).toBe('duo-0-1');
  // The rejoin ends where the redirect led, right after the handoff.
  expect(events.slice(events.indexOf('handoff duo-0-0->duo-0-1'))).toEqual(['handoff duo-0-0->duo-0-1', 'rejoined duo-0-1']);
  // Its one entity, owned by B and played there, with its game state; nothing of it left on A.
  await until('B to own the walker', () => playersEntities('walker', a, b).length === 1);
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-1#${original}`]);
  expect(b.shard.sharding?.adoptedAwaitingResume()).toEqual([]);
  expect(b.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
  const x = b.shard.engine.context.position(original)?.x as number;
  expect(x).toBeGreaterThan(400);
  // Inputs flow to it: the client's prediction and B's position agree.
  const seq = c.move(0, 4);
  await until('B to acknowledge a new input', () => c.lastAckedSeq >= seq, 5000);
});

// The first connection to B is refused (as if B's address were briefly unreachable); later ones
// go through. With `commitLost`, B never gets A's commit (as if the A→B link were down from the
// commit on, past the resume timeout): only the client's token can tell B the handoff is committed.
test.each([
  ['the rejoin resumes there, and the client keeps its entity', false],
  ['while the commit has not reached the new shard: the rejoin resumes there with the token, and the client keeps its entity', true],
])('a resume that fails without a word from the new shard (connection refused): %s', async (_what, commitLost) => {
  const { a, b } = await twoShards({ AETHEX_GAMESERVER_HANDOFF_RESUME_TIMEOUT_MS: '3000' });
  if (commitLost) {
    const s = b.shard.sharding as NonNullable<typeof b.shard.sharding>;
    const onMessage = s.onMessage.bind(s);
    s.onMessage = (from: Neighbour, msg: aethex.v1.ShardMessage) => {
      if (msg.body !== 'handoffCommit') onMessage(from, msg);
    };
  }
  const closedPort = await freedPort();
  let refused = 0;
  const c = await a.client('walker', {
    rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 },
    createSocket: (url) => {
      if (url === b.shard.gatewayUrl && refused === 0) {
        refused++;
        return new WebSocket(`ws://127.0.0.1:${closedPort}`) as never;
      }
      return new WebSocket(url) as never;
    },
  });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  timers.push(setInterval(() => c.move(4, 0), 25));
  await until('the client on B', () => c.shardName === 'duo-0-1', 30_000);
  expect(refused).toBe(1);
  expect(events.some((e) => e.startsWith('handoffFailed'))).toBe(true);
  expect(c.welcome?.entityId).toBe(original);
  await until('B to own the walker', () => playersEntities('walker', a, b).length === 1 && owned(b, original));
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-1#${original}`]);
  expect(b.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
});

test('a client started afresh after the redirect was lost: its join of the old shard is answered with the redirect, and connect() resolves on the new shard with its entity', async () => {
  const { a, b } = await twoShards();
  const proxy = await proxyTo(a.shard.gatewayUrl);
  // Without `rejoin`: the silence ends the session, as when the app itself gives up.
  const first = await a.client('walker', { url: proxy.url, silenceTimeoutMs: 1000 });
  const original = first.welcome?.entityId as number;
  let closed = false;
  first.on('close', () => (closed = true));
  let stalled = false;
  timers.push(
    setInterval(() => {
      if (!stalled && first.predicted.x >= 396) {
        stalled = true;
        proxy.stall();
      }
      first.move(4, 0);
    }, 25),
  );
  await until('the first session to end in silence', () => closed, 30_000);
  await until(
    'B to hold the walker for a resume',
    () => (b.shard.sharding?.adoptedAwaitingResume().length ?? 0) + (b.shard.sharding?.inFlight.held.length ?? 0) === 1,
  );
  const again = await a.client('walker');
  expect(again.welcome?.entityId).toBe(original);
  expect(again.shardName).toBe('duo-0-1');
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-1#${original}`]);
  expect(b.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
  // The session is on B: its inputs are applied there.
  const seq = again.move(0, 4);
  await until('B to acknowledge a new input', () => again.lastAckedSeq >= seq, 5000);
});

test('the new shard drains between the commit and the resume: the client still resumes there, is told to rejoin, and gets its entity back from the restarted shard', async () => {
  const { a, b, start } = await twoShards();
  // B begins to drain the moment A's commit reaches it (a SIGTERM at that instant).
  const drain = drainOnCommit(b);
  const c = await a.client('walker', { rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 } });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  await walkUntilDrained(c, drain);
  // B's final snapshot keeps the walker's entity for the player.
  const b2 = await start(1);
  await linksUp(a, b2);
  await until('the client on an entity again', () => events.some((e) => e.startsWith('rejoined')), 30_000);
  expect(c.welcome?.entityId).toBe(original);
  expect(c.shardName).toBe('duo-0-1');
  expect(events.some((e) => e.startsWith('handoffFailed'))).toBe(false);
  expect(events).toContain('kick SHUTTING_DOWN');
  expect(playersEntities('walker', a, b2)).toEqual([`duo-0-1#${original}`]);
  expect(owned(b2, original)).toBe(true);
  expect(b2.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
  expect(b2.shard.engine.context.position(original)?.x as number).toBeGreaterThan(400);
});

test('the new shard drains and is gone before the client resumes there: the rejoin goes to it, not back to the old shard, and gets the entity from the restarted shard', async () => {
  const { a, b, start } = await twoShards();
  // B begins to drain the moment A's commit reaches it, and no connection of the client reaches
  // B until B runs again (its gateway closed before the resume arrived).
  const drain = drainOnCommit(b);
  const closedPort = await freedPort();
  let bBack = false;
  const c = await a.client('walker', {
    rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 },
    createSocket: (url) => new WebSocket(url === b.shard.gatewayUrl && !bBack ? `ws://127.0.0.1:${closedPort}` : url) as never,
  });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  await walkUntilDrained(c, drain);
  await until('the resume to fail', () => events.some((e) => e.startsWith('handoffFailed')), 10_000);
  // A while down: the client keeps at B, and A starts it no new entity.
  await new Promise((r) => setTimeout(r, 1500));
  expect(playersEntities('walker', a)).toEqual([]);
  const b2 = await start(1);
  bBack = true;
  await linksUp(a, b2);
  await until('the client on an entity again', () => events.some((e) => e.startsWith('rejoined')), 30_000);
  expect(c.welcome?.entityId).toBe(original);
  expect(c.shardName).toBe('duo-0-1');
  expect(playersEntities('walker', a, b2)).toEqual([`duo-0-1#${original}`]);
  expect(owned(b2, original)).toBe(true);
  expect(b2.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
});

test('a join on the new shard instead of the resume takes the entity the handoff committed there for the player', async () => {
  const { a, b } = await twoShards();
  // The client's resume never reaches B (its connections to B are refused): its rejoin joins B.
  const closedPort = await freedPort();
  let refusing = true;
  const c = await a.client('walker', {
    rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 },
    createSocket: (url) => new WebSocket(url === b.shard.gatewayUrl && refusing ? `ws://127.0.0.1:${closedPort}` : url) as never,
  });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  timers.push(setInterval(() => c.move(4, 0), 25));
  await until('B to hold the walker, adopted', () => (b.shard.sharding?.adoptedAwaitingResume().length ?? 0) === 1, 30_000);
  refusing = false;
  await until('the client on B', () => c.shardName === 'duo-0-1', 10_000);
  expect(events.some((e) => e.startsWith('handoffFailed'))).toBe(true);
  expect(events.some((e) => e === 'rejoined duo-0-1')).toBe(true);
  expect(c.welcome?.entityId).toBe(original);
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-1#${original}`]);
  expect(b.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
  const seq = c.move(0, 4);
  await until('B to acknowledge a new input', () => c.lastAckedSeq >= seq, 5000);
});

/**
 * The walker's connection through `proxy` is cut while its entity is on offer to B, whose accepts
 * are delayed by `acceptDelayMs` (or never sent: undefined).
 */
async function cutWhileOffered(acceptDelayMs: number | undefined) {
  const { a, b } = await twoShards();
  const links = b.shard.links as NonNullable<typeof b.shard.links>;
  const send = links.send.bind(links);
  links.send = (n: Neighbour, msg: aethex.v1.IShardMessage) => {
    if (msg.handoffAccept) {
      if (acceptDelayMs !== undefined) setTimeout(() => send(n, msg), acceptDelayMs);
      return 1;
    }
    return send(n, msg);
  };
  const proxy = await proxyTo(a.shard.gatewayUrl);
  const c = await a.client('walker', { url: proxy.url, rejoin: { joinToken: tokenFor(a, 'walker'), maxDelayMs: 200 } });
  const original = c.welcome?.entityId as number;
  const events = record(c);
  let cutAtX: number | undefined;
  timers.push(
    setInterval(() => {
      if (cutAtX === undefined && a.shard.sharding?.inFlight.offered.includes(original)) {
        cutAtX = a.shard.engine.context.position(original)?.x;
        proxy.cut();
      }
      if (cutAtX === undefined) c.move(4, 0);
    }, 5),
  );
  await until('the cut', () => cutAtX !== undefined, 30_000);
  return { a, b, c, original, events, cutAtX: cutAtX as number };
}

test('a connection cut while its entity is on offer, accepted after the cut: the offer rolls back, the rejoin gets the entity back here, and it is handed over again', async () => {
  const { a, b, c, original, events } = await cutWhileOffered(200);
  // Committed, the player would have had handoff.resume_timeout_ms to resume on B; rolled back,
  // their entity waits on A for engine.rejoin_window_ms, and, past the border, goes on from there.
  await until('the handoff to B', () => events.includes('handoff duo-0-0->duo-0-1'), 30_000);
  expect(c.shardName).toBe('duo-0-1');
  expect(c.welcome?.entityId).toBe(original);
  expect(events.filter((e) => !e.startsWith('disconnected'))).toEqual(['rejoined duo-0-0', 'handoff duo-0-0->duo-0-1']);
  await until('B to own the walker', () => playersEntities('walker', a, b).length === 1);
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-1#${original}`]);
  expect(b.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
});

test('a connection cut while its entity is on offer, the offer rolled back: the entity waits where it stood and the rejoin gets it back', async () => {
  const { a, b, c, original, events, cutAtX } = await cutWhileOffered(undefined);
  // Rolled back after handoff.timeout_ms (1 s): the entity waits dormant on A for its player.
  await until('the client on an entity again', () => events.some((e) => e.startsWith('rejoined') || e.startsWith('handoff ')), 30_000);
  expect(c.welcome?.entityId).toBe(original);
  expect(events).toContain('rejoined duo-0-0');
  expect(playersEntities('walker', a, b)).toEqual([`duo-0-0#${original}`]);
  expect(a.shard.engine.context.state(original)).toEqual(new Uint8Array([7, 7]));
  // Where it stood (past the border; the inputs the client re-sent may have moved it on a little).
  expect(cutAtX).toBeGreaterThan(400);
  expect(a.shard.engine.context.position(original)?.x as number).toBeGreaterThanOrEqual(cutAtX);
});
