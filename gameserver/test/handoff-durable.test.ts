// A player handed over lives only in the new shard's process until its next snapshot (the old one
// let go of the entity at the commit): the new shard snapshots soon after adopting, not only at
// persistence.snapshot_interval_ms.
import { afterEach, expect, test } from 'vitest';
import { decodeState } from '../src/persist/state-codec.js';
import { linkedDuo, type TestShard, until } from './harness.js';

let shards: TestShard[] = [];
let timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  timers = [];
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
