import { crc32 } from 'node:zlib';
import { unprintableAt } from '@aethex/runtime';
import { KIND_PLAYER, MAX_GAME_STATE_BYTES, MODE_DORMANT, MODE_GHOST, World } from '../sim/world.js';

/**
 * Format version of the state blob this build writes: version 2's layout (game states) with a
 * checksum in the header (see `stateChecksum`; version 3), and in the player map each player
 * entity's count of owner changes where it has one (`World.handoffs`: [entity, player, count]).
 * This build reads it and the three before it — 3 (no counts), 2 and 1, which have no checksum (1: no
 * game states, 2: game states) — so a rolling upgrade restores the snapshots the previous build
 * wrote; a blob of any other version is refused, never guessed at.
 */
export const STATE_VERSION = 4;
const MAGIC = 0x41455853; // "AEXS"
/** Where a version-3 (or later) header holds its checksum: after magic, version, tick, nextEntityId, count, capacity and the two lengths. */
const CHECKSUM_AT = 32;
const HEADER_BYTES = CHECKSUM_AT + 4;

/**
 * The checksum of a version-3 or -4 blob: zlib's CRC-32 of all its bytes but the 4 of the checksum
 * itself, header included. It detects corruption (a bit flip, a torn or cut-short write in the
 * store), not tampering: anyone who can change the blob can compute a new one.
 */
export function stateChecksum(blob: Uint8Array): number {
  return crc32(blob.subarray(HEADER_BYTES), crc32(blob.subarray(0, CHECKSUM_AT)));
}

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
 * each has a game state (`npm run bench:shard`, "State snapshot"). Written in version 4: the
 * version-2 layout (id, length and bytes appended for each entity that has a game state) with a
 * checksum in the header, which is left 0 here and computed off the tick by `assembleState`, and
 * the players' counts of owner changes in the player map.
 */
export function captureState(tick: number, world: World, players: ReadonlyMap<number, string>): CapturedState {
  // Ghosts are the neighbours' to persist. Without any, the arrays are copied whole.
  const mode = world.mode;
  let ghosts = 0;
  for (let i = 0; i < world.count; i++) if (mode[i] === MODE_GHOST) ghosts++;
  const n = world.count - ghosts;
  // With its count of owner changes: a neighbour's copy from an earlier handoff is told apart from
  // the entity this snapshot holds after it (Sharding's `custodyAction`).
  const entries = [...players].map(([entityId, playerId]) => {
    const changes = world.handoffs.get(entityId);
    return changes ? [entityId, playerId, changes] : [entityId, playerId];
  });
  const playersJson = new TextEncoder().encode(JSON.stringify(entries));
  // A ghost has no game state here (its owner keeps it), so every state is an entity's in the blob.
  const states = [...world.gameState];
  let statesLength = 0;
  for (const [, state] of states) statesLength += 8 + state.length;
  // Header: magic, version, tick, nextEntityId, count, capacity, players length, states length,
  // checksum (9 × u32; the checksum is filled in by `assembleState` or `encodeState`).
  const fields = [MAGIC, STATE_VERSION, tick, world.nextEntityId, n, world.capacity, playersJson.length, statesLength, 0];
  const header = HEADER_BYTES;
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

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

/**
 * The blob of a captured state, its checksum in. The game states are copied, and all of it
 * checksummed, at most about `chunkBytes` at a time, each chunk in its own turn of the event loop,
 * so ticks run between the chunks of even a 40 MB blob (10,000 states of 4 KiB; its CRC-32 alone
 * takes about 9 ms, 1 MB of it 0.2 ms).
 */
export async function assembleState(captured: CapturedState, chunkBytes = 1 << 20): Promise<Uint8Array> {
  // Not a byte on the caller's turn (the tick): an async function runs until its first await.
  await nextTurn();
  const { head, states } = captured;
  // Without game states the head is the whole blob (only the checksum is still to come).
  const out = states.length === 0 ? head : new Uint8Array(captured.size);
  if (out !== head) out.set(head);
  let crc = crc32(out.subarray(0, CHECKSUM_AT));
  for (let at = HEADER_BYTES; at < head.length; ) {
    const end = Math.min(head.length, at + chunkBytes);
    crc = crc32(out.subarray(at, end), crc);
    at = end;
    if (at < head.length) await nextTurn();
  }
  let off = head.length;
  let k = 0;
  while (k < states.length) {
    const from = off;
    [off, k] = copyStates(states, k, out, off, chunkBytes);
    crc = crc32(out.subarray(from, off), crc);
    if (k < states.length) await nextTurn();
  }
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(CHECKSUM_AT, crc, true);
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
  let out = captured.head;
  if (captured.states.length > 0) {
    out = new Uint8Array(captured.size);
    out.set(captured.head);
    copyStates(captured.states, 0, out, captured.head.length, Number.POSITIVE_INFINITY);
  }
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(CHECKSUM_AT, stateChecksum(out), true);
  return out;
}

/** Thrown for a blob that is truncated, of another format or another version, or corrupted. */
export class StateFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateFormatError';
  }
}

