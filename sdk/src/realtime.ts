import { aethex, PROTOCOL_VERSION, SNAPSHOT_LAYOUT } from '@aethex/proto';
import { interpolate, type Positioned } from './interpolation.js';
import { type EntityRecord, SnapshotStore } from './snapshots.js';

const { ClientMessage, ServerMessage } = aethex.v1;

/** The subset of the WebSocket API the client uses: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketFactory = (url: string) => WebSocketLike;

export interface RealtimeOptions {
  /** ws:// or wss:// address of the shard (from matchmaking). */
  url: string;
  /** Join token from the control plane. */
  joinToken: string;
  /** Builds the socket; defaults to the global WebSocket (browsers, Node 22+). */
  createSocket?: WebSocketFactory;
  /** Milliseconds clock for input timestamps; defaults to performance.now. */
  now?: () => number;
  /** Give up connecting after this many milliseconds (default 10 000). */
  connectTimeoutMs?: number;
}

export interface Vec2 {
  x: number;
  y: number;
}

export interface RealtimeEvents {
  /** A snapshot was applied. */
  snapshot: (tick: number) => void;
  /** An entity came into the area of interest. */
  enter: (entityId: number, record: EntityRecord) => void;
  /** An entity left the area of interest. */
  leave: (entityId: number) => void;
  /** The server moved this client's entity differently from its prediction. */
  correction: (position: Vec2, lastInputSeq: number) => void;
  /** The server ended the session. */
  kick: (reason: string, message: string) => void;
  /** The socket closed (after a kick, or for any other cause). */
  close: (code: number, reason: string) => void;
}

interface PendingInput {
  seq: number;
  dx: number;
  dy: number;
}

function reasonName(code: number): string {
  return (aethex.v1.ReasonCode[code] ?? 'UNKNOWN').replace(/^REASON_CODE_/, '');
}

/**
 * A player's realtime session with one shard. It joins with a join token, sends movement intents
 * with increasing sequence numbers, predicts its own entity locally and reconciles with the
 * server's position and last applied sequence, keeps the entities in its area of interest from
 * delta snapshots (emitting enter/leave), and acknowledges snapshots so the server can delta
 * against them.
 */
export class RealtimeClient {
  welcome: aethex.v1.IWelcome | undefined;
  /** Predicted position of this client's entity. */
  readonly predicted: Vec2 = { x: 0, y: 0 };
  /** Server tick of the newest snapshot applied. */
  lastTick = 0;
  /** Last input sequence the server reported as applied. */
  lastAckedSeq = 0;
  readonly store = new SnapshotStore();
  private socket: WebSocketLike | undefined;
  private seq = 0;
  private pending: PendingInput[] = [];
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private readonly listeners: { [K in keyof RealtimeEvents]?: RealtimeEvents[K][] } = {};
  private readonly now: () => number;
  /** When each input was sent, by sequence, for input→acknowledgement latency. */
  private readonly sentAt = new Map<number, number>();
  /** Input→acknowledgement latencies in milliseconds, since the last `takeLatencies()`. */
  private latencies: number[] = [];
  private nextCallId = 1;
  private readonly calls = new Map<
    number,
    { resolve: (p: Uint8Array) => void; reject: (e: Error) => void; timer: ReturnType<typeof setTimeout> }
  >();
  private previousFrame: ReadonlyMap<number, EntityRecord> = new Map();
  /** Arrival time of the newest snapshot, and the longest gap between two (ms, reset by callers). */
  lastSnapshotAt = 0;
  maxSnapshotGapMs = 0;
  bytesReceived = 0;

  constructor(private readonly options: RealtimeOptions) {
    this.now = options.now ?? (() => performance.now());
  }

  on<K extends keyof RealtimeEvents>(event: K, listener: RealtimeEvents[K]): this {
    const list = (this.listeners[event] ?? []) as RealtimeEvents[K][];
    list.push(listener);
    this.listeners[event] = list as never;
    return this;
  }

  private emit<K extends keyof RealtimeEvents>(event: K, ...args: Parameters<RealtimeEvents[K]>): void {
    for (const l of this.listeners[event] ?? []) (l as (...a: Parameters<RealtimeEvents[K]>) => void)(...args);
  }

