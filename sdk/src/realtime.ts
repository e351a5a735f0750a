import {
  aethex,
  CLOSE_CODE_CANNOT_READ,
  clampInside,
  MAX_CLIENT_VERSION_BYTES,
  PROTOCOL_VERSION,
  quantumRange,
  readSnapshotMessage,
  SNAPSHOT_LAYOUT,
  type SnapshotFields,
  snapshotFields,
  unwrapTick,
} from '@aethex/proto';
import { interpolate, type Positioned } from './interpolation.js';
import { MAX_RENDER_DELAY_MS, RenderBuffer } from './render-buffer.js';
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
  /** Join token for the shard at `url` (no AeThex service issues them yet: docs/gameserver.md, "Join tokens"). */
  joinToken: string;
  /** Builds the socket; defaults to the global WebSocket (browsers, Node 22+). */
  createSocket?: WebSocketFactory;
  /** Milliseconds clock for input timestamps; defaults to performance.now. */
  now?: () => number;
  /**
   * Your game's name and build, sent in every Join (`Join.client_version`) for the shard's
   * `player joined` log line: e.g. `my-game/1.4.2 (web)`. At most 64 bytes (UTF-8; longer is a
   * RangeError here, and a shard would refuse the Join). Default `aethex-sdk`.
   */
  clientVersion?: string;
  /**
   * Give up connecting, resuming after a handoff, or one rejoin attempt (its join token, the socket
   * opening and the Welcome) after this many milliseconds (default 10 000; Infinity: no timeout).
   * Below 2^31 (a timer cannot wait longer); anything else but Infinity is a RangeError.
   */
  connectTimeoutMs?: number;
  /**
   * Treat the connection as dropped when nothing has arrived from the shard for this long (default
   * 5,000 ms; 0 or Infinity: never). A shard sends a snapshot every tick, so silence means a connection that
   * died without closing — a network gone away, a half-open TCP connection — which the socket
   * itself may not report for minutes. The client then closes it with 4000 and, with `rejoin`,
   * rejoins; without it the session ends ('close' 4000).
   */
  silenceTimeoutMs?: number;
  /**
   * Draw other entities (`interpolatedEntities`) this many milliseconds behind the shard's tick
   * timeline, between the two buffered snapshots around that time, so that a snapshot arriving
   * late (by up to about this less a tick) or a few lost do not stall their motion; 100 suits
   * 40 Hz. Default 0: no buffer, drawn one snapshot interval behind the newest. Above 0 up to 500;
   * anything else is a RangeError. See docs/sdk.md, "Interpolation".
   */
  renderDelayMs?: number;
  /**
   * Rejoin automatically when the connection drops without the server ending the session (the
   * shard crashed or restarted, the network failed), or after a drain or a lag kick: the client
   * joins the shard it was on again with a fresh join token, retrying with backoff, keeps its
   * input sequence and re-sends unacknowledged inputs. Without it, such a drop ends the session.
   */
  rejoin?: {
    /** A join token for the shard to rejoin (from the game's token service; called per attempt). */
    joinToken: (shard: { name: string; url: string }) => Promise<string>;
    /**
     * Longest wait between attempts (default 1,000 ms; the first waits 100 ms, then doubles): a
     * positive number below 2^31.
     */
    maxDelayMs?: number;
    /**
     * Give up after this long without success, counted from the drop (default 30,000 ms; Infinity:
     * never): no attempt runs past it, and 'close' (1006) is emitted then.
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
  /**
   * The shard's position for this client's entity (a snapshot's, quantized, or a Correction's,
   * exact) moved the prediction by more than half a position quantum (`welcome.positionScale`) on
   * an axis: the shard moved it differently (a move it clamped, a game rule). Server information
   * the prediction already agreed with — a Correction for a walk into the world's edge — is not
   * emitted, nor is the first snapshot placing the entity.
   */
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
  /**
   * Resuming on the shard a handoff named failed. Without `rejoin` (or when the new shard spoke a
   * protocol this SDK cannot read) 'close' follows and the session is over; with it the client
   * rejoins that shard, which owns the entity ('disconnected' follows).
   */
  handoffFailed: (reason: string) => void;
  /** The connection dropped and the client is rejoining (only with the `rejoin` option). */
  disconnected: (code: number, reason: string) => void;
  /**
   * The client joined its shard again after a drop; `downMs` from the drop to the Welcome. A rejoin
   * answered with a redirect ends here too, on the new shard, right after its 'handoff'. A drop ends
   * in 'rejoined' or in 'close'; one more before then (a resume that failed, a new shard that
   * dropped before its first snapshot) emits 'disconnected' again, and 'rejoined' counts from it.
   */
  rejoined: (info: { shard: string; downMs: number; attempts: number }) => void;
  /**
   * The session is over: its socket closed (after a kick, a failed handoff, or for any other cause)
   * or the client gave up on it. `code` is the socket's close code or one of `CLIENT_CLOSE_CODES`.
   * Emitted once; nothing is emitted after it, nor after `close()` but it.
   */
  close: (code: number, reason: string) => void;
}

/**
 * Close codes the client sends, and reports in 'close' and 'disconnected', for what it detected
 * itself. Browsers (and Node 22's global WebSocket) let a client close only with 1000 or
 * 3000–4999, so these are application codes, clear of the shard's kicks (4000 + the ReasonCode).
 */
export const CLIENT_CLOSE_CODES = {
  /** Nothing arrived from the shard for `silenceTimeoutMs`: rejoined with `rejoin`. */
  SILENT: 4000,
  /**
   * The shard sent what this SDK cannot read — a message that does not decode, a snapshot layout it
   * does not know: a newer (or broken) shard. Final: not rejoined, as every rejoin would end so too
   * (the shard takes it as a leave).
   */
  PROTOCOL_ERROR: CLOSE_CODE_CANNOT_READ,
  /**
   * A snapshot could not be applied (a delta on a base this client does not have, a malformed
   * body): rejoined with `rejoin`, which starts over with a full snapshot.
   */
  SNAPSHOT_UNUSABLE: 4902,
  /**
   * The resume on the shard the client was redirected to failed without a word from it (no
   * connection, no Welcome in time): the old connection closes with this, not 1000, so the old
   * shard takes it as a drop and keeps the redirect for a join of the player there (the client
   * itself rejoins the neighbour). A resume the neighbour refused closes with 1000: the token is
   * no good, and the old shard forgets the redirect.
   */
  RESUME_FAILED: 4903,
} as const;

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
  /** The move as sent: cut to the Welcome's max speed (made before it: once it arrives). */
  dx: number;
  dy: number;
  /** When the input was sampled (client clock, ms): its first move. */
  at: number;
  /** The moves merged into it, summed, before the cut to max speed. */
  wantX: number;
  wantY: number;
  /** The predicted position after this input, to check a snapshot's position at its seq against. */
  x: number;
  y: number;
}

/** Input→acknowledgement latencies kept for `takeLatencies()`, the newest (about 25 s at 40 Hz). */
const MAX_LATENCIES = 1024;

/** A failed or refused `rpc()`: `code` says which (see `rpc`). */
function rpcError(code: string, message: string): Error & { code: string } {
  return Object.assign(new Error(message), { code });
}

/**
 * Why `connect()` failed: `code` is the shard's kick reason (`SHARD_FULL`, `NOT_READY`,
 * `AUTH_FAILED`, …) or one of the client's own (`CONNECT_FAILED`, `CLOSED`, `TIMEOUT`,
 * `CANNOT_READ`; docs/sdk.md), `closeCode` the socket's close code when it closed, and `cause` the
 * socket's own error (`connect ECONNREFUSED …`, `Unexpected server response: 503`) when it gave one.
 */
export interface ConnectError extends Error {
  code: string;
  closeCode?: number;
}

function connectError(message: string, code: string, closeCode?: number, cause?: unknown): ConnectError {
  const err = new Error(message, cause === undefined ? undefined : { cause });
  return Object.assign(err, { code }, closeCode === undefined ? {} : { closeCode });
}

/** The error a socket's `error` event carries: `ws` gives one (`.error`, `.message`), browsers none. */
function socketErrorOf(ev: unknown): Error | undefined {
  const e = ev as { error?: unknown; message?: unknown } | null | undefined;
  if (e?.error instanceof Error) return e.error;
  if (typeof e?.message === 'string' && e.message !== '') return new Error(e.message);
  return undefined;
}

/** The longest a timer waits: setTimeout fires at once for 2^31 ms or more. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/**
 * How long the socket a handoff left stays open for the answers to RPCs sent on it (the old shard
 * answers one it had not run yet at its next tick; an async handler's, when it settles).
 */
const RETIRE_MS = 2000;

