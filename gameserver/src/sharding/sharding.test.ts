import { aethex } from '@aethex/proto';
import { createLogger } from '@aethex/runtime';
import { describe, expect, test, vi } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import type { ShardState } from '../persist/state-codec.js';
import { MODE_DORMANT, MODE_GHOST, MODE_OFFERED, MODE_OWNED } from '../sim/world.js';
import type { ShardLinks } from './links.js';
import { idRange, type Neighbour } from './map.js';
import { CUSTODY_LOOKUP_MS, CUSTODY_MS, ENTITY_WAIT_MS, GHOST_REFRESH_MS, Sharding } from './sharding.js';

const settings = loadConfig({
  AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
  AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,200,100',
});
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

/** The left shard with room for 2 players and 3 entities (each test fills it its own way). */
function tightShard() {
  const tight = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,200,100',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '2',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '3',
  });
  const engine = new ShardEngine(tight, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  return { engine, sharding: shardingOf(engine) };
}

function shard() {
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
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

test('a ghost is the neighbour’s that sent it last: a late removal or a link down of the one it left does not remove it', () => {
  // Shard 3 is across the corner: a player crossing from shard 1 to shard 3 near us is sent by
  // both for a moment, and the new owner's upsert may arrive before the old owner's removal.
  const corner: Neighbour = { shard: 3, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:3' };
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const sharding = shardingOf(engine, {
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right, corner] },
  });
  const w = engine.world;
  const isGhost = (id: number) => w.indexOf(id) >= 0 && w.mode[w.indexOf(id)] === MODE_GHOST;
  const walker = (1 << 24) + 1;
  sharding.onMessage(right, update({ tick: 1, upserts: [ghost(walker, 110, 99)] }));
  sharding.onMessage(corner, update({ tick: 1, upserts: [ghost(walker, 110, 99.9)] }));
  sharding.onMessage(right, update({ tick: 2, removed: [walker] }));
  expect(isGhost(walker)).toBe(true);
  expect(w.y[w.indexOf(walker)]).toBeCloseTo(99.9);
  // Neither a full update from the neighbour it left, nor that one's link going down, removes it.
  sharding.onMessage(right, update({ tick: 3, full: true, upserts: [] }));
  sharding.onInboundDown(right);
  expect(isGhost(walker)).toBe(true);
  // Its owner's removal does; and its owner's link going down drops the ghosts it owns.
  sharding.onMessage(corner, update({ tick: 2, removed: [walker] }));
  expect(isGhost(walker)).toBe(false);
  sharding.onMessage(right, update({ tick: 4, upserts: [ghost(walker, 110, 98)] }));
  sharding.onMessage(corner, update({ tick: 3, upserts: [ghost(walker, 110, 99.9)] }));
  sharding.onInboundDown(corner);
  expect(isGhost(walker)).toBe(false);
});

/** Shard 0 (left) with neighbours right (shard 1) and corner (shard 3), both of which may own `walker`: its ghost's y here, if any. */
function twoOwners() {
  const corner: Neighbour = { shard: 3, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:3' };
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const sharding = shardingOf(engine, {
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right, corner] },
  });
  const w = engine.world;
  const yOf = (id: number) => (w.indexOf(id) >= 0 && w.mode[w.indexOf(id)] === MODE_GHOST ? w.y[w.indexOf(id)] : undefined);
  return { corner, sharding, yOf, walker: (1 << 24) + 1 };
}

test('a ghost stays with its newer owner: a late upsert from the owner it left does not take it back', () => {
  // The walker went from shard 1 (right) to shard 3 (corner), its fourth change of owner; a slow
  // link delivers shard 1's last update after shard 3's first.
  const { corner, sharding, yOf, walker } = twoOwners();
  sharding.onMessage(corner, update({ tick: 1, upserts: [ghost(walker, 110, 99.5, { generation: 4 })] }));
  sharding.onMessage(right, update({ tick: 1, upserts: [ghost(walker, 110, 99, { generation: 3 })] }));
  expect(yOf(walker)).toBeCloseTo(99.5);
  // So the old owner's removal, next, is not its to make either.
  sharding.onMessage(right, update({ tick: 2, removed: [walker] }));
  expect(yOf(walker)).toBeCloseTo(99.5);
  sharding.onMessage(corner, update({ tick: 2, upserts: [ghost(walker, 110, 99.75, { generation: 4 })] }));
  expect(yOf(walker)).toBeCloseTo(99.75);
  // Handed back to shard 1 (its fifth change of owner): shard 1's updates move it again.
  sharding.onMessage(right, update({ tick: 3, upserts: [ghost(walker, 110, 98, { generation: 5 })] }));
  sharding.onMessage(corner, update({ tick: 3, removed: [walker] }));
  expect(yOf(walker)).toBe(98);
  // A neighbour that restarted counts from 1 again: its ghosts were dropped with its old run.
  sharding.onInboundUp(right, 1);
  sharding.onInboundUp(right, 2);
  sharding.onMessage(corner, update({ tick: 4, upserts: [ghost(walker, 110, 97, { generation: 1 })] }));
  expect(yOf(walker)).toBe(97);
  // A build before generations sends none (0): unknown, it takes the ghost as any sender did then.
  sharding.onMessage(right, update({ tick: 5, upserts: [ghost(walker, 110, 96, { generation: 0 })] }));
  expect(yOf(walker)).toBe(96);
  sharding.onMessage(corner, update({ tick: 5, upserts: [ghost(walker, 110, 95, { generation: 1 })] }));
  expect(yOf(walker)).toBe(95);
});

test('a ghost two neighbours send at the same owner generation is the last sender’s: its removal counts, the other’s does not', () => {
  // A generation not lower than the owner's takes the ghost over (docs/sharding.md, "Ghosts"): a tie too.
  const { corner, sharding, yOf, walker } = twoOwners();
  sharding.onMessage(right, update({ tick: 1, upserts: [ghost(walker, 110, 99, { generation: 4 })] }));
  sharding.onMessage(corner, update({ tick: 1, upserts: [ghost(walker, 110, 99.5, { generation: 4 })] }));
  expect(yOf(walker)).toBe(99.5);
  // The corner's now: the right neighbour's removal is not its to make.
  sharding.onMessage(right, update({ tick: 2, removed: [walker] }));
  expect(yOf(walker)).toBe(99.5);
  // And back, at the same generation again: the right neighbour's now, the corner's removal is late.
  sharding.onMessage(right, update({ tick: 3, upserts: [ghost(walker, 110, 98, { generation: 4 })] }));
  sharding.onMessage(corner, update({ tick: 2, removed: [walker] }));
  expect(yOf(walker)).toBe(98);
  sharding.onMessage(right, update({ tick: 4, removed: [walker] }));
  expect(yOf(walker)).toBeUndefined();
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
  // The places told: the one who moved on left this shard by a handoff (its own event lost with
  // the crash), not the game.
  const places: string[] = [];
  const engine = new ShardEngine(
    settings,
    { send: () => true, kick: () => undefined },
    {
      region: left,
      restored,
      onPlace: (event, playerId, handedOver) => places.push(`${event} ${playerId}${handedOver ? ' handoff' : ''}`),
    },
  );
  let clock = 0;
  const sharding = shardingOf(engine, { restored: true, now: () => clock });
  expect(sharding.settled).toBe(false);
  places.length = 0;
  const claim = aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode({ ownershipClaim: { entityIds: [movedOn, 999] } }).finish());
  sharding.onMessage(right, claim);
  expect(places).toEqual(['freed moved-on handoff']);
  expect(sharding.settled).toBe(true);
  expect(engine.world.indexOf(movedOn)).toBe(-1);
  expect(engine.world.mode[engine.world.indexOf(stayed)]).toBe(MODE_DORMANT);
  // The player who stayed gets its entity back; the one who moved on starts afresh if it comes back.
  expect(engine.join(1, 'stayed')).toMatchObject({ ok: true, entityId: stayed });
  expect(engine.join(2, 'moved-on')).toMatchObject({ ok: true });
  expect(engine.join(3, 'moved-on-again').ok && engine.world.indexOf(movedOn)).toBe(-1);
  // Without every claim, the shard still opens after the settle timeout.
  const late = shardingOf(engine, { restored: true, now: () => clock });
  clock += 3001;
  expect(late.settled).toBe(true);
});

/** A wall clock for shards in one test: later on every reading, so what happened later reads later. */
function sharedWallClock(): () => number {
  let ms = 1_000_000;
  return () => ++ms;
}

/**
 * Shards A (left) and B (right), both restored from snapshots holding pat's entity, waiting for
 * pat: B's from before pat walked on to A. Their links record; nothing is sent yet.
 */
async function twoRestoredWithPat(extraA: Partial<ConstructorParameters<typeof Sharding>[0]> = {}) {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER } = await import('../sim/world.js');
  // Pat's entity as each shard last saved it: B's snapshot from before pat walked on to A.
  const saved = (range: number, x: number, pat: number) => {
    const w = new World(16, idRange(range).first, idRange(range).limit);
    w.spawn(x, 50, KIND_PLAYER, pat);
    return decodeState(encodeState(5, w, new Map([[pat, 'pat']])), 16, idRange(range).limit, idRange(range).first);
  };
  const pat = idRange(1).first + 3;
  const places: string[] = [];
  const wallClock = sharedWallClock();
  const a = new ShardEngine(
    settings,
    { send: () => true, kick: () => undefined },
    { region: left, ids: idRange(0), restored: saved(0, 50, pat), wallClock },
  );
  const b = new ShardEngine(
    settings,
    { send: () => true, kick: () => undefined },
    {
      region: right.region,
      ids: idRange(1),
      restored: saved(1, 150, pat),
      wallClock,
      onPlace: (event, playerId, handedOver) => places.push(`${event} ${playerId}${handedOver ? ' handoff' : ''}`),
    },
  );
  const leftN: Neighbour = { shard: 0, name: 'w-0-0', region: left, address: '127.0.0.1:0' };
  const aSharding = shardingOf(a, { restored: true, ...extraA });
  const bSharding = shardingOf(b, {
    restored: true,
    placement: { bounds: settings['engine.world_bounds'], shard: 1, region: right.region, address: '127.0.0.1:1', neighbours: [leftN] },
  });
  const toB = recordingLinks();
  const toA = recordingLinks();
  aSharding.attach(toB.links);
  bSharding.attach(toA.links);
  /** Delivers what each has sent the other so far: A's to B, then B's to A. */
  const deliver = () => {
    for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
    for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  };
  /** Whether each shard holds pat's entity. */
  const holders = () => ({ onA: a.world.indexOf(pat) >= 0, onB: b.world.indexOf(pat) >= 0 });
  /** Cuts both links between A and B; what it returns brings them up (A's, then B's) and delivers. */
  const cutLinks = () => {
    const up = { links: false };
    for (const t of [toA, toB]) gated(t, () => up.links);
    return () => {
      up.links = true;
      aSharding.onOutboundUp(right, 2);
      bSharding.onOutboundUp(leftN, 1);
      deliver();
    };
  };
  /** Gates each link between A and B on its own flag, both down: what it returns sets them. */
  const gateLinks = () => {
    const up = { toA: false, toB: false };
    gated(toB, () => up.toB);
    gated(toA, () => up.toA);
    return up;
  };
  /** Pat rejoins each of `engines`' copies in turn and drops there. */
  const rejoinsAndDrops = (...engines: ShardEngine[]) => {
    for (const e of engines) {
      expect(e.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
      e.suspend(1);
    }
  };
  return { a, b, aSharding, bSharding, toA, toB, leftN, pat, places, deliver, holders, cutLinks, gateLinks, rejoinsAndDrops };
}

/** An empty state of shard 1 (B), as a new run of it restores from a snapshot without players. */
async function emptyStateOfB(): Promise<ShardState> {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World } = await import('../sim/world.js');
  return decodeState(encodeState(3, new World(16, idRange(1).first, idRange(1).limit), new Map()), 16);
}

/** Moves `pat` on `engine` to x (past the border) and steps `sharding`: on offer, the offer lost with the link. */
function offerPat(engine: ShardEngine, sharding: Sharding, pat: number, x: number): void {
  engine.world.x[engine.world.indexOf(pat)] = x;
  sharding.afterStep();
  expect(engine.world.mode[engine.world.indexOf(pat)]).toBe(MODE_OFFERED);
}

/** Steps `sharding` past the handoff timeout: its undecided offers roll back. */
function timeOutOffers(sharding: Sharding): void {
  const clock = vi.spyOn(performance, 'now').mockReturnValue(performance.now() + 1001);
  try {
    sharding.afterStep();
  } finally {
    clock.mockRestore();
  }
}

test('two shards restored with one player waiting: the one the player rejoins claims the entity, and the other drops its stale copy', async () => {
  const { a, b, aSharding, bSharding, toB, leftN, pat, places, deliver } = await twoRestoredWithPat();
  // Both links up: neither claims a player restored and not back yet.
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  expect([a.world.mode[a.world.indexOf(pat)], b.world.mode[b.world.indexOf(pat)]]).toEqual([MODE_DORMANT, MODE_DORMANT]);
  // Pat rejoins A, where they were last.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  expect(toB.sent.map((m) => wire(m).ownershipClaim?.entityIds)).toEqual([[pat]]);
  places.length = 0;
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  // B's copy is gone, its place freed as a move (no player_left of the player's own), and A's
  // offers of pat are no longer refused "already here".
  expect(b.world.indexOf(pat)).toBe(-1);
  expect(places).toEqual(['freed pat handoff']);
  // A player rejoining their own dropped entity claims nothing new (the link-up claim named it).
  a.suspend(1);
  expect(a.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  expect(toB.sent).toEqual([]);
});

test('a restored player who rejoins and leaves while the link is down is still claimed when it comes up: no second player_left', async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, places } = await twoRestoredWithPat();
  const linkUp = { toB: false };
  gated(toB, () => linkUp.toB);
  bSharding.onOutboundUp(leftN, 1);
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  // Pat rejoins A while A's link to B is down, and quits before it comes up.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  a.leave(1);
  expect(toB.sent).toEqual([]);
  linkUp.toB = true;
  aSharding.onOutboundUp(right, 2);
  expect(toB.sent.map((m) => wire(m).ownershipClaim?.entityIds)).toEqual([[pat]]);
  places.length = 0;
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  // B's stale copy goes as a move, not at its rejoin window as a player_left for a player who left A.
  expect(b.world.indexOf(pat)).toBe(-1);
  expect(places).toEqual(['freed pat handoff']);
});

test('a claim of a rejoined restored player lost with a link that died is sent again when the link is back: no second player_left', async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, places, deliver } = await twoRestoredWithPat();
  // Both links up: neither claims a player restored and not back yet.
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Pat rejoins A: its claim goes to the socket of A's link to B, which dies before delivering it
  // (a link that dies loses what it had buffered: docs/sharding.md, "Custody").
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  expect(toB.sent.map((m) => wire(m).ownershipClaim?.entityIds)).toEqual([[pat]]);
  toB.sent.splice(0);
  // Pat quits on A (their player_left there), and A's link to B comes back (B did not restart).
  a.leave(1);
  aSharding.onOutboundUp(right, 2);
  places.length = 0;
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  expect(toA.sent).toEqual([]);
  // B's stale copy goes as a move, not at its rejoin window as a second player_left (nor does it
  // come back to a later join of pat on B).
  expect({ onB: b.world.indexOf(pat) >= 0, places }).toEqual({ onB: false, places: ['freed pat handoff'] });
});

test('a claim kept for a neighbour is not sent to it again once the entity was handed over to it: its player dropped there keeps it', async () => {
  const { a, b, aSharding, bSharding, toB, leftN, pat, deliver } = await twoRestoredWithPat();
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Pat rejoins A (B's stale copy goes) and walks over to B: handed over, resumed there, dropped there.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  deliver();
  expect(b.world.indexOf(pat)).toBe(-1);
  a.world.x[a.world.indexOf(pat)] = 110;
  aSharding.afterStep();
  deliver();
  deliver();
  expect(bSharding.claimForJoin('pat')).toMatchObject({ entityId: pat });
  expect(b.resume(1, 'pat', pat)).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  // A's link to B comes up again (it was cut): its link-up claim does not drop what waits for pat on B.
  toB.sent.splice(0);
  aSharding.onOutboundUp(right, 2);
  deliver();
  expect(b.world.indexOf(pat) >= 0 && b.world.mode[b.world.indexOf(pat)]).toBe(MODE_DORMANT);
});

test("a neighbour's late claim of an entity whose player rejoined and dropped here leaves it waiting for them", async () => {
  const { a, b, aSharding, bSharding, toB, leftN, pat } = await twoRestoredWithPat();
  const linkUp = { toB: false };
  gated(toB, () => linkUp.toB);
  // Pat rejoins A while A's link to B is down, and quits; then pat rejoins B's copy and drops there.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  a.leave(1);
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  // A's claim of pat arrives after, saying pat is away from A.
  linkUp.toB = true;
  aSharding.onOutboundUp(right, 2);
  expect(toB.sent.map((m) => [wire(m).ownershipClaim?.entityIds, wire(m).ownershipClaim?.awayIds])).toEqual([[[pat], [pat]]]);
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  expect(b.world.mode[b.world.indexOf(pat)]).toBe(MODE_DORMANT);
  expect(b.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
});

test("a player who rejoined and dropped on one restored shard, then rejoined the other's copy, is owned by one shard only", async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, holders } = await twoRestoredWithPat();
  // B's link to A is down for a while; A's to B is up.
  const linkUp = { toA: false };
  gated(toA, () => linkUp.toA);
  aSharding.onOutboundUp(right, 2);
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  // Pat rejoins B's copy (B's claim waits for its link) and drops there.
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  // A client of pat started afresh joins A, whose copy is still there (B's claim never came): A claims it.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  // B's link comes up: its late claim and its link-up claim reach A, where pat plays.
  linkUp.toA = true;
  bSharding.onOutboundUp(leftN, 1);
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  // One owner: pat plays on A; B holding the entity too refuses A's offers of it ("already here")
  // and ends in a player_left at its rejoin window for a player still playing.
  expect(holders()).toEqual({ onA: true, onB: false });
});

