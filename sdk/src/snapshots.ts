import { readSnapshotBody } from '@aethex/proto';

/** An entity as the client last received it, in quantized world units (multiply by the scale). */
export interface EntityRecord {
  qx: number;
  qy: number;
  kind: number;
  flags: number;
}

/** Frames kept to resolve delta bases; the server never uses a base older than 32 ticks. */
const KEPT_FRAMES = 64;

/** Changes one snapshot made to the client's view. */
export interface SnapshotChanges {
  tick: number;
  entered: number[];
  left: number[];
  frame: ReadonlyMap<number, EntityRecord>;
}

/**
 * Rebuilds the server's per-client view from delta snapshots. Each snapshot names the base tick it
 * is relative to (0: none); the store keeps recent frames by tick so that the base the server
 * chose — the client's last acknowledgement — is always at hand.
 */
export class SnapshotStore {
  private readonly frames = new Map<number, Map<number, EntityRecord>>();
  private latest: Map<number, EntityRecord> = new Map();
  latestTick = 0;

  /**
   * Applies a snapshot. Throws a RangeError when its base is unknown or its body is malformed; the
   * client should then reconnect (the server will send a full snapshot).
   */
  apply(tick: number, baseTick: number, body: Uint8Array, removed: ArrayLike<number>): SnapshotChanges {
    let base: Map<number, EntityRecord> | undefined;
    if (baseTick !== 0) {
      base = this.frames.get(baseTick);
      if (!base) throw new RangeError(`snapshot ${tick} is relative to tick ${baseTick}, which this client does not have`);
    }
    const frame = new Map(base);
    for (let i = 0; i < removed.length; i++) frame.delete(removed[i] as number);
    readSnapshotBody(body, {
      delta(id, dqx, dqy) {
        const prev = frame.get(id);
        if (!prev) throw new RangeError(`snapshot ${tick} moves entity ${id}, which its base does not have`);
        frame.set(id, { qx: prev.qx + dqx, qy: prev.qy + dqy, kind: prev.kind, flags: prev.flags });
      },
      full(id, qx, qy, kind, flags) {
        frame.set(id, { qx, qy, kind, flags });
      },
    });
    const entered: number[] = [];
    const left: number[] = [];
    if (tick > this.latestTick) {
      for (const id of frame.keys()) if (!this.latest.has(id)) entered.push(id);
      for (const id of this.latest.keys()) if (!frame.has(id)) left.push(id);
      this.latest = frame;
      this.latestTick = tick;
    }
    this.frames.set(tick, frame);
    if (this.frames.size > KEPT_FRAMES) {
      for (const t of this.frames.keys()) {
        if (t <= tick - KEPT_FRAMES) this.frames.delete(t);
      }
    }
    return { tick, entered, left, frame: this.latest };
  }

  /** The newest view. */
  get current(): ReadonlyMap<number, EntityRecord> {
    return this.latest;
  }
}
