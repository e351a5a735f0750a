import { expect, test } from 'vitest';
import { KIND_NPC, KIND_PLAYER, MODE_DORMANT, MODE_GHOST, MODE_OWNED, World } from '../sim/world.js';
import { decodeState, encodeState } from './state-codec.js';

test("a snapshot keeps what the shard owns, never a neighbour's ghosts, and restores players dormant", () => {
  const w = new World(16, 1, 1000);
  const npc = w.spawn(1, 2, KIND_NPC);
  const player = w.spawn(3, 4, KIND_PLAYER);
  w.lastSeq[w.indexOf(player)] = 42;
  const ghost = w.spawn(5, 6, KIND_PLAYER, 5000);
  w.mode[w.indexOf(ghost)] = MODE_GHOST;
  const npc2 = w.spawn(7, 8, KIND_NPC);
  const back = decodeState(encodeState(9, w, new Map([[player, 'p-1']])), 16, 1000);
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
  // Ids continue in this shard's own range; an id from another range does not move them.
  expect(back.world.nextEntityId).toBe(w.nextEntityId);
  expect(back.world.spawn(0, 0, KIND_NPC)).toBe(npc2 + 1);
});