  /** Connects and joins; resolves with the server's Welcome, rejects on a kick or close before it. */
  connect(): Promise<aethex.v1.IWelcome> {
    const create =
      this.options.createSocket ??
      ((url: string) => {
        const Ctor = (globalThis as { WebSocket?: new (u: string) => WebSocketLike }).WebSocket;
        if (!Ctor) throw new Error('no global WebSocket: pass createSocket (for example from the ws package)');
        return new Ctor(url);
      });
    const socket = create(this.options.url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no Welcome from ${this.options.url} within ${this.options.connectTimeoutMs ?? 10_000} ms`));
        socket.close();
      }, this.options.connectTimeoutMs ?? 10_000);
      let settled = false;
      const settle = (fn: () => void) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          fn();
        }
      };
      socket.onopen = () => {
        socket.send(
          ClientMessage.encode({
            join: { joinToken: this.options.joinToken, protocolVersion: PROTOCOL_VERSION, clientVersion: 'aethex-sdk' },
          }).finish(),
        );
      };
      socket.onmessage = (ev) => {
        const data = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : (ev.data as Uint8Array);
        this.bytesReceived += data.length;
        let msg: aethex.v1.ServerMessage;
        try {
          msg = ServerMessage.decode(data);
        } catch (err) {
          socket.close(1002, 'undecodable message');
          settle(() => reject(err));
          return;
        }
        if (msg.body === 'welcome') {
          const w = msg.welcome as aethex.v1.Welcome;
          this.welcome = w;
          this.lastAckedSeq = w.lastInputSeq;
          this.seq = Math.max(this.seq, w.lastInputSeq);
          settle(() => resolve(w));
          return;
        }
        if (msg.body === 'kick') {
          const k = msg.kick as aethex.v1.Kick;
          this.emit('kick', reasonName(k.reason), k.message);
          settle(() => reject(new Error(`kicked: ${reasonName(k.reason)}: ${k.message}`)));
          return;
        }
        this.handle(msg);
      };
      socket.onclose = (ev) => {
        this.emit('close', ev.code, ev.reason);
        settle(() => reject(new Error(`closed before joining: ${ev.code} ${ev.reason}`)));
      };
      socket.onerror = () => {
        // onclose follows with the details.
      };
    });
  }

  private handle(msg: aethex.v1.ServerMessage): void {
    if (msg.body === 'snapshot') {
      const s = msg.snapshot as aethex.v1.Snapshot;
      if (s.layout !== SNAPSHOT_LAYOUT) {
        this.socket?.close(1002, `unknown snapshot layout ${s.layout}`);
        return;
      }
      const at = this.now();
      if (this.lastSnapshotAt > 0) this.maxSnapshotGapMs = Math.max(this.maxSnapshotGapMs, at - this.lastSnapshotAt);
      this.lastSnapshotAt = at;
      const before = this.store.current;
      const changes = this.store.apply(s.tick, s.baseTick, s.entities, s.removed);
      if (s.tick <= this.lastTick) return;
      this.previousFrame = before;
      this.lastTick = s.tick;
      this.acknowledgeInputs(s.lastInputSeq, at);
      const self = this.welcome ? changes.frame.get(this.welcome.entityId as number) : undefined;
      if (self && this.welcome) {
        const scale = this.welcome.positionScale as number;
        this.reconcile(self.qx * scale, self.qy * scale);
      }
      for (const id of changes.entered) this.emit('enter', id, changes.frame.get(id) as EntityRecord);
      for (const id of changes.left) this.emit('leave', id);
      this.emit('snapshot', s.tick);
      // Inputs carry the acknowledgement; an idle client sends it on its own.
      if (at - this.lastSentAt > 1.5 * (1000 / ((this.welcome?.tickRateHz as number) || 40))) {
        this.sendRaw(ClientMessage.encode({ ack: { ackTick: this.lastTick } }).finish());
      }
    } else if (msg.body === 'rpcResult') {
      const r = msg.rpcResult as aethex.v1.RpcResult;
      const call = this.calls.get(r.callId);
      if (!call) return;
      this.calls.delete(r.callId);
      clearTimeout(call.timer);
      if (r.ok) call.resolve(r.payload);
      else call.reject(Object.assign(new Error(`rpc failed: ${r.errorCode}`), { code: r.errorCode }));
    } else if (msg.body === 'correction') {
      const c = msg.correction as aethex.v1.Correction;
      this.acknowledgeInputs(c.lastInputSeq, this.now());
      this.reconcile(c.position?.x ?? 0, c.position?.y ?? 0);
      this.emit('correction', { x: c.position?.x ?? 0, y: c.position?.y ?? 0 }, c.lastInputSeq);
    }
  }

  private acknowledgeInputs(lastInputSeq: number, at: number): void {
    if (lastInputSeq <= this.lastAckedSeq) return;
    for (let seq = this.lastAckedSeq + 1; seq <= lastInputSeq; seq++) {
      const sent = this.sentAt.get(seq);
      if (sent !== undefined) {
        this.latencies.push(at - sent);
        this.sentAt.delete(seq);
      }
    }
    this.lastAckedSeq = lastInputSeq;
    this.pending = this.pending.filter((p) => p.seq > lastInputSeq);
  }

  /** Server-authoritative position plus the inputs it has not applied yet. */
  private reconcile(x: number, y: number): void {
    let px = x;
    let py = y;
    for (const p of this.pending) {
      px += p.dx;
      py += p.dy;
    }
    this.predicted.x = px;
    this.predicted.y = py;
  }

  /**
   * Sends a movement intent for one tick and applies it to the prediction. The move is clamped to
   * the world's max speed here too, so prediction matches what the server will do. Returns its
   * sequence number.
   */
  move(dx: number, dy: number): number {
    let mx = dx;
    let my = dy;
    const max = (this.welcome?.maxSpeed as number) ?? Number.POSITIVE_INFINITY;
    const len = Math.hypot(mx, my);
    if (len > max) {
      mx *= max / len;
      my *= max / len;
    }
    const seq = ++this.seq;
    const at = this.now();
    this.pending.push({ seq, dx: mx, dy: my });
    this.sentAt.set(seq, at);
    this.predicted.x += mx;
    this.predicted.y += my;
    this.sendRaw(
      ClientMessage.encode({ input: { seq, clientTimeMs: Math.floor(at) >>> 0, move: { x: mx, y: my }, ackTick: this.lastTick } }).finish(),
    );
    return seq;
  }

  private sendRaw(bytes: Uint8Array): void {
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(bytes);
      this.lastSentAt = this.now();
    }
  }

  /**
   * Calls a game-defined RPC handler on the shard. Resolves with its payload; rejects with an Error
   * whose `code` is the game's error code (or UNKNOWN_METHOD, INTERNAL, TIMEOUT).
   */
  rpc(method: string, payload: Uint8Array = new Uint8Array(0), timeoutMs = 10_000): Promise<Uint8Array> {
    const callId = this.nextCallId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(callId);
        reject(Object.assign(new Error(`rpc ${method} timed out after ${timeoutMs} ms`), { code: 'TIMEOUT' }));
      }, timeoutMs);
      this.calls.set(callId, { resolve, reject, timer });
      this.sendRaw(ClientMessage.encode({ rpc: { callId, method, payload } }).finish());
    });
  }

  /** Inputs sent but not yet acknowledged by the server. */
  get unacknowledged(): number {
    return this.pending.length;
  }

  /** Input→acknowledgement latencies (ms) measured since the last call. */
  takeLatencies(): number[] {
    const out = this.latencies;
    this.latencies = [];
    return out;
  }

  /** The entities currently in view, positions in world units. */
  entities(): Map<number, { x: number; y: number; kind: number; flags: number }> {
    const scale = (this.welcome?.positionScale as number) ?? 1;
    const out = new Map<number, { x: number; y: number; kind: number; flags: number }>();
    for (const [id, r] of this.store.current) out.set(id, { x: r.qx * scale, y: r.qy * scale, kind: r.kind, flags: r.flags });
    return out;
  }

  /**
   * Other entities' positions for rendering at `now`: interpolated between the last two snapshots,
   * one snapshot interval behind the newest, so motion is smooth between 40 Hz updates.
   */
  interpolatedEntities(now = this.now()): Map<number, Positioned> {
    const interval = 1000 / ((this.welcome?.tickRateHz as number) || 40);
    const alpha = (now - this.lastSnapshotAt) / interval;
    return interpolate(this.previousFrame, this.store.current, alpha, (this.welcome?.positionScale as number) ?? 1);
  }

  close(): void {
    this.socket?.close(1000, 'client closed');
  }
}
