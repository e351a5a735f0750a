import { KIND_PLAYER, MAX_GAME_STATE_BYTES, MODE_DORMANT, MODE_GHOST, World } from '../sim/world.js';

/**
 * Format version of the state blob this build writes. It reads this one and version 1 (before
 * game state was kept); a blob of any other version is refused, never guessed at.
 */
export const STATE_VERSION = 2;
const MAGIC = 0x41455853; // "AEXS"
/** Ids skipped on a restore: see `decodeState`. */
export const RESTORE_ID_MARGIN = 4096;

/** A shard's persistent state: its entities, the tick, and which player owns which entity. */
export interface ShardState {
  tick: number;
  world: World;
  /** entity id → player id, for players whose entity should be theirs again when they rejoin. */
  players: Map<number, string>;
}

/**
 * Serializes the world into one binary blob: a header, then each typed array copied whole (no
 * per-entity objects), then the player map as JSON, then the entities' game states (id, length,
 * bytes each; only entities that have one). Built on the tick in well under a millisecond
 * at 10,000 entities; writing it happens elsewhere, off the tick.
 */
export function encodeState(tick: number, world: World, players: ReadonlyMap<number, string>): Uint8Array {
  // Ghosts are the neighbours' to persist. Without any, the arrays are copied whole.
  const mode = world.mode;
  let ghosts = 0;
  for (let i = 0; i < world.count; i++) if (mode[i] === MODE_GHOST) ghosts++;
  const n = world.count - ghosts;
  const playersJson = new TextEncoder().encode(JSON.stringify([...players]));
  // A ghost has no game state here (its owner keeps it), so every state is an entity's in the blob.
  let statesLength = 0;
  for (const state of world.gameState.values()) statesLength += 8 + state.length;
  // Header: magic, version, tick, nextEntityId, count, capacity, players length, states length (8 × u32).
  const header = 8 * 4;
  const size = header + n * (4 + 4 + 4 + 4 + 4 + 4 + 4 + 2) + playersJson.length + statesLength;
  const buf = new Uint8Array(size);
  const view = new DataView(buf.buffer);
  [MAGIC, STATE_VERSION, tick, world.nextEntityId, n, world.capacity, playersJson.length, statesLength].forEach((v, i) => {
    view.setUint32(i * 4, v, true);
  });
  let off = header;
  const copy = (arr: Uint32Array | Float32Array | Uint16Array) => {
    if (ghosts === 0) {
      buf.set(new Uint8Array(arr.buffer, arr.byteOffset, n * arr.BYTES_PER_ELEMENT), off);
    } else {
      // Every section starts at a multiple of 4 bytes, so a view of the same type fits here.
      const out = new (arr.constructor as Uint32ArrayConstructor)(buf.buffer, off, n) as typeof arr;
      let k = 0;
      for (let i = 0; i < world.count; i++) if (mode[i] !== MODE_GHOST) out[k++] = arr[i] as number;
    }
    off += n * arr.BYTES_PER_ELEMENT;
  };
  copy(world.id);
  copy(world.x);
  copy(world.y);
  copy(world.vx);
  copy(world.vy);
  copy(world.flags);
  copy(world.lastSeq);
  copy(world.kind);
  buf.set(playersJson, off);
  off += playersJson.length;
  for (const [entityId, state] of world.gameState) {
    view.setUint32(off, entityId, true);
    view.setUint32(off + 4, state.length, true);
    buf.set(state, off + 8);
    off += 8 + state.length;
  }
  return buf;
}

/** Thrown for a blob that is truncated, of another format or another version. */
export class StateFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

/**
 * Rebuilds a world from a blob into a world of `capacity` (the current configuration, which may
 * differ from the one that saved it). Throws StateFormatError on a bad blob, and a RangeError when
 * the saved entities do not fit the capacity.
 */