test('both links down: a player who dropped on one restored copy and plays on the other is owned, once the links are up, where they play', async () => {
  const { a, b, pat, holders, cutLinks } = await twoRestoredWithPat();
  const reconnect = cutLinks();
  // Pat rejoins B's copy and drops there; a client of pat started afresh joins A's copy and plays.
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  reconnect();
  // A's claim says pat plays there: B's copy goes. B's says pat is away from B: A's stays.
  expect(holders()).toEqual({ onA: true, onB: false });
});

test('two copies whose player dropped on each while the links were down: the claims say when, and the older copy goes (no second player_left)', async () => {
  const { a, b, pat, places, holders, cutLinks, rejoinsAndDrops } = await twoRestoredWithPat();
  const reconnect = cutLinks();
  // Both links down: pat rejoins B's copy and drops there, then rejoins A's copy and drops there.
  rejoinsAndDrops(b, a);
  places.length = 0;
  reconnect();
  // Each claim says pat is away, and since when: B's copy is the older and goes, freed as a move
  // (kept, it ended in a second player_left at its rejoin window); A's waits for pat.
  expect(holders()).toEqual({ onA: true, onB: false });
  expect(places).toEqual(['freed pat handoff']);
  expect(a.world.mode[a.world.indexOf(pat)]).toBe(MODE_DORMANT);
  expect(a.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
});

test('a player who dropped on a copy on offer, then on the other copy before the offer rolled back: the copy they dropped last stays (the drop time is the drop, not the rollback)', async () => {
  const { a, b, bSharding, pat, holders, cutLinks } = await twoRestoredWithPat();
  const reconnect = cutLinks();
  // Both links down; pat plays with two clients, one on each restored copy.
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  // On B pat walks to A's region: offered (the offer is lost with the link), and their client
  // there drops while it is on offer.
  offerPat(b, bSharding, pat, 90);
  b.suspend(1);
  // Then their client on A drops: A's copy is the one pat played last.
  a.suspend(1);
  // B's offer is not accepted in time: rolled back, its copy waits for pat.
  timeOutOffers(bSharding);
  expect(b.world.mode[b.world.indexOf(pat)]).toBe(MODE_DORMANT);
  reconnect();
  // Kept, B's copy (older) refuses A's offers of pat and ends in a second player_left; dropped,
  // A's (newer) leaves pat rejoining A with a fresh entity.
  expect(holders()).toEqual({ onA: true, onB: false });
  expect(a.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
});

test('a player who dropped on one copy, then on the other while it was on offer: the claim sent before the offer rolled back says when, and the older copy goes (no second player_left)', async () => {
  const { a, b, aSharding, pat, holders, cutLinks } = await twoRestoredWithPat();
  const reconnect = cutLinks();
  // Both links down: pat rejoins B's copy and drops there; then rejoins A's copy, walks to B's
  // region (offered, the offer lost with the link) and drops while it is on offer.
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  offerPat(a, aSharding, pat, 110);
  a.suspend(1);
  // The links come up while A's offer is undecided: A's claim names pat away, B's finds A's copy on offer.
  reconnect();
  // The offer is not accepted in time: rolled back, A's copy waits for pat.
  timeOutOffers(aSharding);
  expect(a.world.mode[a.world.indexOf(pat)]).toBe(MODE_DORMANT);
  // Kept, B's copy (the older: A's claim said no time) would end in a second player_left at its
  // rejoin window; A's waits for pat.
  expect(holders()).toEqual({ onA: true, onB: false });
});

test('a copy named away in a claim sent while it was on offer, then rolled back and rejoined, is claimed again: the other copy goes', async () => {
  const { a, b, aSharding, bSharding, toB, leftN, pat, holders, cutLinks } = await twoRestoredWithPat();
  const reconnect = cutLinks();
  // Both links down: pat rejoins A's copy, walks to B's region (offered, the offer lost with the
  // link) and drops while it is on offer; then rejoins B's copy and drops there, later.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  offerPat(a, aSharding, pat, 110);
  a.suspend(1);
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  // The links come up while A's offer is undecided: each claim names pat away; B's copy (dropped
  // later) stays, and B's claim finds A's on offer.
  reconnect();
  timeOutOffers(aSharding);
  expect(a.world.mode[a.world.indexOf(pat)]).toBe(MODE_DORMANT);
  expect(holders()).toEqual({ onA: true, onB: true });
  // Pat rejoins A's copy: A claims it again (as for any copy it named away), and B's goes — kept, it
  // would refuse A's offers of pat ("already here") and end in a player_left for a player playing.
  toB.sent.splice(0);
  expect(a.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  const sent = toB.sent.map((m) => wire(m).body);
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  expect({ sent, ...holders() }).toEqual({ sent: ['ownershipClaim'], onA: true, onB: false });
});

test('a copy both restored shards kept against away claims without drop times (an older build): the one the player rejoins claims it, and the other drops its copy', async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, holders, rejoinsAndDrops } = await twoRestoredWithPat();
  const up = { links: false };
  for (const t of [toA, toB]) gated(t, () => up.links);
  // Both links down: pat rejoins B's copy and drops there, then rejoins A's copy and drops there.
  rejoinsAndDrops(b, a);
  // The links come up; the claims go as a build before away_dropped_at sends them.
  up.links = true;
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  const older = (m: aethex.v1.IShardMessage) => {
    const w = wire(m);
    if (w.ownershipClaim) w.ownershipClaim.awayDroppedAt = [];
    return w;
  };
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, older(m));
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, older(m));
  // Each claim says pat is away: both copies are kept (which one pat played last is unknown).
  expect([a.world.mode[a.world.indexOf(pat)], b.world.mode[b.world.indexOf(pat)]]).toEqual([MODE_DORMANT, MODE_DORMANT]);
  // Pat rejoins B: that settles it, B claims pat and A's copy goes (docs/sharding.md: "the one the
  // player rejoins claims the entity to its neighbours then, and the other drops its copy").
  expect(b.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  expect(holders()).toEqual({ onA: false, onB: true });
});

test("a copy spared by a neighbour for this shard's away claim (its player dropped there later): the player rejoining here claims it, and the neighbour drops its copy", async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, holders, gateLinks, rejoinsAndDrops } = await twoRestoredWithPat();
  const up = gateLinks();
  // Both links down: pat rejoins B's copy and drops there, then rejoins A's copy and drops there.
  rejoinsAndDrops(b, a);
  // B's link to A comes up: its claim says pat is away from B since before pat dropped on A, so A
  // keeps its copy (A's link to B stays down).
  up.toA = true;
  bSharding.onOutboundUp(leftN, 1);
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  expect(a.world.mode[a.world.indexOf(pat)]).toBe(MODE_DORMANT);
  // Pat rejoins B and plays there: A's copy must go, or pat is owned twice (A refuses B's offers
  // "already here" and ends in a player_left at its rejoin window for a player still playing).
  expect(b.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  up.toB = true;
  aSharding.onOutboundUp(right, 2);
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  expect(holders()).toEqual({ onA: false, onB: true });
});

test('an away claim whose player dropped on the claimer after they dropped here drops the copy here at once, the older', async () => {
  const { a, b, aSharding, bSharding, toA, toB, leftN, pat, holders, gateLinks, rejoinsAndDrops } = await twoRestoredWithPat();
  const up = gateLinks();
  // Both links down: pat rejoins A's copy and drops there, then rejoins B's copy and drops there.
  rejoinsAndDrops(a, b);
  // B's link to A comes up (A's stays down): B's claim says pat dropped there after they dropped on A.
  up.toA = true;
  bSharding.onOutboundUp(leftN, 1);
  const claim = toA.sent.find((m) => m.ownershipClaim)?.ownershipClaim as aethex.v1.IOwnershipClaim;
  expect(claim.awayIds).toEqual([pat]);
  expect(claim.awayDroppedAt?.map((d) => d.entityId)).toEqual([pat]);
  for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  expect(holders()).toEqual({ onA: false, onB: true });
  // Pat rejoins B's copy.
  expect(b.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  up.toB = true;
  aSharding.onOutboundUp(right, 2);
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  expect(holders()).toEqual({ onA: false, onB: true });
});

/**
 * A and B restored with pat (`twoRestoredWithPat`), A with a third neighbour (the corner, over the
 * upper half of B's region, found first), the links between A and B down until `up.links`. Pat
 * rejoins B's copy and drops there; a client of pat started afresh rejoins A's copy (its claim to B
 * held back) and walks on to the corner: that handoff commits.
 */
async function patWalksToCorner(rejoins?: (a: ShardEngine, b: ShardEngine, pat: number) => void) {
  const corner: Neighbour = { shard: 2, name: 'w-9-9', region: { minX: 100, minY: 0, maxX: 200, maxY: 50 }, address: '127.0.0.1:2' };
  const restored = await twoRestoredWithPat({
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [corner, right] },
  });
  const { a, b, aSharding, toA, toB, pat } = restored;
  const up = { links: false };
  gated(toB, (n) => n.shard !== 1 || up.links);
  gated(toA, () => up.links);
  if (rejoins) rejoins(a, b, pat);
  else {
    expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
    b.suspend(1);
    expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  }
  toB.sent.splice(0);
  aHandsPatToCorner(a, aSharding, corner, pat, toB.sent);
  /** A's link to B comes up: the claim A sends then, delivered to B with the rest. */
  const aToBUp = () => {
    toB.sent.splice(0);
    up.links = true;
    restored.aSharding.onOutboundUp(right, 2);
    const claim = toB.sent.find((m) => m.ownershipClaim)?.ownershipClaim as aethex.v1.IOwnershipClaim;
    for (const m of toB.sent.splice(0)) restored.bSharding.onMessage(restored.leftN, wire(m));
    return claim;
  };
  return { ...restored, corner, up, aToBUp };
}

test('a claim held back for an entity whose player walked on to a third shard does not name it away: the copy of a player who dropped on the receiver goes', async () => {
  const { b, aSharding, bSharding, toB, leftN, pat, up, deliver } = await patWalksToCorner();
  // The links between A and B come up.
  toB.sent.splice(0);
  up.links = true;
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  const claim = toB.sent.find((m) => m.ownershipClaim)?.ownershipClaim as aethex.v1.IOwnershipClaim;
  deliver();
  // Pat plays on the corner: B's copy kept would refuse the corner's offers of pat ("already here")
  // and end in a player_left at B's rejoin window for a player still playing (before 55c0a1b it went).
  expect({ ids: claim.entityIds, away: claim.awayIds, onB: b.world.indexOf(pat) >= 0 }).toEqual({ ids: [pat], away: [], onB: false });
});

/** A hands pat on to the corner (from (110, 20)): offered (the offer among `sent`), accepted and committed. */
function aHandsPatToCorner(a: ShardEngine, aSharding: Sharding, corner: Neighbour, pat: number, sent: aethex.v1.IShardMessage[]): void {
  a.world.x[a.world.indexOf(pat)] = 110;
  a.world.y[a.world.indexOf(pat)] = 20;
  aSharding.afterStep();
  const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
  aSharding.onMessage(corner, wire({ handoffAccept: { offerId: o.offerId, entityId: o.entityId, resumeToken: 't', address: 'x' } }));
  expect(sent.some((m) => m.handoffCommit)).toBe(true);
}

/** The corner hands pat to `to`: offered (standing at `position`) and committed. */
function cornerHandsPat(
  to: Sharding,
  corner: Neighbour,
  pat: number,
  position: { x: number; y: number },
  extra: Partial<aethex.v1.IHandoffOffer> = {},
): void {
  to.onMessage(
    corner,
    wire({ handoffOffer: { offerId: 1, entityId: pat, playerId: 'pat', position, velocity: { x: 0, y: 0 }, kind: 1, ...extra } }),
  );
  to.onMessage(corner, wire({ handoffCommit: { offerId: 1, entityId: pat } }));
}

/** The corner hands pat back to A (`aSharding`): offered and committed; pat has not resumed yet. */
function cornerHandsPatBack(aSharding: Sharding, corner: Neighbour, pat: number): void {
  cornerHandsPat(aSharding, corner, pat, { x: 99, y: 20 }, { lastInputSeq: 3 });
  expect(aSharding.adoptedAwaitingResume()).toEqual([[pat, 'pat']]);
}

test('an entity adopted here whose player has not resumed is no away id, also when a claim held back names it', async () => {
  // Pat walks back from the corner: A adopts pat's entity, and pat has not resumed yet.
  const { b, aSharding, pat, corner, aToBUp } = await patWalksToCorner();
  cornerHandsPatBack(aSharding, corner, pat);
  // The link to B comes up: pat is on the way here, as good as played here (sharding.ts), not away.
  const claim = aToBUp();
  // B's copy goes: kept, pat would be owned twice (B refuses A's offers "already here", and ends
  // in a player_left at its rejoin window for a player still playing).
  expect({ ids: claim.entityIds, away: claim.awayIds, onB: b.world.indexOf(pat) >= 0 }).toEqual({ ids: [pat], away: [], onB: false });
});

test('a claim kept from a rejoin says when its entity was last handed on: a copy whose player dropped on the receiver between two rejoins of it on the claimer goes', async () => {
  // Both links between A and B down: pat rejoins A's copy (its claim kept) and drops there, then
  // rejoins B's copy and drops there, then rejoins A's copy again (dropped there: no new claim),
  // and walks on from A to the corner: that handoff commits, and pat plays there.
  const { b, aSharding, bSharding, toB, leftN, pat, up, deliver } = await patWalksToCorner((a, b, pat) => {
    expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
    a.suspend(1);
    expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
    b.suspend(1);
    expect(a.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  });
  // The links between A and B come up.
  toB.sent.splice(0);
  up.links = true;
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Pat's play on A from the second rejoin is newer than B's copy (the claim kept from the first
  // rejoin named that time): kept, B refuses the corner's offers of pat ("already here") and ends
  // in a player_left at its rejoin window for a player still playing.
  expect(b.world.indexOf(pat)).toBe(-1);
});

test('a claim kept from a rejoin of an entity handed on and adopted back here, its player not resumed yet, names it as played here: a copy whose player dropped on the receiver meanwhile goes', async () => {
  // Both links between A and B down: pat rejoins A's copy (its claim to B kept) and walks on to
  // the corner: that handoff commits.
  const { b, aSharding, pat, corner, aToBUp } = await patWalksToCorner((a, _, pat) => {
    expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  });
  // Pat drops on the corner; a client of pat started afresh rejoins B's copy and drops there (after
  // A handed pat on), then pat rejoins the corner's copy and walks back to A: A adopts it, and pat
  // has not resumed yet.
  expect(b.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  cornerHandsPatBack(aSharding, corner, pat);
  // A's link to B comes up: pat is on its way to A, as good as played here (sharding.ts), so B's
  // copy is older than A's. Kept, pat would be owned twice: B refuses A's offers of pat ("already
  // here") and ends in a player_left at its rejoin window for a player still playing.
  const claim = aToBUp();
  expect({
    ids: claim.entityIds,
    away: claim.awayIds,
    earlier: (claim.playedEarlier ?? []).map((p) => p.entityId),
    onB: b.world.indexOf(pat) >= 0,
  }).toEqual({ ids: [pat], away: [], earlier: [], onB: false });
});

test('a claim lost with a link that died is sent again, with when it was handed on, also once its entity was handed on to a third shard; a copy the receiver restored before that goes', async () => {
  const corner: Neighbour = { shard: 2, name: 'w-9-9', region: { minX: 100, minY: 0, maxX: 200, maxY: 50 }, address: '127.0.0.1:2' };
  const { a, b, aSharding, bSharding, toB, leftN, pat, deliver } = await twoRestoredWithPat({
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [corner, right] },
  });
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Pat rejoins A: its claim goes to the socket of A's link to B (and to the corner), which dies
  // before delivering it.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  expect(toB.sent.map((m) => wire(m).ownershipClaim?.entityIds)).toEqual([[pat], [pat]]);
  toB.sent.splice(0);
  // Pat walks on from A to the corner (whose link to B is down): that handoff commits.
  aHandsPatToCorner(a, aSharding, corner, pat, toB.sent);
  // A's link to B comes back: the claim goes again, naming pat as handed on from A.
  toB.sent.splice(0);
  aSharding.onOutboundUp(right, 2);
  const claims = toB.sent.splice(0).filter((m) => m.ownershipClaim);
  expect(claims.map((m) => wire(m).ownershipClaim?.playedEarlier?.map((p) => p.entityId))).toEqual([[pat]]);
  for (const m of claims) bSharding.onMessage(leftN, wire(m));
  // B's copy, restored when B started, before pat's play on A ended: the older one, it goes (kept,
  // it would wait for a claim of the shard pat is on now, which may never come: not B's neighbour).
  expect(b.world.indexOf(pat)).toBe(-1);
});

/**
 * A (left) restarted from a snapshot holding pat; B (right) and the corner (over the upper half of
 * B's region, found first from A) did not restart. B's link to A is up (its claim, naming nobody,
 * let A settle); A's to the corner too; A's to B while `up.aToB`. Pat rejoins A (at `clock` 0) and
 * walks on to the corner (committed), and from there to B at `adoptAt`: resumed there, and
 * dropped there. What B sends A is delivered; A's messages to B wait in `toB`.
 */
async function patReachesBThroughTheCorner(o: { aToB: boolean; adoptAt: number; bToA?: boolean; oldB?: boolean }) {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER } = await import('../sim/world.js');
  const w = new World(16);
  const pat = w.spawn(50, 50, KIND_PLAYER);
  const restored = decodeState(encodeState(5, w, new Map([[pat, 'pat']])), 16);
  const wallClock = sharedWallClock();
  const a = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, restored, wallClock });
  let clock = 0;
  const now = () => clock;
  const corner: Neighbour = { shard: 2, name: 'w-9-9', region: { minX: 100, minY: 0, maxX: 200, maxY: 50 }, address: '127.0.0.1:2' };
  const aSharding = shardingOf(a, {
    restored: true,
    now,
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [corner, right] },
  });
  const leftN: Neighbour = { shard: 0, name: 'w-0-0', region: left, address: '127.0.0.1:0' };
  const b = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: right.region, ids: idRange(1), wallClock });
  const bSharding = shardingOf(b, {
    now,
    placement: {
      bounds: settings['engine.world_bounds'],
      shard: 1,
      region: right.region,
      address: '127.0.0.1:1',
      neighbours: [leftN, corner],
    },
  });
  // B of a build before played_earlier (`oldB`): A's link to it says so.
  const toB = recordingLinks(true, true, true, !o.oldB);
  const toA = recordingLinks();
  // A's messages to the corner go to `toCorner`, to B to `toB` while `up.aToB`; only B's to A are recorded.
  const toCorner: aethex.v1.IShardMessage[] = [];
  const up = { aToB: o.aToB };
  const sendFromA = toB.links.send.bind(toB.links);
  (toB.links as unknown as { send: typeof sendFromA }).send = (n, m) => (n.shard === 2 ? toCorner.push(m) : up.aToB ? sendFromA(n, m) : 0);
  gated(toA, (n) => n.shard === 0);
  aSharding.attach(toB.links);
  bSharding.attach(toA.links);
  const toAOnce = () => {
    for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
  };
  bSharding.onOutboundUp(leftN, 1);
  toAOnce();
  // A's link to B up (`aToB`): it came up before pat's rejoin, to B's run 2.
  if (o.aToB) aSharding.onOutboundUp(right, 2);
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
  aHandsPatToCorner(a, aSharding, corner, pat, toCorner);
  clock = o.adoptAt;
  cornerHandsPat(bSharding, corner, pat, { x: 120, y: 60 }, { generation: 2 });
  expect(bSharding.claimForJoin('pat')).toMatchObject({ entityId: pat });
  expect(b.resume(1, 'pat', pat)).toMatchObject({ ok: true, entityId: pat });
  b.suspend(1);
  // B's link to A down since before the adoption (`bToA` false): what B sent A is lost.
  if (o.bToA === false) toA.sent.splice(0);
  else toAOnce();
  /** A's link to B comes up (again), at `at`: what A sends B then is delivered. */
  const claimed: number[][] = [];
  const aToBUp = (at: number) => {
    clock = at;
    up.aToB = true;
    toB.sent.splice(0);
    aSharding.onOutboundUp(right, 2);
    for (const m of toB.sent.splice(0)) {
      if (m.ownershipClaim) claimed.push(wire(m).ownershipClaim?.entityIds ?? []);
      bSharding.onMessage(leftN, wire(m));
    }
  };
  const waitsOnB = () => b.world.indexOf(pat) >= 0 && b.world.mode[b.world.indexOf(pat)] === MODE_DORMANT;
  /** The ids A's link-up claims to B named (what `aToBUp` delivered). */
  return { b, pat, aToBUp, waitsOnB, claimed, aSharding, toB, up, leftN, corner };
}

