import { expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { KIND_NPC, KIND_PLAYER, MODE_DORMANT, MODE_GHOST, MODE_OWNED, World } from '../sim/world.js';
import { decodeState, encodeState, RESTORE_ID_MARGIN } from './state-codec.js';

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
});

test('an entity adopted in a handoff but not yet resumed is restored dormant for its player; an unclaimed player entity is dropped', () => {
  const settings = loadConfig({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'unused', AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '2' });
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
