import {
  aethex,
  insideMax,
  PROTOCOL_VERSION,
  readSnapshotMessage,
  SNAPSHOT_LAYOUT,
  type SnapshotFields,
  snapshotFields,
} from '@aethex/proto';
import { interpolate, type Positioned } from './interpolation.js';
import { type EntityRecord, SnapshotStore } from './snapshots.js';

const { ClientMessage, ServerMessage } = aethex.v1;

/**
 * What `decode` answers for a snapshot it read in place into the client's `incoming` fields (the
 * shard sends one every tick; the generated decoder would make three objects of each).
 */
const SNAPSHOT_IN_PLACE = { body: 'snapshot' } as const;
type Decoded = aethex.v1.ServerMessage | typeof SNAPSHOT_IN_PLACE;

/** The subset of the WebSocket API the client uses: the browser's, or `ws` in Node. */
export interface WebSocketLike {
  binaryType: string;
  readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  /**
   * `reused`: `data` is a view of a buffer the socket reads into again once the handler returns
   * (`nodeSocket` in Node); the client then copies whatever of it it keeps.
   */
  onmessage: ((ev: { data: unknown; reused?: boolean }) => void) | null;
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
  /**
   * Give up connecting, resuming after a handoff, or one rejoin attempt (its join token, the socket
   * opening and the Welcome) after this many milliseconds (default 10 000).
   */
  connectTimeoutMs?: number;
  /**
   * Treat the connection as dropped when nothing has arrived from the shard for this long (default
   * 5,000 ms; 0: never). A shard sends a snapshot every tick, so silence means a connection that
   * died without closing — a network gone away, a half-open TCP connection — which the socket
   * itself may not report for minutes. The client then closes it with 4000 and, with `rejoin`,
   * rejoins; without it the session ends ('close' 4000).
   */
  silenceTimeoutMs?: number;
  /**
   * Rejoin automatically when the connection drops without the server ending the session (the
   * shard crashed or restarted, the network failed), or after a drain or a lag kick: the client
   * joins the shard it was on again with a fresh join token, retrying with backoff, keeps its
   * input sequence and re-sends unacknowledged inputs. Without it, such a drop ends the session.
   */
  rejoin?: {
    /** A join token for the shard to rejoin (from the control plane; called per attempt). */
    joinToken: (shard: { name: string; url: string }) => Promise<string>;
    /** Longest wait between attempts (default 1,000 ms; the first waits 100 ms, then doubles). */
    maxDelayMs?: number;
    /**
     * Give up after this long without success, counted from the drop (default 30,000 ms): no attempt
     * runs past it, and 'close' (1006) is emitted then.
     */
    giveUpAfterMs?: number;
  };
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
  /** A message from the game's logic on the shard (its hooks' `ctx.send` / `ctx.broadcast`), sent in `tick`. */
  message: (topic: string, payload: Uint8Array, tick: number) => void;
  /**
   * The session moved to another shard, between shard names `from` and `to`. Emitted when the
   * first snapshot from the new shard is applied; `gapMs` is the time since the last snapshot
   * applied from the old one.
   */
  handoff: (info: { from: string; to: string; gapMs: number }) => void;
  /** Resuming on the shard a handoff named failed; 'close' follows, the session is over. */
  handoffFailed: (reason: string) => void;
  /** The connection dropped and the client is rejoining (only with the `rejoin` option). */
  disconnected: (code: number, reason: string) => void;
  /** The client joined its shard again after a drop; `downMs` from the drop to the Welcome. */
  rejoined: (info: { shard: string; downMs: number; attempts: number }) => void;
  /** The session's socket closed (after a kick, a failed handoff, or for any other cause). */
  close: (code: number, reason: string) => void;
}