/**
 * Checks a timeout option: a positive number of milliseconds below 2^31, or 0 or Infinity where
 * `allow` says what they mean. Anything else — NaN, a negative number, 2^31 or more (which a timer
 * would turn into 1 ms) — is a RangeError naming the option.
 */
function checkTimeout(name: string, value: unknown, allow: { zero?: string; infinity?: string } = {}): number {
  const ok =
    typeof value === 'number' &&
    (value === Number.POSITIVE_INFINITY
      ? allow.infinity !== undefined
      : value > 0
        ? value <= MAX_TIMER_MS
        : value === 0 && allow.zero !== undefined);
  if (!ok) {
    const also = [allow.zero && `0 (${allow.zero})`, allow.infinity && `Infinity (${allow.infinity})`].filter(Boolean).join(' or ');
    throw new RangeError(`${name} must be a positive number of milliseconds below 2^31${also ? `, or ${also}` : ''}, got ${String(value)}`);
  }
  return value as number;
}

/** setTimeout, or no timer at all for Infinity (a timeout option's "none"). */
function timerFor(fn: () => void, ms: number): ReturnType<typeof setTimeout> | undefined {
  return ms === Number.POSITIVE_INFINITY ? undefined : setTimeout(fn, ms);
}

/**
 * Coordinate `p` moved the least that puts it on quantum `q` of a snapshot (the shard quantizes
 * as `round(p × (1 / scale))`, held to the quanta inside the world's bounds, `range`:
 * `quantumRange`): `p` itself when it is on it; when it is on a neighbouring one (rounding
 * apart, or float drift), just inside `q`'s edge on its side; further off (the shard moved the
 * entity: a game rule, a restarted shard), `q`'s centre. Prediction then never jumps for
 * quantization alone, and a nudge brings it closer to the shard's position, never further.
 */
