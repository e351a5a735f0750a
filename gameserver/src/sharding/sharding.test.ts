import { aethex } from '@aethex/proto';
import { createLogger } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { MODE_GHOST } from '../sim/world.js';
import type { Neighbour } from './map.js';
import { Sharding } from './sharding.js';

const settings = loadConfig({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'unused', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,200,100' });
const left = { minX: 0, minY: 0, maxX: 100, maxY: 100 };
const right: Neighbour = { shard: 1, name: 'w-0-1', region: { minX: 100, minY: 0, maxX: 200, maxY: 100 }, address: '127.0.0.1:1' };

/** The left shard's Sharding over `engine`, with nothing to send to (no link attached). */
function shardingOf(engine: ShardEngine, extra: Partial<ConstructorParameters<typeof Sharding>[0]> = {}): Sharding {
  return new Sharding({
    engine,
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right] },
    margin: 4,
    offerTimeoutMs: 1000,
    resumeTimeoutMs: 10_000,
    positionScale: 0.125,
    log: createLogger('sharding-test', 'silent'),
    redirect: () => undefined,
    ...extra,
  });
}

function shard() {
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left });
  return { engine, sharding: shardingOf(engine) };
}

const ghost = (entityId: number, x: number, y: number, extra: Partial<aethex.v1.IGhostEntity> = {}) => ({
  entityId,
  position: { x, y },
  velocity: { x: 0, y: 0 },
  kind: 0,
  flags: 0,
  ...extra,
});
const update = (g: aethex.v1.IGhostUpdate) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode({ ghostUpdate: g }).finish());

test("a neighbour's ghosts are applied, replaced by a full update and dropped with the link; bad ones are ignored", () => {
  const { engine, sharding } = shard();
  const w = engine.world;
  const id = (k: number) => (1 << 24) + k;
  sharding.onMessage(
    right,
    update({
      tick: 1,
      upserts: [
        ghost(id(1), 110, 50),
        ghost(id(2), 120, 60),
        ghost(id(3), Number.NaN, 50),
        ghost(id(4), 500, 50),
        ghost(id(5), 110, 50, { velocity: { x: Number.POSITIVE_INFINITY, y: 0 } }),
        ghost(id(6), 110, 50, { kind: 70_000 }),
      ],
    }),
  );
  const ghosts = () =>
    Array.from({ length: w.count }, (_, i) => i)
      .filter((i) => w.mode[i] === MODE_GHOST)
      .map((i) => w.id[i] as number);
  expect(ghosts().sort()).toEqual([id(1), id(2)]);
  sharding.onMessage(right, update({ tick: 2, upserts: [ghost(id(2), 121, 61)], removed: [] }));
  expect(w.x[w.indexOf(id(2))]).toBe(121);
  // A full update replaces the whole set from that neighbour.
  sharding.onMessage(right, update({ tick: 3, full: true, upserts: [ghost(id(7), 130, 10)] }));
  expect(ghosts()).toEqual([id(7)]);
  sharding.onMessage(right, update({ tick: 4, removed: [id(7)] }));
  expect(ghosts()).toEqual([]);
  sharding.onMessage(right, update({ tick: 5, upserts: [ghost(id(8), 130, 10)] }));
  sharding.onInboundDown(right);
  expect(ghosts()).toEqual([]);
  // A ghost never replaces an entity this shard owns.
  const mine = w.spawn(50, 50, 0);
  sharding.onMessage(right, update({ tick: 6, upserts: [ghost(mine, 130, 10)] }));
  expect([w.x[w.indexOf(mine)], w.mode[w.indexOf(mine)]]).toEqual([50, 0]);
});

