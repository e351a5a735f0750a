import { percentile } from '@aethex/runtime';
import { assembleState, captureState } from '../src/persist/state-codec.js';
import { KIND_NPC, KIND_PLAYER, World } from '../src/sim/world.js';

export interface StateSnapshotCase {
  entities: number;
  /** Entities with game state, and the bytes of each. */
  states: number;
  stateBytes: number;
  samples: number;
}

export interface StateSnapshotResult {
  entities: number;
  states: number;
  state_bytes: number;
  blob_mb: number;
  /** On the tick: `captureState` (typed arrays, player map, references to the states). */
  capture_ms: { p50: number; p99: number; max: number };
  /** Off the tick: the longest event-loop turn `assembleState` took, and all of its turns together. */
  assemble_turn_max_ms: number;
  assemble_total_ms: { p50: number; max: number };
}

const round = (v: number) => Math.round(v * 1000) / 1000;

/**
 * What a periodic snapshot of the shard's state costs: taking it on the tick, and assembling the
 * game states into the blob off it, one chunk per event-loop turn. The turns are timed by a
 * setImmediate chain running beside the assembly: the longest gap between its callbacks is the
 * longest a tick could have had to wait.
 */
export async function runStateSnapshot(c: StateSnapshotCase): Promise<StateSnapshotResult> {
  const world = new World(c.entities);
  const players = new Map<number, string>();
  for (let i = 0; i < c.entities; i++) {
    const kind = i < c.states ? KIND_PLAYER : KIND_NPC;
    const id = world.spawn((i % 1000) * 2, Math.floor(i / 1000) * 2, kind);
    if (kind === KIND_PLAYER) players.set(id, `player-${i}`);
    if (i < c.states) world.gameState.set(id, new Uint8Array(c.stateBytes).fill(i & 0xff));
  }
  const capture: number[] = [];
  const total: number[] = [];
  let turnMax = 0;
  let size = 0;
  for (let s = 0; s < c.samples + 3; s++) {
    // A shard snapshots every few seconds, not back to back: the previous blob's garbage is given
    // time to be collected, as it would be, instead of landing in this sample.
    await new Promise((resolve) => setTimeout(resolve, 50));
    const t0 = performance.now();
    const captured = captureState(s, world, players);
    const t1 = performance.now();
    let last = performance.now();
    let longest = 0;
    let running = true;
    const watch = () => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (running) setImmediate(watch);
    };
    setImmediate(watch);
    const t2 = performance.now();
    const blob = await assembleState(captured);
    const t3 = performance.now();
    running = false;
    longest = Math.max(longest, t3 - last);
    size = blob.length;
    // The first samples warm the code up.
    if (s < 3) continue;
    capture.push(t1 - t0);
    total.push(t3 - t2);
    turnMax = Math.max(turnMax, longest);
  }
  capture.sort((a, b) => a - b);
  total.sort((a, b) => a - b);
  return {
    entities: c.entities,
    states: c.states,
    state_bytes: c.stateBytes,
    blob_mb: round(size / 2 ** 20),
    capture_ms: { p50: round(percentile(capture, 50)), p99: round(percentile(capture, 99)), max: round(capture.at(-1) as number) },
    assemble_turn_max_ms: round(turnMax),
    assemble_total_ms: { p50: round(percentile(total, 50)), max: round(total.at(-1) as number) },
  };
}