// A's link to B is down from pat's rejoin on until after pat dropped on B. The claim A held back
// names pat as played on A since the rejoin (`played_earlier`): B's copy, dropped later, stays.
test.each([
  ["B's adoption, claimed to A, reached A", { aToB: false, adoptAt: 1000 }, 2000],
  ["B's link to A down too", { aToB: false, adoptAt: 1000, bToA: false }, 2000],
  ["B's adoption past its rejoin window after its link to A came up, claimed to no one", { aToB: false, adoptAt: 31_000 }, 40_000],
])(
  'a claim held back for an entity handed on to a third shard does not drop the copy it reached the receiver with, by a handoff, and its player dropped there: %s',
  async (_, o, upAt) => {
    const { b, pat, aToBUp, waitsOnB } = await patReachesBThroughTheCorner(o);
    aToBUp(upAt);
    // Pat's only entity waits on B, where they played it last: dropped, pat would rejoin B to a new one.
    expect(waitsOnB()).toBe(true);
    expect(b.join(2, 'pat')).toMatchObject({ ok: true, entityId: pat });
  },
);

test.each([
  ['reads played_earlier: the claim goes again, with when pat was handed on', false, true],
  ['is of a build before played_earlier: the claim is not sent again', true, false],
])(
  'a claim that went out, once its entity was handed on, to a neighbour that %s; a copy that reached it since and waits there stays',
  async (_, oldB, again) => {
    // A's link to B is up at pat's rejoin (B has no copy), and B's adoption 31 s later is claimed to
    // no one (B's link to A came up more than the rejoin window before); A's link to B is cut after.
    const { aToBUp, waitsOnB, claimed, pat } = await patReachesBThroughTheCorner({ aToB: true, adoptAt: 31_000, oldB });
    aToBUp(40_000);
    expect(claimed).toEqual([again ? [pat] : []]);
    expect(waitsOnB()).toBe(true);
  },
);

test('a claim that went out, sent again once its entity was handed on to a new run of the neighbour, does not drop the entity that run restored, which reached it since (after the handoff, before the run started)', async () => {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER } = await import('../sim/world.js');
  // A's link to B is up at pat's rejoin (the claim goes and is delivered); pat walks on through
  // the corner to B, is adopted 31 s later (claimed to no one: B's link to A came up more than the
  // rejoin window before) and resumes there, and drops there.
  const { aSharding, toB, up, leftN, corner, pat } = await patReachesBThroughTheCorner({ aToB: true, adoptAt: 31_000 });
  // B is killed and restarts from a snapshot stored after it adopted pat (the corner's custody
  // copy is gone: B said it stored pat): pat's entity is there only, waiting for pat.
  const w = new World(16, idRange(1).first, idRange(1).limit);
  w.spawn(120, 60, KIND_PLAYER, pat);
  const restored = decodeState(encodeState(5, w, new Map([[pat, 'pat']])), 16, idRange(1).limit, idRange(1).first);
  const b2 = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: right.region, ids: idRange(1), restored });
  const b2Sharding = shardingOf(b2, {
    restored: true,
    placement: {
      bounds: settings['engine.world_bounds'],
      shard: 1,
      region: right.region,
      address: '127.0.0.1:1',
      neighbours: [leftN, corner],
    },
  });
  // A's link to B's new run comes up (within the rejoin window of pat's rejoin on A): the claim
  // goes again, naming pat as handed on from A (before B's new run started).
  up.aToB = true;
  toB.sent.splice(0);
  aSharding.onOutboundUp(right, 3);
  const claims = toB.sent.filter((m) => m.ownershipClaim).map((m) => wire(m).ownershipClaim?.playedEarlier?.map((p) => p.entityId));
  expect(claims).toEqual([[pat]]);
  for (const m of toB.sent.splice(0)) b2Sharding.onMessage(leftN, wire(m));
  // Dropped, pat's only entity is lost: pat rejoins B to a new one.
  expect(b2.world.indexOf(pat) >= 0 && b2.world.mode[b2.world.indexOf(pat)]).toBe(MODE_DORMANT);
  expect(b2.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
});

test('a claim held back for a link that is down goes with the link-up claim for the rejoin window or CUSTODY_MS, whichever is longer (docs/sharding.md)', async () => {
  let clock = 1_000_000;
  const held = async (after: number) => {
    clock = 1_000_000;
    const { a, aSharding, toB, pat } = await twoRestoredWithPat({ now: () => clock, rejoinWindowMs: 30_000 });
    const linkUp = { toB: false };
    gated(toB, () => linkUp.toB);
    expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
    a.leave(1);
    clock += after;
    linkUp.toB = true;
    aSharding.onOutboundUp(right, 2);
    return toB.sent.map((m) => wire(m).ownershipClaim?.entityIds?.length);
  };
  // Past the 30 s rejoin window and within CUSTODY_MS (60 s): still claimed; past both: not.
  expect([await held(40_000), await held(61_000)]).toEqual([[1], [0]]);
});

test('an accepted offer keeps its player a place and its entity a slot: no join, game spawn, ghost or second offer takes them', () => {
  const { engine, sharding } = tightShard();
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

test('a join of a player whose entity is held here: pending until the commit, theirs after it, once', () => {
  const { engine, sharding } = shard();
  const msg = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());
  const entityId = (1 << 24) + 1;
  sharding.onMessage(
    right,
    msg({
      handoffOffer: {
        offerId: 1,
        entityId,
        playerId: 'pat',
        position: { x: 99, y: 50 },
        velocity: { x: 0, y: 0 },
        kind: 1,
        lastInputSeq: 3,
      },
    }),
  );
  expect(sharding.claimForJoin('someone else')).toBeUndefined();
  // The former owner may still roll it back: only its commit (or the resume token) decides.
  expect(sharding.claimForJoin('pat')).toBe('pending');
  sharding.onMessage(right, msg({ handoffCommit: { offerId: 1, entityId } }));
  const claim = sharding.claimForJoin('pat');
  expect(claim).toMatchObject({ entityId });
  expect(engine.resume(7, 'pat', entityId, 0)).toMatchObject({ ok: true, entityId, lastInputSeq: 3 });
  expect(sharding.adoptedAwaitingResume()).toEqual([]);
  expect(sharding.claimForJoin('pat')).toBeUndefined();
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

/** A link that records what is sent and is always up. */
function recordingLinks(
  lateChanges = true,
  custody = true,
  idsReleased = true,
  playedEarlier = true,
): { links: ShardLinks; sent: aethex.v1.IShardMessage[] } {
  const sent: aethex.v1.IShardMessage[] = [];
  const links = {
    send: (_n: Neighbour, m: aethex.v1.IShardMessage) => sent.push(m),
    isUp: () => true,
    takesLateChanges: () => lateChanges,
    takesCustody: () => custody,
    takesIdsReleased: () => idsReleased,
    takesPlayedEarlier: () => playedEarlier,
  };
  return { sent, links: links as unknown as ShardLinks };
}

/** Sends over `t` go nowhere (as over a link that is down) while `up(n)` is false. */
function gated(t: { links: ShardLinks }, up: (n: Neighbour) => boolean): void {
  const send = t.links.send.bind(t.links);
  (t.links as unknown as { send: typeof send }).send = (n, m) => (up(n) ? send(n, m) : 0);
}

const wire = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());

/**
 * The left shard (Sharding over `extra`, its links recording) with ann joined, walked into the
 * right shard's region, offered there and accepted (the accept naming `address`): committed.
 */
function handAnnRight(extra: Partial<ConstructorParameters<typeof Sharding>[0]>, address: string) {
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const sharding = shardingOf(engine, extra);
  const { links, sent } = recordingLinks();
  sharding.attach(links);
  const r = engine.join(1, 'ann');
  if (!r.ok) throw new Error('join refused');
  engine.world.x[engine.world.indexOf(r.entityId)] = 110;
  sharding.afterStep();
  const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
  sharding.onMessage(right, wire({ handoffAccept: { offerId: o.offerId, entityId: o.entityId, resumeToken: 't', address } }));
  return { engine, sharding, entityId: r.entityId };
}

test.each([
  ['to the neighbour’s address in the shard map, whatever the accept names', undefined, `ws://${right.address}`],
  [
    'with handoff.redirect_url, to the URL it makes of the neighbour’s name and address',
    'wss://{name}.play.example.com/via/{address}',
    'wss://w-0-1.play.example.com/via/127.0.0.1:1',
  ],
])('the owner redirects a handed-over player %s', (_what, redirectUrl, expected) => {
  const redirects: aethex.v1.IHandoffRedirect[] = [];
  handAnnRight({ redirect: (_session, r) => redirects.push(r), ...(redirectUrl ? { redirectUrl } : {}) }, 'elsewhere.example:666');
  expect(redirects.map((x) => x.address)).toEqual([expected]);
});

test('the owner: state and flags the game sets while a player is on offer go with the commit; unchanged ones are not sent again', () => {
  const { engine, sharding } = shard();
  const { links, sent } = recordingLinks();
  sharding.attach(links);
  const join = (session: number, player: string) => {
    const r = engine.join(session, player);
    if (!r.ok) throw new Error(r.message);
    const slot = engine.world.indexOf(r.entityId);
    engine.world.x[slot] = 110; // past the border, in the neighbour's region
    engine.world.y[slot] = 50;
    return r.entityId;
  };
  const ann = join(1, 'ann');
  const bob = join(2, 'bob');
  engine.context.setState(ann, new Uint8Array([1]));
  engine.context.setState(bob, new Uint8Array([1]));
  sharding.afterStep();
  const offers = sent.flatMap((m) => (m.handoffOffer ? [m.handoffOffer] : []));
  expect(offers.map((o) => [o.entityId, [...(o.state ?? [])]])).toEqual([
    [ann, [1]],
    [bob, [1]],
  ]);
  // On offer, ann's game changes her state and flags; bob's stay as offered.
  expect(engine.context.setState(ann, new Uint8Array([2, 3]))).toBe(true);
  expect(engine.context.setFlags(ann, 5)).toBe(true);
  for (const o of offers) {
    sharding.onMessage(right, wire({ handoffAccept: { offerId: o.offerId, entityId: o.entityId, resumeToken: 't', address: 'x:1' } }));
  }
  const commits = sent.flatMap((m) => (m.handoffCommit ? [wire({ handoffCommit: m.handoffCommit }).handoffCommit] : []));
  expect(commits.map((c) => [c?.entityId, c?.stateChanged, [...(c?.state ?? [])], c?.flagsChanged, c?.flags])).toEqual([
    [ann, true, [2, 3], true, 5],
    [bob, false, [], false, 0],
  ]);
  // The state went with the commit: none is kept here.
  expect(engine.world.gameState.has(ann)).toBe(false);
});

test('the owner: offering to a neighbour of a build that ignores late changes, the state cannot change until the offer is decided', () => {
  const { engine, sharding } = shard();
  const { links, sent } = recordingLinks(false);
  sharding.attach(links);
  const r = engine.join(1, 'cat');
  if (!r.ok) throw new Error(r.message);
  engine.world.x[engine.world.indexOf(r.entityId)] = 110;
  engine.context.setState(r.entityId, new Uint8Array([1]));
  sharding.afterStep();
  const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
  expect(engine.context.setState(r.entityId, new Uint8Array([2]))).toBe(false);
  expect(engine.context.setFlags(r.entityId, 1)).toBe(false);
  // Refused: the offer rolls back, and the state may change again.
  sharding.onMessage(right, wire({ handoffReject: { offerId: o.offerId, entityId: r.entityId, reason: 1, message: 'full' } }));
  expect(engine.context.setState(r.entityId, new Uint8Array([3]))).toBe(true);
  // Offered again (past the retry delay) and committed: nothing changed during the offer travels.
  const later = shardingOf(engine, { now: () => Date.now() + 60_000 });
  later.attach(links);
  later.afterStep();
  const o2 = sent.filter((m) => m.handoffOffer).at(-1)?.handoffOffer as aethex.v1.IHandoffOffer;
  expect([...(o2.state ?? [])]).toEqual([3]);
  expect(engine.context.setState(r.entityId, new Uint8Array([4]))).toBe(false);
  later.onMessage(right, wire({ handoffAccept: { offerId: o2.offerId, entityId: r.entityId, resumeToken: 't', address: 'x:1' } }));
  const c = wire({ handoffCommit: sent.find((m) => m.handoffCommit)?.handoffCommit as aethex.v1.IHandoffCommit }).handoffCommit;
  expect([c?.stateChanged, c?.flagsChanged]).toEqual([false, false]);
});

test('the receiver: a commit’s late state is adopted once, whether the player resumed before it or not, and never undoes a write made here', () => {
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const logged: { why?: string; msg?: string }[] = [];
  const log = createLogger('sharding-test', 'info', { write: (line: string) => logged.push(JSON.parse(line)) });
  const sharding = shardingOf(engine, { log });
  const { links, sent } = recordingLinks();
  sharding.attach(links);
  const id = (k: number) => (1 << 24) + k;
  const bytes = (...b: number[]) => new Uint8Array(b);
  const offer = (k: number) => {
    sharding.onMessage(
      right,
      wire({
        handoffOffer: {
          offerId: k,
          entityId: id(k),
          playerId: `p${k}`,
          position: { x: 99, y: 50 },
          velocity: { x: 0, y: 0 },
          kind: 1,
          state: bytes(1),
        },
      }),
    );
    return sent.flatMap((m) => (m.handoffAccept?.offerId === k ? [m.handoffAccept.resumeToken as string] : []))[0] as string;
  };
  const commit = (k: number, state?: Uint8Array) =>
    sharding.onMessage(right, wire({ handoffCommit: { offerId: k, entityId: id(k), ...(state ? { stateChanged: true, state } : {}) } }));
  const state = (k: number) => engine.context.state(id(k));

  // The commit first: adopted with the state it carries.
  offer(1);
  commit(1, bytes(2));
  expect(state(1)).toEqual(bytes(2));
  // A repeated commit (after a reconnect) never undoes what the game here did since.
  engine.context.setState(id(1), bytes(7));
  commit(1, bytes(2));
  expect(state(1)).toEqual(bytes(7));

  // The player resumed first: adopted with the offer's state, then the commit's replaces it.
  const t2 = offer(2);
  expect(sharding.claimResume(t2)?.entityId).toBe(id(2));
  expect(state(2)).toEqual(bytes(1));
  commit(2, bytes(9));
  expect(state(2)).toEqual(bytes(9));
  // ... unless the game here wrote in between: that write is the later one.
  const t3 = offer(3);
  sharding.claimResume(t3);
  engine.context.setState(id(3), bytes(5));
  commit(3, bytes(9));
  expect(state(3)).toEqual(bytes(5));

  // An offer without state: the game here setting and then clearing one is still a write.
  sharding.onMessage(
    right,
    wire({ handoffOffer: { offerId: 7, entityId: id(7), playerId: 'p7', position: { x: 99, y: 50 }, velocity: { x: 0, y: 0 }, kind: 1 } }),
  );
  const t7 = sent.flatMap((m) => (m.handoffAccept?.offerId === 7 ? [m.handoffAccept.resumeToken as string] : []))[0] as string;
  sharding.claimResume(t7);
  engine.context.setState(id(7), bytes(3));
  engine.context.setState(id(7), undefined);
  commit(7, bytes(9));
  expect(state(7)).toBeUndefined();
  // Flags come the same way; a dormant player's entity (waiting for a rejoin) takes them too.
  const t8 = offer(8);
  sharding.claimResume(t8);
  engine.world.mode[engine.world.indexOf(id(8))] = MODE_DORMANT;
  sharding.onMessage(
    right,
    wire({ handoffCommit: { offerId: 8, entityId: id(8), stateChanged: true, state: bytes(4), flagsChanged: true, flags: 6 } }),
  );
  expect([state(8), engine.context.flags(id(8))]).toEqual([bytes(4), 6]);
  offer(9);
  sharding.onMessage(right, wire({ handoffCommit: { offerId: 9, entityId: id(9), flagsChanged: true, flags: 2 } }));
  expect([state(9), engine.context.flags(id(9))]).toEqual([bytes(1), 2]);

  // State and flags are each the game's own here: setting the flags (as a game's onJoin may)
  // keeps the late state coming, and drops only the late flags.
  const t10 = offer(10);
  sharding.claimResume(t10);
  engine.context.setFlags(id(10), 8);
  sharding.onMessage(
    right,
    wire({ handoffCommit: { offerId: 10, entityId: id(10), stateChanged: true, state: bytes(5), flagsChanged: true, flags: 3 } }),
  );
  expect([state(10), engine.context.flags(id(10))]).toEqual([bytes(5), 8]);
  expect(logged.at(-1)).toMatchObject({
    why: 'the game here has set the flags since',
    msg: 'late game state or flags from a commit not applied',
  });
  // Offered on again already: a neighbour taking late changes gets them with this shard's commit;
  // one that does not (its state is frozen here) would lose them: they are dropped, and logged.
  const t11 = offer(11);
  sharding.claimResume(t11);
  expect(engine.offer(id(11))).toBeDefined();
  commit(11, bytes(6));
  expect(state(11)).toEqual(bytes(6));
  const t12 = offer(12);
  sharding.claimResume(t12);
  expect(engine.offer(id(12), false)).toBeDefined();
  commit(12, bytes(6));
  expect(state(12)).toEqual(bytes(1));
  expect(logged.at(-1)).toMatchObject({ why: 'the entity is not this shard’s to change now' });
  // A commit with late changes for a handoff this shard no longer knows: logged.
  commit(99, bytes(6));
  expect(logged.at(-1)?.why).toMatch(/^no handoff of it is known here/);

  // Empty: the state was cleared on offer. Unchanged: the offer's stands.
  offer(4);
  commit(4, bytes());
  expect(state(4)).toBeUndefined();
  offer(5);
  commit(5);
  expect(state(5)).toEqual(bytes(1));
  // Over 4 KiB: ignored, the offer's stands (the entity is still adopted).
  offer(6);
  commit(6, new Uint8Array(4097));
  expect(state(6)).toEqual(bytes(1));
  // The late state is a copy of its own, not a view of the link frame.
  expect(engine.world.gameState.get(id(2))?.buffer.byteLength).toBe(1);
});

test('a player adopted after the claims went out is claimed again to a neighbour that came up lately: its stale restored copy there goes', async () => {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER } = await import('../sim/world.js');
  const msg = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());
  // A (left) restarted from a snapshot in which pat was its own; pat had gone on to a third shard.
  const w = new World(16);
  const pat = w.spawn(90, 50, KIND_PLAYER);
  const restored = decodeState(encodeState(5, w, new Map([[pat, 'pat']])), 16);
  const a = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, restored });
  const aSharding = shardingOf(a, { restored: true });
  // N (right), a neighbour of A and of the third shard, which now owns pat.
  const leftN: Neighbour = { shard: 0, name: 'w-0-0', region: left, address: '127.0.0.1:0' };
  const third: Neighbour = { shard: 2, name: 'w-0-2', region: { minX: 0, minY: 100, maxX: 100, maxY: 200 }, address: '127.0.0.1:2' };
  const n = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: right.region, ids: idRange(1) });
  const nSharding = shardingOf(n, {
    placement: {
      bounds: settings['engine.world_bounds'],
      shard: 1,
      region: right.region,
      address: '127.0.0.1:1',
      neighbours: [leftN, third],
    },
  });
  const toA: aethex.v1.IShardMessage[] = [];
  nSharding.attach({ send: (to: Neighbour, m: aethex.v1.IShardMessage) => to.shard === 0 && toA.push(m) } as unknown as ShardLinks);
  const deliver = () => {
    for (const m of toA.splice(0)) aSharding.onMessage(right, msg(m));
  };
  // N's link to A comes up: its claim names nobody (pat is the third shard's).
  nSharding.onOutboundUp(leftN, 1);
  deliver();
  expect(a.world.mode[a.world.indexOf(pat)]).toBe(MODE_DORMANT);
  // Then the third shard hands pat to N (its own claim to A, sent before or after, would not name pat).
  nSharding.onInboundUp(third, 1);
  nSharding.onMessage(
    third,
    msg({
      handoffOffer: {
        offerId: 1,
        entityId: pat,
        playerId: 'pat',
        position: { x: 101, y: 50 },
        velocity: { x: 0, y: 0 },
        kind: 1,
        generation: 3,
      },
    }),
  );
  nSharding.onMessage(third, msg({ handoffCommit: { offerId: 1, entityId: pat } }));
  expect(nSharding.claimForJoin('pat')).toMatchObject({ entityId: pat });
  deliver();
  // A's stale copy is gone: pat's offers to A are not refused "already here", and a join of pat
  // there starts afresh instead of reviving it.
  expect(a.world.indexOf(pat)).toBe(-1);
});