/** Kicks after which rejoining would be wrong: the session was ended on purpose or cannot work. */
const FINAL_KICKS = new Set([
  'REPLACED',
  'AUTH_FAILED',
  'AUTH_TIMEOUT',
  'WRONG_SHARD',
  'PROTOCOL_ERROR',
  'RATE_LIMITED',
  'MESSAGE_TOO_LARGE',
]);

interface PendingInput {
  seq: number;
  dx: number;
  dy: number;
  /** When the input was sampled (client clock, ms). */
  at: number;
}

/**
 * Inputs held for the next shard while a handoff or a rejoin is in progress, at most — those sent
 * before it and not acknowledged included; beyond it the oldest are dropped (lost). The shard
 * receives all of them at once after its Welcome: with the Join (or Resume) before them that is
 * 129 messages, about half the shard's default message burst (`gateway.message_burst`, 240), so
 * the inputs and acknowledgements that follow at the tick rate are admitted too. More would be
 * kicked `RATE_LIMITED`, which ends the session.
 */
const MAX_HELD_INPUTS = 128;

/** A rejoin in progress: since the drop, until the Welcome, a give-up or `close()`. */
interface Rejoin {
  /** When the session dropped (client clock, ms). */
  since: number;
  attempts: number;
  /** The wait before the next attempt. */
  timer?: ReturnType<typeof setTimeout>;
  /** The attempt under way: its socket once the join token came, and its deadline. */
  current?: RejoinAttempt;
}

interface RejoinAttempt {
  socket?: WebSocketLike;
  deadline: ReturnType<typeof setTimeout>;
}

/** A handoff between its redirect and the new shard's Welcome. */
interface Handoff {
  socket: WebSocketLike;
  address: string;
  timer: ReturnType<typeof setTimeout>;
  /** Set when the new shard kicked the resume, as the reason the handoff failed. */
  kicked?: string;
}

function reasonName(code: number): string {
  return (aethex.v1.ReasonCode[code] ?? 'UNKNOWN').replace(/^REASON_CODE_/, '');
}

/**
 * A player's realtime session with one shard. It joins with a join token, sends movement intents
 * with increasing sequence numbers, predicts its own entity locally and reconciles with the
 * server's position and last applied sequence, keeps the entities in its area of interest from
 * delta snapshots (emitting enter/leave), and acknowledges snapshots so the server can delta
 * against them. When the server redirects it to a neighbouring shard, it resumes the session there
 * and carries on (see docs/sdk.md, "Handoffs between shards").
 */
export class RealtimeClient {
  welcome: aethex.v1.IWelcome | undefined;
  /** Predicted position of this client's entity. */
  readonly predicted: Vec2 = { x: 0, y: 0 };
  /** Server tick of the newest snapshot applied. */
  lastTick = 0;
  /** Last input sequence the server reported as applied. */
  lastAckedSeq = 0;
  /** Handoffs to another shard completed since `connect()`. */
  handoffs = 0;
  /** Replaced by the first snapshot after a handoff: tick numbers are per shard. */
  private snapshots = new SnapshotStore();
  /** The session's socket; during a handoff, still the old shard's. */
  private socket: WebSocketLike | undefined;
  private handoff: Handoff | undefined;
  /** The old shard's name, from a handoff's switch until the new shard's first snapshot. */
  private handedOffFrom: string | undefined;
  /** From a rejoin's Welcome until the first snapshot: the shard's ticks start over. */
  private restarted = false;
  /** Where the session is: the first shard's URL, then each handoff's address. */
  private url: string;
  /** The last kick's reason on the session's socket (decides whether a drop is rejoined). */
  private lastKick: string | undefined;
  private closing = false;
  private rejoining: Rejoin | undefined;
  private seq = 0;
  private pending: PendingInput[] = [];
  private lastSentAt = Number.NEGATIVE_INFINITY;
  private readonly listeners: { [K in keyof RealtimeEvents]?: RealtimeEvents[K][] } = {};
  private readonly now: () => number;
  private readonly connectTimeoutMs: number;
  private readonly silenceTimeoutMs: number;
  /** When the last message from a shard arrived (client clock), and the silence check's timer. */
  private lastMessageAt = 0;
  private watchdog: { timer: ReturnType<typeof setInterval>; lastCheckAt: number } | undefined;
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
  /** The newest snapshot `decode` read in place (`entities` is a view into the socket's message). */
  private readonly incoming: SnapshotFields = snapshotFields();