export function decodeState(blob: Uint8Array, capacity: number, idLimit?: number): ShardState {
  if (blob.length < 28) throw new StateFormatError(`state blob of ${blob.length} bytes is truncated`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const [magic, version] = [view.getUint32(0, true), view.getUint32(4, true)];
  if (magic !== MAGIC) throw new StateFormatError('not a shard state blob');
  if (version !== 1 && version !== STATE_VERSION)
    throw new StateFormatError(`state blob version ${version} is not supported (this build reads 1 and ${STATE_VERSION})`);
  // Version 1 has no game states (and no length of them in its header).
  const header = version === 1 ? 28 : 32;
  if (blob.length < header) throw new StateFormatError(`state blob of ${blob.length} bytes is truncated`);
  const [tick, nextId, n, , playersLen, statesLen = 0] = Array.from({ length: header / 4 - 2 }, (_, i) =>
    view.getUint32(8 + i * 4, true),
  ) as number[];
  const count = n as number;
  const expected = header + count * 30 + (playersLen as number) + statesLen;
  if (blob.length !== expected) throw new StateFormatError(`state blob is ${blob.length} bytes, its header says ${expected}`);
  if (count > capacity) throw new RangeError(`the saved state holds ${count} entities, more than engine.max_entities (${capacity})`);
  let off = header;
  // Copy into aligned buffers: the blob's offsets need not be aligned for typed-array views (and a
  // Buffer's `slice` would be a view, not a copy).
  const take = <T>(bytesPer: number, make: (b: ArrayBuffer) => T): T => {
    const bytes = new Uint8Array(blob.subarray(off, off + count * bytesPer));
    off += count * bytesPer;
    return make(bytes.buffer);
  };
  const id = take(4, (b) => new Uint32Array(b));
  const x = take(4, (b) => new Float32Array(b));
  const y = take(4, (b) => new Float32Array(b));
  const vx = take(4, (b) => new Float32Array(b));
  const vy = take(4, (b) => new Float32Array(b));
  const flags = take(4, (b) => new Uint32Array(b));
  const lastSeq = take(4, (b) => new Uint32Array(b));
  const kind = take(2, (b) => new Uint16Array(b));
  let players: Map<number, string>;
  try {
    players = new Map(JSON.parse(new TextDecoder().decode(blob.subarray(off, off + (playersLen as number)))) as [number, string][]);
  } catch {
    throw new StateFormatError('state blob has a malformed player map');
  }
  off += playersLen as number;
  const states = new Map<number, Uint8Array>();
  while (off < blob.length) {
    if (off + 8 > blob.length) throw new StateFormatError('state blob has a truncated game state');
    const entityId = view.getUint32(off, true);
    const length = view.getUint32(off + 4, true);
    if (length === 0 || length > MAX_GAME_STATE_BYTES || off + 8 + length > blob.length)
      throw new StateFormatError(`state blob has a game state of ${length} bytes for entity ${entityId}`);
    states.set(entityId, new Uint8Array(blob.subarray(off + 8, off + 8 + length)));
    off += 8 + length;
  }
  // Ids handed out after this snapshot was written died with the process — but a player's may live
  // on in a neighbour it was handed to: numbering goes on past a margin (players joining, and
  // game entities while no freed id has rested, in one snapshot interval).
  const limit = idLimit ?? 0x1_0000_0000;
  const world = new World(capacity, Math.min((nextId as number) + RESTORE_ID_MARGIN, limit), limit);
  for (let i = 0; i < count; i++) {
    world.spawn(x[i] as number, y[i] as number, kind[i] as number, id[i] as number);
    world.vx[i] = vx[i] as number;
    world.vy[i] = vy[i] as number;
    world.flags[i] = flags[i] as number;
    world.lastSeq[i] = lastSeq[i] as number;
    // A player's entity waits, unseen, for that player to rejoin here (see MODE_DORMANT).
    if (kind[i] === KIND_PLAYER && players.has(id[i] as number)) world.mode[i] = MODE_DORMANT;
  }
  for (const [entityId, state] of states) {
    if (world.indexOf(entityId) < 0)
      throw new StateFormatError(`state blob has a game state for entity ${entityId}, which it does not hold`);
    world.gameState.set(entityId, state);
  }
  return { tick: tick as number, world, players };
}