function ontoQuantum(p: number, q: number, scale: number, range?: { lo: number; hi: number }): number {
  const rounded = Math.round(p * (1 / scale));
  const mine = range ? Math.min(range.hi, Math.max(range.lo, rounded)) : rounded;
  if (mine === q) return p;
  if (Math.abs(mine - q) > 1) return q * scale;
  const edge = (mine < q ? q - 0.5 : q + 0.5) * scale;
  // A hair inside, so that it rounds to `q` whatever the rounding of the division.
  const hair = Math.max(scale * 1e-9, Math.abs(edge) * 4 * Number.EPSILON);
  return mine < q ? edge + hair : edge - hair;
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

/**
 * Unacknowledged inputs kept while connected, at most: beyond it the oldest are dropped from the
 * prediction's replay (and from latency measurement). A shard acknowledges each input the tick it
 * applies it, except while the player's entity is on offer to a neighbour: then it holds their
 * inputs, up to 240 ticks of offer plus its 160 waiting moves, which this leaves room for. Only a
 * shard that stopped acknowledging (a broken one) reaches it; without it the client would keep
 * every input of the session and replay them all at each snapshot.
 */
const MAX_UNACKNOWLEDGED_INPUTS = 4096;

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
  /** None when neither connectTimeoutMs nor giveUpAfterMs limits it. */
  deadline: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Where a redirect received on a connection to `current` sends the client: its `address`, on
 * `wss:` when `current` is — a shard names its neighbours' `ws://` addresses, while a client that
 * reached it through TLS must not resume (its token in the clear) without it.
 */
export function redirectAddress(current: string, address: string): string {
  return /^wss:/i.test(current) && /^ws:/i.test(address) ? `wss:${address.slice(3)}` : address;
}

/** A handoff between its redirect and the new shard's Welcome. */
interface Handoff {
  socket: WebSocketLike;
  address: string;
  shardName: string;
  resumeToken: string;
  /** None with connectTimeoutMs Infinity. */
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Set when the new shard kicked the resume, as the reason the handoff failed. */
  kicked?: string;
}

/**
 * Why the client cannot play by Welcome `w`, or undefined when it can. Its settings must be in the
 * ranges a shard allows for them (gameserver's config.ts): a tick of 5–1000 ms (`tickIntervalUs`
 * 5,000–1,000,000; from a shard that predates it, `tickRateHz` 1–200), a `positionScale` above 0, a
 * `maxSpeed` of 0 or more, world bounds (when sent) with each minimum below its maximum, all
 * finite. Anything else is a broken or hostile shard: a 1 µs tick would size the render buffer at
 * hundreds of MB, and a NaN scale or bound would turn the prediction into NaN.
 */
function welcomeProblem(w: aethex.v1.IWelcome): string | undefined {
  const us = w.tickIntervalUs ?? 0;
  const hz = w.tickRateHz ?? 0;
  if (us !== 0 && !(us >= 5000 && us <= 1_000_000)) return `tickIntervalUs ${us}, outside 5000–1000000 (a tick of 5–1000 ms)`;
  if (us === 0 && !(hz >= 1 && hz <= 200)) return `tickRateHz ${hz} and no tickIntervalUs, outside 1–200 (a tick of 5–1000 ms)`;
  const scale = w.positionScale ?? 0;
  if (!(Number.isFinite(scale) && scale > 0)) return `positionScale ${scale}, not a finite number above 0`;
  const speed = w.maxSpeed ?? 0;
  if (!(Number.isFinite(speed) && speed >= 0)) return `maxSpeed ${speed}, not a finite number of 0 or more`;
  const b = w.worldBounds;
  if (b) {
    const [minX, minY, maxX, maxY] = [b.minX ?? 0, b.minY ?? 0, b.maxX ?? 0, b.maxY ?? 0];
    if (![minX, minY, maxX, maxY].every(Number.isFinite) || !(minX < maxX && minY < maxY)) {
      return `worldBounds minX ${minX} minY ${minY} maxX ${maxX} maxY ${maxY}, not finite numbers with minX < maxX and minY < maxY`;
    }
  }
  return undefined;
}

/** The reason a session ends with for a message that does not decode. */
function undecodable(err: Error): string {
  return `the shard sent a message this SDK cannot decode (${err.message}); update the SDK`;
}

/** The reason a session ends with for a Welcome with `problem` (from `welcomeProblem`). */
function unplayable(problem: string): string {
  return `the shard's Welcome has ${problem}: a shard this SDK cannot read`;
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
  /** Predicted position of this client's entity: `confirmed` plus the inputs not acknowledged yet. */
  readonly predicted: Vec2 = { x: 0, y: 0 };
  /** The prediction as of `lastAckedSeq`, reconciled with the shard's snapshots and corrections. */
  private readonly confirmed: Vec2 = { x: 0, y: 0 };
  /** `quantumRanges` of this Welcome. */
  private rangesOf: aethex.v1.IWelcome | undefined;
  private ranges: { x: { lo: number; hi: number }; y: { lo: number; hi: number } } | undefined;
  /** The shard has said where the entity is (before, the prediction started from (0, 0)). */
  private placed = false;
  /** Server tick of the newest snapshot applied. */
  lastTick = 0;
  /** Last input sequence the server reported as applied (at most the newest sent, see `acknowledgeInputs`). */
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
  /**
   * A rejoin answered with a redirect (`redirectRejoin`): its drop, its attempts, and (`welcomedAt`)
   * when the new shard welcomed the resume. 'rejoined' follows the handoff it turned into.
   */
  private redirectedRejoin: { since: number; attempts: number; welcomedAt?: number } | undefined;
  /** Where the session is: the first shard's URL, then each handoff's address. */
  private url: string;
  /** The last kick's reason on the session's socket (decides whether a drop is rejoined). */
  private lastKick: string | undefined;
  private closing = false;
  /** Set while connect() waits for a join token between sockets (an empty-token redirect): ends that wait. */
  private connectWaiting: (() => void) | undefined;
  /** Set when 'close' was emitted: `code reason`. */
  private endedWith: string | undefined;
  private endedCode: number | undefined;
  private rejoining: Rejoin | undefined;
  /**
   * Where a rejoin goes when it is not the shard of the last Welcome: a failed handoff's target,
   * with the handoff's resume token while the target has not refused it (a resume adopts the
   * entity there even before the old shard's commit arrives; a join waits for it).
   */
  private rejoinTarget: { shardName: string; resumeToken?: string } | undefined;
  private seq = 0;
  /**
   * The newest input sequence sent to any shard: an acknowledgement of a later one (from a broken
   * shard) counts only up to it (see `acknowledgeInputs`).
   */
  private lastSentSeq = 0;
  private pending: PendingInput[] = [];
  /**
   * The newest input while it still takes moves (the last of `pending`, not sent yet): moves made
   * within one tick interval are merged into it, and it goes out when `openTimer` fires.
   */
  private openInput: PendingInput | undefined;
  private openTimer: ReturnType<typeof setTimeout> | undefined;
  /**
   * The earliest the next input may go: a tick interval after the last one closed (sent or held),
   * less up to half an interval by which earlier ones went late — so a loop calling `move` once a
   * tick, whose timers jitter by a millisecond, sends each at once, while over any stretch of time
   * no more than one input goes per interval.
   */
  private nextInputAt = Number.NEGATIVE_INFINITY;
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
  /**
   * Input→acknowledgement latencies in milliseconds since the last `takeLatencies()`, the newest
   * `MAX_LATENCIES`: once full, a ring whose oldest entry is at `latencyNext`.
   */
  private latencies: number[] = [];
  private latencyNext = 0;
  private nextCallId = 1;
  private readonly calls = new Map<
    number,
    {
      method: string;
      resolve: (p: Uint8Array) => void;
      reject: (e: Error) => void;
      timer: ReturnType<typeof setTimeout> | undefined;
      /** The socket it went out on: after a handoff, the old shard answers it there (see `retire`). */
      socket: WebSocketLike | undefined;
    }
  >();
  /**
   * Sockets a handoff left open for the answers to RPCs sent on them (`retire`), each as the
   * function that closes it and stops its timer.
   */
  private readonly retiring = new Set<() => void>();
  /** With `renderDelayMs`: the snapshots others are drawn from. */
  private readonly renderBuffer: RenderBuffer | undefined;
  private previousFrame: ReadonlyMap<number, EntityRecord> = new Map();
  /** Ticks between `previousFrame` and the current frame (1 across a handoff or rejoin). */
  private frameTicks = 1;
  /** Arrival time of the newest snapshot, and the longest gap between two (ms, reset by callers). */
  lastSnapshotAt = 0;
  maxSnapshotGapMs = 0;
  bytesReceived = 0;
  /** The newest snapshot `decode` read in place (`entities` is a view into the socket's message). */
  private readonly incoming: SnapshotFields = snapshotFields();

  /** `options.clientVersion`, checked. */
  private readonly clientVersion: string;

  constructor(private readonly options: RealtimeOptions) {
    this.now = options.now ?? (() => performance.now());
    this.clientVersion = options.clientVersion ?? 'aethex-sdk';
    const versionBytes = typeof this.clientVersion === 'string' ? new TextEncoder().encode(this.clientVersion).length : -1;
    if (!(versionBytes >= 0 && versionBytes <= MAX_CLIENT_VERSION_BYTES)) {
      throw new RangeError(
        `clientVersion must be a string of at most ${MAX_CLIENT_VERSION_BYTES} bytes, got ${versionBytes < 0 ? typeof this.clientVersion : `${versionBytes} bytes`}`,
      );
    }
    this.connectTimeoutMs = checkTimeout('connectTimeoutMs', options.connectTimeoutMs ?? 10_000, { infinity: 'no timeout' });
    const silence = checkTimeout('silenceTimeoutMs', options.silenceTimeoutMs ?? 5000, { zero: 'never', infinity: 'never' });
    this.silenceTimeoutMs = silence === Number.POSITIVE_INFINITY ? 0 : silence;
    const delay = options.renderDelayMs ?? 0;
    if (!(typeof delay === 'number' && delay >= 0 && delay <= MAX_RENDER_DELAY_MS)) {
      throw new RangeError(
        `renderDelayMs must be a positive number of milliseconds up to ${MAX_RENDER_DELAY_MS}, or 0 (no render-delay buffer), got ${String(delay)}`,
      );
    }
    this.renderBuffer = delay > 0 ? new RenderBuffer(delay) : undefined;
    const rejoin = options.rejoin;
    if (rejoin !== undefined) {
      if (typeof rejoin.joinToken !== 'function') throw new TypeError('rejoin.joinToken must be a function that returns a join token');
      if (rejoin.maxDelayMs !== undefined) checkTimeout('rejoin.maxDelayMs', rejoin.maxDelayMs);
      if (rejoin.giveUpAfterMs !== undefined) checkTimeout('rejoin.giveUpAfterMs', rejoin.giveUpAfterMs, { infinity: 'never give up' });
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

  /**
   * The shard's tick interval in milliseconds, at which inputs go out at most (see `move`): the
   * Welcome's exact `tickIntervalUs`, or `1000 / tickRateHz` from a shard that predates it (25
   * before a Welcome). A game that calls `move` once a tick uses this as its tick.
   */
  get tickIntervalMs(): number {
    return this.tickMs();
  }

  /** The session is over: 'close' was emitted (see `move` and `rpc` for what they do then). */
  get ended(): boolean {
    return this.endedWith !== undefined;
  }

  /** Adds `listener` for `event` (a listener added twice is called twice). Returns the client, for chaining. */
  on<K extends keyof RealtimeEvents>(event: K, listener: RealtimeEvents[K]): this {
    // A new array rather than a push: an emit under way calls the listeners it started with.
    this.listeners[event] = [...((this.listeners[event] ?? []) as RealtimeEvents[K][]), listener] as never;
    return this;
  }

  /**
   * Removes `listener` from `event` (once, the latest added, when it was added more than once; a
   * listener not added is ignored). An emit under way still calls the listeners it started with.
   * Returns the client, for chaining.
   */
  off<K extends keyof RealtimeEvents>(event: K, listener: RealtimeEvents[K]): this {
    const list = (this.listeners[event] ?? []) as RealtimeEvents[K][];
    const i = list.lastIndexOf(listener);
    if (i >= 0) this.listeners[event] = [...list.slice(0, i), ...list.slice(i + 1)] as never;
    return this;
  }

  /**
   * Calls `event`'s listeners — but for 'close', none once `close()` was called (by a listener of
   * this very event among others) or the session ended: it is over for the app, and whatever the
   * client was in the middle of (a snapshot's events, a handoff's, a rejoin's) tells it nothing more.
   */
  private emit<K extends keyof RealtimeEvents>(event: K, ...args: Parameters<RealtimeEvents[K]>): void {
    for (const l of this.listeners[event] ?? []) {
      if ((this.closing || this.endedWith !== undefined) && event !== 'close') return;
      (l as (...a: Parameters<RealtimeEvents[K]>) => void)(...args);
    }
  }

  /**
   * Connects and joins; resolves with the server's Welcome, rejects on a kick or close before it —
   * or when the socket cannot even be made (an invalid URL, no WebSocket): then 'close' (1006) is
   * emitted too, as for a connection that failed. A shard that answers the Join with a redirect
   * (it handed the player's entity over to a neighbour while they were away) is followed: the
   * client resumes there, and resolves with that shard's Welcome.
   */
  connect(): Promise<aethex.v1.IWelcome> {
    let socket: WebSocketLike;
    try {
      socket = this.openSocket(this.options.url);
    } catch (err) {
      const reason = `cannot connect to ${this.options.url}: ${(err as Error).message}`;
      this.end(1006, reason);
      return Promise.reject(connectError(reason, 'CONNECT_FAILED', 1006, err));
    }
    return new Promise((resolve, reject) => {
      /** The kick that refused the join; the rejection waits for the socket's close, for its code. */
      let kicked: { reason: string; message: string } | undefined;
      let address = this.options.url;
      const timer = timerFor(() => {
        const message = `no Welcome from ${address} within ${this.connectTimeoutMs} ms`;
        // The client gives up: a Welcome on its way is not taken and the socket's close ends
        // nothing more (they are for `this.socket` alone), so no session starts after connect()
        // rejected — nor a rejoin of one. 1000: the shard lets a player it joined meanwhile leave.
        const socket = this.socket;
        this.socket = undefined;
        socket?.close(1000, 'no Welcome in time');
        this.end(1006, kicked ? `kicked: ${kicked.reason}: ${kicked.message}` : message);
        settle(() =>
          reject(kicked ? connectError(`kicked: ${kicked.reason}: ${kicked.message}`, kicked.reason) : connectError(message, 'TIMEOUT')),
        );
      }, this.connectTimeoutMs);
      let settled = false;
      const settle = (fn: () => void) => {
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          fn();
        }
      };
      /** Sends `hello` (a Join, or a Resume after a redirect) on `socket`, to `url`, and waits for the Welcome. */
      const greet = (socket: WebSocketLike, url: string, hello: Uint8Array) => {
        this.socket = socket;
        address = url;
        let opened = false;
        let socketError: Error | undefined;
        socket.onopen = () => {
          opened = true;
          socket.send(hello);
        };
        socket.onmessage = (ev) => {
          // After a handoff the session is on another socket; this one is closing.
          if (socket !== this.socket) return;
          const msg = this.decode(ev.data, ev.reused);
          const problem = msg instanceof Error || msg.body !== 'welcome' ? undefined : welcomeProblem(msg.welcome as aethex.v1.Welcome);
          if (msg instanceof Error) {
            this.unreadable(socket, undecodable(msg));
          } else if (problem !== undefined) {
            // Ends the session, as an undecodable message does (connect() rejects CANNOT_READ below).
            this.unreadable(socket, unplayable(problem));
          } else if (msg.body === 'welcome') {
            const w = msg.welcome as aethex.v1.Welcome;
            this.welcome = w;
            this.url = url;
            this.numberHeldAfter(w.lastInputSeq);
            this.lastAckedSeq = w.lastInputSeq;
            // Applied by the shard: sent, by this client or an earlier one of the player's.
            this.lastSentSeq = Math.max(this.lastSentSeq, w.lastInputSeq);
            this.seq = Math.max(this.seq, w.lastInputSeq);
            this.resendHeld();
            this.watchSilence();
            settle(() => resolve(w));
            return;
          } else if (msg.body === 'handoffRedirect' && !this.welcome) {
            // The shard handed this player's entity over to a neighbour while they were away (the
            // redirect never reached their previous session): the session continues there.
            const r = msg.handoffRedirect as aethex.v1.HandoffRedirect;
            r.address = redirectAddress(url, r.address);
            socket.onmessage = null;
            socket.onclose = null;
            socket.onerror = null;
            socket.close(1000, 'redirected');
            const follow = (hello: Uint8Array) => {
              let next: WebSocketLike;
              try {
                next = this.openSocket(r.address);
              } catch (err) {
                const reason = `cannot connect to ${r.address}: ${(err as Error).message}`;
                this.socket = undefined;
                this.end(1006, reason);
                settle(() => reject(connectError(reason, 'CONNECT_FAILED', 1006, err)));
                return;
              }
              greet(next, r.address, hello);
            };
            if (r.resumeToken === '') {
              // Nothing to resume there: the entity waits at that shard for the player's join (a
              // neighbour handed it back after that shard restarted). Joined there, with a token for it.
              const joinToken = this.options.rejoin?.joinToken;
              this.socket = undefined;
              if (!joinToken) {
                const reason = `${r.shardName} keeps the entity for a join (no rejoin.joinToken to join it with)`;
                this.end(1000, reason);
                settle(() => reject(connectError(reason, 'CLOSED', 1000)));
                return;
              }
              // No socket meanwhile: `close()` ends the wait through this (it has no socket to close).
              const waiting = () => {
                this.end(1000, 'client closed');
                settle(() => reject(connectError('closed before joining: 1000 client closed', 'CLOSED', 1000)));
              };
              this.connectWaiting = waiting;
              const done = () => {
                if (this.connectWaiting === waiting) this.connectWaiting = undefined;
              };
              Promise.resolve()
                .then(() => joinToken({ name: r.shardName, url: r.address }))
                .then(
                  (token) => {
                    done();
                    if (settled || this.closing || this.ended) return;
                    follow(this.joinHello(token));
                  },
                  (err: unknown) => {
                    done();
                    if (settled) return;
                    const reason = `no join token for ${r.shardName}: ${(err as Error)?.message ?? err}`;
                    this.end(1006, reason);
                    settle(() => reject(connectError(reason, 'CONNECT_FAILED', 1006, err)));
                  },
                );
              return;
            }
            // Ack 0: ticks are per shard, so the new shard starts with a full snapshot.
            follow(
              ClientMessage.encode({ resume: { resumeToken: r.resumeToken, protocolVersion: PROTOCOL_VERSION, ackTick: 0 } }).finish(),
            );
            return;
          } else {
            this.handle(msg);
            if (msg.body === 'kick') {
              const k = msg.kick as aethex.v1.Kick;
              kicked = { reason: reasonName(k.reason), message: k.message };
            }
          }
          // A message this client gave up on ended the session.
          const ended = this.endedCode;
          if (ended !== undefined) {
            const code = ended === CLIENT_CLOSE_CODES.PROTOCOL_ERROR ? 'CANNOT_READ' : 'CLOSED';
            settle(() => reject(connectError(`closed before joining: ${this.endedWith}`, code, ended)));
          }
        };
        socket.onclose = (ev) => {
          // A socket that never opened: the socket's error says why (ECONNREFUSED, ENOTFOUND, an
          // HTTP answer instead of the upgrade), also in 'close' when the close has no reason.
          const failed = !opened && !kicked;
          const reason = failed && !ev.reason && socketError ? socketError.message : ev.reason;
          this.closed(socket, { code: ev.code, reason });
          settle(() =>
            reject(
              kicked
                ? connectError(`kicked: ${kicked.reason}: ${kicked.message}`, kicked.reason, ev.code)
                : failed
                  ? connectError(
                      `cannot connect to ${url}: ${socketError?.message ?? `closed ${ev.code} ${ev.reason}`.trim()}`,
                      'CONNECT_FAILED',
                      ev.code,
                      socketError,
                    )
                  : connectError(`closed before joining: ${ev.code} ${ev.reason}`, 'CLOSED', ev.code, socketError),
            ),
          );
        };
        socket.onerror = (ev) => {
          // onclose follows with the code; this has the cause, where the socket gives one.
          socketError ??= socketErrorOf(ev);
        };
      };
      greet(socket, this.options.url, this.joinHello(this.options.joinToken));
    });
  }

  /** A Join with `joinToken`, encoded; `entityId`: a rejoin's, the entity the session had (a restarted shard waits for it). */
  private joinHello(joinToken: string, entityId = 0): Uint8Array {
    return ClientMessage.encode({
      join: { joinToken, protocolVersion: PROTOCOL_VERSION, clientVersion: this.clientVersion, entityId },
    }).finish();
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
   * Counts and decodes a message; one that does not decode is returned as the Error (see
   * `unreadable`). A snapshot is
   * read in place into `incoming`, to be handled before the next message is decoded (and before
   * the handler returns: `entities` is a view of `raw`). Any other message is decoded from a copy
   * when `raw` is `reused` (its bytes fields are views of what they were decoded from).
   */
  private decode(raw: unknown, reused = false): Decoded | Error {
    const data = raw instanceof ArrayBuffer ? new Uint8Array(raw) : (raw as Uint8Array);
    this.bytesReceived += data.length;
    this.lastMessageAt = this.now();
    if (readSnapshotMessage(data, this.incoming)) return SNAPSHOT_IN_PLACE;
    try {
      return ServerMessage.decode(reused ? new Uint8Array(data) : data);
    } catch (err) {
      return err as Error;
    }
  }

  /**
   * `socket` brought what this SDK cannot read — a message that does not decode, a Welcome whose
   * settings it cannot play by (`welcomeProblem`): the shard speaks a protocol this SDK does not
   * (or is broken), which rejoining would not change. Whichever socket of the session it is — the
   * session's, a handoff's new shard's, a rejoin attempt's — the session ends
   * (`CLIENT_CLOSE_CODES.PROTOCOL_ERROR`), with `reason`.
   */
  private unreadable(socket: WebSocketLike, reason: string): void {
    const code = CLIENT_CLOSE_CODES.PROTOCOL_ERROR;
    const rejoin = this.rejoining;
    if (this.handoff && socket === this.handoff.socket) this.failHandoff(reason, code, reason, true);
    else if (rejoin && socket === rejoin.current?.socket) {
      this.stopRejoin(rejoin, code, 'protocol error');
      this.end(code, reason);
    } else this.drop(socket, code, 'protocol error', reason, true);
  }

  /**
   * Closes `socket` from this side with `code` (and `socketReason`, which a browser limits to 123
   * bytes) and handles it as closed so at once, with `reason`: its own close event may come much
   * later, or never. `final`: not rejoined.
   */
  private drop(socket: WebSocketLike, code: number, socketReason: string, reason: string, final = false): void {
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    socket.close(code, socketReason);
    this.closed(socket, { code, reason }, final);
  }

  /**
   * A socket closed. That ends the session if it was the session's, unless a handoff is moving it
   * or (with `rejoin`, after the Welcome, unless `final` or a final kick) the client rejoins.
   */
  private closed(socket: WebSocketLike, ev: { code: number; reason: string }, final = false): void {
    if (socket !== this.socket || this.handoff) return;
    const rejoin = this.options.rejoin;
    if (rejoin && !final && !this.closing && this.welcome && !(this.lastKick && FINAL_KICKS.has(this.lastKick))) {
      this.socket = undefined;
      this.startRejoin(ev.code, ev.reason);
      return;
    }
    this.end(ev.code, ev.reason);
  }

  /**
   * The session's connection is gone: hold inputs, give up on RPCs in flight, report the drop, first
   * attempt after 100 ms.
   */
  private startRejoin(code: number, reason: string): void {
    // A rejoin answered with a redirect whose resume failed: this rejoin is the one to report.
    this.redirectedRejoin = undefined;
    const rejoin: Rejoin = { since: this.now(), attempts: 0 };
    this.rejoining = rejoin;
    this.holdInputs();
    this.failCalls('DISCONNECTED', `lost: the connection dropped (${code} ${reason}) before its result came; it may have run`);
    this.emit('disconnected', code, reason);
    this.rejoinAfter(rejoin, 100);
  }

  /**
   * The session is over (once): the silence check stops, RPCs in flight reject `CLOSED`, inputs
   * that will never be acknowledged are dropped, sockets a handoff left open close, and 'close' is
   * emitted.
   */
  private end(code: number, reason: string): void {
    if (this.endedWith !== undefined) return;
    this.endedWith = `${code} ${reason}`;
    this.endedCode = code;
    clearTimeout(this.openTimer);
    this.openInput = undefined;
    if (this.watchdog) clearInterval(this.watchdog.timer);
    this.watchdog = undefined;
    this.pending = [];
    this.sentAt.clear();
    this.failCalls('CLOSED', `lost: the session closed (${this.endedWith}) before its result came`);
    // Their calls rejected just now: sockets a handoff left, and their timers, go too (either would
    // keep a Node process from exiting for up to RETIRE_MS).
    for (const done of [...this.retiring]) done();
    this.emit('close', code, reason);
  }

  /** An RPC's answer: its call resolves or rejects (one answered already, or timed out, is ignored). */
  private settleCall(r: aethex.v1.RpcResult): void {
    const call = this.calls.get(r.callId);
    if (!call) return;
    this.calls.delete(r.callId);
    clearTimeout(call.timer);
    if (r.ok) call.resolve(r.payload);
    else call.reject(rpcError(r.errorCode, `rpc ${call.method} failed: ${r.errorCode}`));
  }

  /**
   * The socket to the shard a handoff left: closed at once, unless RPCs sent on it are still
   * unanswered — the old shard answers them there (HANDED_OVER for one it had not run yet, the
   * result of one it ran), so it stays open for their answers alone, up to RETIRE_MS (or until the
   * session ends, see `end`); those still unanswered then reject DISCONNECTED (they may have run).
   */
  private retire(old: WebSocketLike | undefined): void {
    if (!old) return;
    const waiting = () => {
      for (const call of this.calls.values()) if (call.socket === old) return true;
      return false;
    };
    if (!waiting()) {
      old.close(1000, 'handed off');
      return;
    }
    const done = () => {
      clearTimeout(timer);
      this.retiring.delete(done);
      old.onmessage = null;
      old.onclose = null;
      for (const [id, call] of this.calls) {
        if (call.socket !== old) continue;
        this.calls.delete(id);
        clearTimeout(call.timer);
        call.reject(
          rpcError('DISCONNECTED', `rpc ${call.method} lost: its shard handed the player over before answering (it may have run)`),
        );
      }
      old.close(1000, 'handed off');
    };
    const timer = timerFor(done, RETIRE_MS);
    this.retiring.add(done);
    old.onmessage = (ev) => {
      // Only answers: the old shard's snapshots describe a ghost now, and are not decoded.
      const data = ev.data instanceof ArrayBuffer ? new Uint8Array(ev.data) : (ev.data as Uint8Array);
      let msg: aethex.v1.ServerMessage;
      try {
        msg = ServerMessage.decode(ev.reused ? new Uint8Array(data) : data);
      } catch {
        return;
      }
      if (msg.body !== 'rpcResult') return;
      this.settleCall(msg.rpcResult as aethex.v1.RpcResult);
      if (!waiting()) done();
    };
    old.onclose = done;
  }

  /** Rejects every RPC in flight with `code`: `rpc <method> <what>`. */
  private failCalls(code: string, what: string): void {
    const calls = [...this.calls.values()];
    this.calls.clear();
    for (const call of calls) {
      clearTimeout(call.timer);
      call.reject(rpcError(code, `rpc ${call.method} ${what}`));
    }
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
        this.drop(socket, CLIENT_CLOSE_CODES.SILENT, 'no message from the shard', reason);
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
    const target = this.rejoinTarget;
    const resumeToken = target?.resumeToken;
    const attempt: RejoinAttempt = {
      deadline: timerFor(() => this.failRejoinAttempt(rejoin, attempt, nextDelayMs), budgetMs),
    };
    rejoin.current = attempt;
    const fail = () => this.failRejoinAttempt(rejoin, attempt, nextDelayMs);
    Promise.resolve()
      .then(() => (resumeToken === undefined ? joinToken({ name: target?.shardName ?? this.shardName, url }) : ''))
      .then((token) => {
        // Timed out, closed, or the session ended meanwhile.
        if (rejoin.current !== attempt) return;
        const socket = this.openSocket(url);
        attempt.socket = socket;
        socket.onopen = () =>
          socket.send(
            resumeToken === undefined
              ? this.joinHello(token, this.welcome?.entityId ?? 0)
              : ClientMessage.encode({ resume: { resumeToken, protocolVersion: PROTOCOL_VERSION, ackTick: 0 } }).finish(),
          );
        socket.onmessage = (ev) => {
          if (socket !== this.socket && rejoin.current !== attempt) return;
          const msg = this.decode(ev.data, ev.reused);
          if (msg instanceof Error) this.unreadable(socket, undecodable(msg));
          else if (socket === this.socket) this.handle(msg);
          else if (msg.body === 'welcome') this.completeRejoin(rejoin, attempt, socket, msg.welcome as aethex.v1.Welcome);
          else if (msg.body === 'handoffRedirect')
            this.redirectRejoin(rejoin, attempt, socket, msg.handoffRedirect as aethex.v1.HandoffRedirect);
          else if (msg.body === 'kick' && resumeToken !== undefined && this.rejoinTarget === target && target)
            // The target refused the token (spent, expired, or it restarted): join it from now on.
            this.rejoinTarget = { shardName: target.shardName };
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

  /**
   * Joined again: the session carries on on the new socket, unacknowledged inputs re-sent — unless
   * the Welcome is one this SDK cannot play by, which ends the session.
   */
  private completeRejoin(rejoin: Rejoin, attempt: RejoinAttempt, socket: WebSocketLike, w: aethex.v1.Welcome): void {
    const problem = welcomeProblem(w);
    if (problem !== undefined) {
      this.unreadable(socket, unplayable(problem));
      return;
    }
    clearTimeout(attempt.deadline);
    rejoin.current = undefined;
    this.rejoining = undefined;
    this.rejoinTarget = undefined;
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
    // A handoff whose new shard dropped before its first snapshot: the handoff is told now, before
    // the rejoin, not at the first snapshot after it (as if the client had just come from there).
    const from = this.handedOffFrom;
    this.handedOffFrom = undefined;
    if (from !== undefined) this.emit('handoff', { from, to: this.shardName, gapMs: this.now() - this.lastSnapshotAt });
    this.emit('rejoined', { shard: w.shardName, downMs: this.now() - rejoin.since, attempts: rejoin.attempts });
  }

  /**
   * The shard answered the rejoin with a redirect: the entity was handed over to a neighbour while
   * the connection was down (the redirect never arrived, or the client came back after resuming
   * there failed). The client resumes there as after any redirect; 'rejoined' follows that
   * handoff's 'handoff' (or, if the resume fails, the rejoin that follows reports itself).
   */
  private redirectRejoin(rejoin: Rejoin, attempt: RejoinAttempt, socket: WebSocketLike, r: aethex.v1.HandoffRedirect): void {
    clearTimeout(attempt.deadline);
    rejoin.current = undefined;
    this.rejoining = undefined;
    this.rejoinTarget = undefined;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = null;
    socket.close(1000, 'redirected');
    this.redirectedRejoin = { since: rejoin.since, attempts: rejoin.attempts };
    this.beginHandoff(r);
  }

  private handle(msg: Decoded): void {
    // After close() the session is over for the app: what the shard sent before it read the close
    // — a snapshot (a handoff's first one among them), a kick, a game message — is not applied and
    // emits nothing, as a redirect is not followed (`beginHandoff`). Answers to RPCs still settle.
    if (this.closing && msg.body !== 'rpcResult') return;
    if (msg.body === 'snapshot') {
      const s = msg === SNAPSHOT_IN_PLACE ? this.incoming : ((msg as aethex.v1.ServerMessage).snapshot as aethex.v1.Snapshot);
      const socket = this.socket as WebSocketLike;
      if (s.layout !== SNAPSHOT_LAYOUT) {
        const reason = `the shard speaks snapshot layout ${s.layout}, this SDK reads layout ${SNAPSHOT_LAYOUT}; update the SDK`;
        this.drop(socket, CLIENT_CLOSE_CODES.PROTOCOL_ERROR, 'protocol error', reason, true);
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
      const store = fresh ? new SnapshotStore() : this.store;
      // Ticks count on past 2^32 here; the wire carries their low 32 bits.
      const tick = unwrapTick(s.tick, store.latestTick);
      const baseTick = s.baseTick === 0 ? 0 : unwrapTick(s.baseTick, store.latestTick);
      let changes: ReturnType<SnapshotStore['apply']>;
      try {
        changes = store.apply(tick, baseTick, s.entities, s.removed, 'removedCount' in s ? s.removedCount : s.removed.length);
      } catch (err) {
        // The store is as it was; only a full snapshot helps, which a rejoin (Join, ack 0) gets.
        const reason = `snapshot ${tick} could not be applied: ${(err as Error).message}`;
        this.drop(socket, CLIENT_CLOSE_CODES.SNAPSHOT_UNUSABLE, 'snapshot could not be applied', reason);
        return;
      }
      this.snapshots = store;
      if (tick <= this.lastTick) return;
      this.handedOffFrom = undefined;
      this.restarted = false;
      this.previousFrame = before;
      // Over the real interval: a client sent every 4th snapshot interpolates over 4 ticks. Across
      // shards (or a restart) tick numbers are unrelated: one tick.
      this.frameTicks = fresh || before.tick <= 0 || tick - before.tick <= 0 ? 1 : tick - before.tick;
      this.lastTick = tick;
      this.acknowledgeInputs(s.lastInputSeq, at);
      const frame = changes.frame;
      if (this.renderBuffer) {
        // Never drawn between ticks of two shards (or of a shard before and after a restart).
        if (fresh) this.renderBuffer.reset();
        this.renderBuffer.push(frame, at, this.tickMs());
      }
      const self = this.welcome ? frame.indexOf(this.welcome.entityId as number) : -1;
      if (self >= 0 && this.welcome) {
        const scale = this.welcome.positionScale as number;
        const qx = frame.qx[self] as number;
        const qy = frame.qy[self] as number;
        const c = this.confirmed;
        const r = this.quantumRanges();
        this.correctTo(
          ontoQuantum(c.x, qx, scale, r?.x),
          ontoQuantum(c.y, qy, scale, r?.y),
          { x: qx * scale, y: qy * scale },
          s.lastInputSeq,
        );
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
      this.emit('snapshot', tick);
      if (from !== undefined) {
        this.emit('handoff', { from, to: this.shardName, gapMs });
        // A rejoin that followed a redirect is over too: its drop ends in 'rejoined' (unless a
        // 'handoff' listener closed the client: then nothing but 'close' follows, see emit).
        const redirected = this.redirectedRejoin;
        this.redirectedRejoin = undefined;
        if (redirected)
          this.emit('rejoined', {
            shard: this.shardName,
            downMs: (redirected.welcomedAt ?? at) - redirected.since,
            attempts: redirected.attempts,
          });
      }
      // Inputs carry the acknowledgement; an idle client sends it on its own.
      if (at - this.lastSentAt > 1.5 * this.tickMs()) {
        this.sendRaw(ClientMessage.encode({ ack: { ackTick: this.lastTick >>> 0 } }).finish());
      }
    } else if (msg.body === 'rpcResult') {
      this.settleCall(msg.rpcResult as aethex.v1.RpcResult);
    } else if (msg.body === 'correction') {
      const c = msg.correction as aethex.v1.Correction;
      this.acknowledgeInputs(c.lastInputSeq, this.now());
      // One about inputs a newer snapshot already acknowledged is out of date.
      if (c.lastInputSeq < this.lastAckedSeq) return;
      const x = c.position?.x ?? 0;
      const y = c.position?.y ?? 0;
      // Exact (float32, as the shard keeps it), unlike a snapshot's: taken as it is.
      this.correctTo(x, y, { x, y }, c.lastInputSeq);
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
    // One read after close() is not followed: the player is leaving, and the new shard lets the
    // entity it adopted go when no resume comes (handoff.resume_timeout_ms).
    if (this.handoff || this.closing) return;
    r.address = redirectAddress(this.url, r.address);
    // The old shard applied inputs up to here; later ones are re-sent to the new shard.
    this.acknowledgeInputs(r.lastInputSeq, this.now());
    this.holdInputs();
    if (r.resumeToken === '') {
      // Nothing to resume there: the entity waits for the player's join (a neighbour handed it back
      // to that shard, which had restarted: docs/sharding.md). Joined there, as after a drop.
      this.failHandoff(`${r.shardName} keeps the entity for a join`, 1000, 'joining where the entity is', false, r);
      return;
    }
    let socket: WebSocketLike;
    try {
      socket = this.openSocket(r.address);
    } catch (err) {
      const reason = `cannot connect to ${r.address}: ${(err as Error).message}`;
      this.failHandoff(reason, 1006, reason, false, r);
      return;
    }
    const handoff: Handoff = {
      socket,
      address: r.address,
      shardName: r.shardName,
      resumeToken: r.resumeToken,
      timer: timerFor(() => {
        const reason = handoff.kicked ?? `no Welcome from ${r.address} within ${this.connectTimeoutMs} ms`;
        this.failHandoff(reason, 1006, reason, false, handoff);
      }, this.connectTimeoutMs),
    };
    this.handoff = handoff;
    socket.onopen = () => {
      // Ack 0: ticks are per shard, so the new shard starts with a full snapshot.
      socket.send(ClientMessage.encode({ resume: { resumeToken: r.resumeToken, protocolVersion: PROTOCOL_VERSION, ackTick: 0 } }).finish());
    };
    socket.onmessage = (ev) => {
      if (socket !== this.socket && this.handoff !== handoff) return;
      const msg = this.decode(ev.data, ev.reused);
      if (msg instanceof Error) this.unreadable(socket, undecodable(msg));
      else if (socket === this.socket) this.handle(msg);
      else if (msg.body === 'welcome') this.completeHandoff(handoff, msg.welcome as aethex.v1.Welcome);
      else if (msg.body === 'kick') {
        const k = msg.kick as aethex.v1.Kick;
        handoff.kicked = `kicked: ${reasonName(k.reason)}: ${k.message}`;
        this.emit('kick', reasonName(k.reason), k.message);
      }
    };
    socket.onclose = (ev) => {
      if (this.handoff === handoff)
        this.failHandoff(handoff.kicked ?? `closed before Welcome: ${ev.code} ${ev.reason}`, ev.code, ev.reason, false, handoff);
      else this.closed(socket, ev);
    };
    socket.onerror = () => {
      // onclose follows with the details.
    };
  }

  /**
   * The new shard welcomed the session: everything goes to it from now on. The inputs the old
   * shard did not apply are re-sent in order, then the old socket is closed. A Welcome this SDK
   * cannot play by fails the handoff, for good.
   */
  private completeHandoff(handoff: Handoff, w: aethex.v1.Welcome): void {
    const problem = welcomeProblem(w);
    if (problem !== undefined) {
      this.unreadable(handoff.socket, unplayable(problem));
      return;
    }
    clearTimeout(handoff.timer);
    this.handoff = undefined;
    const old = this.socket;
    this.handedOffFrom = this.shardName;
    if (this.redirectedRejoin) this.redirectedRejoin.welcomedAt = this.now();
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
    this.retire(old);
  }

  /**
   * Resuming failed: the old shard no longer plays this entity, so the session is over — unless
   * the client rejoins, when not `final`: on the shard it was redirected to (`target`), which owns
   * the entity since before the redirect was sent. Its join there takes the entity (one that
   * drained or restarted meanwhile kept it in its snapshot for the player); a join on the old
   * shard would find it gone and start the player afresh.
   */
  private failHandoff(
    reason: string,
    code: number,
    closeReason: string,
    final = false,
    target?: { address: string; shardName: string; resumeToken: string },
  ): void {
    this.emit('handoffFailed', reason);
    // Refused by the neighbour (a kick), or never heard from it (see RESUME_FAILED); not when
    // there was nothing to resume (an empty token).
    const unheard = this.handoff?.kicked === undefined && target?.resumeToken !== '';
    if (final || !this.options.rejoin || this.closing) {
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
    old?.close(unheard ? CLIENT_CLOSE_CODES.RESUME_FAILED : 1000, 'handoff failed; rejoining');
    if (target) {
      this.url = target.address;
      // Never heard from, the target may still take the token (it restarted meanwhile, or drained:
      // then it refuses it, and a join takes the entity from its snapshot).
      this.rejoinTarget = { shardName: target.shardName, ...(unheard ? { resumeToken: target.resumeToken } : {}) };
    }
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

  /**
   * The shard applied the inputs up to `lastInputSeq`: they leave `pending`, their latencies are
   * recorded and `confirmed` moves to the prediction after the last of them. One it cannot have
   * applied — after the newest input sent (a broken shard's) — counts only up to that one: believed
   * whole, `lastAckedSeq` would stay above every later input and no honest acknowledgement would
   * count again.
   */
  private acknowledgeInputs(lastInputSeq: number, at: number): void {
    const acked = Math.min(lastInputSeq, this.lastSentSeq);
    if (acked <= this.lastAckedSeq) return;
    let applied = 0;
    for (const p of this.pending) {
      if (p.seq > acked) break;
      const sent = this.sentAt.get(p.seq);
      if (sent !== undefined) {
        this.recordLatency(at - sent);
        this.sentAt.delete(p.seq);
      }
      this.confirmed.x = p.x;
      this.confirmed.y = p.y;
      applied++;
    }
    this.lastAckedSeq = acked;
    if (applied > 0) this.pending.splice(0, applied);
  }

  private recordLatency(ms: number): void {
    if (this.latencies.length < MAX_LATENCIES) this.latencies.push(ms);
    else {
      this.latencies[this.latencyNext] = ms;
      this.latencyNext = (this.latencyNext + 1) % MAX_LATENCIES;
    }
  }

  /** Keeps the newest `MAX_HELD_INPUTS` unacknowledged inputs for the next shard (see `dropOldestInputs`). */
  private holdInputs(): void {
    this.dropOldestInputs(MAX_HELD_INPUTS);
  }

  /**
   * Keeps the newest `keep` unacknowledged inputs; older ones are lost (the next snapshot's
   * reconciliation no longer replays them).
   */
  private dropOldestInputs(keep: number): void {
    const over = this.pending.length - keep;
    if (over <= 0) return;
    for (let i = 0; i < over; i++) this.sentAt.delete((this.pending[i] as PendingInput).seq);
    this.pending.splice(0, over);
  }

  /**
   * At the first Welcome: inputs made before it were numbered from 1, but the shard may hold this
   * player's entity from an earlier session (a rejoin window) and take only numbers above its
   * `lastInputSeq`. They are numbered on from there, in order.
   */
  private numberHeldAfter(lastInputSeq: number): void {
    if ((this.pending[0]?.seq ?? Number.POSITIVE_INFINITY) > lastInputSeq) return;
    // The old and new numbers overlap (held 1–5 after 2 become 3–7): all times out before any go back in.
    const times = this.pending.map((p) => this.sentAt.get(p.seq));
    for (const p of this.pending) this.sentAt.delete(p.seq);
    let seq = lastInputSeq;
    this.pending.forEach((p, k) => {
      p.seq = ++seq;
      const at = times[k];
      if (at !== undefined) this.sentAt.set(p.seq, at);
    });
    this.seq = seq;
  }

  /**
   * After a Welcome: the held inputs the shard has not applied, in order, at most
   * `MAX_HELD_INPUTS`, each cut to its max speed (those made before the first Welcome were not) and
   * the prediction replayed by its rules.
   */
  private resendHeld(): void {
    this.holdInputs();
    for (const p of this.pending) this.limitSpeed(p);
    this.reconcile(this.confirmed.x, this.confirmed.y);
    // The open input goes out when its tick interval is over, like any other.
    for (const p of this.pending) if (p !== this.openInput) this.sendInput(p);
  }

  /** The quanta inside the world's bounds on each axis, as the shard sends them (none without bounds in the Welcome). */
  private quantumRanges(): { x: { lo: number; hi: number }; y: { lo: number; hi: number } } | undefined {
    const w = this.welcome;
    if (w !== this.rangesOf) {
      this.rangesOf = w;
      const b = w?.worldBounds;
      const scale = w?.positionScale;
      this.ranges =
        b && scale ? { x: quantumRange(b.minX ?? 0, b.maxX ?? 0, scale), y: quantumRange(b.minY ?? 0, b.maxY ?? 0, scale) } : undefined;
    }
    return this.ranges;
  }

  /**
   * Reconciles from (x, y), the entity's position as of `lastAckedSeq`, and emits 'correction'
   * (with `reported`, the shard's position, as of input `seq`) when that moved the prediction by
   * more than half a quantum on an axis — unless this is the first position the shard gave.
   */
  private correctTo(x: number, y: number, reported: Vec2, seq: number): void {
    const fromX = this.predicted.x;
    const fromY = this.predicted.y;
    this.reconcile(x, y);
    const half = ((this.welcome?.positionScale as number) || 0) / 2;
    const moved = Math.abs(this.predicted.x - fromX) > half || Math.abs(this.predicted.y - fromY) > half;
    if (moved && this.placed) this.emit('correction', reported, seq);
    this.placed = true;
  }

  /**
   * The prediction from the shard's position as of `lastAckedSeq`: that, plus the inputs it has
   * not applied yet, each replayed by its rules.
   */
  private reconcile(x: number, y: number): void {
    this.confirmed.x = x;
    this.confirmed.y = y;
    this.predicted.x = x;
    this.predicted.y = y;
    for (const p of this.pending) this.predictStep(p);
  }

  /**
   * Moves the prediction by one input as the shard moves the entity (gameserver's `sim/step.ts`):
   * by the move as it travels (float32), then kept inside the world's bounds, the maximum exclusive
   * and the minimum a float32 (`clampInside`), stored as float32 as the shard stores positions. A player walking into the
   * world's edge is then predicted at the edge, where the shard's corrections put it, instead of a
   * step or two past it; and a prediction from a position the shard reported exactly stays exact.
   * Records the result in `p`.
   */
  private predictStep(p: PendingInput): void {
    const b = this.welcome?.worldBounds;
    let x = this.predicted.x + Math.fround(p.dx);
    let y = this.predicted.y + Math.fround(p.dy);
    if (b) {
      x = clampInside(x, b.minX ?? 0, b.maxX ?? 0);
      y = clampInside(y, b.minY ?? 0, b.maxY ?? 0);
    }
    p.x = this.predicted.x = Math.fround(x);
    p.y = this.predicted.y = Math.fround(y);
  }

  /** Cuts an input's move to the Welcome's max speed, as the shard would (none before a Welcome). */
  private limitSpeed(p: PendingInput): void {
    const max = this.welcome?.maxSpeed as number | undefined;
    if (max === undefined) return;
    const len = Math.hypot(p.dx, p.dy);
    if (len > max) {
      p.dx *= max / len;
      p.dy *= max / len;
    }
  }

  /**
   * Milliseconds per tick, which paces inputs: the Welcome's exact `tickIntervalUs`; from a shard
   * that predates it, its `tickRateHz` (rounded: a 16 ms tick says 63 Hz, and inputs paced by it
   * go out a little faster than the shard applies them, so lag grows); 40 Hz before a Welcome.
   */
  private tickMs(): number {
    const us = (this.welcome?.tickIntervalUs as number | undefined) ?? 0;
    if (us > 0) return us / 1000;
    return 1000 / ((this.welcome?.tickRateHz as number) || 40);
  }

  /**
   * Adds a movement intent to the prediction and to the input of the current tick interval; returns
   * that input's sequence number. At most one input goes out per tick interval (the shard applies
   * one per tick, and counts messages against a rate limit): moves made within one interval are
   * merged — summed, then cut to the world's max speed as the shard would — into one input, sent
   * when the interval is over; a move after an idle interval is sent at once. The prediction moves
   * at once by exactly what will be sent, so it matches what the server will do. Call it every frame
   * with that frame's share of the movement (speed × frame time), or once per tick with a tick's.
   * While there is no shard to send to — before the Welcome, during a handoff or a rejoin — inputs
   * are held (at most `MAX_HELD_INPUTS`, the newest) and sent after the next Welcome (those made
   * before the first one numbered after the shard's `lastInputSeq`); while connected, at most
   * `MAX_UNACKNOWLEDGED_INPUTS` unacknowledged ones are kept, the newest. Throws a RangeError for a move
   * that is not two finite numbers (the shard would refuse it). Once the session has ended
   * (`ended`), does nothing and returns 0.
   */
  move(dx: number, dy: number): number {
    if (!Number.isFinite(dx) || !Number.isFinite(dy)) throw new RangeError(`move needs finite numbers, got (${dx}, ${dy})`);
    if (this.endedWith !== undefined) return 0;
    const open = this.openInput;
    if (open) {
      // Merged: the input's move is the sum so far, cut; the prediction is replayed from before it.
      open.wantX += dx;
      open.wantY += dy;
      open.dx = open.wantX;
      open.dy = open.wantY;
      this.limitSpeed(open);
      const before = this.pending.length > 1 ? (this.pending[this.pending.length - 2] as PendingInput) : this.confirmed;
      this.predicted.x = before.x;
      this.predicted.y = before.y;
      this.predictStep(open);
      return open.seq;
    }
    const seq = ++this.seq;
    const at = this.now();
    const input: PendingInput = { seq, dx, dy, wantX: dx, wantY: dy, at, x: 0, y: 0 };
    this.limitSpeed(input);
    this.pending.push(input);
    this.sentAt.set(seq, at);
    this.dropOldestInputs(MAX_UNACKNOWLEDGED_INPUTS);
    this.predictStep(input);
    const wait = this.nextInputAt - at;
    if (wait <= 0) this.closeInput(input, at);
    else {
      this.openInput = input;
      this.closeWhenDue(input, wait, true);
    }
    return seq;
  }

  /**
   * Closes the open input once it is due (`nextInputAt`). A timer may fire up to a millisecond
   * early (Node counts from its loop's whole milliseconds): then it waits the rest, once, so inputs
   * never go out faster than the shard's tick — a client a few percent faster would build a queue
   * of inputs at the shard, and lag, that grows without end.
   */
  private closeWhenDue(input: PendingInput, waitMs: number, again: boolean): void {
    this.openTimer = setTimeout(() => {
      const now = this.now();
      const left = this.nextInputAt - now;
      if (left > 0 && again) this.closeWhenDue(input, left, false);
      else this.closeInput(input, now);
    }, Math.ceil(waitMs));
    (this.openTimer as { unref?: () => void }).unref?.();
  }

  /** An input takes no more moves: it is sent, or held while there is no shard to send it to. */
  private closeInput(input: PendingInput, at: number): void {
    if (this.openInput === input) {
      clearTimeout(this.openTimer);
      this.openInput = undefined;
    }
    if (this.endedWith !== undefined) return;
    this.nextInputAt = Math.max(this.nextInputAt, at - this.tickMs() / 2) + this.tickMs();
    if (!this.welcome || this.handoff || this.rejoining) {
      // Nobody to send to yet (not joined; the old shard ignores inputs once it redirected; a
      // dropped connection is being rejoined): hold them for the next shard, bounded.
      this.holdInputs();
    } else this.sendInput(input);
  }

  private sendInput(p: PendingInput): void {
    if (p.seq > this.lastSentSeq) this.lastSentSeq = p.seq;
    this.sendRaw(
      ClientMessage.encode({
        input: { seq: p.seq, clientTimeMs: Math.floor(p.at) >>> 0, move: { x: p.dx, y: p.dy }, ackTick: this.lastTick >>> 0 },
      }).finish(),
    );
  }

  /**
   * Sends a message on the session's socket — unless it is larger than the shard takes
   * (`tooLarge`): the shard would close the connection for it and the player would leave, so it is
   * dropped here and false returned (`rpc` checks first, to say so; an input or an
   * acknowledgement is far below the smallest limit the shard allows).
   */
  private sendRaw(bytes: Uint8Array): boolean {
    if (this.tooLarge(bytes) !== undefined) return false;
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(bytes);
      this.lastSentAt = this.now();
      return true;
    }
    return false;
  }

  /**
   * The shard's limit (`welcome.maxMessageSize`: its gateway.max_message_size) when `bytes` is over
   * it, else undefined — also when the shard did not say (one that predates the field).
   */
  private tooLarge(bytes: Uint8Array): number | undefined {
    const max = (this.welcome?.maxMessageSize as number | undefined) ?? 0;
    return max > 0 && bytes.length > max ? max : undefined;
  }

  /**
   * Calls a game-defined RPC handler on the shard. Resolves with its payload; rejects with an Error
   * whose `code` is the game's error code, or:
   * - UNKNOWN_METHOD, INTERNAL: the shard's answer;
   * - TIMEOUT: no result within `timeoutMs` (default 10,000; Infinity: no timeout; NaN, 0, a
   *   negative number or 2^31 and more throw a RangeError, as a timer cannot wait that long);
   * - HANDED_OVER: made between a handoff's redirect and the new shard's Welcome, or before the
   *   redirect but not run yet when it came (not run; call again after the `handoff` event);
   * - NOT_JOINED: made before the Welcome (at once; not sent);
   * - DISCONNECTED: made during a rejoin, until the Welcome of a shard that answered it with a
   *   redirect too (at once; not sent: call again after `rejoined`), or in flight when the
   *   connection dropped, or still unanswered 2 s after a handoff moved the session off the shard
   *   it was sent to (it may have run);
   * - CLOSED: made after the session ended (at once), or in flight when it did (it may have run);
   * - MESSAGE_TOO_LARGE: its encoded message (method, payload and a few bytes of framing) is larger
   *   than the shard takes (`welcome.maxMessageSize`, the shard's gateway.max_message_size, 4096
   *   bytes by default): at once, not sent; the session carries on. Sent anyway, the shard would
   *   close the connection (1009) and the player would leave.
   */
  rpc(method: string, payload: Uint8Array = new Uint8Array(0), timeoutMs = 10_000): Promise<Uint8Array> {
    checkTimeout('timeoutMs', timeoutMs, { infinity: 'no timeout' });
    if (this.endedWith !== undefined) return Promise.reject(rpcError('CLOSED', `rpc ${method}: the session closed (${this.endedWith})`));
    if (!this.welcome) return Promise.reject(rpcError('NOT_JOINED', `rpc ${method}: not joined yet (wait for connect())`));
    // No shard to ask: a rejoin is under way — also one answered with a redirect, which has no
    // socket until the new shard's Welcome.
    if (this.rejoining || !this.socket) {
      return Promise.reject(rpcError('DISCONNECTED', `rpc ${method}: the connection dropped and the client is rejoining`));
    }
    const callId = this.nextCallId;
    const bytes = ClientMessage.encode({ rpc: { callId, method, payload } }).finish();
    const max = this.tooLarge(bytes);
    if (max !== undefined) {
      return Promise.reject(
        rpcError(
          'MESSAGE_TOO_LARGE',
          `rpc ${method}: its message is ${bytes.length} bytes, over the shard's limit of ${max} bytes (gateway.max_message_size); not sent`,
        ),
      );
    }
    this.nextCallId++;
    return new Promise((resolve, reject) => {
      const timer = timerFor(() => {
        this.calls.delete(callId);
        reject(rpcError('TIMEOUT', `rpc ${method} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      this.calls.set(callId, { method, resolve, reject, timer, socket: this.socket });
      this.sendRaw(bytes);
    });
  }

  /** Inputs sent but not yet acknowledged by the server (or held for it). */
  get unacknowledged(): number {
    return this.pending.length;
  }

  /**
   * Input→acknowledgement latencies (ms) measured since the last call, oldest first: at most the
   * newest 1,024 (about 25 s of input at 40 Hz), so a client nobody asks keeps a fixed amount.
   */
  takeLatencies(): number[] {
    const kept = this.latencies;
    const out = this.latencyNext === 0 ? kept : kept.slice(this.latencyNext).concat(kept.slice(0, this.latencyNext));
    this.latencies = [];
    this.latencyNext = 0;
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
   * one snapshot interval behind the newest, so motion is smooth between 40 Hz updates. The
   * interval is the real one — the ticks between the two snapshots × the tick's milliseconds — so a
   * client sent every 4th snapshot (a slow link) sees entities move evenly, not freeze and rush. An
   * entity that moved further than max speed allows in those ticks (a teleport, a respawn) is drawn
   * where it is now rather than sliding there; one that left is drawn where it was until the
   * interval is over (see `interpolate`).
   *
   * With `renderDelayMs`, drawn that far behind the shard's tick timeline instead, between the
   * buffered snapshots around that time (see `RenderBuffer`): a late or lost snapshot does not
   * stall motion. The buffer starts over at a handoff or a rejoin, holding the others at the new
   * shard's first snapshot until the delay has passed.
   */
  interpolatedEntities(now = this.now()): Map<number, Positioned> {
    const scale = (this.welcome?.positionScale as number) || 1;
    const maxSpeed = this.welcome?.maxSpeed as number | undefined;
    if (this.renderBuffer) return this.renderBuffer.sample(now, scale, maxSpeed);
    const ticks = this.frameTicks;
    const alpha = (now - this.lastSnapshotAt) / (ticks * this.tickMs());
    const maxStep = maxSpeed ? (maxSpeed * ticks) / scale : undefined;
    return interpolate(this.previousFrame, this.store.current, alpha, scale, maxStep);
  }

  /**
   * Ends the session: the socket closes with 1000 (the shard lets the player leave) and 'close'
   * follows once. During a rejoin that is at once: a pending attempt is cancelled and an attempt's
   * socket closed (1000). From the call on nothing but 'close' is emitted — also when a listener
   * calls it in the middle of an event's work (the rest of a snapshot's events, a rejoin's
   * 'rejoined') — and nothing after 'close'.
   */
  close(): void {
    this.closing = true;
    if (this.rejoining) {
      this.stopRejoin(this.rejoining, 1000, 'client closed');
      this.end(1000, 'client closed');
    } else if (this.handoff) this.endDuringHandoff(1000, 'client closed');
    else if (this.socket) this.socket.close(1000, 'client closed');
    else this.connectWaiting?.();
  }
}
