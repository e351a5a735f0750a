// A shard that restarts while its neighbour still holds an entity it offered: offer ids start again
// at 1 in the new process, and must never match what the previous run offered.
import type { aethex } from '@aethex/proto';
import type { RealtimeClient } from '@aethex/sdk';
import { afterEach, expect, test } from 'vitest';
import type { Neighbour } from '../src/sharding/map.js';
import { MODE_OWNED } from '../src/sim/world.js';
import { linkedDuo, linksUp, type TestShard, until } from './harness.js';

let shards: TestShard[] = [];
let timers: NodeJS.Timeout[] = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  timers = [];
});

/**
 * Two shards side by side (a = x 0..400, b = x 400..800, both y 0..400), linked, and `start(k)`,
 * which starts shard k again (a new process run: new link epoch, no snapshot).
 */
async function twoShards(env: Record<string, string>): Promise<{ a: TestShard; b: TestShard; start(k: number): Promise<TestShard> }> {
  return linkedDuo({ AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '50', AETHEX_GAMESERVER_LOG_LEVEL: 'warn', ...env }, (s) => shards.push(s));
}

const modeOf = (t: TestShard, id: number) => {
  const w = t.shard.engine.world;
  const i = w.indexOf(id);
  return i < 0 ? undefined : w.mode[i];
};

/** Walks the client west every tick (until the test ends). */
function walkWest(c: RealtimeClient): void {
  timers.push(setInterval(() => c.move(-4, 0), 25));
}

test("a restarted shard's offer never gets a token its previous run was given: the player resumes as itself", async () => {
  // Nothing rolls back or expires on its own while the test stages the restart: a 10 s offer,
  // which at 20 Hz is within the 240 ticks an offer may last.
  const { a, b, start } = await twoShards({
    AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '50',
    AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: '10000',
    AETHEX_GAMESERVER_HANDOFF_RESUME_TIMEOUT_MS: '60000',
  });
  // A's accepts of the first run's offer never reach B: B "crashes" before it can commit.
  const links = a.shard.links as NonNullable<typeof a.shard.links>;
  const send = links.send.bind(links);
  const lostAccepts: aethex.v1.IHandoffAccept[] = [];
  let loseAccepts = true;
  links.send = (n: Neighbour, msg: aethex.v1.IShardMessage) => {
    if (msg.handoffAccept && loseAccepts) {
      lostAccepts.push(msg.handoffAccept);
      return 0;
    }
    return send(n, msg);
  };
  const pat = await b.client('pat');
  const patId = [...b.shard.engine.ownedPlayers()][0]?.entityId as number;
  walkWest(pat);
  await until('A to hold pat, offered by the first run of B', () => a.shard.sharding?.inFlight.held.length === 1, 30_000);
  expect(lostAccepts).toMatchObject([{ offerId: 1, entityId: patId }]);
  // B's first run ends as a crash would: it says nothing more (a drain would roll its offer back).
  const bLinks = b.shard.links as NonNullable<typeof b.shard.links>;
  bLinks.send = () => 0;
  await b.stop();

  // B's second run: a fresh process (new epoch, no snapshot) whose first offer is number 1 again.
  const b2 = await start(1);
  await linksUp(a, b2);
  loseAccepts = false;
  const quinn = await b2.client('quinn');
  const quinnId = [...b2.shard.engine.ownedPlayers()][0]?.entityId as number;
  const handoffs: unknown[] = [];
  quinn.on('handoff', (h) => handoffs.push(h));
  walkWest(quinn);
  await until("quinn's handoff to A", () => handoffs.length === 1, 30_000);
  expect(quinn.shardName).toBe('duo-0-0');
  // Quinn's connection is bound to quinn's entity as quinn; what B's first run offered is still
  // held for a client that might have been redirected with its token.
  expect([...a.shard.engine.ownedPlayers()].map((p) => [p.playerId, p.entityId])).toEqual([['quinn', quinnId]]);
  expect(modeOf(a, quinnId)).toBe(MODE_OWNED);
  expect(a.shard.sharding?.inFlight.held).toEqual([patId]);
  // The fresh process allocated the same entity id again: pat's token, had the first run's commit
  // reached pat's client, must not bind pat to quinn's entity.
  expect(quinnId).toBe(patId);
  expect(a.shard.sharding?.claimResume(lostAccepts[0]?.resumeToken as string)).toBeUndefined();
  expect([...a.shard.engine.ownedPlayers()].map((p) => p.playerId)).toEqual(['quinn']);
});
