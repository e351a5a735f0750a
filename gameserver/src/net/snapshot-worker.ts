// A snapshot thread (see SnapshotThread): cuts the snapshots of its sessions each round, and writes
// each to its socket itself when the tick thread gave it the socket's descriptor.
import { writeSync } from 'node:fs';
import { GCProfiler } from 'node:v8';
import { parentPort, workerData } from 'node:worker_threads';
import { frameHeaderLength, writeFrameHeader } from '@aethex/runtime/ws-frames';
import { Grid } from '../spatial/grid.js';
import { DeltaHistory, QuantizedWorld } from './delta-history.js';
import {
  CLAIM_FREE,
  CLAIM_THREAD,
  CTL_BUSY_US,
  CTL_CAPPED,
  CTL_CUT,
  CTL_CUT_ALL,
  CTL_DONE,
  CTL_ENDED,
  CTL_GO,
  CTL_GRID_COUNT,
  CTL_JOBS,
  CTL_PROGRESS,
  CTL_QUANTIZE,
  CTL_QUANTIZED,
  CTL_READY,
  CTL_STOP,
  CTL_TICK,
  CTL_WORLD_COUNT,
  CTL_WRITE_LOCK,
  type GcReport,
  JOB_WORDS,
  RESULT_WORDS,
  SnapshotCutter,
  type ThreadInit,
  WorldView,
  WRITE_LOCK_FREE,
  WRITE_LOCK_HELD,
} from './snapshot-threads.js';

const init = workerData as ThreadInit;
const grid = new Grid(init.grid.area, init.grid.cellSize, init.grid.capacity, Number.MAX_SAFE_INTEGER, init.grid);
const quantized = new QuantizedWorld(init.quantized.capacity, init.quantized);
const world = new WorldView(init.world);
quantized.world = world;
const { ctl, jobs, ended, results, claims, arena } = init;
const sessions = new Map<number, DeltaHistory>();
const spare: DeltaHistory[] = [];

// Each message is allocated behind room for its WebSocket frame header, written here: the frame is
// then one contiguous run of the arena, for one write.
let used = 0;
let frameStart = 0;
const alloc = (size: number): Uint8Array => {
  const header = frameHeaderLength(size);
  if (used + header + size > arena.length) return new Uint8Array(size); // does not fit: reported as -1
  frameStart = used;
  writeFrameHeader(arena, used, size);
  const out = arena.subarray(used + header, used + header + size);
  used += header + size;
  return out;
};

/**
 * Writes what the kernel takes of `length` bytes at `offset` to `fd`, under the write lock; 0 when
 * it takes nothing (its buffer is full) or the write fails: the tick thread then sends the frame
 * (or its rest) through the socket's stream, which reports failures as usual. -1 when the tick
 * thread has closed the lock (it stopped waiting for this thread): nothing may be written again.
 */
function writeFrame(fd: number, offset: number, length: number): number {
  if (Atomics.compareExchange(ctl, CTL_WRITE_LOCK, WRITE_LOCK_FREE, WRITE_LOCK_HELD) !== WRITE_LOCK_FREE) return -1;
  try {
    return writeSync(fd, arena, offset, length);
  } catch {
    return 0;
  }
}
const cutter = new SnapshotCutter(grid, quantized, init.radius, init.maxVisible, alloc);