describe('custody: the shard that hands an entity over keeps a copy until the new owner has stored it', () => {
  const leftN: Neighbour = { shard: 0, name: 'w-0-0', region: left, address: '127.0.0.1:0' };
  const placementB = {
    bounds: settings['engine.world_bounds'],
    shard: 1,
    region: right.region,
    address: '127.0.0.1:1',
    neighbours: [leftN],
  };
  const silent = { send: () => true, kick: () => undefined };
  /** An entity as a neighbour hands it back (HandoffCustody): the offer it was handed over with. */
  const handedBack = (entityId: number, playerId: string, generation: number, extra: Partial<aethex.v1.IHandoffOffer> = {}) => ({
    offerId: generation,
    entityId,
    playerId,
    position: { x: 120, y: 50 },
    velocity: { x: 0, y: 0 },
    kind: 1,
    generation,
    custody: true,
    ...extra,
  });

  /** Shard A (left) with links that record, and `run(extra)` starting a run of shard B (right) whose messages to A are recorded. */
  function world(o: { custody?: boolean; idsReleased?: boolean; now?: () => number } = {}) {
    const a = new ShardEngine(settings, silent, { region: left, ids: idRange(0) });
    const aSharding = shardingOf(a, o.now ? { now: o.now } : {});
    const toB = recordingLinks(true, o.custody ?? true);
    aSharding.attach(toB.links);
    const run = (
      epoch: number,
      extra: Partial<ConstructorParameters<typeof Sharding>[0]> = {},
      restored?: ShardState,
      onPlace?: (event: 'taken' | 'freed', playerId: string, handedOver: boolean) => void,
    ) => {
      const b = new ShardEngine(settings, silent, {
        region: right.region,
        ids: idRange(1),
        ...(restored ? { restored } : {}),
        ...(onPlace ? { onPlace } : {}),
      });
      const bSharding = shardingOf(b, { placement: placementB, ...extra });
      const toA = recordingLinks(true, true, o.idsReleased ?? true);
      bSharding.attach(toA.links);
      bSharding.onInboundUp(leftN, 7);
      bSharding.onOutboundUp(leftN, 7);
      toA.sent.length = 0; // its claim to A
      aSharding.onInboundUp(right, epoch);
      return { b, bSharding, toA };
    };
    /** Ann joins A with game state and walks into B's region; A offers her. */
    const crossing = (session: number, player: string, state: number[]) => {
      const r = a.join(session, player);
      if (!r.ok) throw new Error(r.message);
      a.context.setState(r.entityId, new Uint8Array(state));
      a.world.x[a.world.indexOf(r.entityId)] = 110;
      a.world.y[a.world.indexOf(r.entityId)] = 50;
      return r.entityId;
    };
    const deliver = (from: Neighbour, to: Sharding, sent: aethex.v1.IShardMessage[]) => {
      for (const m of sent.splice(0)) to.onMessage(from, wire(m));
    };
    /** A offers the players across the border to B's run `to`, which accepts; A commits, B adopts. */
    const handOver = (to: { bSharding: Sharding; toA: { sent: aethex.v1.IShardMessage[] } }) => {
      aSharding.afterStep();
      deliver(leftN, to.bSharding, toB.sent);
      deliver(right, aSharding, to.toA.sent);
      deliver(leftN, to.bSharding, toB.sent);
    };
    return { a, aSharding, toB, run, crossing, deliver, handOver };
  }

  test('released once a snapshot captured after the adoption is stored; an earlier one does not release it', () => {
    const { aSharding, toB, run, crossing, deliver } = world();
    const { b, bSharding, toA } = run(1);
    const ann = crossing(1, 'ann', [7]);
    aSharding.afterStep();
    expect(toB.sent.find((m) => m.handoffOffer)?.handoffOffer?.custody).toBe(true);
    deliver(leftN, bSharding, toB.sent); // offer → accept
    deliver(right, aSharding, toA.sent); // accept → commit
    expect(aSharding.custodyHeld).toEqual([ann]);
    deliver(leftN, bSharding, toB.sent); // commit: adopted
    expect(b.world.indexOf(ann)).toBeGreaterThanOrEqual(0);
    // A snapshot captured before the adoption does not hold it.
    bSharding.stored(bSharding.adoptions - 1);
    expect(toA.sent).toEqual([]);
    bSharding.stored(bSharding.adoptions);
    deliver(right, aSharding, toA.sent);
    expect(aSharding.custodyHeld).toEqual([]);
  });

  test('one entity of a player on its way in at a time: a newer offer replaces one committed and never resumed, and waits for one not decided yet', () => {
    const { a, aSharding, toB, run, crossing, deliver, handOver } = world();
    const { b, bSharding, toA } = run(1);
    // Ann crosses, and her client, redirected, never resumes on B: it closes and joins A afresh.
    const first = crossing(1, 'ann', [1]);
    handOver({ bSharding, toA });
    expect(b.world.mode[b.world.indexOf(first)]).toBe(MODE_OWNED);
    a.leave(1);
    const second = crossing(2, 'ann', [2]);
    expect(second).not.toBe(first);
    handOver({ bSharding, toA });
    // B keeps one place for her, with the newer entity; the first is gone.
    expect(b.world.indexOf(first)).toBe(-1);
    expect(bSharding.adoptedAwaitingResume()).toEqual([[second, 'ann']]);
    // Her next crossing is only accepted, not committed yet: an offer of another entity of hers
    // meanwhile (from a second device on A) waits for that one to be decided.
    a.leave(2);
    const third = crossing(3, 'ann', [3]);
    aSharding.afterStep();
    deliver(leftN, bSharding, toB.sent);
    // A is told at once that the second one, let go here, needs no copy kept.
    expect(toA.sent.map((m) => wire(m).body)).toEqual(['handoffStored', 'handoffAccept']);
    expect(bSharding.inFlight.held).toEqual([third]);
    expect(b.world.indexOf(second)).toBe(-1);
    toA.sent.length = 0;
    bSharding.onMessage(leftN, wire({ handoffOffer: handedBack(idRange(0).first + 40, 'ann', 9, { custody: false }) }));
    expect(toA.sent.map((m) => wire(m).handoffReject?.reason)).toEqual([aethex.v1.ReasonCode.REASON_CODE_NOT_READY]);
    expect(bSharding.inFlight.held).toEqual([third]);
    expect(bSharding.claimForJoin('ann')).toBe('pending');
  });

  test('an offer not decided by a run of its shard that then restarted does not keep the new run waiting: its offer of the player replaces it', () => {
    let clock = 0;
    const { run } = world();
    const { bSharding, toA } = run(1, { now: () => clock });
    const ann = idRange(0).first + 40;
    // A's run (epoch 7) offers ann; B accepts and holds her; A is killed before deciding.
    bSharding.onMessage(leftN, wire({ handoffOffer: handedBack(ann, 'ann', 1, { offerId: 1 }) }));
    const old = wire(toA.sent[0] as aethex.v1.IShardMessage).handoffAccept?.resumeToken;
    expect(old).toBeTypeOf('string');
    // While that run is up, another offer of hers waits for its decision.
    toA.sent.length = 0;
    bSharding.onMessage(leftN, wire({ handoffOffer: handedBack(ann, 'ann', 1, { offerId: 2 }) }));
    expect(toA.sent.map((m) => wire(m).handoffReject?.reason)).toEqual([aethex.v1.ReasonCode.REASON_CODE_NOT_READY]);
    // A's next run (epoch 8) is up; ann rejoined it (restored there) and walks over again, 2 s on.
    bSharding.onInboundUp(leftN, 8);
    clock = 2000;
    bSharding.afterStep();
    toA.sent.length = 0;
    bSharding.onMessage(leftN, wire({ handoffOffer: handedBack(ann, 'ann', 1, { offerId: 1 }) }));
    const accept = wire(toA.sent[0] as aethex.v1.IShardMessage).handoffAccept;
    expect(accept?.resumeToken).toBeTypeOf('string');
    expect(accept?.resumeToken).not.toBe(old);
    expect(bSharding.inFlight.held).toEqual([ann]);
  });

  test('a copy of the entity that replaced one committed and never resumed takes the place of that one restored from the snapshot', async () => {
    const { a, aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    // Ann crosses with state [1]; her client never resumes on B.
    const e1 = crossing(1, 'ann', [1]);
    handOver(first);
    // B stores a snapshot holding e1 (adopted, waiting for ann); A lets its copy go.
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const snapshot = decodeState(encodeState(first.b.tick, first.b.world, new Map(first.bSharding.adoptedAwaitingResume())), 16_384);
    first.bSharding.stored(first.bSharding.adoptions);
    deliver(right, aSharding, first.toA.sent);
    expect(aSharding.custodyHeld).toEqual([]);
    // Her client joins A afresh and walks over again with state [2]: B lets e1 go for e2.
    a.leave(1);
    const e2 = crossing(2, 'ann', [2]);
    handOver(first);
    expect(first.bSharding.adoptedAwaitingResume()).toEqual([[e2, 'ann']]);
    expect(aSharding.custodyHeld).toEqual([e2]);
    // B is killed before its next snapshot; its next run restores the one holding e1, and A hands e2 back.
    const places: string[] = [];
    const second = run(2, { departedSince: async () => new Set() }, snapshot, (event, player) => places.push(`${event} ${player}`));
    expect(places).toEqual(['taken ann']);
    expect(second.b.restoredWaitingOf('ann')).toBe(e1);
    aSharding.onOutboundUp(right, 2);
    deliver(leftN, second.bSharding, toB.sent);
    await vi.waitFor(() => expect(second.b.restoredWaitingOf('ann')).toBe(e2));
    expect(second.b.world.indexOf(e1)).toBe(-1);
    // Her place was kept throughout: no departure, no second arrival.
    expect(places).toEqual(['taken ann']);
    // A copy of yet another entity of hers, handed back after that one was taken: not known to be
    // newer, so the one taken first stays and the late one is released.
    const e3 = idRange(0).first + 41;
    second.toA.sent.length = 0;
    second.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [handedBack(e3, 'ann', 1, { offerId: 77 })] } }));
    await vi.waitFor(() =>
      expect(second.toA.sent.flatMap((m) => wire(m).handoffStored?.handoffs?.map((h) => h.entityId) ?? [])).toEqual([e3]),
    );
    second.toA.sent.length = 0;
    expect(second.b.restoredWaitingOf('ann')).toBe(e2);
    expect(second.b.world.indexOf(e3)).toBe(-1);
    // A is told e2 is taken only once a snapshot holding it is stored.
    deliver(right, aSharding, second.toA.sent);
    expect(aSharding.custodyHeld).toEqual([e2]);
    second.bSharding.stored(second.bSharding.adoptions);
    deliver(right, aSharding, second.toA.sent);
    expect(aSharding.custodyHeld).toEqual([]);
    const joined = second.b.join(9, 'ann');
    expect(joined).toMatchObject({ ok: true, entityId: e2 });
    expect([...(second.b.context.state(e2) ?? [])]).toEqual([2]);
  });

  test('a copy of an entity let go for a newer one is not handed back to supplant the newer one a snapshot holds', async () => {
    const { a, aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    // Ann crosses with state [1]; her client never resumes on B.
    const e1 = crossing(1, 'ann', [1]);
    handOver(first);
    // Her client joins A afresh and walks over again with state [2]: B lets e1 go for e2.
    a.leave(1);
    const e2 = crossing(2, 'ann', [2]);
    handOver(first);
    expect(first.bSharding.adoptedAwaitingResume()).toEqual([[e2, 'ann']]);
    // B stores a snapshot holding e2 (newer); its HandoffStored for e1 and e2 never reaches A
    // (the link was down, or B was killed right after the store).
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const snapshot = decodeState(encodeState(first.b.tick, first.b.world, new Map(first.bSharding.adoptedAwaitingResume())), 16_384);
    first.bSharding.stored(first.bSharding.adoptions);
    first.toA.sent.length = 0;
    // B's next run restores e2 waiting for ann; A hands back the copies it still keeps.
    const second = run(2, { departedSince: async () => new Set() }, snapshot);
    expect(second.b.restoredWaitingOf('ann')).toBe(e2);
    aSharding.onOutboundUp(right, 2);
    deliver(leftN, second.bSharding, toB.sent);
    await new Promise((r) => setTimeout(r, 20));
    // The newer entity (state [2]) stays: e1's copy, older than the snapshot, went when B let e1 go.
    expect({
      waiting: second.b.restoredWaitingOf('ann'),
      state: [...(second.b.context.state(second.b.restoredWaitingOf('ann') ?? -1) ?? [])],
      e1: second.b.world.indexOf(e1),
    }).toEqual({ waiting: e2, state: [2], e1: -1 });
  });

  test('a shard that drains rolls back its own offers still undecided: an accept arriving after is answered with an abort, and the entity stays in its final snapshot', () => {
    const { a, aSharding, toB, run, crossing, deliver } = world();
    const { b, bSharding, toA } = run(1);
    const ann = crossing(1, 'ann', [7]);
    aSharding.afterStep();
    deliver(leftN, bSharding, toB.sent); // offer → accept, still on its way to A
    expect(toA.sent.map((m) => wire(m).body)).toEqual(['handoffAccept']);
    // A drains: the player's session goes next, so a commit now could send them nowhere.
    aSharding.stopAccepting();
    expect(toB.sent.map((m) => wire(m).body)).toEqual(['handoffAbort']);
    expect(a.world.mode[a.world.indexOf(ann)]).toBe(MODE_OWNED);
    deliver(right, aSharding, toA.sent); // the accept: too late
    expect(toB.sent.map((m) => wire(m).body)).toEqual(['handoffAbort', 'handoffAbort']);
    expect([a.world.mode[a.world.indexOf(ann)], a.context.state(ann)]).toEqual([MODE_OWNED, new Uint8Array([7])]);
    expect(aSharding.custodyHeld).toEqual([]);
    // B lets go of what it held for the resume: ann is only A's ghost there.
    deliver(leftN, bSharding, toB.sent);
    expect(b.world.mode[b.world.indexOf(ann)]).toBe(MODE_GHOST);
    expect(bSharding.claimForJoin('ann')).toBeUndefined();
  });

  test('a new run of the new owner gets the entity back, waiting for its player with its game state, before the claim it waits for; stored, it is released', async () => {
    const { aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const bob = crossing(1, 'bob', [4, 2]);
    handOver(first);
    expect(first.b.world.indexOf(bob)).toBeGreaterThanOrEqual(0);
    // B crashes before storing; its next run restores a snapshot from before bob came.
    const empty = await emptyStateOfB();
    const asked: string[][] = [];
    const second = run(
      2,
      {
        restored: true,
        departedSince: async (players) => {
          asked.push(players);
          return new Set();
        },
      },
      empty,
    );
    expect(second.bSharding.settled).toBe(false);
    aSharding.onOutboundUp(right, 2);
    // Before the claim the new run waits for (the commit re-sent after it is harmless: no offer of that run).
    expect(toB.sent.map((m) => Object.keys(m)[0]).slice(0, 2)).toEqual(['handoffCustody', 'ownershipClaim']);
    deliver(leftN, second.bSharding, toB.sent);
    // Joins wait while the outbox is asked who left.
    expect(second.bSharding.settled).toBe(false);
    await new Promise((r) => setImmediate(r));
    expect(asked).toEqual([['bob']]);
    expect(second.bSharding.settled).toBe(true);
    expect(second.b.world.mode[second.b.world.indexOf(bob)]).toBe(MODE_DORMANT);
    const joined = second.b.join(1, 'bob');
    expect(joined).toMatchObject({ ok: true, entityId: bob });
    expect([...(second.b.context.state(bob) ?? [])]).toEqual([4, 2]);
    expect(second.b.world.x[second.b.world.indexOf(bob)]).toBe(110);
    // Not released before a snapshot holding it is stored (bob's rejoin is claimed: another
    // neighbour restored from an older snapshot may hold him waiting).
    expect(second.toA.sent.map((m) => wire(m).body)).toEqual(['ownershipClaim']);
    second.bSharding.stored(second.bSharding.adoptions);
    deliver(right, aSharding, second.toA.sent);
    expect(aSharding.custodyHeld).toEqual([]);
  });

  test('past the settle time, a rejoining player who had an entity waits (NOT_READY) for a neighbour whose claim is not in, at most ENTITY_WAIT_MS from the start, and gets it back', async () => {
    const { aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const bob = crossing(1, 'bob', [4, 2]);
    handOver(first);
    const empty = await emptyStateOfB();
    // B's previous run adopted bob and crashed before storing him; A, which keeps its copy, is
    // paused past B's settle time: its link to the new run is not up.
    let t = 0;
    const second = run(2, { restored: true, settleTimeoutMs: 3000, now: () => t }, empty);
    t = 3001;
    expect(second.bSharding.settled).toBe(true);
    // Bob's client rejoins naming the entity it had: it waits. One without an entity (a fresh
    // client, another player) joins.
    expect(second.bSharding.notAdmitting('bob', bob)).toMatch(/has not reconnected yet/);
    expect(second.bSharding.notAdmitting('bob', 0)).toBeUndefined();
    expect(second.bSharding.notAdmitting('cat', 0)).toBeUndefined();
    t = ENTITY_WAIT_MS - 1;
    expect(second.bSharding.notAdmitting('bob', bob)).toMatch(/has not reconnected yet/);
    // A comes back: its copy of bob is handed back before its claim, and bob rejoins with it.
    aSharding.onOutboundUp(right, 2);
    deliver(leftN, second.bSharding, toB.sent);
    await vi.waitFor(() => expect(second.bSharding.notAdmitting('bob', bob)).toBeUndefined());
    expect(second.b.join(1, 'bob')).toMatchObject({ ok: true, entityId: bob });
    expect([...(second.b.context.state(bob) ?? [])]).toEqual([4, 2]);
    // A neighbour that never comes back is not waited for past ENTITY_WAIT_MS.
    const third = run(3, { restored: true, settleTimeoutMs: 3000, now: () => t }, empty);
    t += ENTITY_WAIT_MS - 1;
    expect(third.bSharding.notAdmitting('bob', bob)).toMatch(/has not reconnected yet/);
    t += 1;
    expect(third.bSharding.notAdmitting('bob', bob)).toBeUndefined();
  });

  /**
   * Shard A (left) restarted from a snapshot, with B (right) and a corner (which never comes back)
   * as neighbours: B's claim is in, the corner's is not; past the settle time (`t` 4,000).
   */
  function restoredWithSilentCorner() {
    const corner: Neighbour = { shard: 2, name: 'w-9-9', region: { minX: 100, minY: 0, maxX: 200, maxY: 10 }, address: '127.0.0.1:2' };
    const clock = { t: 0 };
    const a = new ShardEngine(settings, silent, { region: left, ids: idRange(0) });
    const aSharding = shardingOf(a, {
      placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right, corner] },
      restored: true,
      settleTimeoutMs: 3000,
      now: () => clock.t,
    });
    const toB = recordingLinks();
    aSharding.attach(toB.links);
    aSharding.onInboundUp(right, 5);
    aSharding.onOutboundUp(right, 5);
    aSharding.onMessage(right, wire({ ownershipClaim: { entityIds: [] } }));
    clock.t = 4000;
    expect(aSharding.settled).toBe(true);
    return { a, aSharding, toB, clock };
  }

  test('past the settle time, a rejoin naming the entity is not kept waiting when the entity was handed in here and not resumed: the join takes it', () => {
    const { aSharding } = restoredWithSilentCorner();
    // B hands pat over to A (committed); pat's client never resumes and rejoins A with a Join.
    const pat = idRange(1).first + 5;
    aSharding.onMessage(
      right,
      wire({ handoffOffer: { offerId: 1, entityId: pat, playerId: 'pat', position: { x: 99, y: 50 }, velocity: { x: 0, y: 0 }, kind: 1 } }),
    );
    aSharding.onMessage(right, wire({ handoffCommit: { offerId: 1, entityId: pat } }));
    expect(aSharding.adoptedAwaitingResume()).toEqual([[pat, 'pat']]);
    // As the gateway asks: not admitting first, then the join takes the handed-in entity.
    expect(aSharding.notAdmitting('pat', pat)).toBeUndefined();
    expect(aSharding.claimForJoin('pat')).toMatchObject({ entityId: pat });
  });

  test('past the settle time, a rejoin naming the entity is not kept waiting when its entity was handed over from here: the join is redirected', () => {
    const { a, aSharding, toB } = restoredWithSilentCorner();
    // Pat (a fresh join) walks into B's region; B accepts, A commits; pat's connection drops before the redirect.
    const r = a.join(1, 'pat');
    if (!r.ok) throw new Error(r.message);
    a.world.x[a.world.indexOf(r.entityId)] = 110;
    a.world.y[a.world.indexOf(r.entityId)] = 50;
    aSharding.afterStep();
    const o = toB.sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
    aSharding.onMessage(right, wire({ handoffAccept: { offerId: o.offerId, entityId: o.entityId, resumeToken: 't', address: 'x' } }));
    expect(toB.sent.some((m) => m.handoffCommit)).toBe(true);
    a.suspend(1);
    // Pat's client rejoins A naming the entity: A's engine would redirect it to B, where its token is good.
    expect(aSharding.notAdmitting('pat', r.entityId)).toBeUndefined();
    expect(a.join(2, 'pat')).toMatchObject({ ok: false, redirect: { shardName: right.name, resumeToken: 't' } });
  });

  test('past the settle time, a player whose entity is handed back waits (NOT_READY) while the outbox is asked, so they do not join afresh; a store that does not answer is not waited for past CUSTODY_LOOKUP_MS', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const { aSharding, toB, run, crossing, deliver, handOver } = world();
      const first = run(1);
      const bob = crossing(1, 'bob', [4, 2]);
      handOver(first);
      const empty = await emptyStateOfB();
      // The new run's store hangs (PostgreSQL paused), and it is past its settle time already.
      let t = 0;
      const second = run(
        2,
        { restored: true, settleTimeoutMs: 3000, now: () => t, departedSince: () => new Promise(() => undefined) },
        empty,
      );
      t = 3001;
      expect(second.bSharding.settled).toBe(true);
      expect(second.bSharding.notAdmitting('bob')).toBeUndefined();
      aSharding.onOutboundUp(right, 2);
      deliver(leftN, second.bSharding, toB.sent);
      // Bob would get a fresh entity and lose his: refused until the copy is taken; others may join.
      expect(second.bSharding.notAdmitting('bob')).toMatch(/handed back/);
      expect(second.bSharding.notAdmitting('cat')).toBeUndefined();
      await vi.advanceTimersByTimeAsync(CUSTODY_LOOKUP_MS - 1);
      expect(second.bSharding.notAdmitting('bob')).toMatch(/handed back/);
      await vi.advanceTimersByTimeAsync(1);
      expect(second.bSharding.notAdmitting('bob')).toBeUndefined();
      expect(second.b.join(1, 'bob')).toMatchObject({ ok: true, entityId: bob });
      expect([...(second.b.context.state(bob) ?? [])]).toEqual([4, 2]);
    } finally {
      vi.useRealTimers();
    }
  });

  test('an entity committed by a run that died before its client read the redirect goes back to the next run, not claimed: the player rejoining there gets it', async () => {
    const { aSharding, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const cid = crossing(1, 'cid', [5]);
    // A committed and died before cid's client read the redirect: B adopted, nobody resumes there.
    handOver(first);
    const b = first.b;
    expect(b.world.mode[b.world.indexOf(cid)]).toBe(MODE_OWNED);
    expect(aSharding.custodyHeld).toEqual([cid]);
    // A's next run, from a snapshot taken before the crossing: cid waits there, where they stood then.
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World, KIND_PLAYER } = await import('../sim/world.js');
    const w = new World(16, idRange(0).first, idRange(0).limit);
    w.spawn(50, 50, KIND_PLAYER, cid);
    w.gameState.set(cid, new Uint8Array([1]));
    const a2 = new ShardEngine(settings, silent, {
      region: left,
      ids: idRange(0),
      restored: decodeState(encodeState(3, w, new Map([[cid, 'cid']])), 16),
    });
    const a2Sharding = shardingOf(a2, { restored: true, departedSince: async () => new Set() });
    const toB2 = recordingLinks();
    a2Sharding.attach(toB2.links);
    a2Sharding.onInboundUp(right, 3);
    a2Sharding.onOutboundUp(right, 3);
    toB2.sent.length = 0;
    expect(a2Sharding.settled).toBe(false);
    // B's link reaches the new run (A's first run was epoch 7 to B): cid goes back, and is not claimed.
    first.bSharding.onInboundUp(leftN, 8);
    first.bSharding.onOutboundUp(leftN, 8);
    const toNewRun = first.toA.sent.splice(0);
    expect(toNewRun.map((m) => Object.keys(m)[0]).slice(0, 2)).toEqual(['handoffCustody', 'ownershipClaim']);
    expect(toNewRun[1]?.ownershipClaim?.entityIds).toEqual([]);
    expect(b.world.indexOf(cid)).toBe(-1);
    expect(first.bSharding.claimForJoin('cid')).toBeUndefined();
    expect(first.bSharding.custodyHeld).toEqual([cid]);
    deliver(right, a2Sharding, toNewRun);
    await new Promise((r) => setImmediate(r));
    expect(a2Sharding.settled).toBe(true);
    // The copy from B, newer than the snapshot's: where cid crossed to, with the state B had.
    const slot = a2.world.indexOf(cid);
    expect([a2.world.mode[slot], a2.world.x[slot], [...(a2.world.gameState.get(cid) ?? [])]]).toEqual([MODE_DORMANT, 110, [5]]);
    expect(a2.join(1, 'cid')).toMatchObject({ ok: true, entityId: cid });
    // Stored by the new run: B lets its copy go.
    a2Sharding.stored(a2Sharding.adoptions);
    deliver(leftN, first.bSharding, toB2.sent);
    expect(first.bSharding.custodyHeld).toEqual([]);
  });

  test('not taken back when a neighbour claims it or its player joined here since and left again (released at once); a snapshot’s older entity waiting for its player is replaced', async () => {
    const { aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const ids = [crossing(1, 'kept', [1]), crossing(2, 'moved', [1]), crossing(3, 'left', [1])];
    handOver(first);
    expect(aSharding.custodyHeld.sort()).toEqual([...ids].sort());
    const [kept, moved, left] = ids as [number, number, number];
    // The next run's snapshot, from before the crossing, holds `kept` where it stood then, with the
    // state it had then; a third shard claims `moved`; `left` joined B after the snapshot and left.
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World, KIND_PLAYER } = await import('../sim/world.js');
    const w = new World(16, idRange(1).first, idRange(1).limit);
    w.spawn(150, 50, KIND_PLAYER, kept);
    w.gameState.set(kept, new Uint8Array([9]));
    const restored = decodeState(encodeState(3, w, new Map([[kept, 'kept']])), 16);
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const second = run(
      2,
      {
        restored: true,
        placement: { ...placementB, neighbours: [leftN, third] },
        departedSince: async (players) => new Set(players.filter((p) => p === 'left')),
      },
      restored,
    );
    second.bSharding.onInboundUp(third, 9);
    second.bSharding.onMessage(third, wire({ ownershipClaim: { entityIds: [moved] } }));
    aSharding.onOutboundUp(right, 2);
    deliver(leftN, second.bSharding, toB.sent);
    // `moved` is released at once, before the outbox is asked.
    deliver(
      right,
      aSharding,
      second.toA.sent.filter((m) => m.handoffStored),
    );
    second.toA.sent.length = 0;
    expect(aSharding.custodyHeld.sort()).toEqual([kept, left].sort());
    await new Promise((r) => setImmediate(r));
    const b = second.b;
    expect(b.world.indexOf(moved)).toBe(-1);
    expect(b.world.indexOf(left)).toBe(-1);
    // The copy is from after the snapshot: it replaces what the snapshot had, and still waits for kept.
    const slot = b.world.indexOf(kept);
    expect([b.world.mode[slot], b.world.x[slot], [...(b.world.gameState.get(kept) ?? [])]]).toEqual([MODE_DORMANT, 110, [1]]);
    deliver(right, aSharding, second.toA.sent);
    expect(aSharding.custodyHeld).toEqual([kept]);
    second.bSharding.stored(second.bSharding.adoptions);
    deliver(right, aSharding, second.toA.sent);
    expect(aSharding.custodyHeld).toEqual([]);
    expect(second.bSharding.settled).toBe(true);
  });

  test('two copies of one entity (it went on and came back before the crash): the newer owner generation wins, in either order', async () => {
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World } = await import('../sim/world.js');
    const empty = () => decodeState(encodeState(3, new World(16, idRange(1).first, idRange(1).limit), new Map()), 16);
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const copy = (generation: number, state: number) =>
      handedBack(77, 'gus', generation, { position: { x: 120 + generation, y: 50 }, state: new Uint8Array([state]) });
    for (const order of [
      [leftN, third],
      [third, leftN],
    ]) {
      const { run } = world();
      const b = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } }, empty());
      b.bSharding.onInboundUp(third, 9);
      for (const n of order) {
        b.bSharding.onMessage(n, wire({ handoffCustody: { entities: [n === leftN ? copy(2, 1) : copy(4, 9)] } }));
        await new Promise((r) => setImmediate(r));
      }
      const slot = b.b.world.indexOf(77);
      expect([b.b.world.x[slot], [...(b.b.world.gameState.get(77) ?? [])]]).toEqual([124, [9]]);
    }
  });

  test('two copies of one entity at the same owner generation: the one taken first stays, the other is released at once, in either order', async () => {
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World } = await import('../sim/world.js');
    const empty = () => decodeState(encodeState(3, new World(16, idRange(1).first, idRange(1).limit), new Map()), 16);
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    // Both handed over at generation 3: A's copy stands at x 121 with state [1], the third shard's at x 125 with [9].
    const copy = (from: Neighbour) =>
      handedBack(
        79,
        'ida',
        3,
        from === leftN
          ? { position: { x: 121, y: 50 }, state: new Uint8Array([1]) }
          : { position: { x: 125, y: 50 }, state: new Uint8Array([9]) },
      );
    for (const [order, kept, storedToA] of [
      [[leftN, third], [121, [1]], []],
      [[third, leftN], [125, [9]], [[3, 79]]],
    ] as const) {
      const { run } = world();
      const b = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } }, empty());
      b.bSharding.onInboundUp(third, 9);
      for (const n of order) {
        b.bSharding.onMessage(n, wire({ handoffCustody: { entities: [copy(n)] } }));
        await new Promise((r) => setImmediate(r));
      }
      const slot = b.b.world.indexOf(79);
      expect([b.b.world.x[slot], [...(b.b.world.gameState.get(79) ?? [])]], `${order[0]?.name} first`).toEqual(kept);
      // A's copy, when it came second, is answered at once (A forgets it); taken, it waits for a stored snapshot.
      const stored = b.toA.sent.flatMap((m) => m.handoffStored?.handoffs ?? []).map((h) => [Number(h.offerId), h.entityId]);
      expect(stored, `${order[0]?.name} first`).toEqual(storedToA);
    }
  });

  test('a copy arriving late does not replace an entity its player played here since the start (and dropped again)', async () => {
    const empty = await emptyStateOfB();
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const copy = (generation: number, state: number) => handedBack(78, 'hana', generation, { state: new Uint8Array([state]) });
    const { run } = world();
    const b = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } }, empty);
    b.bSharding.onInboundUp(third, 9);
    b.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [copy(2, 1)] } }));
    await new Promise((r) => setImmediate(r));
    // hana rejoins, plays (the game sets her state, she walks), and drops: her entity waits again.
    const joined = b.b.join(1, 'hana');
    expect(joined).toMatchObject({ ok: true, entityId: 78 });
    b.b.context.setState(78, new Uint8Array([42]));
    b.b.world.x[b.b.world.indexOf(78)] = 150;
    expect(b.b.suspend(1)).toBe(true);
    // The third shard's link comes up late with its copy from before the crash (a higher generation).
    b.bSharding.onMessage(third, wire({ handoffCustody: { entities: [copy(4, 9)] } }));
    await new Promise((r) => setImmediate(r));
    const slot = b.b.world.indexOf(78);
    expect([b.b.world.x[slot], [...(b.b.world.gameState.get(78) ?? [])]]).toEqual([150, [42]]);
  });

  test('a copy that comes after its player joined afresh (the shard stopped waiting for the neighbour) is released, and the loss is logged', async () => {
    let clock = 0;
    const lines: Record<string, unknown>[] = [];
    const log = createLogger('sharding-test', 'info', { write: (line: string) => lines.push(JSON.parse(line)) });
    const empty = await emptyStateOfB();
    const { run } = world({ now: () => clock });
    const b = run(2, { restored: true, now: () => clock, log }, empty);
    expect(b.bSharding.settled).toBe(false);
    clock += 3001;
    expect(b.bSharding.settled).toBe(true);
    expect(b.b.join(1, 'ike')).toMatchObject({ ok: true });
    b.bSharding.onMessage(
      leftN,
      wire({
        handoffCustody: { entities: [handedBack(66, 'ike', 5, { generation: 2 })] },
      }),
    );
    expect(b.b.world.indexOf(66)).toBe(-1);
    const stored = b.toA.sent.find((m) => m.handoffStored)?.handoffStored?.handoffs ?? [];
    expect(stored.map((h) => [Number(h.offerId), h.entityId])).toEqual([[5, 66]]);
    expect(lines.filter((l) => l.level === 40).map((l) => [l.msg, l.players, l.count])).toEqual([
      [
        'entities handed back after their players had joined afresh here (this shard stopped waiting for the neighbour): not taken; those players lost their entity',
        ['ike'],
        1,
      ],
    ]);
  });

  test('a HandoffStored that found the link down is sent when it is up again to the same run; dropped for another run', () => {
    const { aSharding, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const hal = crossing(1, 'hal', [1]);
    const ivy = crossing(2, 'ivy', [1]);
    handOver(first);
    expect(aSharding.custodyHeld.sort()).toEqual([hal, ivy].sort());
    // B's link to A is down when its snapshot is stored.
    let up = false;
    const sent: aethex.v1.IShardMessage[] = [];
    const flakyLink = {
      send: (_n: Neighbour, m: aethex.v1.IShardMessage) => (up ? sent.push(m) : 0),
      isUp: () => up,
      takesLateChanges: () => true,
      takesCustody: () => true,
    } as unknown as ShardLinks;
    first.bSharding.attach(flakyLink);
    first.bSharding.stored(first.bSharding.adoptions);
    expect(sent).toEqual([]);
    up = true;
    first.bSharding.onOutboundUp(leftN, 7);
    deliver(
      right,
      aSharding,
      sent.filter((m) => m.handoffStored),
    );
    expect(aSharding.custodyHeld).toEqual([]);
    // To another run of A (it restarted: its copies are gone), none is sent.
    const other = world();
    const b2 = other.run(1);
    other.crossing(1, 'jo', [1]);
    other.handOver(b2);
    up = false;
    sent.length = 0;
    b2.bSharding.attach(flakyLink);
    b2.bSharding.stored(b2.bSharding.adoptions);
    up = true;
    b2.bSharding.onOutboundUp(leftN, 8);
    expect(sent.filter((m) => m.handoffStored)).toEqual([]);
  });

  test("an id of A's range whose player quit at B goes home once B stored a snapshot taken since; A hands it out again, rested, unless it still keeps a copy of the entity", () => {
    const { a, aSharding, run, crossing, deliver, handOver } = world();
    const { b, bSharding, toA } = run(1);
    const ann = crossing(1, 'ann', [1]);
    const bo = crossing(2, 'bo', [1]);
    handOver({ bSharding, toA });
    expect(b.resume(5, 'ann', ann, 0)).toMatchObject({ ok: true, entityId: ann });
    expect(b.resume(6, 'bo', bo, 0)).toMatchObject({ ok: true, entityId: bo });
    // B stores ann's adoption (A forgets its copy of her), not bo's: A keeps bo's.
    bSharding.stored(bSharding.adoptions - 1);
    deliver(right, aSharding, toA.sent);
    expect(aSharding.custodyHeld).toEqual([bo]);
    // A's ghost of them (the entity it handed over) is B's: B's updates move it and then remove it.
    bSharding.afterStep();
    deliver(right, aSharding, toA.sent);
    expect(a.world.mode[a.world.indexOf(ann)]).toBe(MODE_GHOST);
    b.world.clock = 40;
    b.leave(5);
    b.leave(6);
    bSharding.afterStep();
    deliver(right, aSharding, toA.sent);
    expect([a.world.indexOf(ann), a.world.indexOf(bo)]).toEqual([-1, -1]);
    // Not before a snapshot of B that leaves them out is stored (releaseIds(t): one captured after tick t): a crash of B would bring them back.
    bSharding.releaseIds(39);
    expect(toA.sent).toEqual([]);
    bSharding.releaseIds(40);
    expect(toA.sent.map((m) => wire(m).idsReleased?.entityIds)).toEqual([[ann, bo]]);
    a.world.clock = 1000;
    deliver(right, aSharding, toA.sent);
    // A hands ann's id out again once it rested, and never bo's, whose copy it keeps.
    a.world.clock = 1000 + a.world.idRestTicks - 1;
    const early = a.join(3, 'cy');
    a.world.clock = 1000 + a.world.idRestTicks;
    const rested = [a.join(4, 'dee'), a.join(5, 'eli')];
    expect(early.ok && rested.every((r) => r.ok)).toBe(true);
    expect([early, ...rested].map((r) => (r.ok ? r.entityId : 0))).toEqual([bo + 1, ann, bo + 2]);
    // An id of another range, or one of A's it never handed out, is ignored.
    aSharding.onMessage(right, wire({ idsReleased: { entityIds: [idRange(1).first, bo + 100] } }));
    a.world.clock += a.world.idRestTicks;
    const later = a.join(6, 'fig');
    expect(later.ok && later.entityId).toBe(bo + 3);
    // B's next snapshot releases nothing again.
    bSharding.releaseIds(1000);
    expect(toA.sent).toEqual([]);
  });

  test('ids released while the link to their shard is down go when it is up; a neighbour of a build that does not take them, or no neighbour, leaves them to be handed out where they left', () => {
    const { a, aSharding, run, crossing, handOver, deliver } = world();
    const first = run(1);
    const gus = crossing(1, 'gus', [1]);
    handOver(first);
    first.b.resume(5, 'gus', gus, 0);
    let up = false;
    const sent: aethex.v1.IShardMessage[] = [];
    first.bSharding.attach({
      send: (_n: Neighbour, m: aethex.v1.IShardMessage) => (up ? sent.push(m) : 0),
      isUp: () => up,
      takesLateChanges: () => true,
      takesCustody: () => true,
      takesIdsReleased: () => true,
      takesPlayedEarlier: () => true,
    } as unknown as ShardLinks);
    first.bSharding.stored(first.bSharding.adoptions);
    first.b.leave(5);
    first.bSharding.releaseIds(first.b.world.clock);
    expect(sent).toEqual([]);
    aSharding.onInboundDown(right); // A drops B's ghosts with the link
    up = true;
    first.bSharding.onOutboundUp(leftN, 7);
    expect(sent.filter((m) => m.idsReleased).map((m) => m.idsReleased?.entityIds)).toEqual([[gus]]);
    deliver(right, aSharding, sent);
    a.world.clock += a.world.idRestTicks;
    expect(a.join(2, 'hal')).toMatchObject({ ok: true, entityId: gus });

    // A's build does not take them: B hands the id out itself, rested — and once A's copy of the
    // entity cannot come back to a later run of B any more (A hears nothing of B's reuse).
    let clock = 0;
    const old = world({ idsReleased: false });
    const oldB = old.run(1, { now: () => clock });
    const ivy = old.crossing(1, 'ivy', [1]);
    old.handOver(oldB);
    oldB.b.resume(5, 'ivy', ivy, 0);
    oldB.b.leave(5);
    oldB.bSharding.releaseIds(oldB.b.world.clock);
    oldB.b.world.clock += oldB.b.world.idRestTicks;
    expect(oldB.b.join(6, 'jo')).not.toMatchObject({ entityId: ivy });
    clock += CUSTODY_MS + 1000;
    oldB.bSharding.releaseIds(oldB.b.world.clock);
    expect(oldB.toA.sent.filter((m) => m.idsReleased)).toEqual([]);
    oldB.b.world.clock += oldB.b.world.idRestTicks;
    expect(oldB.b.join(7, 'kim')).toMatchObject({ ok: true, entityId: ivy });
  });

  test('an id of A’s range that came to B from a third shard, which keeps a copy, is held back until that copy cannot come back; then it goes home', () => {
    let clock = 0;
    const third: Neighbour = { shard: 3, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:3' };
    const { run } = world();
    const { b, bSharding } = run(1, { now: () => clock, placement: { ...placementB, neighbours: [leftN, third] } });
    const sent: [number, aethex.v1.IShardMessage][] = [];
    bSharding.attach({
      send: (n: Neighbour, m: aethex.v1.IShardMessage) => sent.push([n.shard, m]),
      isUp: () => true,
      takesLateChanges: () => true,
      takesCustody: () => true,
      takesIdsReleased: () => true,
      takesPlayedEarlier: () => true,
    } as unknown as ShardLinks);
    bSharding.onInboundUp(third, 9);
    // pat was numbered by A and walked A → third → B; the third shard keeps a copy.
    const pat = idRange(0).first + 7;
    bSharding.onMessage(third, wire({ handoffOffer: handedBack(pat, 'pat', 3, { custody: true, position: { x: 150, y: 90 } }) }));
    bSharding.onMessage(third, wire({ handoffCommit: { offerId: 3, entityId: pat } }));
    expect(b.resume(5, 'pat', pat, 0)).toMatchObject({ ok: true, entityId: pat });
    bSharding.stored(bSharding.adoptions); // its HandoffStored to the third shard may never arrive
    b.leave(5);
    const releasedTo = () => sent.filter(([, m]) => m.idsReleased).map(([to, m]) => [to, m.idsReleased?.entityIds]);
    bSharding.releaseIds(b.world.clock);
    clock += CUSTODY_MS;
    bSharding.releaseIds(b.world.clock);
    expect(releasedTo()).toEqual([]);
    clock += 1000;
    bSharding.releaseIds(b.world.clock);
    expect(releasedTo()).toEqual([[0, [pat]]]);
  });

  test('the hold for a third shard’s copy outlasts a later adoption from the id’s home; a restored run holds back every id for a while; a copy past CUSTODY_MS is not handed back', async () => {
    let clock = 0;
    const third: Neighbour = { shard: 3, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:3' };
    const recording = () => {
      const sent: [number, aethex.v1.IShardMessage][] = [];
      const links = {
        send: (n: Neighbour, m: aethex.v1.IShardMessage) => sent.push([n.shard, m]),
        isUp: () => true,
        takesLateChanges: () => true,
        takesCustody: () => true,
        takesIdsReleased: () => true,
        takesPlayedEarlier: () => true,
      } as unknown as ShardLinks;
      const releasedTo = () => sent.filter(([, m]) => m.idsReleased).map(([to, m]) => [to, m.idsReleased?.entityIds]);
      return { sent, links, releasedTo };
    };
    const { aSharding, toB, run, crossing, handOver } = world({ now: () => clock });
    const { b, bSharding } = run(1, { now: () => clock, placement: { ...placementB, neighbours: [leftN, third] } });
    const toOthers = recording();
    bSharding.attach(toOthers.links);
    bSharding.onInboundUp(third, 9);
    // pat (A's id) comes from the third shard, which keeps a copy; goes on to A and comes back.
    const pat = idRange(0).first + 7;
    bSharding.onMessage(third, wire({ handoffOffer: handedBack(pat, 'pat', 3, { custody: true, position: { x: 150, y: 90 } }) }));
    bSharding.onMessage(third, wire({ handoffCommit: { offerId: 3, entityId: pat } }));
    expect(b.resume(5, 'pat', pat, 0)).toMatchObject({ ok: true });
    b.world.x[b.world.indexOf(pat)] = 90;
    bSharding.afterStep();
    const offer = toOthers.sent.find(([to, m]) => to === 0 && m.handoffOffer)?.[1].handoffOffer as aethex.v1.IHandoffOffer;
    bSharding.onMessage(leftN, wire({ handoffAccept: { offerId: offer.offerId, entityId: pat, resumeToken: 'r1' } }));
    expect(b.world.mode[b.world.indexOf(pat)]).toBe(MODE_GHOST);
    clock += 10_000;
    bSharding.onMessage(leftN, wire({ handoffOffer: handedBack(pat, 'pat', 5, { custody: true, position: { x: 110, y: 50 } }) }));
    bSharding.onMessage(leftN, wire({ handoffCommit: { offerId: 5, entityId: pat } }));
    b.leave(5); // the old connection, after the redirect
    expect(b.resume(6, 'pat', pat, 0)).toMatchObject({ ok: true, entityId: pat });
    b.leave(6);
    bSharding.stored(bSharding.adoptions);
    bSharding.releaseIds(b.world.clock);
    clock = CUSTODY_MS;
    bSharding.releaseIds(b.world.clock);
    expect(toOthers.releasedTo()).toEqual([]);
    clock = CUSTODY_MS + 1000;
    bSharding.releaseIds(b.world.clock);
    expect(toOthers.releasedTo()).toEqual([[0, [pat]]]);

    // A restored run of B: what its previous runs adopted may come back as copies for a while.
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World } = await import('../sim/world.js');
    const saved = new World(16, idRange(1).first, idRange(1).limit);
    const quin = idRange(0).first + 9;
    saved.spawn(150, 50, 1, quin);
    const restored = decodeState(encodeState(3, saved, new Map([[quin, 'quin']])), 16, idRange(1).limit, idRange(1).first);
    const started = clock;
    const later = run(2, { now: () => clock, restored: true }, restored);
    const toA = recording();
    later.bSharding.attach(toA.links);
    later.bSharding.onMessage(leftN, wire({ ownershipClaim: { entityIds: [] } }));
    expect(later.b.join(7, 'quin')).toMatchObject({ ok: true, entityId: quin });
    later.b.leave(7);
    later.bSharding.releaseIds(later.b.world.clock);
    clock = started + CUSTODY_MS;
    later.bSharding.releaseIds(later.b.world.clock);
    expect(toA.releasedTo()).toEqual([]);
    clock = started + CUSTODY_MS + 1000;
    later.bSharding.releaseIds(later.b.world.clock);
    expect(toA.releasedTo()).toEqual([[0, [quin]]]);

    // A copy A kept past CUSTODY_MS (its ticks stood still) is not handed back to B's next run.
    const ned = crossing(9, 'ned', [1]);
    handOver(run(3, { now: () => clock }));
    expect(aSharding.custodyHeld).toContain(ned);
    clock += CUSTODY_MS;
    toB.sent.length = 0;
    aSharding.onOutboundUp(right, 4);
    expect(toB.sent.filter((m) => m.handoffCustody)).toEqual([]);
    expect(aSharding.custodyHeld).not.toContain(ned);
  });

  test('an entity adopted from a run that restarted before its player resumed goes back to the new run, and the player’s join here is sent there', () => {
    const { run, crossing, handOver } = world();
    const first = run(1);
    // Ann crosses; her client got the redirect but its connection here stalled: she never resumed.
    const ann = crossing(1, 'ann', [1]);
    handOver(first);
    expect(first.bSharding.adoptedAwaitingResume()).toEqual([[ann, 'ann']]);
    // A is killed and restarts (run 8): the entity goes back to it, as a copy.
    first.toA.sent.length = 0;
    first.bSharding.onOutboundUp(leftN, 8);
    expect(first.toA.sent.flatMap((m) => wire(m).handoffCustody?.entities?.map((e) => e.entityId) ?? [])).toEqual([ann]);
    expect(first.b.world.indexOf(ann)).toBe(-1);
    // Her client, its token refused here, joins here: it is sent to A, with nothing to resume
    // (the entity waits there for her join), once.
    expect(first.b.join(5, 'ann')).toMatchObject({
      ok: false,
      reason: aethex.v1.ReasonCode.REASON_CODE_WRONG_SHARD,
      redirect: { shardName: 'w-0-0', address: 'ws://127.0.0.1:0', resumeToken: '' },
    });
    expect(first.b.join(6, 'ann')).toMatchObject({ ok: true });
  });

  test('a HandoffStored sent on a link that then died is sent again when the link comes up again to the same run, so no older copy is kept to come back', () => {
    const { aSharding, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const lia = crossing(1, 'lia', [1]);
    handOver(first);
    first.bSharding.stored(first.bSharding.adoptions);
    expect(first.toA.sent.filter((m) => m.handoffStored)).toHaveLength(1);
    first.toA.sent.length = 0; // lost with the link
    expect(aSharding.custodyHeld).toEqual([lia]);
    first.bSharding.onOutboundUp(leftN, 7);
    deliver(
      right,
      aSharding,
      first.toA.sent.filter((m) => m.handoffStored),
    );
    expect(aSharding.custodyHeld).toEqual([]);
    // To another run of A (it restarted: it keeps no copy of ours), none is sent again.
    first.toA.sent.length = 0;
    first.bSharding.onOutboundUp(leftN, 8);
    expect(first.toA.sent.filter((m) => m.handoffStored)).toEqual([]);
  });

  test('a copy handed back is not taken over the entity the snapshot holds from that handoff or a later one (a drain whose answer found the link down); one from a later handoff is', async () => {
    const { decodeState, encodeState } = await import('../persist/state-codec.js');
    const { World } = await import('../sim/world.js');
    const { run } = world();
    const saved = new World(16, idRange(1).first, idRange(1).limit);
    const oli = idRange(0).first + 3;
    saved.spawn(150, 50, 1, oli);
    saved.handoffs.set(oli, 2); // adopted from A at generation 2, then stored
    saved.gameState.set(oli, new Uint8Array([11]));
    const restored = decodeState(encodeState(3, saved, new Map([[oli, 'oli']])), 16, idRange(1).limit, idRange(1).first);
    const b = run(2, { restored: true, departedSince: async () => new Set() }, restored);
    const state = () => [...(b.b.world.gameState.get(oli) ?? [])];
    b.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [handedBack(oli, 'oli', 2, { state: new Uint8Array([4]) })] } }));
    await new Promise((r) => setImmediate(r));
    expect(state()).toEqual([11]);
    expect(b.toA.sent.filter((m) => m.handoffStored).map((m) => m.handoffStored?.handoffs?.map((h) => Number(h.offerId)))).toEqual([[2]]);
    // oli went on and came back before the crash: a copy of that later handoff is newer.
    b.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [handedBack(oli, 'oli', 4, { state: new Uint8Array([5]) })] } }));
    await new Promise((r) => setImmediate(r));
    expect(state()).toEqual([5]);
  });

  test('claims are kept for CUSTODY_MS after the start, past a shorter rejoin window: a copy arriving late is not taken for an entity a neighbour owns', async () => {
    let clock = 0;
    const empty = await emptyStateOfB();
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const { run } = world({ now: () => clock });
    const b = run(
      2,
      { restored: true, now: () => clock, rejoinWindowMs: 1000, placement: { ...placementB, neighbours: [leftN, third] } },
      empty,
    );
    b.bSharding.onInboundUp(third, 9);
    b.bSharding.onMessage(third, wire({ ownershipClaim: { entityIds: [55] } }));
    clock += 31_000;
    b.bSharding.afterStep();
    b.bSharding.onMessage(
      leftN,
      wire({
        handoffCustody: { entities: [handedBack(55, 'kit', 3, { generation: 2 })] },
      }),
    );
    await new Promise((r) => setImmediate(r));
    expect(b.b.world.indexOf(55)).toBe(-1);
    const stored = b.toA.sent.find((m) => m.handoffStored)?.handoffStored?.handoffs ?? [];
    expect(stored.map((h) => [Number(h.offerId), h.entityId])).toEqual([[3, 55]]);
  });

  test('a claim naming an entity as handed on from the claimer (played_earlier) does not keep a copy of it handed back from being taken', async () => {
    const empty = await emptyStateOfB();
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const { run } = world();
    const b = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } }, empty);
    b.bSharding.onInboundUp(third, 9);
    // The third shard played 55 and handed it on (to A, which handed it here before B's crash).
    b.bSharding.onMessage(third, wire({ ownershipClaim: { entityIds: [55], playedEarlier: [{ entityId: 55, handedOnAtMs: 1 }] } }));
    b.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [handedBack(55, 'kit', 3, { generation: 2 })] } }));
    await new Promise((r) => setImmediate(r));
    expect(b.b.world.indexOf(55)).toBeGreaterThanOrEqual(0);
  });

  test.each([
    ['the copy first, then the claim', false],
    ['the claim first, then the copy', true],
  ])(
    'a claim naming an entity as handed on from the claimer after this run started, and a copy of it handed back: the copy, older, is not kept (%s)',
    async (_, claimFirst) => {
      const empty = await emptyStateOfB();
      const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
      const { run } = world();
      const places: string[] = [];
      const b = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } }, empty, (event, playerId, handedOver) =>
        places.push(`${event} ${playerId}${handedOver ? ' handoff' : ''}`),
      );
      b.bSharding.onInboundUp(third, 9);
      // The third shard played 55 until after B's run started, and handed it on (to a shard that
      // is not B's neighbour): B's previous run adopted 55 before that, its copy is the older.
      const claim = () =>
        b.bSharding.onMessage(
          third,
          wire({ ownershipClaim: { entityIds: [55], playedEarlier: [{ entityId: 55, handedOnAtMs: b.b.startedAtWall + 1000 }] } }),
        );
      const copy = async () => {
        b.bSharding.onMessage(leftN, wire({ handoffCustody: { entities: [handedBack(55, 'kit', 3, { generation: 2 })] } }));
        await new Promise((r) => setImmediate(r));
      };
      if (claimFirst) claim();
      await copy();
      if (!claimFirst) claim();
      // Kept, the copy refuses kit's offers ("already here") and ends in a player_left at its rejoin
      // window for a player still playing.
      const onB = b.b.world.indexOf(55) >= 0;
      const windowTicks = settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms'];
      for (let t = 0; t < windowTicks + 2; t++) b.b.step();
      expect({ onB, playerLeft: places.includes('freed kit') }).toEqual({ onB: false, playerLeft: false });
    },
  );

  test('an entity handed back and then claimed by a neighbour goes, as a restored one does', async () => {
    const { aSharding, toB, run, crossing, deliver, handOver } = world();
    const first = run(1);
    const cy = crossing(1, 'cy', [1]);
    handOver(first);
    const third: Neighbour = { shard: 2, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:2' };
    const second = run(2, { restored: true, placement: { ...placementB, neighbours: [leftN, third] } });
    aSharding.onOutboundUp(right, 2);
    deliver(leftN, second.bSharding, toB.sent);
    await new Promise((r) => setImmediate(r));
    expect(second.b.world.mode[second.b.world.indexOf(cy)]).toBe(MODE_DORMANT);
    // The third shard's claim arrives later: cy moved on to it before the crash.
    second.bSharding.onInboundUp(third, 9);
    second.bSharding.onMessage(third, wire({ ownershipClaim: { entityIds: [cy] } }));
    expect(second.b.world.indexOf(cy)).toBe(-1);
    expect(second.b.join(1, 'cy')).toMatchObject({ ok: true });
    expect(second.b.world.indexOf(cy)).toBe(-1);
  });

  test('a copy goes when the entity comes back, after CUSTODY_MS without word, and none is kept for a neighbour of a build before custody', () => {
    let clock = 0;
    const { a, aSharding, toB, run, crossing, handOver } = world({ now: () => clock });
    const first = run(1, { now: () => clock });
    const dee = crossing(1, 'dee', [1]);
    const eve = crossing(2, 'eve', [1]);
    handOver(first);
    expect(aSharding.custodyHeld.sort()).toEqual([dee, eve].sort());
    // dee walks back: B hands her to A, A adopts her: A's copy is void.
    const back = {
      offerId: 1,
      entityId: dee,
      playerId: 'dee',
      position: { x: 90, y: 50 },
      velocity: { x: 0, y: 0 },
      kind: 1,
      generation: 3,
    };
    aSharding.onMessage(right, wire({ handoffOffer: back }));
    expect(toB.sent.at(-1)?.handoffAccept).toBeDefined();
    aSharding.onMessage(right, wire({ handoffCommit: { offerId: 1, entityId: dee } }));
    expect(a.world.indexOf(dee)).toBeGreaterThanOrEqual(0);
    expect(a.world.mode[a.world.indexOf(dee)]).not.toBe(MODE_GHOST);
    expect(aSharding.custodyHeld).toEqual([eve]);
    clock += CUSTODY_MS;
    aSharding.afterStep();
    expect(aSharding.custodyHeld).toEqual([]);

    const old = world({ custody: false });
    const oldB = old.run(1);
    const fay = old.crossing(1, 'fay', [1]);
    old.aSharding.afterStep();
    expect(old.toB.sent.find((m) => m.handoffOffer)?.handoffOffer?.custody).toBe(false);
    old.deliver(leftN, oldB.bSharding, old.toB.sent);
    old.deliver(right, old.aSharding, oldB.toA.sent);
    expect(old.a.world.mode[old.a.world.indexOf(fay)]).toBe(MODE_GHOST);
    expect(old.aSharding.custodyHeld).toEqual([]);
  });

  test('a link up again to the same run of the new owner hands nothing back: it still has what it adopted', () => {
    const { aSharding, toB, run, crossing, handOver } = world();
    const first = run(1);
    const gus = crossing(1, 'gus', [1]);
    handOver(first);
    expect(aSharding.custodyHeld).toEqual([gus]);
    toB.sent.length = 0;
    // The link drops and comes back to run 1, the one that adopted gus.
    aSharding.onOutboundUp(right, 1);
    expect(toB.sent.filter((m) => m.handoffCustody)).toEqual([]);
    expect(aSharding.custodyHeld).toEqual([gus]);
  });

  test('a HandoffStored for one run of the former owner is not sent on a link up to another run of it', () => {
    const { run, crossing, handOver } = world();
    const first = run(1);
    crossing(1, 'kim', [1]);
    handOver(first);
    // A restarted: B's link is up to its run 8 when the snapshot holding kim (from run 7) is stored.
    first.bSharding.onOutboundUp(leftN, 8);
    first.toA.sent.length = 0;
    first.bSharding.stored(first.bSharding.adoptions);
    expect(first.toA.sent.filter((m) => m.handoffStored)).toEqual([]);
  });

  test('a HandoffStored naming an earlier offer of the same entity leaves the copy of its later handoff', () => {
    const { aSharding, toB, run, crossing, deliver } = world();
    const first = run(1);
    const max = crossing(1, 'max', [1]);
    aSharding.afterStep();
    const offerId = Number(toB.sent.find((m) => m.handoffOffer)?.handoffOffer?.offerId);
    deliver(leftN, first.bSharding, toB.sent);
    deliver(right, aSharding, first.toA.sent);
    expect(aSharding.custodyHeld).toEqual([max]);
    aSharding.onMessage(right, wire({ handoffStored: { handoffs: [{ offerId: offerId - 1, entityId: max }] } }));
    expect(aSharding.custodyHeld).toEqual([max]);
    aSharding.onMessage(right, wire({ handoffStored: { handoffs: [{ offerId, entityId: max }] } }));
    expect(aSharding.custodyHeld).toEqual([]);
  });
});

