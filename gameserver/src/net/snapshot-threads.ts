import { Worker } from 'node:worker_threads';
import { encodeSnapshotMessage, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import { sharedArray, type WorldShare } from '../sim/world.js';
import { Interest } from '../spatial/aoi.js';
import type { Grid, GridShare, HeldMarks } from '../spatial/grid.js';
import {
  type DeltaHistory,
  DeltaScratch,
  type EntityTable,
  type Quanta,
  type QuantizedShare,
  type QuantizedWorld,
} from './delta-history.js';

/**
 * Cuts clients' snapshots on one thread: per client, its area of interest around its entity, the
 * delta against the frame it acknowledged (from its `DeltaHistory`, the only per-client state) and
 * the `ServerMessage` around it. The tick thread and each snapshot thread have one; the area of
 * interest and the encoder's other working memory are reused from client to client.
 */
export class SnapshotCutter {
  private readonly interest: Interest;
  private readonly scratch: DeltaScratch;
  private readonly writer = new SnapshotBodyWriter(4096);
  /** What the client being cut was last sent, when its view was full (`DeltaHistory.markSent`). */
  private readonly held: HeldMarks;
  /** Snapshots cut whose area of interest held more than maxVisible (the nearest kept): reset by the owner. */
  capped = 0;

  constructor(
    private readonly grid: Grid,
    private readonly q: QuantizedWorld,
    private readonly radius: number,
    maxVisible: number,
    private readonly alloc: (size: number) => Uint8Array,
  ) {
    this.interest = new Interest(maxVisible);
    this.scratch = new DeltaScratch(maxVisible);
    this.held = { marks: q.marks, stamp: 0 };
  }

  /** The snapshot of `tick` for the client whose entity is at `slot` and who acknowledged `ackTick`. */
  cut(history: DeltaHistory, slot: number, tick: number, ackTick: number): Uint8Array {
    const world = this.q.world as EntityTable;
    const { interest, scratch, writer } = this;
    // A crowded client keeps what it was sent unless something clearly nearer comes (`HELD_D2`).
    const held = history.markSent(this.q, this.held) ? this.held : undefined;
    interest.update(this.grid, world, world.x[slot] as number, world.y[slot] as number, this.radius, slot, held);
    if (interest.capped) this.capped++;
    const delta = history.encodeDelta(tick, ackTick, interest, this.q, writer, scratch);
    return encodeSnapshotMessage(
      {
        tick,
        baseTick: delta.baseTick,
        lastInputSeq: world.lastSeq[slot] as number,
        layout: SNAPSHOT_LAYOUT,
        entities: writer.bytes(),
        removed: scratch.removed,
        removedCount: delta.removedCount,
      },
      this.alloc,
    );
  }
}

/**
 * A snapshot thread's view of the shard's world: the shared arrays, the entity count of the tick,
 * and an id → slot map rebuilt (once per tick, only when asked) for entities whose slot moved.
 */
export class WorldView implements EntityTable {
  readonly id: Uint32Array;
  readonly x: Float32Array;
  readonly y: Float32Array;
  readonly mode: Uint8Array;
  readonly kind: Uint16Array;
  readonly flags: Uint32Array;
  readonly lastSeq: Uint32Array;
  count = 0;
  private tick = -1;
  private mapTick = -1;
  private readonly slots = new Map<number, number>();

  constructor(share: WorldShare) {
    this.id = share.id;
    this.x = share.x;
    this.y = share.y;
    this.mode = share.mode;
    this.kind = share.kind;
    this.flags = share.flags;
    this.lastSeq = share.lastSeq;
  }

  attach(tick: number, count: number): void {
    this.tick = tick;
    this.count = count;
  }

  indexOf(entityId: number): number {
    if (this.mapTick !== this.tick) {
      this.slots.clear();
      for (let i = 0; i < this.count; i++) this.slots.set(this.id[i] as number, i);
      this.mapTick = this.tick;
    }
    return this.slots.get(entityId) ?? -1;
  }
}

// Control words (Int32Array over shared memory). A round: the tick thread bumps GO (the thread
// wakes, and quantizes the world if QUANTIZE), sets CUT to the round once the jobs are written,
// and waits for DONE; it waits for QUANTIZED before cutting its own snapshots. The thread cuts
// every job first (CUT_ALL), then writes them in order, claiming each (`claims`): the tick thread,
// once its own are sent, claims and writes the last ones meanwhile (`steal`).
export const CTL_GO = 0; // bumped by the tick thread to start a round
export const CTL_DONE = 1; // set to the round number by the snapshot thread when it is finished
export const CTL_STOP = 2;
export const CTL_TICK = 3;
export const CTL_WORLD_COUNT = 4;
export const CTL_GRID_COUNT = 5;
export const CTL_JOBS = 6;
export const CTL_ENDED = 7;
export const CTL_READY = 8; // 1 once the snapshot thread waits for rounds
export const CTL_QUANTIZE = 9; // 1: this round, the thread writes the tick's quantized row
export const CTL_QUANTIZED = 10; // set to the round number once that row is written (or not asked for)
export const CTL_CUT = 11; // set to the round number by the tick thread once the jobs are written
export const CTL_PROGRESS = 12; // jobs of the round finished so far (reset by the tick thread before CUT)
export const CTL_BUSY_US = 13; // microseconds the thread spent cutting in its last round
/**
 * Held by the snapshot thread while it writes to a socket (WRITE_LOCK_HELD); the tick thread
 * closes it for good (WRITE_LOCK_CLOSED) before it stops waiting for the thread: see `stopWrites`.
 */
export const CTL_WRITE_LOCK = 14;
export const WRITE_LOCK_FREE = 0;
export const WRITE_LOCK_HELD = 1;
export const WRITE_LOCK_CLOSED = 2;
export const CTL_CUT_ALL = 15; // set to the round number by the snapshot thread once every job is cut
export const CTL_CAPPED = 16; // jobs of the thread's last round whose area of interest was capped (engine.max_visible)
const CTL_WORDS = 17;
/** A job's claim (one Int32 per job): not yet written, written by the snapshot thread, or by the tick thread. */
export const CLAIM_FREE = 0;
export const CLAIM_THREAD = 1;
export const CLAIM_TICK = 2;
/** A snapshot thread's garbage-collection pauses in its last round: V8's GC type and milliseconds. */
export interface GcReport {
  gc: [type: string, ms: number][];
}

/** prom-client's `kind` label (nodejs_gc_duration_seconds) for a type V8's GC profiler names. */
export function gcKind(type: string): string {
  if (type === 'Scavenge') return 'minor';
  if (type === 'MarkSweepCompact') return 'major';
  if (type === 'IncrementalMarking') return 'incremental';
  if (type === 'ProcessWeakCallbacks') return 'weakcb';
  return 'other';
}

/** How long `stopWrites` waits for a write in progress at most. */
const STOP_WRITES_TIMEOUT_MS = 2_000;
/** How long a shard waits for a snapshot thread to come up. */
const READY_TIMEOUT_MS = 15_000;
/**
 * Int32 per job: session id, slot of its entity, acknowledged tick, 1 when the session is new, and
 * the descriptor of the session's socket for the thread to write the frame to itself (-1: the tick
 * thread sends it).
 */
export const JOB_WORDS = 5;
/** Int32 per job result: the frame's offset in the arena and its length (-1: did not fit), the bytes the thread wrote of it. */
export const RESULT_WORDS = 3;

/** What a snapshot thread is started with (all arrays over shared memory). */
export interface ThreadInit {
  world: WorldShare;
  grid: GridShare;
  quantized: QuantizedShare;
  /** How positions are quantized (engine.position_scale, within engine.world_bounds). */
  quanta: Quanta;
  radius: number;
  maxVisible: number;
  ctl: Int32Array;
  jobs: Int32Array;
  ended: Int32Array;
  /** Per job (RESULT_WORDS): its frame's offset and length in `arena` (-1: did not fit), bytes written. */
  results: Int32Array;
  /** Per job: who writes it (CLAIM_*), taken with a compare-and-swap, the thread from the first job on, the tick thread from the last. */
  claims: Int32Array;
  arena: Uint8Array;
}

/** Built: the worker's .js next to this file. From source (tsx): the .ts, loaded through tsx in the worker too. */
function startWorker(workerData: ThreadInit): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./snapshot-worker.js', import.meta.url), { workerData });
  const tsx = import.meta.resolve('tsx/esm/api');
  const entry = new URL('./snapshot-worker.ts', import.meta.url).href;
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); });`;
  return new Worker(boot, { eval: true, workerData });
}

/**
 * A worker thread that cuts the snapshots of the sessions assigned to it, in parallel with the
 * tick thread, over the shard's world in shared memory (engine.snapshot_threads). Each round: the
 * tick thread calls `begin` once the world has moved (the thread wakes, and one thread quantizes
 * the world while the tick thread rebuilds the grid), writes jobs and calls `cut`, waits for the
 * quantized row (`awaitQuantized`) and cuts its own sessions' snapshots; once `progress()` (or
 * `awaitProgress`) passes job j, `message(j)` / `frame(j)` give its bytes (views of the arena, for
 * the socket to copy) and `written(j)` how much of the frame the thread wrote itself to the
 * descriptor the job named. Once every job is cut (`allCut`), the tick thread may take the last
 * unwritten one for itself (`steal`) rather than wait: the thread then stops before it. `finish`
 * waits for the round's end, and `stopWrites` ends the thread's writes for good. A session's
 * history lives on its thread; a session moved to another thread starts a new one there (a full
 * snapshot).
 */
export class SnapshotThread {
  readonly jobs: Int32Array;
  private readonly ctl: Int32Array;
  private readonly ended: Int32Array;
  private readonly results: Int32Array;
  private readonly claims: Int32Array;
  private readonly arena: Uint8Array;
  private readonly worker: Worker;
  private round = 0;
  /** A round was begun and not yet cut. */
  private begun = false;
  /** Sessions ended since the last round, for the thread to forget. */
  private readonly endedIds: number[] = [];
  failed: Error | undefined;
  private closing = false;
  /** Resolves when the thread is up; sessions are given to it only from then on. */
  readonly ready: Promise<void>;

  /**
   * `onGc` is called with each garbage-collection pause of the thread (its `kind` as prom-client
   * labels the main thread's, and milliseconds), once the tick thread's event loop takes the
   * thread's report of the round it happened in.
   */
  constructor(
    init: Omit<ThreadInit, 'ctl' | 'jobs' | 'ended' | 'results' | 'claims' | 'arena'>,
    maxJobs: number,
    onFailed: (err: Error) => void = () => undefined,
    onGc: (kind: string, ms: number) => void = () => undefined,
  ) {
    this.ctl = sharedArray(Int32Array, CTL_WORDS);
    this.jobs = sharedArray(Int32Array, maxJobs * JOB_WORDS);
    this.ended = sharedArray(Int32Array, maxJobs);
    this.results = sharedArray(Int32Array, maxJobs * RESULT_WORDS);
    this.claims = sharedArray(Int32Array, maxJobs);
    // Room for every job's largest frame: full records (≤ 19 B) and removed ids (≤ 5 B) per
    // visible entity, plus the envelope and the frame header. Pages are only committed as they are written.
    this.arena = sharedArray(Uint8Array, maxJobs * (init.maxVisible * 24 + 74));
    const data: ThreadInit = {
      ...init,
      ctl: this.ctl,
      jobs: this.jobs,
      ended: this.ended,
      results: this.results,
      claims: this.claims,
      arena: this.arena,
    };
    this.worker = startWorker(data);
    this.worker.unref();
    // Up, gone, or (a worker stuck while loading) given up on after READY_TIMEOUT_MS: a shard never
    // waits on its threads for longer; a thread that is not up gets no sessions.
    this.ready = new Promise((resolve) => {
      const giveUp = setTimeout(() => {
        this.failed ??= new Error(`snapshot thread not up within ${READY_TIMEOUT_MS} ms`);
        onFailed(this.failed);
        resolve();
      }, READY_TIMEOUT_MS);
      giveUp.unref();
      const done = () => {
        clearTimeout(giveUp);
        resolve();
      };
      this.worker.once('message', done);
      this.worker.once('exit', done);
    });
    this.worker.on('message', (m: GcReport | 'ready') => {
      if (typeof m === 'object') for (const [type, ms] of m.gc) onGc(gcKind(type), ms);
    });
    this.worker.on('error', (err) => {
      this.failed ??= err;
      onFailed(err);
    });
    this.worker.on('exit', (code) => {
      if (this.failed || this.closing) return;
      this.failed = new Error(`snapshot thread exited with ${code}`);
      onFailed(this.failed);
    });
  }

  /** Up, waiting for rounds, and not failed. */
  get usable(): boolean {
    return this.failed === undefined && Atomics.load(this.ctl, CTL_READY) === 1;
  }

  get maxJobs(): number {
    return this.results.length / RESULT_WORDS;
  }

  /** The session no longer exists: the thread drops its buffers at the next round. */
  forget(sessionId: number): void {
    this.endedIds.push(sessionId);
  }

  /**
   * Starts a round for `tick`: the thread wakes while the tick thread rebuilds the grid and writes
   * the jobs (then `cut`), and with `quantize` writes the tick's quantized row meanwhile
   * (`awaitQuantized`). A round begun and never cut is cut empty first.
   */
  begin(tick: number, worldCount: number, quantize: boolean): void {
    if (this.begun) this.cut(0, 0);
    const ctl = this.ctl;
    let ended = 0;
    while (this.endedIds.length > 0 && ended < this.ended.length) this.ended[ended++] = this.endedIds.pop() as number;
    ctl[CTL_TICK] = tick;
    ctl[CTL_WORLD_COUNT] = worldCount;
    ctl[CTL_QUANTIZE] = quantize ? 1 : 0;
    ctl[CTL_ENDED] = ended;
    this.round = (this.round + 1) | 0;
    this.begun = true;
    Atomics.store(ctl, CTL_GO, this.round);
    Atomics.notify(ctl, CTL_GO);
  }

  /** Gives the round begun its jobs [0, count), written into `jobs` over a grid of `gridCount` entities. */
  cut(gridCount: number, count: number): void {
    const ctl = this.ctl;
    ctl[CTL_GRID_COUNT] = gridCount;
    ctl[CTL_JOBS] = count;
    this.claims.fill(CLAIM_FREE, 0, count);
    Atomics.store(ctl, CTL_PROGRESS, 0);
    this.begun = false;
    Atomics.store(ctl, CTL_CUT, this.round);
    Atomics.notify(ctl, CTL_CUT);
  }

  /** Waits until the round's quantized row is written; false when not within `timeoutMs` (the thread is then failed). */
  awaitQuantized(timeoutMs: number): boolean {
    return this.waitFor(CTL_QUANTIZED, (v) => v === this.round, timeoutMs, 'write its quantized row') !== false;
  }

  /** Waits for the round to end; false when it did not within `timeoutMs` (the thread is then failed). */
  finish(timeoutMs: number): boolean {
    if (this.waitFor(CTL_DONE, (v) => v === this.round, timeoutMs, 'finish a round') === false) return false;
    this.progress();
    return true;
  }

  /** Jobs of the current round finished so far: `message(j)` may be called for j below it. */
  progress(): number {
    return Atomics.load(this.ctl, CTL_PROGRESS);
  }

  /** Every job of the current round is cut: the ones not yet claimed may be stolen. */
  allCut(): boolean {
    return Atomics.load(this.ctl, CTL_CUT_ALL) === this.round;
  }

  /**
   * Waits until more than `seen` jobs are finished, or with `orAllCut` until every job is cut (for
   * the caller to steal rather than wait), and returns progress(); false when not within
   * `timeoutMs` (the thread is then failed).
   */
  awaitProgress(seen: number, orAllCut: boolean, timeoutMs: number): number | false {
    const reached = (v: number) => v > seen || (orAllCut && this.allCut());
    return this.waitFor(CTL_PROGRESS, reached, timeoutMs, 'finish a job') === false ? false : this.progress();
  }

  /**
   * Claims job j (cut, `allCut()`) for the tick thread to write, which it must then do; false when
   * the thread claimed it first. Steal only from the last job down: the thread claims from the
   * first up and stops at the first it finds stolen, so each job is written once, by one of them.
   */
  steal(j: number): boolean {
    return Atomics.compareExchange(this.claims, j, CLAIM_FREE, CLAIM_TICK) === CLAIM_FREE;
  }

  /** Snapshots of the thread's last finished round whose area of interest held more than maxVisible. */
  get capped(): number {
    return Atomics.load(this.ctl, CTL_CAPPED);
  }

  /** Milliseconds the thread spent cutting in its last finished round. */
  get busyMs(): number {
    return (Atomics.load(this.ctl, CTL_BUSY_US) as number) / 1000;
  }

  /** Waits until control word `word` satisfies `reached` and returns its value; false on timeout or failure. */
  private waitFor(word: number, reached: (value: number) => boolean, timeoutMs: number, what: string): number | false {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const at = Atomics.load(this.ctl, word);
      if (reached(at)) return at;
      const left = deadline - performance.now();
      if (left <= 0 || this.failed) {
        this.failed ??= new Error(`snapshot thread did not ${what} within ${timeoutMs} ms`);
        return false;
      }
      Atomics.wait(this.ctl, word, at, left);
    }
  }

  /**
   * Job j's message (j below `progress()`; undefined: it did not fit): a view of the shared
   * arena, unchanged until the next round begins — the output copies it (`SessionOutput.send`).
   */
  message(j: number): Uint8Array | undefined {
    const length = this.results[j * RESULT_WORDS + 1] as number;
    if (length < 0) return undefined;
    const offset = this.results[j * RESULT_WORDS] as number;
    return this.arena.subarray(offset + this.headerAt(offset), offset + length);
  }

  /** Bytes of job j's message (0: it did not fit). */
  messageLength(j: number): number {
    const length = this.results[j * RESULT_WORDS + 1] as number;
    return length < 0 ? 0 : length - this.headerAt(this.results[j * RESULT_WORDS] as number);
  }

  /** The length of the header of the frame at `offset`, from its second byte (RFC 6455 §5.2). */
  private headerAt(offset: number): number {
    const lengthByte = this.arena[offset + 1] as number;
    return lengthByte < 126 ? 2 : lengthByte === 126 ? 4 : 10;
  }

  /** Job j's message as a whole WebSocket frame, header included (as `message`). */
  frame(j: number): Uint8Array | undefined {
    const length = this.results[j * RESULT_WORDS + 1] as number;
    if (length < 0) return undefined;
    const offset = this.results[j * RESULT_WORDS] as number;
    return this.arena.subarray(offset, offset + length);
  }

  /** Bytes of job j's frame the thread wrote to the socket itself (j below `progress()`). */
  written(j: number): number {
    return this.results[j * RESULT_WORDS + 2] as number;
  }

  /**
   * Makes sure the thread writes to no socket from now on, for good: waits while it is inside a
   * write, then closes the write lock. After a missed deadline the tick thread calls this before
   * it returns to the event loop, where a socket may close and its descriptor number be reused: a
   * thread that is only late can then no longer write into someone else's connection. The
   * progress the thread reported includes every job it wrote (it reports before it unlocks).
   *
   * A write is one non-blocking system call, so the wait is short; but a thread that died inside
   * one (out of memory) never lets go. After `timeoutMs` the lock is closed anyway and this
   * returns false: the tick thread goes on rather than hang (a thread that is only starved for
   * that long could still finish the write it began).
   */
  stopWrites(timeoutMs = STOP_WRITES_TIMEOUT_MS): boolean {
    const ctl = this.ctl;
    const deadline = performance.now() + timeoutMs;
    while (Atomics.compareExchange(ctl, CTL_WRITE_LOCK, WRITE_LOCK_FREE, WRITE_LOCK_CLOSED) === WRITE_LOCK_HELD) {
      if (performance.now() >= deadline) {
        Atomics.store(ctl, CTL_WRITE_LOCK, WRITE_LOCK_CLOSED);
        return false;
      }
      Atomics.wait(ctl, CTL_WRITE_LOCK, WRITE_LOCK_HELD, 1);
    }
    return true;
  }

  async close(): Promise<void> {
    this.closing = true;
    Atomics.store(this.ctl, CTL_STOP, 1);
    Atomics.add(this.ctl, CTL_GO, 1);
    Atomics.notify(this.ctl, CTL_GO);
    Atomics.store(this.ctl, CTL_CUT, -1);
    Atomics.notify(this.ctl, CTL_CUT);
    await this.worker.terminate();
  }
}