/** Runs round `round`: cuts every job, then writes them in order until one is found stolen. */
function runRound(round: number): void {
  // Ticks are uint32 (the protocol's); the control words are int32 for Atomics.
  const tick = (ctl[CTL_TICK] as number) >>> 0;
  world.attach(tick, ctl[CTL_WORLD_COUNT] as number);
  grid.attachCount(ctl[CTL_GRID_COUNT] as number);
  for (let e = 0; e < (ctl[CTL_ENDED] as number); e++) {
    const history = sessions.get(ended[e] as number);
    if (!history) continue;
    sessions.delete(ended[e] as number);
    if (spare.length < 64) spare.push(history);
  }
  used = 0;
  cutter.capped = 0;
  const n = ctl[CTL_JOBS] as number;
  for (let j = 0; j < n; j++) {
    const o = j * JOB_WORDS;
    const id = jobs[o] as number;
    let history = sessions.get(id);
    if (!history || jobs[o + 3] === 1) {
      history = spare.pop() ?? new DeltaHistory(init.maxVisible);
      history.reset();
      sessions.set(id, history);
    }
    const bytes = cutter.cut(history, jobs[o + 1] as number, tick, (jobs[o + 2] as number) >>> 0);
    const fits = bytes.buffer === arena.buffer;
    const r = j * RESULT_WORDS;
    results[r] = frameStart;
    results[r + 1] = fits ? bytes.byteOffset + bytes.length - frameStart : -1;
    results[r + 2] = 0;
  }
  Atomics.store(ctl, CTL_CAPPED, cutter.capped);
  // Cutting is the cheap part (~1 µs a job); a write costs several. From here the tick thread, once
  // its own snapshots are sent, writes the last jobs while this thread writes the first: a round
  // ends as soon as both threads together have written it, even when one of them is descheduled.
  Atomics.store(ctl, CTL_CUT_ALL, round);
  Atomics.notify(ctl, CTL_PROGRESS);
  for (let j = 0; j < n; j++) {
    // Stolen: this job and every one after it are the tick thread's.
    if (Atomics.compareExchange(claims, j, CLAIM_FREE, CLAIM_THREAD) !== CLAIM_FREE) break;
    const r = j * RESULT_WORDS;
    const length = results[r + 1] as number;
    const fd = jobs[j * JOB_WORDS + 4] as number;
    const direct = length >= 0 && fd >= 0;
    const written = direct ? writeFrame(fd, results[r] as number, length) : 0;
    results[r + 2] = Math.max(0, written);
    // The tick thread sends (the rest of) finished frames while later ones are written. A written
    // job is reported before the lock is let go, so that a tick thread that closes the lock knows
    // of every frame this thread began to write.
    Atomics.store(ctl, CTL_PROGRESS, j + 1);
    if (written >= 0 && direct) Atomics.store(ctl, CTL_WRITE_LOCK, WRITE_LOCK_FREE);
    if ((j & 15) === 15 || j === n - 1) Atomics.notify(ctl, CTL_PROGRESS);
  }
  Atomics.notify(ctl, CTL_PROGRESS);
}

// This thread's garbage-collection pauses lengthen the ticks that wait on its rounds, as the tick
// thread's own do. Its event loop never turns (it blocks in Atomics.wait), so no PerformanceObserver
// would ever be called here: V8's GC profiler records each pause synchronously, and after each round
// (~20 µs to read and restart it) the pauses go to the tick thread, for the shard's metrics.
const gcProfiler = new GCProfiler();
gcProfiler.start();

function reportGc(): void {
  const { statistics } = gcProfiler.stop();
  gcProfiler.start();
  if (statistics.length === 0) return;
  const report: GcReport = { gc: statistics.map((e) => [e.gcType, e.cost / 1000]) };
  parentPort?.postMessage(report);
}

// Rounds start only after this (the tick thread gives sessions to ready threads only).
let seen = Atomics.load(ctl, CTL_GO);
Atomics.store(ctl, CTL_READY, 1);
parentPort?.postMessage('ready');
rounds: for (;;) {
  Atomics.wait(ctl, CTL_GO, seen);
  seen = Atomics.load(ctl, CTL_GO);
  if (Atomics.load(ctl, CTL_STOP) === 1) break;
  if (ctl[CTL_QUANTIZE] === 1) {
    const tick = (ctl[CTL_TICK] as number) >>> 0;
    world.attach(tick, ctl[CTL_WORLD_COUNT] as number);
    quantized.update(world, init.quanta, tick);
  }
  Atomics.store(ctl, CTL_QUANTIZED, seen);
  Atomics.notify(ctl, CTL_QUANTIZED);
  // Meanwhile the tick thread rebuilds the grid and writes the jobs.
  for (;;) {
    const cut = Atomics.load(ctl, CTL_CUT);
    if (Atomics.load(ctl, CTL_STOP) === 1) break rounds;
    if (cut === seen) break;
    Atomics.wait(ctl, CTL_CUT, cut);
  }
  const started = performance.now();
  runRound(seen);
  Atomics.store(ctl, CTL_BUSY_US, Math.round((performance.now() - started) * 1000));
  Atomics.store(ctl, CTL_DONE, seen);
  Atomics.notify(ctl, CTL_DONE);
  reportGc();
}
