import { insideMax } from '@aethex/proto';
import { expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { KIND_NPC, KIND_PLAYER, MAX_GAME_STATE_BYTES, MODE_DORMANT, MODE_GHOST, MODE_OWNED, World } from '../sim/world.js';
import {
  assembleState,
  captureState,
  decodeState,
  encodeState,
  RESTORE_ID_MARGIN,
  STATE_VERSION,
  StateChecksumError,
  StateFormatError,
  stateChecksum,
} from './state-codec.js';

/** `blob` with its checksum made right again: to reach the checks behind it with a blob changed on purpose. */
const resealed = (blob: Uint8Array): Uint8Array => {
  new DataView(blob.buffer, blob.byteOffset, blob.byteLength).setUint32(32, stateChecksum(blob), true);
  return blob;
};

test("a snapshot keeps what the shard owns, never a neighbour's ghosts, and restores players dormant", () => {
  const w = new World(16, 1, 100_000);
  const npc = w.spawn(1, 2, KIND_NPC);
  const player = w.spawn(3, 4, KIND_PLAYER);
  w.lastSeq[w.indexOf(player)] = 42;
  const ghost = w.spawn(5, 6, KIND_PLAYER, 500_000);
  w.mode[w.indexOf(ghost)] = MODE_GHOST;
  const npc2 = w.spawn(7, 8, KIND_NPC);
  const back = decodeState(encodeState(9, w, new Map([[player, 'p-1']])), 16, 100_000);
  expect(back.tick).toBe(9);
  expect(back.world.count).toBe(3);
  expect(back.world.indexOf(ghost)).toBe(-1);
  const at = (id: number) => back.world.indexOf(id);
  expect([back.world.x[at(npc)], back.world.y[at(npc2)]]).toEqual([1, 8]);
  expect(back.world.lastSeq[at(player)]).toBe(42);
  // The player waits, unseen, for its player to rejoin this shard; NPCs are simulated at once.
  expect(back.world.mode[at(player)]).toBe(MODE_DORMANT);
  expect(back.world.mode[at(npc)]).toBe(MODE_OWNED);
  expect(back.players).toEqual(new Map([[player, 'p-1']]));
  // Ids continue in this shard's own range, past a margin for those handed out after the snapshot
  // (a player's may live on in a neighbour); an id from another range does not move them.
  expect(back.world.nextEntityId).toBe(w.nextEntityId + RESTORE_ID_MARGIN);
  expect(back.world.spawn(0, 0, KIND_NPC)).toBe(npc2 + 1 + RESTORE_ID_MARGIN);
  // Not past the range's end.
  expect(decodeState(encodeState(9, w, new Map()), 16, 1000).world.nextEntityId).toBe(1000);
  // The range is still the shard's whole range: an id it handed out before the restart, back from
  // a neighbour (IdsReleased) or its entity gone for good, is its own to hand out again.
  const ranged = decodeState(encodeState(9, w, new Map()), 16, 100_000, 1).world;
  expect([ranged.firstId, ranged.idLimit]).toEqual([1, 100_000]);
  expect(ranged.neverIssued(npc2)).toBe(false);
  expect(ranged.free(npc2 + 1)).toBe(true);
});

test('an entity adopted in a handoff but not yet resumed is restored dormant for its player; an unclaimed player entity is dropped', () => {
  const settings = loadConfig({ AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks', AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '2' });
  const out = { send: () => true, kick: () => undefined };
  const before = new ShardEngine(settings, out);
  // As after `adopt`: owned here, no session yet (the client has not resumed).
  const adopted = before.world.spawn(10, 10, KIND_PLAYER, 777);
  const orphan = before.world.spawn(20, 20, KIND_PLAYER, 778);
  const blob = before.persistentState([[adopted, 'walker-1']]);
  const after = new ShardEngine(settings, out, { restored: decodeState(blob, settings['engine.max_entities']) });
  const w = after.world;
  expect(w.mode[w.indexOf(adopted)]).toBe(MODE_DORMANT);
  // Nobody would ever wake or drop it, so it must not stay owned here.
  expect(w.indexOf(orphan)).toBe(-1);
  // The player rejoining here gets the dormant entity back.
  const joined = after.join(1, 'walker-1');
  expect(joined.ok && joined.entityId).toBe(adopted);
  expect(w.mode[w.indexOf(adopted)]).toBe(MODE_OWNED);
});

test("entities' game states are kept, each its own, and only entities that have one cost anything", () => {
  const w = new World(16, 1, 100_000);
  const npc = w.spawn(1, 2, KIND_NPC);
  const player = w.spawn(3, 4, KIND_PLAYER);
  const bare = w.spawn(5, 6, KIND_NPC);
  w.gameState.set(player, new Uint8Array([1, 2, 3]));
  w.gameState.set(npc, new Uint8Array(MAX_GAME_STATE_BYTES).fill(9));
  const without = encodeState(1, w, new Map());
  // Removing the first entity moves the last one into its slot: the states follow the ids.
  w.despawn(npc);
  const blob = encodeState(9, w, new Map([[player, 'p-1']]));
  const back = decodeState(blob, 16, 100_000);
  expect(back.world.gameState).toEqual(new Map([[player, new Uint8Array([1, 2, 3])]]));
  expect(back.world.gameState.has(bare)).toBe(false);
  expect(decodeState(without, 16, 100_000).world.gameState.get(npc)).toEqual(new Uint8Array(MAX_GAME_STATE_BYTES).fill(9));
  // 8 bytes of id and length per state, nothing for an entity without one.
  expect(blob.length).toBe(encodeState(9, new World(16, 1, 100_000), new Map([[player, 'p-1']])).length + 2 * 30 + 8 + 3);
});

test('a blob whose game states do not add up is refused by name', () => {
  const w = new World(4, 1, 1000);
  const a = w.spawn(1, 1, KIND_PLAYER);
  w.gameState.set(a, new Uint8Array([7, 7]));
  const blob = encodeState(1, w, new Map([[a, 'p']]));
  const view = new DataView(blob.buffer);
  const at = blob.length - 10; // the state's id, length, bytes
  const other = blob.slice();
  new DataView(other.buffer).setUint32(at, a + 1, true);
  expect(() => decodeState(resealed(other), 4, 1000)).toThrow(/game state for entity 2, which it does not hold/);
  const long = blob.slice();
  new DataView(long.buffer).setUint32(at + 4, 3, true);
  expect(() => decodeState(resealed(long), 4, 1000)).toThrow(/game state of 3 bytes for entity 1/);
  const cut = blob.slice(0, blob.length - 1);
  expect(() => decodeState(resealed(cut), 4, 1000)).toThrow(/header says/);
  // A game state of 0 bytes (its 2 bytes gone, the header's states length 10 made 8): none is stored so.
  const empty = blob.slice(0, blob.length - 2);
  new DataView(empty.buffer).setUint32(at + 4, 0, true);
  expect(view.getUint32(28, true)).toBe(10);
  new DataView(empty.buffer).setUint32(28, 8, true);
  expect(() => decodeState(resealed(empty), 4, 1000)).toThrow(new StateFormatError('state blob has a game state of 0 bytes for entity 1'));
  expect(view.getUint32(4, true)).toBe(STATE_VERSION);
  const future = blob.slice();
  new DataView(future.buffer).setUint32(4, STATE_VERSION + 1, true);
  expect(() => decodeState(future, 4, 1000)).toThrow(
    new StateFormatError(`state blob version ${STATE_VERSION + 1} is not supported (this build reads 1 to 4)`),
  );
});

test('a snapshot written before game states were kept (version 1) restores as it was', () => {
  // Written by the version-1 encoder (at 669b872): an NPC at (1.5, 2.5) and player 2 at (3, 4),
  // flags 5, last input 7, owned by 'old-1', at tick 12.
  const v1 = Buffer.from(
    'U1hFQQEAAAAMAAAAAwAAAAIAAAAIAAAADQAAAAEAAAACAAAAAADAPwAAQEAAACBAAACAQAAAAAAAAAAAAAAAAAAAAAAAAAAABQAAAAAAAAAHAAAAAAABAFtbMiwib2xkLTEiXV0=',
    'base64',
  );
  // The same world is written today as version 4: the version-1 bytes behind a longer header
  // (the states' length, 0, and the checksum).
  const same = new World(8, 1, 1000);
  same.spawn(1.5, 2.5, KIND_NPC);
  const p = same.spawn(3, 4, KIND_PLAYER);
  same.lastSeq[same.indexOf(p)] = 7;
  same.flags[same.indexOf(p)] = 5;
  const now = Buffer.from(encodeState(12, same, new Map([[p, 'old-1']])));
  expect(now.readUInt32LE(4)).toBe(STATE_VERSION);
  expect([now.readUInt32LE(28), now.readUInt32LE(32)]).toEqual([0, stateChecksum(now)]);
  expect(now.subarray(36)).toEqual(v1.subarray(28));
  expect(now.subarray(8, 28)).toEqual(v1.subarray(8, 28));
  const back = decodeState(new Uint8Array(v1), 8, 1000);
  expect(back.tick).toBe(12);
  expect(back.players).toEqual(new Map([[2, 'old-1']]));
  const i = back.world.indexOf(2);
  expect([back.world.x[i], back.world.y[i], back.world.flags[i], back.world.lastSeq[i], back.world.mode[i]]).toEqual([
    3,
    4,
    5,
    7,
    MODE_DORMANT,
  ]);
  expect(back.world.x[back.world.indexOf(1)]).toBe(1.5);
  expect(back.world.gameState.size).toBe(0);
  // A Buffer (a view into Node's shared pool) decodes the same.
  expect(v1.byteOffset > 0 || v1.buffer.byteLength > v1.length).toBe(true);
  const fromBuffer = decodeState(v1, 8, 1000).world;
  expect([fromBuffer.x[fromBuffer.indexOf(2)], fromBuffer.lastSeq[fromBuffer.indexOf(2)]]).toEqual([3, 7]);
});

test('a snapshot with game states written before the checksum (version 2) restores as it was', () => {
  // Written by the version-2 encoder (at c3ae991): NPC 1 at (1.5, 2.5) with game state [9, 8, 7],
  // player 2 at (3, 4), flags 5, last input 7, owned by 'old-2', with game state '{"gold":12}', at tick 12.
  const v2 = Buffer.from(
    'U1hFQQIAAAAMAAAAAwAAAAIAAAAIAAAADQAAAB4AAAABAAAAAgAAAAAAwD8AAEBAAAAgQAAAgEAAAAAAAAAAAAAAAAAAAAAAAAAAAAUAAAAAAAAABwAAAAAAAQBbWzIsIm9sZC0yIl1dAQAAAAMAAAAJCAcCAAAACwAAAHsiZ29sZCI6MTJ9',
    'base64',
  );
  expect(v2.readUInt32LE(4)).toBe(2);
  const back = decodeState(v2, 8, 100_000);
  expect(back.tick).toBe(12);
  expect(back.world.nextEntityId).toBe(3 + RESTORE_ID_MARGIN);
  expect(back.players).toEqual(new Map([[2, 'old-2']]));
  const i = back.world.indexOf(2);
  expect([back.world.x[i], back.world.y[i], back.world.flags[i], back.world.lastSeq[i], back.world.mode[i]]).toEqual([
    3,
    4,
    5,
    7,
    MODE_DORMANT,
  ]);
  expect([back.world.x[back.world.indexOf(1)], back.world.y[back.world.indexOf(1)]]).toEqual([1.5, 2.5]);
  expect(back.world.gameState).toEqual(
    new Map([
      [1, new Uint8Array([9, 8, 7])],
      [2, new TextEncoder().encode('{"gold":12}')],
    ]),
  );
  // Written again today, it is the same blob in version 4: its header 4 bytes longer for the checksum.
  const now = Buffer.from(encodeState(12, back.world, back.players));
  expect(now.readUInt32LE(4)).toBe(STATE_VERSION);
  expect(now.readUInt32LE(32)).toBe(stateChecksum(now));
  expect(Buffer.concat([now.subarray(8, 12), now.subarray(16, 32), now.subarray(36)])).toEqual(
    Buffer.concat([v2.subarray(8, 12), v2.subarray(16, 32), v2.subarray(32)]),
  );
});

test('a blob with any byte changed, or cut short, is refused: a checksum mismatch from the tick on, stored vs computed', () => {
  const w = new World(8, 1, 1000);
  const npc = w.spawn(1.5, 2.5, KIND_NPC);
  const p = w.spawn(3, 4, KIND_PLAYER);
  w.gameState.set(npc, new Uint8Array([9, 8, 7]));
  w.gameState.set(p, new TextEncoder().encode('{"gold":12}'));
  const blob = encodeState(12, w, new Map([[p, 'ann']]));
  expect(new DataView(blob.buffer).getUint32(32, true)).toBe(stateChecksum(blob));
  expect(decodeState(blob, 8, 1000).world.count).toBe(2);
  const refusal = (b: Uint8Array, what: string): Error => {
    try {
      decodeState(b, 8, 1000);
    } catch (err) {
      expect(err).toBeInstanceOf(StateFormatError);
      return err as Error;
    }
    throw new Error(`a corrupted blob was restored (${what})`);
  };
  for (let at = 0; at < blob.length; at++) {
    for (const mask of [0x01, 0x02, 0x80, 0xff]) {
      const bad = blob.slice();
      bad[at] = (bad[at] as number) ^ mask;
      const err = refusal(bad, `byte ${at} ^ 0x${mask.toString(16)}`);
      // The magic and the version say how to read the rest: changed, the blob is not one this
      // build reads, or read as version 1 or 2 it is longer than its header says (their headers are
      // shorter). Anything after them — the tick, the counts, the positions, the checksum itself —
      // is a checksum mismatch.
      if (at < 8)
        expect(err.message).toMatch(
          /^(not a shard state blob|state blob version \d+ is not supported|state blob is \d+ bytes, its header says)/,
        );
      else {
        expect(err).toBeInstanceOf(StateChecksumError);
        const [stored, computed] = [new DataView(bad.buffer).getUint32(32, true), stateChecksum(bad)];
        expect(err).toMatchObject({ stored, computed });
        expect(err.message).toBe(
          `state blob checksum mismatch (stored CRC-32 0x${stored.toString(16).padStart(8, '0')}, computed 0x${computed.toString(16).padStart(8, '0')} over its ${blob.length} bytes): it was corrupted or cut short in the store`,
        );
      }
    }
  }
  // A write cut short anywhere past the header.
  for (const length of [36, 37, blob.length >> 1, blob.length - 1])
    expect(refusal(blob.slice(0, length), `cut to ${length} bytes`).message).toMatch(
      new RegExp(`^state blob checksum mismatch .* over its ${length} bytes\\)`),
    );
  expect(refusal(blob.slice(0, 35), 'cut to 35 bytes').message).toBe('state blob of 35 bytes is truncated');
});

test('the shard assembles the game states off the tick, a chunk per event-loop turn, into the same blob', async () => {
  const w = new World(64, 1, 1000);
  for (let i = 0; i < 50; i++) {
    const id = w.spawn(i, i, KIND_NPC);
    w.gameState.set(id, new Uint8Array(100).fill(i));
  }
  const captured = captureState(3, w, new Map());
  // Taken now: a state replaced after the capture (setState makes a new array) is not in it.
  w.gameState.set(1, new Uint8Array([42]));
  // Turns of the event loop others get while it runs: a chain of setImmediate beside it (a 1 ms
  // timer could see none when the whole assembly takes less).
  let turns = 0;
  let counting = true;
  const count = () => {
    if (!counting) return;
    turns++;
    setImmediate(count);
  };
  setImmediate(count);
  const assembling = assembleState(captured, 1000);
  // Nothing of it on the caller's turn (the tick): not even the checksum.
  expect(new DataView(captured.head.buffer).getUint32(32, true)).toBe(0);
  const blob = await assembling;
  counting = false;
  // 5,000 bytes of state in chunks of 1,000: others ran between the chunks.
  expect(turns).toBeGreaterThanOrEqual(4);
  w.gameState.set(1, new Uint8Array(100).fill(0));
  expect(blob).toEqual(encodeState(3, w, new Map()));
  expect(decodeState(blob, 64, 1000).world.gameState.get(50)).toEqual(new Uint8Array(100).fill(49));
  // The checksum is taken a chunk per turn as well: the head in chunks of 100 bytes.
  expect(await assembleState(captureState(3, w, new Map()), 100)).toEqual(blob);
});

test('without game states the blob is checksummed off the tick too', async () => {
  const w = new World(16, 1, 1000);
  for (let i = 0; i < 10; i++) w.spawn(i, -i, KIND_NPC);
  const captured = captureState(4, w, new Map());
  const assembling = assembleState(captured);
  expect(new DataView(captured.head.buffer).getUint32(32, true)).toBe(0);
  const blob = await assembling;
  expect(new DataView(blob.buffer).getUint32(32, true)).toBe(stateChecksum(blob));
  expect(blob).toEqual(encodeState(4, w, new Map()));
  expect(decodeState(blob, 16, 1000).world.count).toBe(10);
});

test('a blob with a position that is not a number is refused by name', () => {
  const w = new World(4, 1, 1000);
  w.spawn(1, 2, KIND_NPC);
  const bad = w.spawn(3, 4, KIND_NPC);
  w.vy[w.indexOf(bad)] = Number.NaN;
  expect(() => decodeState(encodeState(9, w, new Map()), 4, 1000)).toThrow(
    new StateFormatError(`state blob has entity ${bad} at a position or velocity that is not a number`),
  );
});

test('a snapshot saved under wider world bounds restores its entities inside the current ones, where a move cannot jump them', () => {
  const config = (bounds: string) =>
    loadConfig({ AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: bounds });
  const out = { send: () => true, kick: () => undefined };
  const before = new ShardEngine(config('-1000,-1000,1000,1000'), out);
  const joined = before.join(1, 'ann');
  if (!joined.ok) throw new Error(joined.message);
  const w = before.world;
  w.x[w.indexOf(joined.entityId)] = 900;
  w.y[w.indexOf(joined.entityId)] = -900;
  before.detach(1);
  const after = new ShardEngine(config('-100,-100,100,100'), out, { restored: decodeState(before.persistentState(), 10_000) });
  const a = after.world;
  const slot = a.indexOf(joined.entityId);
  expect([a.x[slot], a.y[slot]]).toEqual([insideMax(100), -100]);
  // Back and moving: one step at max_speed from where it was put, no further.
  expect(after.join(2, 'ann')).toMatchObject({ ok: true, entityId: joined.entityId });
  after.input(2, 1, -1, 0, 0);
  after.step();
  expect(a.x[a.indexOf(joined.entityId)]).toBeCloseTo(insideMax(100) - 1, 4);
});

test("a player's count of owner changes is kept (version 4); a version-3 blob restores without it", () => {
  const w = new World(16, 1, 100_000);
  const walked = w.spawn(3, 4, KIND_PLAYER);
  const stayed = w.spawn(5, 6, KIND_PLAYER);
  w.handoffs.set(walked, 3);
  const blob = encodeState(
    9,
    w,
    new Map([
      [walked, 'ann'],
      [stayed, 'bob'],
    ]),
  );
  const back = decodeState(blob, 16, 100_000);
  expect([...back.world.handoffs]).toEqual([[walked, 3]]);
  expect(back.players).toEqual(
    new Map([
      [walked, 'ann'],
      [stayed, 'bob'],
    ]),
  );
  // Written by the version-3 encoder: the same layout, pairs only.
  const v3 = encodeState(9, new World(16, 1, 100_000), new Map());
  new DataView(v3.buffer).setUint32(4, 3, true);
  const old = decodeState(resealed(v3), 16, 100_000);
  expect(old.world.handoffs.size).toBe(0);
});

test('a player map entry that is not a player entity of the blob with a valid, unique player id is refused, naming the entry', () => {
  const w = new World(16, 1, 100_000);
  const npc = w.spawn(1, 2, KIND_NPC);
  const p1 = w.spawn(3, 4, KIND_PLAYER);
  const p2 = w.spawn(5, 6, KIND_PLAYER);
  // A blob with the player map replaced by `json` (the header's length with it).
  const withMap = (json: string) => {
    const good = encodeState(9, w, new Map());
    const map = new TextEncoder().encode(json);
    const out = new Uint8Array(good.length - 2 + map.length);
    out.set(good.subarray(0, good.length - 2));
    out.set(map, good.length - 2);
    new DataView(out.buffer).setUint32(24, map.length, true);
    return resealed(out);
  };
  expect(decodeState(withMap(JSON.stringify([[p1, 'ann']])), 16).players).toEqual(new Map([[p1, 'ann']]));
  const refused = (json: string) => {
    try {
      decodeState(withMap(json), 16);
    } catch (err) {
      expect(err).toBeInstanceOf(StateFormatError);
      return (err as Error).message;
    }
    throw new Error(`${json} was taken`);
  };
  // What poisoned the outbox: a player id that is undefined (JSON null) or not a string.
  expect(refused(`[[${p1},null]]`)).toBe(
    `state blob has a bad player map entry 0 ([${p1},null]): the player id is not a string of 1–128 characters`,
  );
  expect(refused(`[[${p1},"ann"],[${p2},7]]`)).toBe(
    `state blob has a bad player map entry 1 ([${p2},7]): the player id is not a string of 1–128 characters`,
  );
  const notAnEntry = 'not an [entity id, player id] pair or [entity id, player id, owner changes]';
  expect(refused(`[[${p1}]]`)).toBe(`state blob has a bad player map entry 0 ([${p1}]): ${notAnEntry}`);
  expect(refused('[7]')).toBe(`state blob has a bad player map entry 0 (7): ${notAnEntry}`);
  expect(refused(`[[${p1},"ann",2,3]]`)).toBe(`state blob has a bad player map entry 0 ([${p1},"ann",2,3]): ${notAnEntry}`);
  for (const count of ['0', '1.5', '"2"', '-1', '4294967296'])
    expect(refused(`[[${p1},"ann",${count}]]`)).toMatch(/entry 0 .*: its count of owner changes is not a whole number of 1 or more$/);
  // Version 3 has no counts: a third element there is no entry.
  const v3 = withMap(JSON.stringify([[p1, 'ann', 2]]));
  new DataView(v3.buffer).setUint32(4, 3, true);
  expect(() => decodeState(resealed(v3), 16)).toThrow(/entry 0 .*: not an \[entity id, player id\] pair$/);
  expect(refused(`[[${p1},""]]`)).toMatch(/entry 0 .*: the player id is not a string of 1–128 characters$/);
  expect(refused(`[[${p1},"${'x'.repeat(129)}"]]`)).toMatch(/entry 0 .*: the player id is not a string of 1–128 characters$/);
  expect(refused(`[[${p1},"a\\u0000b"]]`)).toMatch(/entry 0 .*: the player id has a control character or a lone surrogate at position 1$/);
  expect(refused(`[[${p1},"a\\ud800"]]`)).toMatch(/entry 0 .*: the player id has a control character or a lone surrogate at position 1$/);
  expect(refused(`[[${npc},"ann"]]`)).toBe(
    `state blob has a bad player map entry 0 ([${npc},"ann"]): its entity is not a player entity of the blob`,
  );
  expect(refused(`[[999,"ann"]]`)).toBe(
    'state blob has a bad player map entry 0 ([999,"ann"]): its entity is not a player entity of the blob',
  );
  expect(refused(`[["${p1}","ann"]]`)).toMatch(/entry 0 .*: its entity is not a player entity of the blob$/);
  expect(refused(`[[${p1},"ann"],[${p2},"ann"]]`)).toBe(
    `state blob has a bad player map entry 1 ([${p2},"ann"]): player "ann" is in the map twice`,
  );
  expect(refused(`[[${p1},"ann"],[${p1},"bob"]]`)).toBe(
    `state blob has a bad player map entry 1 ([${p1},"bob"]): entity ${p1} is in the map twice`,
  );
  expect(refused('{}')).toBe('state blob has a malformed player map');
});