/** A version-3 or -4 blob whose bytes are not those it was written with: its checksum does not match. */
export class StateChecksumError extends StateFormatError {
  constructor(
    readonly stored: number,
    readonly computed: number,
    length: number,
  ) {
    const hex = (v: number) => `0x${v.toString(16).padStart(8, '0')}`;
    super(
      `state blob checksum mismatch (stored CRC-32 ${hex(stored)}, computed ${hex(computed)} over its ${length} bytes): it was corrupted or cut short in the store`,
    );
    this.name = 'StateChecksumError';
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
function checkedPlayers(
  entries: unknown[],
  ids: Uint32Array,
  kinds: Uint16Array,
  withChanges: boolean,
): { players: Map<number, string>; changes: Map<number, number> } {
  const playerEntities = new Set<number>();
  for (let i = 0; i < ids.length; i++) if (kinds[i] === KIND_PLAYER) playerEntities.add(ids[i] as number);
  const players = new Map<number, string>();
  const changes = new Map<number, number>();
  const taken = new Set<string>();
  for (const [n, entry] of entries.entries()) {
    const refuse = (why: string): never => {
      const shown = JSON.stringify(entry) ?? String(entry);
      throw new StateFormatError(
        `state blob has a bad player map entry ${n} (${shown.length > 200 ? `${shown.slice(0, 200)}…` : shown}): ${why}`,
      );
    };
    if (!Array.isArray(entry) || (entry.length !== 2 && !(withChanges && entry.length === 3)))
      refuse(
        withChanges ? 'not an [entity id, player id] pair or [entity id, player id, owner changes]' : 'not an [entity id, player id] pair',
      );
    const [entityId, playerId, count] = entry as [unknown, unknown, unknown];
    if (typeof entityId !== 'number' || !playerEntities.has(entityId)) return refuse('its entity is not a player entity of the blob');
    if (players.has(entityId)) refuse(`entity ${entityId} is in the map twice`);
    if (typeof playerId !== 'string' || playerId.length === 0 || playerId.length > MAX_PLAYER_ID)
      return refuse(`the player id is not a string of 1–${MAX_PLAYER_ID} characters`);
    const bad = unprintableAt(playerId);
    if (bad !== undefined) refuse(`the player id has a control character or a lone surrogate at position ${bad}`);
    if (taken.has(playerId)) refuse(`player ${JSON.stringify(playerId)} is in the map twice`);
    if (count !== undefined) {
      if (typeof count !== 'number' || !Number.isInteger(count) || count < 1 || count > 0xffff_ffff)
        refuse('its count of owner changes is not a whole number of 1 or more');
      changes.set(entityId, count as number);
    }
    taken.add(playerId);
    players.set(entityId, playerId);
  }
  return { players, changes };
}

/**
 * Rebuilds a world from a blob into a world of `capacity` (the current configuration, which may
 * differ from the one that saved it). Throws StateFormatError on a bad blob (StateChecksumError,
 * checked before anything else is read, on a version-3 or -4 blob whose checksum does not match), and a
 * RangeError when the saved entities do not fit the capacity. The world hands out ids of the
 * shard's range [`idFirst`, `idLimit`), numbering on past the snapshot's counter.
 */
export function decodeState(blob: Uint8Array, capacity: number, idLimit?: number, idFirst = 1): ShardState {
  if (blob.length < 28) throw new StateFormatError(`state blob of ${blob.length} bytes is truncated`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const [magic, version] = [view.getUint32(0, true), view.getUint32(4, true)];
  if (magic !== MAGIC) throw new StateFormatError('not a shard state blob');
  if (version < 1 || version > STATE_VERSION)
    throw new StateFormatError(`state blob version ${version} is not supported (this build reads 1 to ${STATE_VERSION})`);
  // Version 1 has no game states (and no length of them in its header); versions 1 and 2 have no checksum.
  const header = version === 1 ? 28 : version === 2 ? 32 : HEADER_BYTES;
  if (blob.length < header) throw new StateFormatError(`state blob of ${blob.length} bytes is truncated`);
  if (version >= 3) {
    const stored = view.getUint32(CHECKSUM_AT, true);
    const computed = stateChecksum(blob);
    if (stored !== computed) throw new StateChecksumError(stored, computed, blob.length);
  }
  const [tick, nextId, n, , playersLen, statesLen = 0] = Array.from({ length: version === 1 ? 5 : 6 }, (_, i) =>
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
  const { players, changes } = checkedPlayers(entries, id, kind, version >= 4);
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
  const world = new World(capacity, idFirst, limit, (nextId as number) + RESTORE_ID_MARGIN);
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
  for (const [entityId, count] of changes) world.handoffs.set(entityId, count);
  return { tick: tick as number, world, players };
}