describe('ghosts and entity slots', () => {
  const id = (k: number) => (1 << 24) + k;

  test('a neighbour’s ghosts give their slots up to players joining or handed over; the rest stay', () => {
    const { engine, sharding } = tightShard();
    // Three ghosts fill every slot.
    sharding.onMessage(right, update({ tick: 1, upserts: [ghost(id(1), 101, 10), ghost(id(2), 101, 20), ghost(id(3), 101, 30)] }));
    expect(engine.world.count).toBe(3);
    expect(engine.hasRoomForPlayer).toBe(true);
    // A player joins in a ghost's slot, and another is handed over into one.
    expect(engine.join(1, 'ann').ok).toBe(true);
    expect(engine.adopt({ entityId: id(7), x: 99, y: 50, vx: 0, vy: 0, kind: 1, flags: 0, lastInputSeq: 0 })).toBe(true);
    expect(engine.world.count).toBe(3);
    let ghosts = 0;
    for (let i = 0; i < engine.world.count; i++) if (engine.world.mode[i] === MODE_GHOST) ghosts++;
    expect(ghosts).toBe(1);
    // No ghost takes a slot back from a player, and ghosts give way to players only (not to a game's spawn).
    expect(engine.upsertGhost({ entityId: id(4), x: 101, y: 10, vx: 0, vy: 0, kind: 0, flags: 0 })).toBe(false);
    expect(() => engine.context.spawn(10, 10, 2)).toThrow(/entity capacity/);
  });

  test('a full shard accepts no more handoffs than it has ghosts to give up: every committed one is adopted', () => {
    const { engine, sharding } = tightShard();
    engine.context.spawn(10, 10, 2);
    engine.context.spawn(20, 20, 2);
    sharding.onMessage(right, update({ tick: 1, upserts: [ghost(id(1), 101, 10)] }));
    expect(engine.world.count).toBe(3);
    const offer = (offerId: number, entityId: number, playerId: string) =>
      wire({
        handoffOffer: { offerId, entityId, playerId, position: { x: 99, y: 50 }, velocity: { x: 0, y: 0 }, kind: 1, lastInputSeq: 3 },
      });
    // Room for one player (the ghost's slot): the first offer is accepted, the second is not.
    sharding.onMessage(right, offer(1, id(5), 'pat'));
    sharding.onMessage(right, offer(2, id(6), 'quinn'));
    expect(sharding.inFlight.held).toEqual([id(5)]);
    sharding.onMessage(right, wire({ handoffCommit: { offerId: 1, entityId: id(5) } }));
    expect(engine.world.mode[engine.world.indexOf(id(5))]).toBe(MODE_OWNED);
    expect(engine.world.indexOf(id(1))).toBe(-1);
    // Full now, with no ghost left to give up: nobody else gets in (though a place is free).
    expect(engine.hasRoomForPlayer).toBe(false);
  });

  test('every neighbour is sent all our ghosts near it anew every GHOST_REFRESH_MS, so one it could not take comes back', () => {
    let now = 0;
    const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
    const sharding = shardingOf(engine, { now: () => now });
    const { links, sent } = recordingLinks();
    sharding.attach(links);
    const npc = engine.context.spawn(98, 50, 2);
    const updates = () => sent.flatMap((m) => (m.ghostUpdate ? [m.ghostUpdate] : []));
    sharding.afterStep();
    expect(updates().map((u) => [Boolean(u.full), u.upserts?.map((e) => e.entityId)])).toEqual([[false, [npc]]]);
    // It stands still: nothing more, until the refresh.
    now += GHOST_REFRESH_MS - 1;
    sharding.afterStep();
    expect(updates()).toHaveLength(1);
    now += 1;
    sharding.afterStep();
    expect(updates().map((u) => [Boolean(u.full), u.upserts?.map((e) => e.entityId)])).toEqual([
      [false, [npc]],
      [true, [npc]],
    ]);
  });

  test('a ghost the owner set up at a commit goes at the neighbour’s next full update when the neighbour never adopted it', () => {
    const { engine, sharding, entityId } = handAnnRight({}, right.address);
    expect(engine.world.mode[engine.world.indexOf(entityId)]).toBe(MODE_GHOST);
    // The neighbour's full update does not name it (it never adopted it): it goes here too.
    sharding.onMessage(right, update({ tick: 9, full: true, upserts: [] }));
    expect(engine.world.indexOf(entityId)).toBe(-1);
  });
});

