import type { ShardEngine } from '../engine.js';
import type { Sharding } from '../sharding/sharding.js';
import { KIND_PLAYER, MODE_OWNED } from '../sim/world.js';
import type { Interest } from '../spatial/aoi.js';

/** What the viewer draws, as plain JSON: compact, positions rounded to 0.1 units. */
export interface ViewerState {
  tick: number;
  shard: string;
  bounds: { minX: number; minY: number; maxX: number; maxY: number };
  region: { minX: number; minY: number; maxX: number; maxY: number };
  aoiRadius: number;
  /** Entities in the world, of which `entities` lists the first ops.viewer_max_entities. */
  entityCount: number;
  /**
   * Flat [x, y, kind, id, mode, …] per entity, at most ops.viewer_max_entities of them; mode is
   * MODE_* (0 owned, 1 ghost of a neighbour's, 2 on offer in a handoff, 3 dormant).
   */
  entities: number[];
  /** Entities a neighbour offered here and that wait for the commit or the client's resume. */
  held: number[];
  /** Player entities owned here: their ids, for choosing whose area of interest to show. */
  players: number[];
}

/** A player's area of interest: their entity and the ids their client is sent (their own first). */
export interface ViewerFocus {
  id: number;
  x: number;
  y: number;
  visible: number[];
}

/** Builds the viewer's picture of the engine, listing at most `maxEntities` entities. */
export function viewerState(engine: ShardEngine, shard: string, maxEntities: number, sharding?: Sharding): ViewerState {
  const { world } = engine;
  const listed = Math.min(world.count, maxEntities);
  const entities: number[] = new Array(listed * 5);
  const players: number[] = [];
  for (let i = 0; i < world.count; i++) {
    if (i < listed) {
      entities[i * 5] = Math.round((world.x[i] as number) * 10) / 10;
      entities[i * 5 + 1] = Math.round((world.y[i] as number) * 10) / 10;
      entities[i * 5 + 2] = world.kind[i] as number;
      entities[i * 5 + 3] = world.id[i] as number;
      entities[i * 5 + 4] = world.mode[i] as number;
    }
    if (world.kind[i] === KIND_PLAYER && world.mode[i] === MODE_OWNED) players.push(world.id[i] as number);
  }
  const b = engine.rules.bounds;
  const bounds = { minX: b.minX, minY: b.minY, maxX: b.maxX, maxY: b.maxY };
  const r = engine.region;
  const region = { minX: r.minX, minY: r.minY, maxX: r.maxX, maxY: r.maxY };
  const held = sharding?.inFlight.held ?? [];
  return { tick: engine.tick, shard, bounds, region, aoiRadius: engine.aoiRadius, entityCount: world.count, entities, held, players };
}

/**
 * The area of interest of player entity `id`, computed as a snapshot's is (`Interest`: the
 * engine.max_visible cap, dormant entities left out) over the world as it is now, or undefined
 * when `id` is no player here.
 */
export function viewerFocus(engine: ShardEngine, interest: Interest, id: number): ViewerFocus | undefined {
  const { world } = engine;
  const slot = world.indexOf(id);
  // A neighbour's ghost or a player on offer is no player here (their areas are the owner's to show).
  if (slot < 0 || world.kind[slot] !== KIND_PLAYER || world.mode[slot] !== MODE_OWNED) return undefined;
  const x = world.x[slot] as number;
  const y = world.y[slot] as number;
  interest.update(engine.currentGrid(), world, x, y, engine.aoiRadius, slot);
  return { id, x, y, visible: Array.from(interest.ids.subarray(0, interest.count)) };
}
