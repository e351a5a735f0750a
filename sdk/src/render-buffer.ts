import { interpolate, type Positioned } from './interpolation.js';
import { Frame } from './snapshots.js';

/**
 * The longest render delay (ms): Source's cap on `cl_interp`. With the slack the ring keeps (see
 * `RenderBuffer.capacity`) it holds at most about a second of snapshots.
 */
export const MAX_RENDER_DELAY_MS = 500;

/** The render clock runs at most this much faster or slower than the client's while it converges. */
const MAX_SLEW = 0.1;

/** Below the rate cap, the render clock closes its distance to the estimate with this time constant (ms). */
const SLEW_TAU_MS = 500;

/**
 * Where the shard's tick timeline is on the client's clock: `offset` = client ms − server ms (a
 * tick's server ms is tick × tick ms), network delay included. It moves towards a target the
 * caller sets at each arrival, never faster than `MAX_SLEW` of elapsed time (smoothly, with time
 * constant `SLEW_TAU_MS`, once close), so `now − offset(now)` only ever moves forward, at 0.9–1.1 ×
 * the client clock's rate; `anchor` sets it at once. Arrivals are the only input: `offset(now)`
 * depends on no earlier call of it.
 */
export class TickClock {
  /** Offset `value` at client time `at`, moving towards `target`. */
  private at = 0;
  private value = 0;
  private target = 0;

  /** Sets the offset to `offset` from client time `at` on. */
  anchor(offset: number, at: number): void {
    this.at = at;
    this.value = offset;
    this.target = offset;
  }

  /** From client time `at` on, the offset moves from where it is towards `target`. */
  steer(target: number, at: number): void {
    this.value = this.offset(at);
    this.at = Math.max(this.at, at);
    this.target = target;
  }

  /** The offset at client time `now` (ms); before the last `anchor` or `steer`, its value then. */
  offset(now: number): number {
    const gap = this.target - this.value;
    const dt = now - this.at;
    if (gap === 0 || !(dt > 0)) return this.value;
    // Closing at MAX_SLEW while further than MAX_SLEW × τ, then exponentially with τ: the rate never exceeds MAX_SLEW.
    const capped = MAX_SLEW * SLEW_TAU_MS;
    let left = Math.abs(gap);
    let t = dt;
    if (left > capped) {
      const linear = (left - capped) / MAX_SLEW;
      if (t <= linear) return this.target - Math.sign(gap) * (left - MAX_SLEW * t);
      left = capped;
      t -= linear;
    }
    return this.target - Math.sign(gap) * left * Math.exp(-t / SLEW_TAU_MS);
  }
}

/**
 * A render-delay buffer: copies of the newest snapshots' views (the store reuses its frames), each
 * keyed by its tick, from which other entities are drawn `delayMs` behind the shard's tick
 * timeline, between the two buffered snapshots around that time — so a snapshot arriving up to
 * about `delayMs` − a tick late, or a few lost, never stall motion.
 *
 * Render time is tick × tick ms on the client's clock, less `delayMs`: the clock offset (see
 * `TickClock`) is steered at each arrival towards the earliest arrival among the buffered
 * snapshots, relative to its tick — jitter only ever makes a snapshot later, so a late one does
 * not move it; a lasting change (a slower route, a shard behind its schedule) moves it once the
 * earlier ones have left the ring, and the render clock follows at 0.9–1.1 × speed, never jumping
 * back. While the view is still held at the oldest snapshot (just after `reset`), nothing moves on
 * screen and the offset is set at once; otherwise also when it is more than `delayMs` too late
 * (render time jumps forward).
 *
 * Ticks must increase from one `push` to the next: `reset` when they start over (another shard, a
 * restarted one); a snapshot not newer than the newest is ignored. Memory: `capacity` frames, each
 * with room for as many entities as the biggest view pushed (about 30 bytes an entity).
 */
export class RenderBuffer {
  /** Frames in arrival order from `head`, `count` of them; their arrival times (client ms) alike. */
  private slots: Frame[] = [];
  private arrivedAt = new Float64Array(0);
  private head = 0;
  private count = 0;
  /** Tick length the ring is sized for (0: none yet). */
  private tickMs = 0;
  private readonly clock = new TickClock();

  /** `delayMs`: above 0, at most `MAX_RENDER_DELAY_MS` (a RangeError otherwise). */
  constructor(readonly delayMs: number) {
    if (!(delayMs > 0 && delayMs <= MAX_RENDER_DELAY_MS)) {
      throw new RangeError(`delayMs must be a positive number of milliseconds up to ${MAX_RENDER_DELAY_MS}, got ${String(delayMs)}`);
    }
  }

