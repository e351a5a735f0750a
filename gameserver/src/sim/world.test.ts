import { describe, expect, test } from 'vitest';
import { CapacityError, ID_CATCH_UP, ID_REST_TICKS, KIND_NPC, KIND_PLAYER, MODE_DORMANT, MODE_GHOST, World } from './world.js';

describe('World', () => {
  test('spawn gives stable increasing ids; despawn fills the hole with the last entity', () => {
    const w = new World(4);
    const a = w.spawn(1, 1, KIND_NPC);
    const b = w.spawn(2, 2, KIND_PLAYER);
    const c = w.spawn(3, 3, KIND_NPC);
    expect([a, b, c]).toEqual([1, 2, 3]);
    expect(w.despawn(a)).toBe(true);
    expect(w.count).toBe(2);
    expect(w.indexOf(a)).toBe(-1);
    expect(w.indexOf(c)).toBe(0);
    expect([w.x[0], w.kind[0]]).toEqual([3, KIND_NPC]);
    expect(w.indexOf(b)).toBe(1);
    expect(w.despawn(a)).toBe(false);
    expect(w.spawn(0, 0, KIND_NPC)).toBe(4);
  });

  test('despawn moves every field of the last entity into the freed slot', () => {
    const w = new World(4);
    const a = w.spawn(1, 1, KIND_NPC);
    w.spawn(2, 2, KIND_NPC);
    const c = w.spawn(3, 3, KIND_NPC);
    const last = w.indexOf(c);
    const fields = {
      x: 3.5,
      y: -4.25,
      vx: 1.5,
      vy: -2,
      kind: 7,
      flags: 0x8000_0001,
      lastSeq: 41,
      moveX: 0.5,
      moveY: -0.5,
      moveSeq: 42,
      hasMove: 1,
      nextX: 1,
      nextY: -1,
      nextSeq: 43,
      hasNext: 1,
      credit: 5,
      buffered: 3,
      mode: MODE_DORMANT,
    };
    const names = Object.keys(fields) as (keyof typeof fields)[];
    for (const f of names) w[f][last] = fields[f];
    w.despawn(a);
    expect(w.indexOf(c)).toBe(0);
    expect(w.id[0]).toBe(c);
    expect(Object.fromEntries(names.map((f) => [f, w[f][0]]))).toEqual(fields);
  });

  test('refuses a spawn past capacity with a CapacityError, and accepts one after a despawn', () => {
    const w = new World(2);
    w.spawn(0, 0, 0);
    const b = w.spawn(0, 0, 0);
    expect(() => w.spawn(0, 0, 0)).toThrow(CapacityError);
    expect(() => w.spawn(0, 0, 0)).toThrow('entity capacity of 2');
    w.despawn(b);
    expect(() => w.spawn(0, 0, 0)).not.toThrow();
  });

  test('refuses a spawn with an explicit id (a restore, an adoption, a ghost) at capacity too', () => {
    const w = new World(2);
    w.spawn(0, 0, 0);
    w.spawn(0, 0, 0);
    expect(() => w.spawn(0, 0, 0, 99)).toThrow(CapacityError);
    expect(w.count).toBe(2);
    expect(w.indexOf(99)).toBe(-1);
  });

  test('an explicit id (a restore, an adoption, a ghost) never moves the counter, even one of its own range never handed out', () => {
    const w = new World(8, 100, 200);
    w.spawn(0, 0, 0, 41);
    expect(() => w.spawn(0, 0, 0, 41)).toThrow('entity 41 already exists');
    // The top of its own range, as a neighbour's ghost might name it: the range is not used up.
    w.spawn(0, 0, 0, 199);
    expect(w.nextEntityId).toBe(100);
    expect(w.spawn(0, 0, 0)).toBe(100);
    expect(w.neverIssued(198)).toBe(true);
    // Ids it handed out, and another range's, are not "never issued".
    expect([w.neverIssued(100), w.neverIssued(101), w.neverIssued(99), w.neverIssued(200)]).toEqual([false, true, false, false]);
    // A neighbour's id that an earlier run may have handed out moves the counter past it; one far
    // past it does not.
    const big = new World(8, 1, 1 << 24);
    expect(big.catchUp((1 << 24) - 1)).toBe(false);
    expect(big.nextEntityId).toBe(1);
    expect(big.catchUp(31)).toBe(true);
    expect(big.nextEntityId).toBe(32);
    expect(big.catchUp(5)).toBe(true);
    expect(big.nextEntityId).toBe(32);
    expect(big.catchUp(32 + ID_CATCH_UP)).toBe(false);
  });

  test('stateHash changes with each field it covers — id, position, velocity, kind, flags, last input sequence — and is equal for equal worlds', () => {
    const make = () => {
      const w = new World(4);
      w.spawn(1.5, 2.5, 0);
      w.spawn(-3, 4, 1);
      return w;
    };
    const a = make();
    expect(a.stateHash()).toBe(make().stateHash());
    const changes = { id: 9, x: 4.0000005, y: -3, vx: 0.5, vy: -0.5, kind: 7, flags: 1, lastSeq: 1 };
    for (const [field, value] of Object.entries(changes) as [keyof typeof changes, number][]) {
      const b = make();
      b[field][1] = value;
      expect(b.stateHash(), field).not.toBe(a.stateHash());
    }
  });
});