  constructor(private readonly options: RealtimeOptions) {
    this.now = options.now ?? (() => performance.now());
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.silenceTimeoutMs = options.silenceTimeoutMs ?? 5000;
    if (!Number.isFinite(this.silenceTimeoutMs) || this.silenceTimeoutMs < 0) {
      throw new RangeError(`silenceTimeoutMs must be 0 (never) or a positive number of milliseconds, got ${options.silenceTimeoutMs}`);
    }
    this.url = options.url;
  }

  /** The entities in the area of interest, as delta snapshots rebuilt them. */
  get store(): SnapshotStore {
    return this.snapshots;
  }

  /** Name of the shard the session is on ('' before the Welcome). */
  get shardName(): string {
    return this.welcome?.shardName ?? '';
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
    const socket = this.openSocket(this.options.url);
    this.socket = socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no Welcome from ${this.options.url} within ${this.connectTimeoutMs} ms`));
        socket.close();
      }, this.connectTimeoutMs);
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
        // After a handoff the session is on another socket; this one is closing.
        if (socket !== this.socket) return;
        const msg = this.decode(socket, ev.data, ev.reused);
        if (msg instanceof Error) {
          settle(() => reject(msg));
          return;
        }
        if (msg.body === 'welcome') {
          const w = msg.welcome as aethex.v1.Welcome;
          this.welcome = w;
          this.lastAckedSeq = w.lastInputSeq;
          this.seq = Math.max(this.seq, w.lastInputSeq);
          this.watchSilence();
          settle(() => resolve(w));
          return;
        }
        this.handle(msg);
        if (msg.body === 'kick') {
          const k = msg.kick as aethex.v1.Kick;
          settle(() => reject(new Error(`kicked: ${reasonName(k.reason)}: ${k.message}`)));
        }
      };
      socket.onclose = (ev) => {
        this.closed(socket, ev);
        settle(() => reject(new Error(`closed before joining: ${ev.code} ${ev.reason}`)));
      };
      socket.onerror = () => {
        // onclose follows with the details.
      };
    });
  }

  private openSocket(url: string): WebSocketLike {
    const create =
      this.options.createSocket ??
      ((u: string) => {
        const Ctor = (globalThis as { WebSocket?: new (u: string) => WebSocketLike }).WebSocket;
        if (!Ctor) throw new Error('no global WebSocket: pass createSocket (for example from the ws package)');
        return new Ctor(u);
      });
    const socket = create(url);
    // Browsers deliver binary messages as Blobs unless told otherwise; `ws` in Node delivers
    // Buffers by default, which decode as they are (an ArrayBuffer would be a copy of each).
    if (socket.binaryType !== 'nodebuffer') socket.binaryType = 'arraybuffer';
    return socket;
  }

  /**
   * Counts and decodes a message; one that does not decode closes its socket (1002). A snapshot is
   * read in place into `incoming`, to be handled before the next message is decoded (and before
   * the handler returns: `entities` is a view of `raw`). Any other message is decoded from a copy
   * when `raw` is `reused` (its bytes fields are views of what they were decoded from).
   */
  private decode(socket: WebSocketLike, raw: unknown, reused = false): Decoded | Error {
    const data = raw instanceof ArrayBuffer ? new Uint8Array(raw) : (raw as Uint8Array);
    this.bytesReceived += data.length;
    this.lastMessageAt = this.now();
    if (readSnapshotMessage(data, this.incoming)) return SNAPSHOT_IN_PLACE;
    try {
      return ServerMessage.decode(reused ? new Uint8Array(data) : data);
    } catch (err) {
      socket.close(1002, 'undecodable message');
      return err as Error;
    }
  }

  /** A socket closed. That ends the session if it was the session's, unless a handoff is moving it. */
  private closed(socket: WebSocketLike, ev: { code: number; reason: string }): void {
    if (socket !== this.socket || this.handoff) return;
    const rejoin = this.options.rejoin;
    if (rejoin && !this.closing && this.welcome && !(this.lastKick && FINAL_KICKS.has(this.lastKick))) {
      this.socket = undefined;
      this.startRejoin(ev.code, ev.reason);
      return;
    }
    this.end(ev.code, ev.reason);
  }

  /** The session's connection is gone: hold inputs, report the drop, first attempt after 100 ms. */
  private startRejoin(code: number, reason: string): void {
    const rejoin: Rejoin = { since: this.now(), attempts: 0 };
    this.rejoining = rejoin;
    this.holdInputs();
    this.emit('disconnected', code, reason);
    this.rejoinAfter(rejoin, 100);
  }

  /** The session is over: the silence check stops and 'close' is emitted. */
  private end(code: number, reason: string): void {
    if (this.watchdog) clearInterval(this.watchdog.timer);
    this.watchdog = undefined;
    this.emit('close', code, reason);
  }

  /** Checks a few times per `silenceTimeoutMs` that the session's socket still hears from its shard. */
  private watchSilence(): void {
    const limit = this.silenceTimeoutMs;
    if (limit === 0 || this.watchdog) return;
    const every = Math.max(50, Math.min(1000, limit / 4));
    const watchdog = {
      lastCheckAt: this.now(),
      timer: setInterval(() => {
        const now = this.now();
        // A check this late means this client's own event loop was stalled: messages may be
        // waiting to be read behind this timer. Look again next time.
        const late = now - watchdog.lastCheckAt > 2 * every;
        watchdog.lastCheckAt = now;
        const socket = this.socket;
        if (late || !socket || this.handoff || this.rejoining || this.closing || now - this.lastMessageAt < limit) return;
        const reason = `no message from the shard for ${Math.round(now - this.lastMessageAt)} ms`;
        socket.onmessage = null;
        socket.onclose = null;
        socket.onerror = null;
        socket.close(4000, 'no message from the shard');
        this.closed(socket, { code: 4000, reason });
      }, every),
    };
    (watchdog.timer as { unref?: () => void }).unref?.();
    this.watchdog = watchdog;
  }

  /**
   * The next rejoin attempt after `delayMs`, or the end of the session when `giveUpAfterMs` has
   * passed since the drop.
   */
  private rejoinAfter(rejoin: Rejoin, delayMs: number): void {
    const options = this.options.rejoin;
    if (!options || this.rejoining !== rejoin) return;
    const giveUpAfterMs = options.giveUpAfterMs ?? 30_000;
    const left = rejoin.since + giveUpAfterMs - this.now();
    if (left <= 0) {
      this.stopRejoin(rejoin, 4000, 'rejoin given up');
      this.end(1006, `could not rejoin ${this.shardName} within ${giveUpAfterMs} ms`);
      return;
    }
    const next = Math.min(delayMs * 2, options.maxDelayMs ?? 1000);
    rejoin.timer = setTimeout(
      () => {
        rejoin.timer = undefined;
        const budgetMs = Math.min(this.connectTimeoutMs, rejoin.since + giveUpAfterMs - this.now());
        if (budgetMs <= 0) this.rejoinAfter(rejoin, next);
        else this.attemptRejoin(rejoin, options.joinToken, next, budgetMs);
      },
      Math.min(delayMs, left),
    );
  }

  /**
   * One attempt: a fresh join token, a new socket, a Join, all within `budgetMs`. An attempt that
   * fails — the token call rejects, the socket closes before the Welcome, or the time is up — is
   * abandoned and the next one scheduled `nextDelayMs` later.
   */
  private attemptRejoin(
    rejoin: Rejoin,
    joinToken: NonNullable<RealtimeOptions['rejoin']>['joinToken'],
    nextDelayMs: number,
    budgetMs: number,
  ): void {
    if (this.rejoining !== rejoin) return;
    rejoin.attempts++;
    const url = this.url;
    const attempt: RejoinAttempt = {
      deadline: setTimeout(() => this.failRejoinAttempt(rejoin, attempt, nextDelayMs), budgetMs),
    };
    rejoin.current = attempt;
    const fail = () => this.failRejoinAttempt(rejoin, attempt, nextDelayMs);
    Promise.resolve()
      .then(() => joinToken({ name: this.shardName, url }))
      .then((token) => {
        // Timed out, closed, or the session ended meanwhile.
        if (rejoin.current !== attempt) return;
        const socket = this.openSocket(url);
        attempt.socket = socket;
        socket.onopen = () =>
          socket.send(
            ClientMessage.encode({ join: { joinToken: token, protocolVersion: PROTOCOL_VERSION, clientVersion: 'aethex-sdk' } }).finish(),
          );
        socket.onmessage = (ev) => {
          if (socket !== this.socket && rejoin.current !== attempt) return;
          const msg = this.decode(socket, ev.data, ev.reused);
          if (msg instanceof Error) return;
          if (socket === this.socket) this.handle(msg);
          else if (msg.body === 'welcome') this.completeRejoin(rejoin, attempt, socket, msg.welcome as aethex.v1.Welcome);
        };
        socket.onclose = (ev) => {
          if (socket === this.socket) this.closed(socket, ev);
          else fail();
        };
        socket.onerror = () => {
          // onclose follows.
        };
      })
      .catch(fail);
  }

  /** Abandons the attempt under way (idempotent) and schedules the next one. */
  private failRejoinAttempt(rejoin: Rejoin, attempt: RejoinAttempt, nextDelayMs: number): void {
    if (rejoin.current !== attempt) return;
    this.abandonRejoinAttempt(rejoin, 4000, 'rejoin attempt failed');
    this.rejoinAfter(rejoin, nextDelayMs);
  }

  /**
   * Cancels the attempt under way: its deadline, and its socket, closed with `code`. 4000 for an
   * attempt that failed (a shard that did join it keeps the entity for the next attempt), 1000 on
   * `close()` (the player leaves).
   */
  private abandonRejoinAttempt(rejoin: Rejoin, code: number, reason: string): void {
    const attempt = rejoin.current;
    rejoin.current = undefined;
    if (!attempt) return;
    clearTimeout(attempt.deadline);
    attempt.socket?.close(code, reason);
  }

  /** The rejoin is over without success: nothing is pending and no attempt socket stays open. */
  private stopRejoin(rejoin: Rejoin, code: number, reason: string): void {
    clearTimeout(rejoin.timer);
    rejoin.timer = undefined;
    this.abandonRejoinAttempt(rejoin, code, reason);
    if (this.rejoining === rejoin) this.rejoining = undefined;
  }

  /** Joined again: the session carries on on the new socket, unacknowledged inputs re-sent. */
  private completeRejoin(rejoin: Rejoin, attempt: RejoinAttempt, socket: WebSocketLike, w: aethex.v1.Welcome): void {
    clearTimeout(attempt.deadline);
    rejoin.current = undefined;
    this.rejoining = undefined;
    this.socket = socket;
    this.welcome = w;
    this.lastKick = undefined;
    this.restarted = true;
    this.lastTick = 0;
    // A restarted shard may be behind what it acknowledged before (its last snapshot): inputs
    // after its last applied one are re-sent, and numbering continues above both.
    this.lastAckedSeq = Math.min(this.lastAckedSeq, w.lastInputSeq);
    this.acknowledgeInputs(w.lastInputSeq, this.now());
    this.seq = Math.max(this.seq, w.lastInputSeq);
    this.resendHeld();
    this.emit('rejoined', { shard: w.shardName, downMs: this.now() - rejoin.since, attempts: rejoin.attempts });
  }

  private handle(msg: Decoded): void {
    if (msg.body === 'snapshot') {
      const s = msg === SNAPSHOT_IN_PLACE ? this.incoming : ((msg as aethex.v1.ServerMessage).snapshot as aethex.v1.Snapshot);
      if (s.layout !== SNAPSHOT_LAYOUT) {
        this.socket?.close(1002, `unknown snapshot layout ${s.layout}`);
        return;
      }
      const at = this.now();
      const gapMs = this.lastSnapshotAt > 0 ? at - this.lastSnapshotAt : 0;
      this.maxSnapshotGapMs = Math.max(this.maxSnapshotGapMs, gapMs);
      this.lastSnapshotAt = at;
      const before = this.store.current;
      const from = this.handedOffFrom;
      const fresh = from !== undefined || this.restarted;
      // The new shard's (or the restarted shard's) first snapshot starts over in its own tick
      // space; the old view stays current until then so rendering never sees an empty world.
      if (fresh) this.snapshots = new SnapshotStore();
      const changes = this.store.apply(s.tick, s.baseTick, s.entities, s.removed, 'removedCount' in s ? s.removedCount : s.removed.length);
      if (s.tick <= this.lastTick) return;
      this.handedOffFrom = undefined;
      this.restarted = false;
      this.previousFrame = before;
      this.lastTick = s.tick;
      this.acknowledgeInputs(s.lastInputSeq, at);
      const frame = changes.frame;
      const self = this.welcome ? frame.indexOf(this.welcome.entityId as number) : -1;
      if (self >= 0 && this.welcome) {
        const scale = this.welcome.positionScale as number;
        this.reconcile((frame.qx[self] as number) * scale, (frame.qy[self] as number) * scale);
      }
      // Worked out only for listeners (a bot, or a headless client, has none). Compared with the old
      // shard's view, entities both shards show neither leave nor re-enter.
      if (this.listeners.enter?.length) {
        const entered = !fresh ? changes.entered : changes.frame.idsNotIn(before);
        for (const id of entered) this.emit('enter', id, changes.frame.get(id) as EntityRecord);
      }
      if (this.listeners.leave?.length) {
        const left = !fresh ? changes.left : before.idsNotIn(changes.frame);
        for (const id of left) this.emit('leave', id);
      }
      this.emit('snapshot', s.tick);
      if (from !== undefined) this.emit('handoff', { from, to: this.shardName, gapMs });
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
    } else if (msg.body === 'gameMessage') {
      const g = msg.gameMessage as aethex.v1.GameMessage;
      this.emit('message', g.topic, g.payload, g.tick);
    } else if (msg.body === 'handoffRedirect') {
      this.beginHandoff(msg.handoffRedirect as aethex.v1.HandoffRedirect);
    } else if (msg.body === 'kick') {
      // During a handoff the old shard no longer holds the session: the resume decides its end.
      if (this.handoff) return;
      const k = msg.kick as aethex.v1.Kick;
      this.lastKick = reasonName(k.reason);
      this.emit('kick', reasonName(k.reason), k.message);
    }
  }

  /**
   * Follows a redirect: opens a socket to the new shard and resumes there. Until its Welcome,
   * snapshots from the old shard are still applied and new inputs are held back (see `move`).
   */
  private beginHandoff(r: aethex.v1.HandoffRedirect): void {
    // A second redirect before the first completed is the server's mistake; the first one stands.
    if (this.handoff) return;
    // The old shard applied inputs up to here; later ones are re-sent to the new shard.
    this.acknowledgeInputs(r.lastInputSeq, this.now());
    this.holdInputs();
    let socket: WebSocketLike;
    try {
      socket = this.openSocket(r.address);
    } catch (err) {
      const reason = `cannot connect to ${r.address}: ${(err as Error).message}`;
      this.failHandoff(reason, 1006, reason);
      return;
    }
    const handoff: Handoff = {
      socket,
      address: r.address,
      timer: setTimeout(() => {
        const reason = handoff.kicked ?? `no Welcome from ${r.address} within ${this.connectTimeoutMs} ms`;
        this.failHandoff(reason, 1006, reason);
      }, this.connectTimeoutMs),
    };
    this.handoff = handoff;
    socket.onopen = () => {
      // Ack 0: ticks are per shard, so the new shard starts with a full snapshot.
      socket.send(ClientMessage.encode({ resume: { resumeToken: r.resumeToken, protocolVersion: PROTOCOL_VERSION, ackTick: 0 } }).finish());
    };
    socket.onmessage = (ev) => {
      if (socket !== this.socket && this.handoff !== handoff) return;
      const msg = this.decode(socket, ev.data, ev.reused);
      // An undecodable message closed the socket; its close ends the handoff or the session.
      if (msg instanceof Error) return;
      if (socket === this.socket) this.handle(msg);
      else if (msg.body === 'welcome') this.completeHandoff(handoff, msg.welcome as aethex.v1.Welcome);
      else if (msg.body === 'kick') {
        const k = msg.kick as aethex.v1.Kick;
        handoff.kicked = `kicked: ${reasonName(k.reason)}: ${k.message}`;
        this.emit('kick', reasonName(k.reason), k.message);
      }
    };
    socket.onclose = (ev) => {
      if (this.handoff === handoff)
        this.failHandoff(handoff.kicked ?? `closed before Welcome: ${ev.code} ${ev.reason}`, ev.code, ev.reason);
      else this.closed(socket, ev);
    };
    socket.onerror = () => {
      // onclose follows with the details.
    };
  }

  /**
   * The new shard welcomed the session: everything goes to it from now on. The inputs the old
   * shard did not apply are re-sent in order, then the old socket is closed.
   */
  private completeHandoff(handoff: Handoff, w: aethex.v1.Welcome): void {
    clearTimeout(handoff.timer);
    this.handoff = undefined;
    const old = this.socket;
    this.handedOffFrom = this.shardName;
    this.socket = handoff.socket;
    this.url = handoff.address;
    this.welcome = w;
    this.lastKick = undefined;
    this.handoffs++;
    // Old ticks mean nothing to the new shard; acknowledge none until its first snapshot.
    this.lastTick = 0;
    this.acknowledgeInputs(w.lastInputSeq, this.now());
    this.seq = Math.max(this.seq, w.lastInputSeq);
    this.resendHeld();
    old?.close(1000, 'handed off');
  }

  /**
   * Resuming failed: the old shard no longer plays this entity, so the session is over — unless
   * the client rejoins, which it does on the old shard (a fresh join there).
   */
  private failHandoff(reason: string, code: number, closeReason: string): void {
    this.emit('handoffFailed', reason);
    if (!this.options.rejoin || this.closing) {
      this.endDuringHandoff(code, closeReason);
      return;
    }
    const handoff = this.handoff;
    this.handoff = undefined;
    if (handoff) {
      clearTimeout(handoff.timer);
      handoff.socket.close(1000, 'handoff failed');
    }
    const old = this.socket;
    this.socket = undefined;
    old?.close(1000, 'handoff failed; rejoining');
    this.startRejoin(code, closeReason);
  }

  /**
   * Closes both sockets of a handoff and reports the end of the session here: the old socket may
   * have closed already, and neither socket's close is the session's any more.
   */
  private endDuringHandoff(code: number, reason: string): void {
    const handoff = this.handoff;
    this.handoff = undefined;
    if (handoff) {
      clearTimeout(handoff.timer);
      handoff.socket.close(1000, 'client closed');
    }
    const old = this.socket;
    this.socket = undefined;
    old?.close(1000, 'client closed');
    this.end(code, reason);
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

  /**
   * Keeps the newest `MAX_HELD_INPUTS` unacknowledged inputs for the next shard; older ones are
   * lost (the next snapshot's reconciliation no longer replays them).
   */
  private holdInputs(): void {
    const over = this.pending.length - MAX_HELD_INPUTS;
    if (over <= 0) return;
    for (let i = 0; i < over; i++) this.sentAt.delete((this.pending[i] as PendingInput).seq);
    this.pending.splice(0, over);
  }

  /** After a Welcome: the held inputs the shard has not applied, in order, at most `MAX_HELD_INPUTS`. */
  private resendHeld(): void {
    this.holdInputs();
    for (const p of this.pending) this.sendInput(p);
  }

  /** Server-authoritative position plus the inputs it has not applied yet, each kept in the world. */
  private reconcile(x: number, y: number): void {
    this.predicted.x = x;
    this.predicted.y = y;
    for (const p of this.pending) this.predictStep(p.dx, p.dy);
  }

  /**
   * Moves the prediction by one input as the shard moves the entity (gameserver's `sim/step.ts`):
   * by the move, then kept inside the world's bounds, the maximum exclusive (`insideMax`, float32
   * as the shard stores positions). A player walking into the world's edge is then predicted at
   * the edge, where the shard's corrections put it, instead of a step or two past it.
   */
  private predictStep(dx: number, dy: number): void {
    const b = this.welcome?.worldBounds;
    let x = this.predicted.x + dx;
    let y = this.predicted.y + dy;
    if (b) {
      const minX = b.minX ?? 0;
      const minY = b.minY ?? 0;
      x = Math.min(Math.max(x, minX), insideMax(b.maxX ?? 0));
      y = Math.min(Math.max(y, minY), insideMax(b.maxY ?? 0));
    }
    this.predicted.x = x;
    this.predicted.y = y;
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
    const input = { seq, dx: mx, dy: my, at };
    this.pending.push(input);
    this.sentAt.set(seq, at);
    this.predictStep(mx, my);
    if (this.handoff || this.rejoining) {
      // Nobody to send to yet (the old shard ignores inputs once it redirected; a dropped
      // connection is being rejoined): hold them for the next shard, bounded.
      this.holdInputs();
    } else this.sendInput(input);
    return seq;
  }

  private sendInput(p: PendingInput): void {
    this.sendRaw(
      ClientMessage.encode({
        input: { seq: p.seq, clientTimeMs: Math.floor(p.at) >>> 0, move: { x: p.dx, y: p.dy }, ackTick: this.lastTick },
      }).finish(),
    );
  }

  private sendRaw(bytes: Uint8Array): void {
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(bytes);
      this.lastSentAt = this.now();
    }
  }

  /**
   * Calls a game-defined RPC handler on the shard. Resolves with its payload; rejects with an Error
   * whose `code` is the game's error code (or UNKNOWN_METHOD, INTERNAL, TIMEOUT, or HANDED_OVER
   * for a call made between a handoff's redirect and the new shard's Welcome: call again after
   * the `handoff` event).
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

  /**
   * Ends the session: the socket closes with 1000 (the shard lets the player leave) and 'close'
   * follows once. During a rejoin that is at once: a pending attempt is cancelled and an attempt's
   * socket closed (1000). Nothing is emitted after 'close'.
   */
  close(): void {
    this.closing = true;
    if (this.rejoining) {
      this.stopRejoin(this.rejoining, 1000, 'client closed');
      this.end(1000, 'client closed');
    } else if (this.handoff) this.endDuringHandoff(1000, 'client closed');
    else this.socket?.close(1000, 'client closed');
  }
}