describe('handoff decisions and timeouts', () => {
  /** The left shard on a clock `t()`, its links recording, with `name` joined and walked past the border into the right shard's region. */
  function crosser(name: string, extra: Partial<ConstructorParameters<typeof Sharding>[0]> = {}) {
    let clock = 0;
    const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
    const sharding = shardingOf(engine, { now: () => clock, ...extra });
    const { links, sent } = recordingLinks();
    sharding.attach(links);
    const r = engine.join(1, name);
    if (!r.ok) throw new Error(r.message);
    engine.world.x[engine.world.indexOf(r.entityId)] = 110;
    engine.world.y[engine.world.indexOf(r.entityId)] = 50;
    const setClock = (ms: number) => {
      clock = ms;
    };
    return { engine, sharding, sent, entityId: r.entityId, setClock };
  }

  test('an accept from a neighbour the entity was not offered to commits nothing: it is answered with an abort, and the entity stays on offer to the other', () => {
    const below: Neighbour = { shard: 2, name: 'w-1-0', region: { minX: 0, minY: 100, maxX: 100, maxY: 200 }, address: '127.0.0.1:2' };
    const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
    const sharding = shardingOf(engine, {
      placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right, below] },
    });
    const sent: [string, aethex.v1.IShardMessage][] = [];
    const links = {
      send: (n: Neighbour, m: aethex.v1.IShardMessage) => sent.push([n.name, m]),
      isUp: () => true,
      takesLateChanges: () => true,
      takesCustody: () => true,
      takesIdsReleased: () => true,
      takesPlayedEarlier: () => true,
    } as unknown as ShardLinks;
    sharding.attach(links);
    const r = engine.join(1, 'ann');
    if (!r.ok) throw new Error(r.message);
    engine.world.x[engine.world.indexOf(r.entityId)] = 110;
    sharding.afterStep();
    const o = sent.find(([, m]) => m.handoffOffer);
    expect(o?.[0]).toBe(right.name);
    const offerId = o?.[1].handoffOffer?.offerId;
    sent.length = 0;
    sharding.onMessage(below, wire({ handoffAccept: { offerId, entityId: r.entityId, resumeToken: 't', address: 'x:1' } }));
    expect(sent.map(([to, m]) => [to, wire(m).body])).toEqual([[below.name, 'handoffAbort']]);
    expect(engine.world.mode[engine.world.indexOf(r.entityId)]).toBe(MODE_OFFERED);
    // The neighbour it was offered to still takes it.
    sent.length = 0;
    sharding.onMessage(right, wire({ handoffAccept: { offerId, entityId: r.entityId, resumeToken: 't', address: 'x:1' } }));
    expect(sent.map(([to, m]) => [to, wire(m).body])).toEqual([[right.name, 'handoffCommit']]);
  });

  test('an offer not answered within offerTimeoutMs is rolled back then, and not before', () => {
    const { engine, sharding, sent, entityId, setClock } = crosser('bo');
    sharding.afterStep();
    expect(sent.map((m) => wire(m).body)).toContain('handoffOffer');
    sent.length = 0;
    setClock(999);
    sharding.afterStep();
    expect(sent.filter((m) => m.handoffAbort)).toEqual([]);
    expect(engine.world.mode[engine.world.indexOf(entityId)]).toBe(MODE_OFFERED);
    setClock(1000);
    sharding.afterStep();
    expect(sent.filter((m) => m.handoffAbort).map((m) => m.handoffAbort?.entityId)).toEqual([entityId]);
    expect(engine.world.mode[engine.world.indexOf(entityId)]).toBe(MODE_OWNED);
  });

  test('an offer accepted after its player dropped is rolled back: the entity waits here for the rejoin window, past the resume timeout', () => {
    const { engine, sharding, sent, entityId } = crosser('dee');
    sharding.afterStep();
    const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
    expect(engine.suspend(1)).toBe(true);
    sent.length = 0;
    sharding.onMessage(right, wire({ handoffAccept: { offerId: o.offerId, entityId, resumeToken: 't', address: 'x:1' } }));
    expect(sent.map((m) => wire(m).body)).toEqual(['handoffAbort']);
    expect([engine.world.mode[engine.world.indexOf(entityId)], engine.waitingPlayers]).toEqual([MODE_DORMANT, 1]);
    // Past handoff.resume_timeout_ms (10 s), within engine.rejoin_window_ms (30 s): the rejoin gets it.
    for (let t = 0; t < 480; t++) engine.step();
    expect(engine.join(2, 'dee')).toMatchObject({ ok: true, entityId });
  });

  /** Shards A (left) and B (right) on one clock, their links delivering on `deliver()`, with `name` on A walking into B's region. */
  function duoCrosser(name: string) {
    let clock = 0;
    const places: string[] = [];
    const redirects: number[] = [];
    const leftN: Neighbour = { shard: 0, name: 'w-0-0', region: left, address: '127.0.0.1:0' };
    const onPlace = (at: string) => (event: string, playerId: string, handedOver: boolean) =>
      places.push(`${at} ${event} ${playerId}${handedOver ? ' handoff' : ''}`);
    const a = new ShardEngine(
      settings,
      { send: () => true, kick: () => undefined },
      { region: left, ids: idRange(0), onPlace: onPlace('A') },
    );
    const b = new ShardEngine(
      settings,
      { send: () => true, kick: () => undefined },
      { region: right.region, ids: idRange(1), onPlace: onPlace('B') },
    );
    const aSharding = shardingOf(a, { now: () => clock, redirect: (sessionId) => redirects.push(sessionId) });
    const bSharding = shardingOf(b, {
      now: () => clock,
      placement: { bounds: settings['engine.world_bounds'], shard: 1, region: right.region, address: '127.0.0.1:1', neighbours: [leftN] },
    });
    const toB = recordingLinks();
    const toA = recordingLinks();
    aSharding.attach(toB.links);
    bSharding.attach(toA.links);
    const deliver = () => {
      while (toB.sent.length > 0 || toA.sent.length > 0) {
        for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
        for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
      }
    };
    const step = () => {
      clock += settings['engine.tick_rate_ms'];
      a.step();
      b.step();
      aSharding.afterStep();
      bSharding.afterStep();
    };
    const r = a.join(1, name);
    if (!r.ok) throw new Error(r.message);
    const entityId = r.entityId;
    a.world.y[a.world.indexOf(entityId)] = 50;
    // Near the border first (B gets its ghost), then past it: offered to B.
    a.world.x[a.world.indexOf(entityId)] = 98;
    step();
    deliver();
    a.world.x[a.world.indexOf(entityId)] = 110;
    step();
    return { a, b, aSharding, bSharding, toA, toB, leftN, deliver, step, places, redirects, entityId };
  }

  test('an offer accepted after its player dropped: the neighbour forgets what it held and its ghost, the rejoined player is offered again and handed over', () => {
    const { a, b, aSharding, bSharding, toA, toB, leftN, deliver, step, places, redirects, entityId } = duoCrosser('dee');
    for (const m of toB.sent.splice(0)) bSharding.onMessage(leftN, wire(m));
    expect([bSharding.inFlight.held, b.world.mode[b.world.indexOf(entityId)]]).toEqual([[entityId], MODE_GHOST]);
    expect(a.suspend(1)).toBe(true);
    // B's accept comes after the drop: rolled back, B told to forget what it held.
    for (const m of toA.sent.splice(0)) aSharding.onMessage(right, wire(m));
    expect(toB.sent.map((m) => wire(m).body)).toEqual(['handoffAbort']);
    deliver();
    expect(bSharding.inFlight.held).toEqual([]);
    // Dormant at A: B's ghost of it goes with A's next ghost update.
    step();
    deliver();
    expect(b.world.indexOf(entityId)).toBe(-1);
    expect(redirects).toEqual([]);
    // The player rejoins A: the entity, past the border, is offered again and committed this time.
    expect(a.join(2, 'dee')).toMatchObject({ ok: true, entityId });
    for (let t = 0; t < 20; t++) {
      step();
      deliver();
    }
    expect(redirects).toEqual([2]);
    expect(a.world.mode[a.world.indexOf(entityId)]).toBe(MODE_GHOST);
    expect(bSharding.adoptedAwaitingResume()).toEqual([[entityId, 'dee']]);
    expect(places).toEqual(['A taken dee', 'A freed dee handoff']);
  });

  test('an offer accepted after its player dropped, who never comes back: one player_left, at the end of the rejoin window, and nothing left on either shard', () => {
    const { a, b, aSharding, bSharding, deliver, step, places, entityId } = duoCrosser('eli');
    expect(a.suspend(1)).toBe(true);
    deliver();
    const windowTicks = settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms'];
    for (let t = 0; t < windowTicks - 2; t++) {
      step();
      deliver();
    }
    // Past the neighbour's resume timeout, still waiting for the player.
    expect([a.world.mode[a.world.indexOf(entityId)], places]).toEqual([MODE_DORMANT, ['A taken eli']]);
    for (let t = 0; t < 4; t++) {
      step();
      deliver();
    }
    expect(places).toEqual(['A taken eli', 'A freed eli']);
    expect([a.world.indexOf(entityId), b.world.indexOf(entityId)]).toEqual([-1, -1]);
    expect([aSharding.inFlight, bSharding.inFlight]).toEqual([
      { offered: [], held: [], retrying: [] },
      { offered: [], held: [], retrying: [] },
    ]);
  });

  test('a decision sent while the link was down is sent again when it comes up within resumeTimeoutMs, and not after', () => {
    const { sharding, sent, entityId, setClock } = crosser('cy');
    sharding.afterStep();
    const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
    sharding.onMessage(right, wire({ handoffAccept: { offerId: o.offerId, entityId, resumeToken: 't', address: 'x:1' } }));
    expect(sent.filter((m) => m.handoffCommit)).toHaveLength(1);
    sent.length = 0; // lost with the link
    setClock(10_000);
    sharding.onOutboundUp(right, 1);
    expect(sent.filter((m) => m.handoffCommit).map((m) => m.handoffCommit?.entityId)).toEqual([entityId]);
    sent.length = 0;
    setClock(10_001);
    sharding.onOutboundUp(right, 1);
    expect(sent.filter((m) => m.handoffCommit)).toEqual([]);
  });
});