describe('entity ids', () => {
  test('a despawned NPC’s or game entity’s id is given again after it rested, to any kind; a player’s only when said to be gone for good, a ghost’s never, another range’s only through its release', () => {
    const w = new World(8, 1, 100);
    const npc = w.spawn(0, 0, KIND_NPC);
    const thing = w.spawn(0, 0, 7);
    const player = w.spawn(0, 0, KIND_PLAYER);
    const leaver = w.spawn(0, 0, KIND_PLAYER);
    const ghost = w.spawn(0, 0, KIND_NPC, 50);
    w.mode[w.indexOf(ghost)] = MODE_GHOST;
    const adopted = w.spawn(0, 0, KIND_PLAYER, 500);
    for (const id of [npc, thing, player, ghost]) w.despawn(id);
    // Gone for good (its player left while it was played here): its id may come back; one of
    // another shard's range (adopted in a handoff) is not handed out here but released (below).
    w.despawn(leaver, true);
    w.despawn(adopted, true);
    w.clock = ID_REST_TICKS - 1;
    expect(w.spawn(0, 0, 7)).toBe(5);
    w.clock = ID_REST_TICKS;
    // Oldest first, to any kind.
    expect([w.spawn(0, 0, 7), w.spawn(0, 0, KIND_PLAYER), w.spawn(0, 0, KIND_NPC), w.spawn(0, 0, KIND_NPC)]).toEqual([
      npc,
      thing,
      leaver,
      6,
    ]);
    expect(w.takeReleased(0)).toEqual([{ id: adopted, at: 0 }]);
  });

  test('a freed id goes again only once a snapshot taken after it was freed is stored, so a crash restoring that snapshot cannot bring back an id alive elsewhere', () => {
    const w = new World(8, 1, 100);
    w.reuseThrough = -1; // a shard with snapshots, none stored yet
    const a = w.spawn(0, 0, KIND_NPC);
    w.clock = 10;
    w.despawn(a);
    w.clock = 10 + ID_REST_TICKS;
    // Rested, but the last stored snapshot (none) still has `a`: a new id.
    expect(w.spawn(0, 0, KIND_PLAYER)).toBe(2);
    w.reuseThrough = 9; // taken before `a` was freed: a crash would restore `a`
    expect(w.spawn(0, 0, KIND_PLAYER)).toBe(3);
    w.reuseThrough = 10; // taken on the tick that freed it: `a` is not in it
    expect(w.spawn(0, 0, KIND_PLAYER)).toBe(a);
  });

  test('an id of another range that left for good is released once a snapshot after it is stored; handed back or kept, it goes again once, rested, and never while an entity has it', () => {
    const w = new World(16, 1, 100);
    const other = new World(16, 100, 200); // the neighbour whose range 100–199 is
    const walker = other.spawn(0, 0, KIND_PLAYER);
    other.despawn(walker); // handed over: not free at home
    w.reuseThrough = -1;
    w.clock = 10;
    w.spawn(0, 0, KIND_PLAYER, walker); // adopted here
    w.clock = 20;
    w.despawn(walker, true); // its player quit here
    expect(w.takeReleased(19)).toEqual([]);
    expect(w.takeReleased(20)).toEqual([{ id: walker, at: 20 }]);
    expect(w.takeReleased(1000)).toEqual([]); // taken once
    // Home, it goes again once it rested and a snapshot taken since is stored.
    other.reuseThrough = -1;
    other.clock = 500;
    expect(other.free(walker)).toBe(true);
    expect(other.free(walker)).toBe(false); // already free: never listed twice
    other.clock = 500 + ID_REST_TICKS;
    expect(other.spawn(0, 0, KIND_PLAYER)).toBe(walker + 1);
    other.reuseThrough = 500;
    expect(other.spawn(0, 0, KIND_PLAYER)).toBe(walker);
    expect(other.free(walker)).toBe(false); // an entity has it
    expect(other.free(150)).toBe(false); // of its range, never handed out
    expect(other.free(0)).toBe(false);
    // Kept where it left (its home cannot take it): it goes there after the rest from when it left.
    w.reuseThrough = 20;
    w.clock = 20 + ID_REST_TICKS - 1;
    expect(w.free(walker, 20)).toBe(true);
    expect(w.spawn(0, 0, KIND_NPC)).toBe(1);
    w.clock = 20 + ID_REST_TICKS;
    expect(w.spawn(0, 0, KIND_NPC)).toBe(walker);
    // Its NPC gone, the id is another range's again: released, not kept.
    w.despawn(walker);
    expect(w.takeReleased(w.clock)).toEqual([{ id: walker, at: w.clock }]);
    // A freed id an entity takes back (spawned with it) is no longer handed out.
    const npc = w.spawn(0, 0, KIND_NPC);
    w.despawn(npc);
    w.spawn(0, 0, KIND_PLAYER, npc);
    w.clock += ID_REST_TICKS;
    w.reuseThrough = w.clock;
    const next = w.spawn(0, 0, KIND_NPC);
    expect(next).not.toBe(npc);
    expect(w.count).toBe(new Set(Array.from(w.id.subarray(0, w.count))).size);
  });

  test('an id freed, taken back by an entity and freed again rests from its last free, and goes once', () => {
    const w = new World(8, 1, 100);
    const a = w.spawn(0, 0, KIND_NPC);
    w.despawn(a);
    w.spawn(0, 0, KIND_PLAYER, a); // adopted back
    w.clock = 200;
    w.despawn(a, true);
    w.clock = 201;
    expect(w.nextFreedId).toBe(-1);
    expect(w.spawn(0, 0, KIND_NPC)).toBe(2);
    w.clock = 200 + ID_REST_TICKS;
    expect(w.spawn(0, 0, KIND_NPC)).toBe(a);
    expect(w.nextFreedId).toBe(-1);
  });

  test('a game spawning and despawning every tick never uses up the id range; when a range is used up the refusal says so', () => {
    const w = new World(64, 1, 1000);
    for (let tick = 0; tick < 20_000; tick++) {
      w.clock = tick;
      const a = w.spawn(0, 0, 7);
      const b = w.spawn(0, 0, 7);
      w.despawn(a);
      w.despawn(b);
    }
    expect(w.nextEntityId).toBeLessThanOrEqual(2 * ID_REST_TICKS + 3);
    // Players who join and leave (the engine marks their ids gone for good) do not either.
    const churn = new World(64, 1, 1000);
    for (let tick = 0; tick < 20_000; tick++) {
      churn.clock = tick;
      churn.despawn(churn.spawn(0, 0, KIND_PLAYER), true);
    }
    expect(churn.nextEntityId).toBeLessThanOrEqual(ID_REST_TICKS + 2);
    const players = new World(2000, 1, 1000);
    expect(() => {
      for (let i = 0; i < 1000; i++) players.despawn(players.spawn(0, 0, KIND_PLAYER));
    }).toThrow(/used up its entity ids \(below 1000\)/);
  });
});
