import { unprintableAt } from '@aethex/runtime';
import { KIND_PLAYER, MAX_GAME_STATE_BYTES, MODE_DORMANT, MODE_GHOST, World } from '../sim/world.js';

/**
 * Format version of the state blob with game states; without any, version 1 is written (see
 * `captureState`). This build reads both; a blob of any other version is refused, never guessed at.
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
  /**
   * How long the state lay in the store before this restore, in ms (the shard sets it from when
   * the store took the snapshot): its players' entities stood still that long, and the inputs their
   * clients held meanwhile may be caught up on (see ShardEngine.join).
   */
  storedMs?: number;
}

/**
 * A state blob taken on the tick: `head` holds everything but the game states — a header, each
 * typed array copied whole (no per-entity objects), the player map as JSON — and `states`
 * references the entities' game states, copied in by `assembleState` off the tick. They need no
 * copy now: the engine never changes a stored state in place (`setState` replaces it).
 */
export interface CapturedState {
  head: Uint8Array;
  states: [entityId: number, state: Uint8Array][];
  /** The whole blob's length. */
  size: number;
}

/**
 * Takes the world's persistent state, on the tick: about 0.3 ms at 10,000 entities, 2.3 ms when
 * each has a game state (`npm run bench:shard`, "State snapshot"). Without
 * game states it is written in version 1 (exactly what builds before them wrote, so a rollback to
 * one still restores it); with them in version 2, which appends id, length and bytes for each
 * entity that has one.
 */
export function captureState(tick: number, world: World, players: ReadonlyMap<number, string>): CapturedState {
  // Ghosts are the neighbours' to persist. Without any, the arrays are copied whole.
  const mode = world.mode;
  let ghosts = 0;
  for (let i = 0; i < world.count; i++) if (mode[i] === MODE_GHOST) ghosts++;
  const n = world.count - ghosts;
  const playersJson = new TextEncoder().encode(JSON.stringify([...players]));
  // A ghost has no game state here (its owner keeps it), so every state is an entity's in the blob.
  const states = [...world.gameState];
  let statesLength = 0;
  for (const [, state] of states) statesLength += 8 + state.length;
  const version = states.length > 0 ? STATE_VERSION : 1;
  // Header: magic, version, tick, nextEntityId, count, capacity, players length (7 × u32), and in
  // version 2 the states' length.
  const fields = [MAGIC, version, tick, world.nextEntityId, n, world.capacity, playersJson.length];
  if (version === STATE_VERSION) fields.push(statesLength);
  const header = fields.length * 4;
  const headLength = header + n * (4 + 4 + 4 + 4 + 4 + 4 + 4 + 2) + playersJson.length;
  const buf = new Uint8Array(headLength);
  const view = new DataView(buf.buffer);
  fields.forEach((v, i) => {
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
  return { head: buf, states, size: headLength + statesLength };
}

/**
 * The blob of a captured state. The game states are copied at most about `chunkBytes` at a time,
 * each chunk in its own turn of the event loop, so ticks run between the chunks of even a 40 MB
 * blob (10,000 states of 4 KiB).
 */
export async function assembleState(captured: CapturedState, chunkBytes = 1 << 20): Promise<Uint8Array> {
  if (captured.states.length === 0) return captured.head;
  // Not a byte on the caller's turn (the tick): an async function runs until its first await.
  await new Promise((resolve) => setImmediate(resolve));
  const out = new Uint8Array(captured.size);
  out.set(captured.head);
  let off = captured.head.length;
  let k = 0;
  while (k < captured.states.length) {
    [off, k] = copyStates(captured.states, k, out, off, chunkBytes);
    if (k < captured.states.length) await new Promise((resolve) => setImmediate(resolve));
  }
  return out;
}

/** Copies states from index `k` into `out` at `off` until about `budget` bytes went; returns where it stopped. */
function copyStates(states: CapturedState['states'], k: number, out: Uint8Array, off: number, budget: number): [number, number] {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const end = off + budget;
  while (k < states.length && off < end) {
    const [entityId, state] = states[k++] as [number, Uint8Array];
    view.setUint32(off, entityId, true);
    view.setUint32(off + 4, state.length, true);
    out.set(state, off + 8);
    off += 8 + state.length;
  }
  return [off, k];
}

/** The whole blob at once (tools and tests; the shard assembles off the tick: `assembleState`). */
export function encodeState(tick: number, world: World, players: ReadonlyMap<number, string>): Uint8Array {
  const captured = captureState(tick, world, players);
  if (captured.states.length === 0) return captured.head;
  const out = new Uint8Array(captured.size);
  out.set(captured.head);
  copyStates(captured.states, 0, out, captured.head.length, Number.POSITIVE_INFINITY);
  return out;
}

/** Thrown for a blob that is truncated, of another format or another version. */
export class StateFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

/** A player id holds at most this many characters (as a join token's `sub`). */
const MAX_PLAYER_ID = 128;

/**
 * The player map of a blob, every entry checked: a player entity the blob holds, each once, for a
 * player id of 1–128 characters without control characters, each once. One entry amiss would put a
 * player on the wrong entity or poison the outbox and presence (a NULL or a NUL in a player id), so
 * the blob is refused, naming the entry.
 */
function checkedPlayers(entries: unknown[], ids: Uint32Array, kinds: Uint16Array): Map<number, string> {
  const playerEntities = new Set<number>();
  for (let i = 0; i < ids.length; i++) if (kinds[i] === KIND_PLAYER) playerEntities.add(ids[i] as number);
  const players = new Map<number, string>();
  const taken = new Set<string>();
  for (const [n, entry] of entries.entries()) {
    const refuse = (why: string): never => {
      const shown = JSON.stringify(entry) ?? String(entry);
      throw new StateFormatError(
        `state blob has a bad player map entry ${n} (${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}): ${why}`,
      );
    };
    if (!Array.isArray(entry) || entry.length !== 2) refuse('not an [entity id, player id] pair');
    const [entityId, playerId] = entry as [unknown, unknown];
    if (typeof entityId !== 'number' || !playerEntities.has(entityId)) return refuse('its entity is not a player entity of the blob');
    if (players.has(entityId)) refuse(`entity ${entityId} is in the map twice`);
    if (typeof playerId !== 'string' || playerId.length === 0 || playerId.length > MAX_PLAYER_ID)
      return refuse(`the player id is not a string of 1–${MAX_PLAYER_ID} characters`);
    const bad = unprintableAt(playerId);
    if (bad !== undefined) refuse(`the player id has a control character or a lone surrogate at position ${bad}`);
    if (taken.has(playerId)) refuse(`player ${JSON.stringify(playerId)} is in the map twice`);
    taken.add(playerId);
    players.set(entityId, playerId);
  }
  return players;
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
  let entries: unknown;
  try {
    entries = JSON.parse(new TextDecoder().decode(blob.subarray(off, off + (playersLen as number))));
  } catch {
    throw new StateFormatError('state blob has a malformed player map');
  }
  if (!Array.isArray(entries)) throw new StateFormatError('state blob has a malformed player map');
  const players = checkedPlayers(entries, id, kind);
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
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(x[i]) || !Number.isFinite(y[i]) || !Number.isFinite(vx[i]) || !Number.isFinite(vy[i]))
      throw new StateFormatError(`state blob has entity ${id[i]} at a position or velocity that is not a number`);
  }
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