describe('the receiver of an offer', () => {
  const offer = (extra: Partial<aethex.v1.IHandoffOffer> = {}) =>
    wire({
      handoffOffer: {
        offerId: 1,
        entityId: (1 << 24) + 1,
        playerId: 'pat',
        position: { x: 99, y: 50 },
        velocity: { x: 0, y: 0 },
        kind: 1,
        lastInputSeq: 3,
        ...extra,
      },
    });

  test('a draining shard refuses an offer (SHUTTING_DOWN) and holds no token for it', () => {
    const { sharding } = shard();
    const { links, sent } = recordingLinks();
    sharding.attach(links);
    sharding.stopAccepting();
    sharding.onMessage(right, offer());
    expect(sent.map((m) => wire(m).handoffReject?.reason)).toEqual([aethex.v1.ReasonCode.REASON_CODE_SHUTTING_DOWN]);
    expect(sharding.inFlight.held).toEqual([]);
  });

  test('an offer of an entity standing outside this shard’s region is refused as WRONG_SHARD', () => {
    const { sharding } = shard();
    const { links, sent } = recordingLinks();
    sharding.attach(links);
    sharding.onMessage(right, offer({ position: { x: 150, y: 50 } }));
    expect(sent.map((m) => wire(m).handoffReject?.reason)).toEqual([aethex.v1.ReasonCode.REASON_CODE_WRONG_SHARD]);
    expect(sharding.inFlight.held).toEqual([]);
  });

  test('an entity adopted whose player never resumes goes at resumeTimeoutMs after its offer, and not before', () => {
    let clock = 0;
    const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
    const sharding = shardingOf(engine, { now: () => clock });
    sharding.attach(recordingLinks().links);
    const pat = (1 << 24) + 1;
    sharding.onMessage(right, offer());
    sharding.onMessage(right, wire({ handoffCommit: { offerId: 1, entityId: pat } }));
    expect(engine.world.mode[engine.world.indexOf(pat)]).toBe(MODE_OWNED);
    clock = 9_999;
    sharding.afterStep();
    expect(engine.world.indexOf(pat)).toBeGreaterThanOrEqual(0);
    clock = 10_000;
    sharding.afterStep();
    expect(engine.world.indexOf(pat)).toBe(-1);
  });
});

