// A player handed over must survive the new shard crashing before it stores them: the new shard
// snapshots soon after adopting (not only at persistence.snapshot_interval_ms), and until it says
// that snapshot is stored, the shard that handed the player over keeps a copy and gives it back to
// the new shard's next run (docs/sharding.md, "Custody").
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import { afterEach, expect, test } from 'vitest';
import { decodeState } from '../src/persist/state-codec.js';
import { duoMap, linkedDuo, moduleFile, neighbour, startTestShard, type TestShard, until } from './harness.js';

let shards: TestShard[] = [];
let timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  timers = [];
  await killProcesses();
});

test('a shard that adopts a player stores a snapshot holding them within about a second, long before its periodic one', async () => {
  const { a, b } = await linkedDuo(
    { AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000', AETHEX_GAMESERVER_LOG_LEVEL: 'warn' },
    (s) => shards.push(s),
  );
  const stored = async () => {
    const saved = await a.shard.stores.snapshots.load({ namespace: '', world: 'duo', instance: 0, shard: 'duo-0-0' });
    return saved ? [...decodeState(saved.state, 10_000).players.values()] : [];
  };
  // A's snapshot at start holds nobody.
  await until("A's first snapshot", () => a.shard.persistence.savedThrough > 0, 10_000);
  expect(await stored()).toEqual([]);
  const rae = await b.client('rae');
  const handoffs: unknown[] = [];
  rae.on('handoff', (h) => handoffs.push(h));
  timers.push(setInterval(() => rae.move(-4, 0), 25));
  await until("rae's handoff to A", () => handoffs.length === 1, 30_000);
  timers.forEach(clearInterval);
  const handedAt = Date.now();
  let players: string[] = [];
  while (Date.now() - handedAt < 5000 && !players.includes('rae')) {
    await new Promise((r) => setTimeout(r, 50));
    players = await stored();
  }
  expect(players).toEqual(['rae']);
  expect(Date.now() - handedAt).toBeLessThan(3000);
});

/** A game that gives each new player a game state (7, 7), and RPCs to set it and read it back. */
const GAME = `export default {
  onJoin(ctx, p, { rejoined, handedOver }) { if (!rejoined && !handedOver) ctx.setState(p.entityId, new Uint8Array([7, 7])); },
  rpc: {
    set: (ctx, p, payload) => { ctx.setState(p.entityId, payload); return new Uint8Array(0); },
    state: (ctx, p) => ctx.state(p.entityId) ?? new Uint8Array(0),
  },
};`;

test('a shard killed right after adopting a player gets the player back from the shard that handed them over: they rejoin with their entity and game state', async () => {
  const keys = generateKeyPairSync('ed25519');
  const { envOf } = await duoMap();
  const env = {
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '50',
    AETHEX_GAMESERVER_GAME_MODULE: moduleFile(GAME),
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-custody-')),
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '600000',
    AETHEX_GAMESERVER_LOG_LEVEL: 'info',
  };
  const a = await startTestShard({ ...envOf(0), ...env, AETHEX_GAMESERVER_LOG_LEVEL: 'warn' }, keys);
  shards.push(a);
  // B is a real process, to be SIGKILLed: no drain, no final snapshot.
  const startB = async () => {
    const p = spawnSource(join(import.meta.dirname, '../src/main.ts'), [], {
      env: {
        ...envOf(1),
        ...env,
        AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
      },
    });
    await p.logged('shard started', 20_000);
    return p;
  };
  const first = await startB();
  const linkToB = () => a.shard.links?.isUp(neighbour(a)) ?? false;
  await until('the links between A and B', linkToB, 10_000);
  const walker = await a.client('walker', { rejoin: { joinToken: (s) => a.token('walker', { shard: s.name }), maxDelayMs: 200 } });
  const original = walker.welcome?.entityId as number;
  expect([...(await walker.rpc('state'))]).toEqual([7, 7]);
  await walker.rpc('set', new Uint8Array([3, 1, 4]));
  const events: string[] = [];
  walker.on('handoff', (h) => events.push(`handoff ${h.from}->${h.to}`));
  walker.on('rejoined', (r) => events.push(`rejoined ${r.shard}`));
  // Walk east, from x 200 into B (x 400..800), and stop once handed over.
  timers.push(
    setInterval(() => {
      if (events.length === 0) walker.move(4, 0);
    }, 25),
  );
  await until('the handoff to B', () => events.length > 0, 30_000);
  expect(events).toEqual(['handoff duo-0-0->duo-0-1']);
  // A keeps a copy: B has not said it stored the walker.
  expect(a.shard.sharding?.custodyHeld).toEqual([original]);
  // B dies at once, before the snapshot its adoption brings forward (within a second) is stored.
  first.kill('SIGKILL');
  await first.exited;
  const second = await startB();
  const handedBack = await second.logged('entities adopted before the restart and not stored, handed back by the neighbour', 10_000);
  expect(handedBack).toMatchObject({ from: 'duo-0-0', taken: 1, released: 0 });
  await until('the walker to rejoin B', () => events.length > 1, 30_000);
  expect(events).toEqual(['handoff duo-0-0->duo-0-1', 'rejoined duo-0-1']);
  // Their entity, with the game state it had (a new one would have another id and the state (7, 7)).
  expect(walker.welcome?.entityId).toBe(original);
  expect([...(await walker.rpc('state'))]).toEqual([3, 1, 4]);
  // Once B's snapshot holding the walker is stored, A lets its copy go.
  await until("A's copy released", () => (a.shard.sharding?.custodyHeld.length ?? 1) === 0, 10_000);
  second.kill('SIGTERM');
  expect((await second.exited).code).toBe(0);
});