test('a shard restored with players admits nobody until its neighbours claim the players they own now', async () => {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER, MODE_DORMANT } = await import('../sim/world.js');
  const w = new World(16);
  const stayed = w.spawn(10, 10, KIND_PLAYER);
  const movedOn = w.spawn(20, 20, KIND_PLAYER);
  const restored = decodeState(
    encodeState(
      5,
      w,
      new Map([
        [stayed, 'stayed'],
        [movedOn, 'moved-on'],
      ]),
    ),
    16,
  );
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, restored });
  let clock = 0;
  const sharding = shardingOf(engine, { restoredPlayers: true, now: () => clock });
  expect(sharding.settled).toBe(false);
  const claim = aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode({ ownershipClaim: { entityIds: [movedOn, 999] } }).finish());
  sharding.onMessage(right, claim);
  expect(sharding.settled).toBe(true);
  expect(engine.world.indexOf(movedOn)).toBe(-1);
  expect(engine.world.mode[engine.world.indexOf(stayed)]).toBe(MODE_DORMANT);
  // The player who stayed gets its entity back; the one who moved on starts afresh if it comes back.
  expect(engine.join(1, 'stayed')).toMatchObject({ ok: true, entityId: stayed });
  expect(engine.join(2, 'moved-on')).toMatchObject({ ok: true });
  expect(engine.join(3, 'moved-on-again').ok && engine.world.indexOf(movedOn)).toBe(-1);
  // Without every claim, the shard still opens after the settle timeout.
  const late = shardingOf(engine, { restoredPlayers: true, now: () => clock });
  clock += 3001;
  expect(late.settled).toBe(true);
});

test('an accepted offer keeps its player a place and its entity a slot: no join, game spawn, ghost or second offer takes them', () => {
  const tight = loadConfig({
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'unused',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,200,100',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '2',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '3',
  });
  const engine = new ShardEngine(tight, { send: () => true, kick: () => undefined }, { region: left });
  const sharding = shardingOf(engine);
  const msg = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());
  const offer = (offerId: number, entityId: number, playerId: string) =>
    msg({ handoffOffer: { offerId, entityId, playerId, position: { x: 99, y: 50 }, velocity: { x: 0, y: 0 }, kind: 1, lastInputSeq: 3 } });
  const id = (k: number) => (1 << 24) + k;
  expect(engine.join(1, 'local').ok).toBe(true);
  engine.context.spawn(10, 10, 2);
  // One place and one slot left: the first offer takes both.
  sharding.onMessage(right, offer(1, id(1), 'pat'));
  expect(sharding.inFlight.held).toEqual([id(1)]);
  expect(engine.join(2, 'newcomer')).toMatchObject({ ok: false, reason: aethex.v1.ReasonCode.REASON_CODE_SHARD_FULL });
  expect(() => engine.context.spawn(20, 20, 2)).toThrow(/entity capacity/);
  expect(engine.upsertGhost({ entityId: id(9), x: 101, y: 50, vx: 0, vy: 0, kind: 0, flags: 0 })).toBe(false);
  sharding.onMessage(right, offer(2, id(2), 'quinn'));
  expect(sharding.inFlight.held).toEqual([id(1)]);
  // The commit fits: pat's entity is adopted here.
  sharding.onMessage(right, msg({ handoffCommit: { offerId: 1, entityId: id(1) } }));
  expect(engine.world.indexOf(id(1))).toBeGreaterThanOrEqual(0);
  expect(engine.world.count).toBe(3);
  // Pat's place stays kept until pat resumes.
  expect(engine.join(3, 'newcomer').ok).toBe(false);
});

test("an offer's game state is adopted with the entity, as a copy of its own; one over 4 KiB is refused", () => {
  const { engine, sharding } = shard();
  const msg = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());
  const offer = (offerId: number, entityId: number, state: Uint8Array) =>
    msg({
      handoffOffer: { offerId, entityId, playerId: `p${offerId}`, position: { x: 99, y: 50 }, velocity: { x: 0, y: 0 }, kind: 1, state },
    });
  const id = (k: number) => (1 << 24) + k;
  sharding.onMessage(right, offer(1, id(1), new Uint8Array(4097)));
  expect(sharding.inFlight.held).toEqual([]);
  sharding.onMessage(right, offer(2, id(2), new Uint8Array([5, 6, 7])));
  expect(sharding.inFlight.held).toEqual([id(2)]);
  sharding.onMessage(right, msg({ handoffCommit: { offerId: 2, entityId: id(2) } }));
  const state = engine.context.state(id(2)) as Uint8Array;
  expect(state).toEqual(new Uint8Array([5, 6, 7]));
  // Not a view of the link frame it came in (which it would keep alive).
  expect(engine.world.gameState.get(id(2))?.buffer.byteLength).toBe(3);
});