describe('ghost updates', () => {
  test('a change of flags alone of an entity near the border is sent at once, not left to the next full refresh', () => {
    let now = 0;
    const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
    const sharding = shardingOf(engine, { now: () => now });
    const { links, sent } = recordingLinks();
    sharding.attach(links);
    const npc = engine.context.spawn(98, 50, 2);
    sharding.afterStep();
    sent.length = 0;
    now += 50;
    expect(engine.context.setFlags(npc, 5)).toBe(true);
    sharding.afterStep();
    const upserts = sent.flatMap((m) => m.ghostUpdate?.upserts ?? []);
    expect(upserts.map((e) => [e.entityId, e.flags])).toEqual([[npc, 5]]);
  });

  test('a ghost on the world’s far edge (x == maxX or y == maxY) is outside the world and ignored', () => {
    const { engine, sharding } = shard();
    const id = (k: number) => (1 << 24) + k;
    sharding.onMessage(right, update({ tick: 1, upserts: [ghost(id(1), 200, 50), ghost(id(2), 150, 100), ghost(id(3), 199.5, 99.5)] }));
    expect([engine.world.indexOf(id(1)), engine.world.indexOf(id(2))]).toEqual([-1, -1]);
    expect(engine.world.mode[engine.world.indexOf(id(3))]).toBe(MODE_GHOST);
  });
});

test('a claim held back for an entity handed on to a shard that is no neighbour of the receiver drops the receiver’s restored stale copy: no player_left for a player still playing', async () => {
  // A 3 × 3 world: A in the middle, B and C (shard 2) at opposite corners — C is A's neighbour
  // and not B's, so C never claims anything to B. B and A both restored pat, B's copy from before
  // pat walked on from B to A.
  // The links between A and B are down: pat rejoins A's copy (its claim to B held back) and walks
  // on to C (the fixture's corner, in A's neighbours only): that handoff commits, and pat plays on C.
  const { b, aSharding, bSharding, toB, leftN, pat, places, deliver, up } = await patWalksToCorner((a, _, pat) => {
    expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  });
  // The links between A and B come up: A's claim held back reaches B (naming pat as played
  // on A until it was handed on).
  toB.sent.splice(0);
  up.links = true;
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Nobody else will claim pat to B: B's stale copy kept waits out its rejoin window and ends in a
  // player_left for a player still playing on C (and refuses offers of pat "already here" meanwhile).
  places.length = 0;
  const windowTicks = settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms'];
  for (let t = 0; t < windowTicks + 2; t++) b.step();
  expect({ onB: b.world.indexOf(pat) >= 0, places }).toEqual({ onB: false, places: [] });
});

test('a claim lost with a link that died with the receiver’s run goes to its next run once its entity was handed on after that run started: the stale copy restored there goes', async () => {
  const { decodeState, encodeState } = await import('../persist/state-codec.js');
  const { World, KIND_PLAYER } = await import('../sim/world.js');
  const corner: Neighbour = { shard: 2, name: 'w-9-9', region: { minX: 100, minY: 0, maxX: 200, maxY: 50 }, address: '127.0.0.1:2' };
  const { a, aSharding, bSharding, toB, leftN, pat, deliver } = await twoRestoredWithPat({
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [corner, right] },
  });
  aSharding.onOutboundUp(right, 2);
  bSharding.onOutboundUp(leftN, 1);
  deliver();
  // Pat rejoins A: its claim goes to the socket of A's link to B's run 2, and B is killed before
  // it is delivered.
  expect(a.join(1, 'pat')).toMatchObject({ ok: true, entityId: pat });
  toB.sent.splice(0);
  // B's run 3 starts from its last snapshot, which still holds pat's stale entity waiting for pat
  // (its clock reads 1_000_000: before pat's handoff below, by the clock A counts from 1_000_001).
  const w = new World(16, idRange(1).first, idRange(1).limit);
  w.spawn(150, 50, KIND_PLAYER, pat);
  const restored = decodeState(encodeState(5, w, new Map([[pat, 'pat']])), 16, idRange(1).limit, idRange(1).first);
  const places: string[] = [];
  const b3 = new ShardEngine(
    settings,
    { send: () => true, kick: () => undefined },
    {
      region: right.region,
      ids: idRange(1),
      restored,
      wallClock: () => 1_000_000,
      onPlace: (event, playerId, handedOver) => places.push(`${event} ${playerId}${handedOver ? ' handoff' : ''}`),
    },
  );
  const b3Sharding = shardingOf(b3, {
    restored: true,
    placement: { bounds: settings['engine.world_bounds'], shard: 1, region: right.region, address: '127.0.0.1:1', neighbours: [leftN] },
  });
  // Pat walks on from A to the corner (no neighbour of B): that handoff commits, and pat plays there.
  aHandsPatToCorner(a, aSharding, corner, pat, toB.sent);
  // A's link to B's run 3 comes up.
  toB.sent.splice(0);
  aSharding.onOutboundUp(right, 3);
  for (const m of toB.sent.splice(0)) b3Sharding.onMessage(leftN, wire(m));
  // Nobody else will claim pat to B: its stale copy kept refuses the corner's offers of pat
  // ("already here") and ends in a player_left at its rejoin window for a player still playing.
  const onB = b3.world.indexOf(pat) >= 0;
  places.length = 0;
  const windowTicks = settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms'];
  for (let t = 0; t < windowTicks + 2; t++) b3.step();
  expect({ onB, playerLeft: places.includes('freed pat') }).toEqual({ onB: false, playerLeft: false });
});
