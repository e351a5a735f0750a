import type { ShardEngine } from '../engine.js';
import type { Sharding } from '../sharding/sharding.js';
import { KIND_PLAYER, MODE_OWNED } from '../sim/world.js';

/** What the viewer draws, as plain JSON: compact, positions rounded to 0.1 units. */
export interface ViewerState {
  tick: number;
  shard: string;
  bounds: { minX: number; minY: number; maxX: number; maxY: number };
  region: { minX: number; minY: number; maxX: number; maxY: number };
  aoiRadius: number;
  /**
   * Flat [x, y, kind, id, mode, …] for every entity; mode is MODE_* (0 owned, 1 ghost of a
   * neighbour's, 2 on offer in a handoff, 3 dormant).
   */
  entities: number[];
  /** Entities a neighbour offered here and that wait for the commit or the client's resume. */
  held: number[];
  /** Player entities owned here: their ids, for choosing whose area of interest to show. */
  players: number[];
  /** The focused player's entity and the ids it sees, when one was asked for and exists. */
  focus?: { id: number; x: number; y: number; visible: number[] };
}

/** Builds the viewer's picture of the engine; `focusId` picks a player's area of interest. */
export function viewerState(engine: ShardEngine, shard: string, focusId: number | undefined, sharding?: Sharding): ViewerState {
  const { world } = engine;
  const entities: number[] = new Array(world.count * 5);
  const players: number[] = [];
  for (let i = 0; i < world.count; i++) {
    entities[i * 5] = Math.round((world.x[i] as number) * 10) / 10;
    entities[i * 5 + 1] = Math.round((world.y[i] as number) * 10) / 10;
    entities[i * 5 + 2] = world.kind[i] as number;
    entities[i * 5 + 3] = world.id[i] as number;
    entities[i * 5 + 4] = world.mode[i] as number;
    if (world.kind[i] === KIND_PLAYER && world.mode[i] === MODE_OWNED) players.push(world.id[i] as number);
  }
  const b = engine.rules.bounds;
  const bounds = { minX: b.minX, minY: b.minY, maxX: b.maxX, maxY: b.maxY };
  const r = engine.region;
  const region = { minX: r.minX, minY: r.minY, maxX: r.maxX, maxY: r.maxY };
  const held = sharding?.inFlight.held ?? [];
  const state: ViewerState = { tick: engine.tick, shard, bounds, region, aoiRadius: engine.aoiRadius, entities, held, players };
  const slot = focusId === undefined ? -1 : world.indexOf(focusId);
  if (focusId !== undefined && slot >= 0) {
    const out = new Int32Array(4096);
    const n = engine.grid.queryRadius(world.x[slot] as number, world.y[slot] as number, engine.aoiRadius, out, slot);
    const visible = Array.from(out.subarray(0, n), (s) => world.id[s] as number);
    state.focus = { id: focusId, x: world.x[slot] as number, y: world.y[slot] as number, visible };
  }
  return state;
}
