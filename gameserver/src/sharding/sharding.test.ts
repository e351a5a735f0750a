import { aethex } from '@aethex/proto';
import { createLogger } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { MODE_DORMANT, MODE_GHOST } from '../sim/world.js';
import type { ShardLinks } from './links.js';
import { idRange, type Neighbour } from './map.js';
import { Sharding } from './sharding.js';

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

test('a ghost stays with its newer owner: a late upsert from the owner it left does not take it back', () => {
  // The walker went from shard 1 (right) to shard 3 (corner), its fourth change of owner; a slow
  // link delivers shard 1's last update after shard 3's first.
  const corner: Neighbour = { shard: 3, name: 'w-1-1', region: { minX: 100, minY: 100, maxX: 200, maxY: 200 }, address: '127.0.0.1:3' };
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const sharding = shardingOf(engine, {
    placement: { bounds: settings['engine.world_bounds'], shard: 0, region: left, address: '127.0.0.1:0', neighbours: [right, corner] },
  });
  const w = engine.world;
  const yOf = (id: number) => (w.indexOf(id) >= 0 && w.mode[w.indexOf(id)] === MODE_GHOST ? w.y[w.indexOf(id)] : undefined);
  const walker = (1 << 24) + 1;
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
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,200,100',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '2',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '3',
  });
  const engine = new ShardEngine(tight, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
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
function recordingLinks(lateChanges = true): { links: ShardLinks; sent: aethex.v1.IShardMessage[] } {
  const sent: aethex.v1.IShardMessage[] = [];
  const links = {
    send: (_n: Neighbour, m: aethex.v1.IShardMessage) => sent.push(m),
    isUp: () => true,
    takesLateChanges: () => lateChanges,
  };
  return { sent, links: links as unknown as ShardLinks };
}

const wire = (m: aethex.v1.IShardMessage) => aethex.v1.ShardMessage.decode(aethex.v1.ShardMessage.encode(m).finish());

test('the owner redirects a handed-over player to the neighbour’s address in the shard map, whatever the accept names', () => {
  const engine = new ShardEngine(settings, { send: () => true, kick: () => undefined }, { region: left, ids: idRange(0) });
  const redirects: aethex.v1.IHandoffRedirect[] = [];
  const sharding = shardingOf(engine, { redirect: (_session, r) => redirects.push(r) });
  const { links, sent } = recordingLinks();
  sharding.attach(links);
  const r = engine.join(1, 'ann');
  if (!r.ok) throw new Error('join refused');
  engine.world.x[engine.world.indexOf(r.entityId)] = 110;
  sharding.afterStep();
  const o = sent.find((m) => m.handoffOffer)?.handoffOffer as aethex.v1.IHandoffOffer;
  sharding.onMessage(
    right,
    wire({ handoffAccept: { offerId: o.offerId, entityId: o.entityId, resumeToken: 't', address: 'elsewhere.example:666' } }),
  );
  expect(redirects.map((x) => x.address)).toEqual([`ws://${right.address}`]);
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
  const aSharding = shardingOf(a, { restoredPlayers: true });
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
  nSharding.onOutboundUp(leftN);
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