  /**
   * Snapshots kept: 2 × the ticks in `delayMs` (rounded up) + 2 — render time trails the newest
   * by the delay and, while the offset is still coming down, by up to as much again, and needs one
   * snapshot at or before it. At 40 Hz, 10 for 100 ms, 42 for 500 ms; at most about a second of
   * snapshots at any tick rate. 0 before the first `push`.
   */
  get capacity(): number {
    return this.slots.length;
  }

  /** Snapshots held now. */
  get size(): number {
    return this.count;
  }

  /** The ticks held, oldest first. */
  ticks(): number[] {
    const out: number[] = [];
    for (let k = 0; k < this.count; k++) out.push(this.slot(k).tick);
    return out;
  }

  /** Forgets every snapshot and the clock: the next `push` starts over, in a tick space of its own. */
  reset(): void {
    this.head = 0;
    this.count = 0;
  }

  /**
   * Copies `frame` (the newest view, of tick `frame.tick`), which arrived at `at` (client ms), with
   * ticks `tickMs` long. A tick length other than the buffer's so far starts over (as `reset`).
   */
  push(frame: Frame, at: number, tickMs: number): void {
    if (tickMs !== this.tickMs) this.resize(tickMs);
    const tick = frame.tick;
    if (this.count > 0 && tick <= this.slot(this.count - 1).tick) return;
    // Before it is added: whether the view is still held at the oldest snapshot.
    const held = this.count === 0 || this.renderTick(at) <= this.slot(0).tick;
    const cap = this.slots.length;
    let i: number;
    if (this.count < cap) i = (this.head + this.count++) % cap;
    else {
      i = this.head;
      this.head = (this.head + 1) % cap;
    }
    const slot = this.slots[i] as Frame;
    slot.reset(tick, frame.capacity);
    for (let e = 0; e < frame.size; e++) {
      slot.add(frame.ids[e] as number, frame.qx[e] as number, frame.qy[e] as number, frame.kind[e] as number, frame.flags[e] as number);
    }
    this.arrivedAt[i] = at;
    let earliest = Number.POSITIVE_INFINITY;
    for (let k = 0; k < this.count; k++) {
      const j = (this.head + k) % cap;
      earliest = Math.min(earliest, (this.arrivedAt[j] as number) - (this.slots[j] as Frame).tick * tickMs);
    }
    if (held || this.clock.offset(at) - earliest > this.delayMs) this.clock.anchor(earliest, at);
    else this.clock.steer(earliest, at);
  }

  /**
   * Tick the view is drawn at, at client time `now` (fractional; meaningless before a `push`):
   * the shard's tick timeline on the client's clock, `delayMs` behind.
   */
  renderTick(now: number): number {
    return (now - this.clock.offset(now) - this.delayMs) / this.tickMs;
  }

  /**
   * Other entities' positions at client time `now`, in world units (`scale` per quantum), by
   * `interpolate` between the two buffered snapshots around `renderTick(now)`: an entity that
   * moved further than `maxSpeed` (world units a tick) allows over their ticks is drawn where the
   * later one has it; one that entered is drawn from the earlier one's tick on, one that left
   * until the later one's. Past the newest snapshot, the view is held there (no extrapolation);
   * before the oldest (just after a reset), held at the oldest. Empty before the first `push`.
   */
  sample(now: number, scale: number, maxSpeed?: number): Map<number, Positioned> {
    if (this.count === 0) return new Map();
    const t = this.renderTick(now);
    let later = this.slot(this.count - 1);
    if (t >= later.tick) return interpolate(later, later, 1, scale);
    for (let k = this.count - 2; k >= 0; k--) {
      const earlier = this.slot(k);
      if (earlier.tick <= t) {
        const ticks = later.tick - earlier.tick;
        return interpolate(earlier, later, (t - earlier.tick) / ticks, scale, maxSpeed ? (maxSpeed * ticks) / scale : undefined);
      }
      later = earlier;
    }
    return interpolate(later, later, 1, scale);
  }

  /** The `k`th snapshot held, oldest first. */
  private slot(k: number): Frame {
    return this.slots[(this.head + k) % this.slots.length] as Frame;
  }

  /** Empties the ring and sizes it for ticks `tickMs` long (frames kept when the size is unchanged). */
  private resize(tickMs: number): void {
    const cap = 2 * Math.ceil(this.delayMs / tickMs) + 2;
    this.tickMs = tickMs;
    this.reset();
    if (cap === this.slots.length) return;
    this.slots = Array.from({ length: cap }, (_, k) => this.slots[k] ?? new Frame());
    this.arrivedAt = new Float64Array(cap);
  }
}
