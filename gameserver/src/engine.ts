import { aethex, clampInside, insideMax, insideMin, unwrapTick } from '@aethex/proto';
import type { Logger } from '@aethex/runtime';
import { type GameserverSettings, MAX_OFFER_TICKS } from './config.js';
import { type GameContext, type GameHooks, type HookPlayer, rpcCodeProblem } from './hooks.js';
import type { ShardMetrics } from './metrics.js';
import { DeltaHistory, HISTORY_TICKS, type Quanta, QuantizedWorld, quantaOf } from './net/delta-history.js';
import { JOB_WORDS, SnapshotCutter, SnapshotThread } from './net/snapshot-threads.js';
import { type CapturedState, captureState, encodeState, type ShardState } from './persist/state-codec.js';
import { applyInput, createRng, type InputResult, type MovementRules, type Rng, step, tickSeed, wander } from './sim/step.js';
import {
  CapacityError,
  ID_REST_TICKS,
  KIND_NPC,
  KIND_PLAYER,
  MAX_CREDIT,
  MAX_GAME_STATE_BYTES,
  MAX_QUEUED_MOVES,
  MODE_DORMANT,
  MODE_GHOST,
  MODE_OFFERED,
  MODE_OWNED,
  type Rect,
  World,
} from './sim/world.js';
import { GRID_CELL_FACTOR, Grid } from './spatial/grid.js';

const { ServerMessage, ReasonCode } = aethex.v1;
/** Histories of ended sessions kept for reuse by later joins. */
const SPARE_HISTORIES = 64;
/** A snapshot thread that takes longer than this for one round is given up (its sessions move here). */
const SNAPSHOT_THREAD_TIMEOUT_MS = 2_000;
/** Steps between rebalancings of sessions over snapshot threads (half a second at 40 Hz). */
const REBALANCE_TICKS = 20;
/** Most sessions moved in one rebalancing, as a share of all (each restarts from a full snapshot). */
const REBALANCE_MAX_SHARE = 0.02;
/** The busier side must be this much slower before sessions move. */
const REBALANCE_SLACK = 1.08;
/** While a client lags past gateway.slow_skip_ticks it gets one snapshot per this many ticks. */
const SLOW_SNAPSHOT_EVERY = 4;
/**
 * A client's round trip is the smallest age of its acknowledgements over the last one to two
 * windows of this many ticks (10 to 20 s at 40 Hz): long enough that a backlog building up is not
 * taken for distance (the drop bound ends a stalled client well before), short enough that a
 * client whose route got longer is not held slow for good.
 */
const RTT_WINDOW_TICKS = 400;
/**
 * The most round trip a client is granted (see `Session.rtt`). A client sets its own round trip
 * by when it acknowledges: one holding its acknowledgements back would otherwise keep full-rate
 * snapshots coming against old bases all the way to `gateway.slow_drop_ticks`. Past this it is
 * lag, as for a client that cannot keep up: what any client costs is bounded by what a player a
 * second away costs.
 */
const MAX_RTT_MS = 1000;
/** A game message's payload at most (GameContext.send), and the shape of its topic. */
const MAX_GAME_MESSAGE_BYTES = 16 * 1024;
const GAME_TOPIC = /^[A-Za-z0-9_.:-]{1,64}$/;

/** Where the engine's per-session output goes: the gateway in production, anything in tests. */
export interface SessionOutput {
  /**
   * Writes one encoded ServerMessage to the session's socket; false if it was dropped
   * (backpressure). The bytes are the engine's to reuse once it returns: copy them to keep them.
   */
  send(sessionId: number, bytes: Uint8Array): boolean;
  /** Ends the session with a reason; the engine has already forgotten it. */
  kick(sessionId: number, reason: aethex.v1.ReasonCode, message: string): void;
  /**
   * Optional, with `sendFrame`: the descriptor a snapshot thread may write this session's next
   * frame to itself, during this step (when the socket is open and nothing is queued on it), or -1.
   * The output must not close that descriptor, nor write to it, until `step` returns.
   */
  directFd?(sessionId: number): number;
  /**
   * Optional, with `directFd`: a whole WebSocket frame (header included) of which a snapshot
   * thread wrote `written` bytes itself (0: none; it sent the descriptor nothing): the output
   * writes the rest, behind nothing else. False if it was dropped (as `send`; never once some of
   * it was written).
   */
  sendFrame?(sessionId: number, frame: Uint8Array, written: number): boolean;
}

/** The engine's settings, a subset of the shard's configuration. */
export type EngineSettings = Pick<
  GameserverSettings,
  | 'engine.tick_rate_ms'
  | 'engine.max_entities'
  | 'engine.max_players'
  | 'engine.rejoin_window_ms'
  | 'engine.world_bounds'
  | 'engine.max_speed'
  | 'engine.aoi_radius'
  | 'engine.max_visible'
  | 'engine.snapshot_threads'
  | 'engine.position_scale'
  | 'engine.npc_count'
  | 'engine.seed'
  | 'gateway.slow_skip_ticks'
  | 'gateway.slow_drop_ticks'
  | 'handoff.resume_timeout_ms'
  | 'handoff.timeout_ms'
  | 'rpc.timeout_ms'
  | 'rpc.max_ms_per_tick'
>;

interface Session {
  id: number;
  playerId: string;
  entityId: number;
  /** 0: snapshots are cut on the tick thread, with `history`; k: by snapshot thread k. */
  thread: number;
  history: DeltaHistory | undefined;
  /** Not yet sent to its snapshot thread (which then starts it a fresh history). */
  fresh: boolean;
  /** Last snapshot tick the client acknowledged (0: none yet). */
  ackTick: number;
  /** Tick at which the session joined; lag is measured from here until the first ack. */
  joinTick: number;
  /** Tick at which its last input arrived (its join's, before the first). */
  inputTick: number;
  /** Tick of the last snapshot sent (0: none). */
  sentTick?: number;
  /**
   * The client's round trip in ticks (the least age of its acknowledgements, see RTT_WINDOW_TICKS;
   * at most MAX_RTT_MS): lag up to this is distance, not slowness. `rttNow` is the current window's least (from tick
   * `rttSince`), `rttBefore` the previous window's.
   */
  rtt: number;
  rttNow: number;
  rttBefore: number;
  rttSince: number;
  /**
   * The entity moved to a neighbour and the client was redirected there: the session only
   * receives snapshots (around the entity's ghost) until the client closes it.
   */
  redirected?: boolean;
  /** How to answer its RPCs not answered yet, queued or running (answered NOT_JOINED when it ends). */
  rpcs?: Set<(r: RpcOutcome) => void>;
  /** Its RPCs waiting for a tick, in arrival order (see `ShardEngine.runRpcs`). */
  rpcQueue?: QueuedRpc[];
}

/** An RPC waiting for its tick (see `ShardEngine.rpc`); `answer` is emptied once it is answered. */
interface QueuedRpc {
  session: Session;
  method: string;
  payload: Uint8Array;
  /** performance.now() when it arrived: past `rpc.timeout_ms` it is answered TIMEOUT, not run. */
  at: number;
  answer: ((r: RpcOutcome) => void) | undefined;
  /** A running handler's `rpc.timeout_ms` (cleared with the answer, whoever gives it). */
  timer?: NodeJS.Timeout | undefined;
}

/** What a game threw, as text for a log line, even when reading it throws (a revoked Proxy, a throwing toString). */
function describeThrown(value: unknown): string {
  try {
    return value instanceof Error ? `${value.name}: ${value.message}` : String(value);
  } catch {
    return `an unprintable ${typeof value}`;
  }
}

/**
 * Whose session ran a hook, as a hook failure's log line names them: the player, and the
 * connection (`conn`, the session's id: the gateway's lines about that connection carry the same).
 */
interface HookCaller {
  player: string;
  conn: number;
}

function hookCaller(session: Session | undefined): HookCaller | undefined {
  return session && { player: session.playerId, conn: session.id };
}

/** The answer to an RPC (`RpcResult`). */
export type RpcOutcome = { ok: true; payload: Uint8Array } | { ok: false; errorCode: string };

const NOT_JOINED: RpcOutcome = { ok: false, errorCode: 'NOT_JOINED' };
const EMPTY = new Uint8Array(0);

/** An entity's whole state as it travels between shards in a handoff. */
export interface EntityTransfer {
  entityId: number;
  x: number;
  y: number;
  vx: number;
  vy: number;
  kind: number;
  flags: number;
  lastInputSeq: number;
  /** The game's state of the entity (`GameContext.setState`), if it has any. */
  state?: Uint8Array;
  /** How many times it has changed owner (`World.handoffs`); absent: never. */
  generation?: number;
}

interface HeldInput {
  seq: number;
  moveX: number;
  moveY: number;
  buttons: number;
}

export type JoinResult =
  | { ok: true; entityId: number; lastInputSeq: number }
  | {
      ok: false;
      reason: aethex.v1.ReasonCode;
      message: string;
      /** The player's entity was handed over to a neighbour: the client continues there (see `commitOffer`). */
      redirect?: aethex.v1.IHandoffRedirect;
    };

/**
 * The authoritative simulation of one shard and its per-client snapshot stream. `tick()` runs one
 * fixed step: NPCs wander, inputs are applied under the movement rules, the grid is rebuilt, and
 * every client gets exactly one snapshot of its area of interest (delta against its last
 * acknowledgement) or, if it lags, none. Clients lagging past the drop bound are kicked. The engine
 * does no I/O itself: output goes through `SessionOutput`.
 */
export class ShardEngine {
  readonly world: World;
  /** The world's grid as of this tick's step; between ticks see `currentGrid`. */
  readonly grid: Grid;
  /** `world.layout` when the grid was built. */
  private gridLayout = -1;
  readonly rules: MovementRules;
  /** The part of the world this shard owns; new entities spawn here. */
  readonly region: Rect;
  tick = 0;
  private readonly sessions = new Map<number, Session>();
  private readonly spareHistories: DeltaHistory[] = [];
  private readonly byEntity = new Map<number, Session>();
  private readonly byPlayer = new Map<string, Session>();
  private readonly corrected: Uint32Array;
  private readonly rng: Rng;
  private readonly quanta: Quanta;
  /** MAX_RTT_MS in ticks. */
  private readonly maxRttTicks: number;
  private readonly quantized: QuantizedWorld;
  private readonly cutter: SnapshotCutter;
  /** Per slot, the session due a snapshot in the current step (empty between steps). */
  private readonly dueBySlot: (Session | undefined)[];
  /** Snapshot threads (engine.snapshot_threads - 1), and the sessions each has (index 0: this thread). */
  private readonly threads: SnapshotThread[] = [];
  private readonly threadLoad: number[] = [0];
  /** Per snapshot thread, the sessions of the jobs of the current round. */
  private readonly threadJobs: Session[][] = [];
  /** Per snapshot thread, whether it has a round in the current step. */
  private readonly threadBegun: boolean[] = [];
  /** Per snapshot thread, the jobs of the current round sent so far. */
  private readonly threadDelivered: number[] = [];
  /** Steps between rebalancings of sessions over the threads (0: never). */
  private readonly rebalanceTicks: number;
  /** Time the tick thread and (on average) the snapshot threads spent cutting since the last rebalancing. */
  private readonly balance = { steps: 0, tickThreadMs: 0, threadMs: 0 };
  /** This thread's sessions due a snapshot in the current round. */
  private readonly mine: Session[] = [];
  /**
   * Players whose entity waits for them to rejoin: player → entity. Their connection dropped, the
   * shard restarted from a snapshot, or (a drain) it is about to.
   */
  private readonly dormant = new Map<string, number>();
  /**
   * When each waiting player's entity goes (a tick), in the order they began to wait: the window
   * is the same for all, so the first entry is always the next to go. Drained players have none.
   */
  private readonly dormantUntil = new Map<string, number>();
  /**
   * The waiting players whose connection dropped here (their entity is surely this shard's), as
   * against players restored from a snapshot (whose entity may have moved on since).
   */
  private readonly droppedHere = new Set<string>();
  /**
   * Players dropped here whose entity a neighbour's claim named as away there too (see
   * `dropDormant`): a copy waits there as well, so a rejoin here claims the entity again.
   */
  private readonly sparedFor = new Set<string>();
  /** Players dropped here whose entity waits for them (`droppedHere`) → when they dropped, by `wallClock`. */
  private readonly droppedAt = new Map<string, number>();
  /** Milliseconds since the Unix epoch, as neighbours count them (see the constructor). */
  readonly wallClock: () => number;
  /**
   * When this run started, by `wallClock`: a copy restored here (from a snapshot stored before)
   * or handed back (adopted by an earlier run) is older than any play that ended after it.
   */
  readonly startedAtWall: number;
  /** Restored players (until they rejoin or their window ends) → the ticks their state lay in the store before the restore. */
  private readonly storedTicks = new Map<string, number>();
  /** engine.rejoin_window_ms in ticks. */
  private readonly rejoinWindowTicks: number;
  /**
   * Entities on offer whose player's connection dropped meanwhile: entity → player, and when they
   * dropped (by `wallClock`: their `droppedAt` once the offer rolls back), and whether a claim to a
   * neighbour named it away meanwhile (`claimedAway`: `sparedFor` once it rolls back). The player
   * keeps their place until the offer is decided; `Sharding` rolls such an offer back, also when
   * it is accepted, so the entity itself waits for them here (see `suspend`). (`commitOffer` of
   * one would leave the redirect to it instead; the shard never commits one.)
   */
  private readonly droppedOnOffer = new Map<number, { playerId: string; at: number; claimedAway?: boolean }>();
  /**
   * Players whose entity this shard handed over and whose client may not have got the redirect
   * (its connection dropped or stalled after the commit), with that
   * redirect, until a tick (the neighbour's resume timeout), in the order they were handed over.
   * Their next join here is answered with it, once: a client that got it and failed to resume
   * (the token is spent or gone) would only be sent back. Forgotten when the client closes the
   * redirected connection itself (it got the redirect) or the player has a session here again.
   */
  private readonly handedOver = new Map<string, { redirect: aethex.v1.IHandoffRedirect; until: number }>();
  /** Inputs that arrived while their entity was on offer, by entity id. */
  private readonly held = new Map<number, HeldInput[]>();
  /** Inputs held per entity on offer at most: the offer's ticks and a full queue (`MAX_OFFER_TICKS`). */
  private readonly maxHeldInputs: number;
  /**
   * Queue room beyond MAX_QUEUED_MOVES for an entity whose offer rolled back, by entity id: the
   * inputs it held, so that they and the live ones after them all wait (none answered as a flood)
   * until the queue has drained.
   */
  private readonly rollbackRoom = new Map<number, number>();
  /** The tick each entity on offer was offered at. */
  private readonly offeredAt = new Map<number, number>();
  /** Entities on offer to a neighbour that ignores late changes: their state and flags cannot change until it is decided. */
  private readonly stateFrozen = new Set<number>();
  /** Places promised to players handed over from a neighbour (see `reserve`). */
  private reservedPlayers = 0;
  /**
   * Players with a place here — a session or an entity waiting for them — as last told to
   * `onPlace`, so that each change is told once.
   */
  private readonly placed = new Set<string>();
  private readonly onPlace: ((event: 'taken' | 'freed', playerId: string, handedOver: boolean) => void) | undefined;

  private readonly metrics: ShardMetrics | undefined;
  private readonly hooks: GameHooks;
  private readonly log: Logger | undefined;
  /** What the game's hooks may do; one object for the engine's life. */
  readonly context: GameContext;

  /**
   * Starts from `options.restored` state when given (after a restart), otherwise spawns the
   * configured NPCs into an empty world. `options.hooks` are the game's extension points.
   */
  constructor(
    private readonly settings: EngineSettings,
    private readonly out: SessionOutput,
    options: {
      metrics?: ShardMetrics;
      restored?: ShardState;
      hooks?: GameHooks;
      log?: Logger;
      /** The part of the world this shard owns (default: all of it). */
      region?: Rect;
      /** Where its players may walk: its region and its neighbours' (`MovementRules.reach`; default: all of the world). */
      reach?: Rect;
      /** The entity ids this shard hands out, [first, limit) (default: all). */
      ids?: { first: number; limit: number };
      /**
       * Move sessions between snapshot threads as their measured costs say (default: true). Off,
       * a session stays where it joined, and the bytes sent do not depend on timing (tests).
       */
      rebalance?: boolean;
      /** Called with each garbage-collection pause of a snapshot thread, in milliseconds (benchmarks). */
      onThreadGc?: (ms: number) => void;
      /**
       * Called when a player takes a place on this shard (a join that is not a rejoin, a resume
       * after a handoff, each player restored from the snapshot) and when the place is freed (they
       * leave, their rejoin window ends, they are handed over, `releasePlaces`): presence, domain
       * events and Agones' player count follow places, not connections. `handedOver`: taken by the
       * resume after a handoff, or freed by a handoff. Called on the tick; must not block.
       */
      onPlace?: (event: 'taken' | 'freed', playerId: string, handedOver: boolean) => void;
      /** Milliseconds since the Unix epoch (default `Date.now`): when a player dropped here, compared with a neighbour's claim (`dropDormant`). */
      wallClock?: () => number;
    } = {},
  ) {
    const { restored } = options;
    this.wallClock = options.wallClock ?? Date.now;
    this.startedAtWall = this.wallClock();
    this.maxHeldInputs =
      Math.min(MAX_OFFER_TICKS, Math.ceil(settings['handoff.timeout_ms'] / settings['engine.tick_rate_ms'])) + MAX_QUEUED_MOVES;
    this.rebalanceTicks = options.rebalance === false ? 0 : REBALANCE_TICKS;
    this.metrics = options.metrics;
    this.hooks = options.hooks ?? {};
    this.log = options.log;
    this.onPlace = options.onPlace;
    const bounds: Rect = settings['engine.world_bounds'];
    this.world = restored?.world ?? new World(settings['engine.max_entities'], options.ids?.first, options.ids?.limit);
    // A freed id rests until no client can still hold it (see World.idRestTicks), and, a player's,
    // until no neighbour can still hold an offer of it (the resume timeout).
    this.world.idRestTicks = Math.max(
      ID_REST_TICKS,
      settings['gateway.slow_drop_ticks'] + HISTORY_TICKS,
      Math.ceil(settings['handoff.resume_timeout_ms'] / settings['engine.tick_rate_ms']),
    );
    this.grid = new Grid(bounds, settings['engine.aoi_radius'] * GRID_CELL_FACTOR, settings['engine.max_entities']);
    this.region = options.region ?? bounds;
    this.rules = {
      bounds,
      maxSpeed: settings['engine.max_speed'],
      region: this.region,
      ...(options.reach ? { reach: options.reach } : {}),
    };
    this.rejoinWindowTicks = Math.ceil(settings['engine.rejoin_window_ms'] / settings['engine.tick_rate_ms']);
    this.corrected = new Uint32Array(settings['engine.max_entities']);
    this.rng = createRng(settings['engine.seed']);
    this.quanta = quantaOf(bounds, settings['engine.position_scale']);
    this.maxRttTicks = Math.ceil(MAX_RTT_MS / settings['engine.tick_rate_ms']);
    this.quantized = new QuantizedWorld(settings['engine.max_entities']);
    // The tick thread's snapshots are written into one buffer, reused: the output copies each.
    let scratch = new Uint8Array(64 * 1024);
    const reuse = (size: number): Uint8Array => {
      if (size > scratch.length) scratch = new Uint8Array(Math.max(size, scratch.length * 2));
      return scratch.subarray(0, size);
    };
    this.cutter = new SnapshotCutter(this.grid, this.quantized, settings['engine.aoi_radius'], settings['engine.max_visible'], reuse);
    this.dueBySlot = new Array<Session | undefined>(settings['engine.max_entities']).fill(undefined);
    for (let t = 1; t < settings['engine.snapshot_threads']; t++) {
      const init = {
        world: this.world.share(),
        grid: this.grid.share(),
        quantized: this.quantized.share(),
        quanta: this.quanta,
        radius: settings['engine.aoi_radius'],
        maxVisible: settings['engine.max_visible'],
      };
      const thread = t;
      this.threads.push(
        new SnapshotThread(
          init,
          settings['engine.max_players'] + 64,
          (err) => this.log?.error({ err, thread }, 'snapshot thread failed; its clients are served by the tick thread'),
          (kind, ms) => {
            this.metrics?.threadGc.observe({ kind }, ms / 1000);
            options.onThreadGc?.(ms);
          },
        ),
      );
      this.threadLoad.push(0);
      this.threadJobs.push([]);
      this.threadBegun.push(false);
      this.threadDelivered.push(0);
    }
    if (restored) {
      this.tick = restored.tick;
      this.world.clock = restored.tick;
      const stored = Math.min(MAX_CREDIT, Math.ceil((restored.storedMs ?? 0) / settings['engine.tick_rate_ms']));
      for (const [entityId, playerId] of restored.players) {
        if (this.world.indexOf(entityId) < 0) continue;
        this.dormant.set(playerId, entityId);
        this.dormantUntil.set(playerId, this.tick + this.rejoinWindowTicks);
        if (stored > 0) this.storedTicks.set(playerId, stored);
        this.syncPlace(playerId);
      }
      // A player's entity with no player to wake it (a snapshot from before awaitingResume was
      // persisted) would be owned here for good, whoever owns it now: it goes.
      const w = this.world;
      for (let i = w.count - 1; i >= 0; i--) {
        if (w.kind[i] === KIND_PLAYER && w.mode[i] === MODE_OWNED) w.despawn(w.id[i] as number);
      }
      // A snapshot saved under wider world bounds (the world was made smaller since): its entities
      // come back at the nearest point inside, not where a player's first move would snap them to
      // (a jump far past max_speed), nor outside the world for good.
      const [loX, loY, hiX, hiY] = [insideMin(bounds.minX), insideMin(bounds.minY), insideMax(bounds.maxX), insideMax(bounds.maxY)];
      let moved = 0;
      for (let i = 0; i < w.count; i++) {
        const x = w.x[i] as number;
        const y = w.y[i] as number;
        if (x >= loX && x <= hiX && y >= loY && y <= hiY) continue;
        w.x[i] = Math.min(Math.max(x, loX), hiX);
        w.y[i] = Math.min(Math.max(y, loY), hiY);
        moved++;
      }
      if (moved > 0) this.log?.warn({ moved, bounds }, 'entities restored outside engine.world_bounds were moved inside them');
    } else {
      for (let i = 0; i < settings['engine.npc_count']; i++) this.spawnAnywhere(KIND_NPC);
    }
    const engine = this;
    const world = this.world;
    this.context = {
      get tick() {
        return engine.tick;
      },
      position(entityId) {
        const slot = world.indexOf(entityId);
        return slot < 0 ? undefined : { x: world.x[slot] as number, y: world.y[slot] as number };
      },
      flags(entityId) {
        const slot = world.indexOf(entityId);
        return slot < 0 ? undefined : (world.flags[slot] as number);
      },
      setFlags(entityId, flags) {
        // 32 bits, as JavaScript's bit operators leave them too (`f | (1 << 31)` and `~0` are negative).
        if (!Number.isInteger(flags) || flags < -0x80000000 || flags > 0xffffffff)
          throw new RangeError(
            `flags must be 32 bits: an integer from -2^31 to 2^32 - 1, got ${typeof flags === 'number' ? flags : typeof flags}`,
          );
        const slot = engine.gameWritableSlot(entityId);
        if (slot < 0) return false;
        world.flags[slot] = flags >>> 0;
        if (world.kind[slot] === KIND_PLAYER) world.flagWrites.set(entityId, (world.flagWrites.get(entityId) ?? 0) + 1);
        return true;
      },
      state(entityId) {
        const state = world.gameState.get(entityId);
        return state && new Uint8Array(state);
      },
      setState(entityId, state) {
        if (state !== undefined && !(state instanceof Uint8Array))
          throw new RangeError(`game state must be a Uint8Array or undefined, got ${typeof state}`);
        if (state !== undefined && state.length > MAX_GAME_STATE_BYTES)
          throw new RangeError(`game state of ${state.length} bytes is over the limit of ${MAX_GAME_STATE_BYTES}`);
        const slot = engine.gameWritableSlot(entityId);
        if (slot < 0) return false;
        if (state === undefined || state.length === 0) world.gameState.delete(entityId);
        // A copy (a Buffer's `slice` would be a view of the game's memory).
        else world.gameState.set(entityId, new Uint8Array(state));
        if (world.kind[slot] === KIND_PLAYER) world.stateWrites.set(entityId, (world.stateWrites.get(entityId) ?? 0) + 1);
        return true;
      },
      spawn(x, y, kind) {
        if (!Number.isInteger(kind) || kind < 2 || kind > 0xffff)
          throw new RangeError(`game entities need a kind from 2 to 65535, got ${kind}`);
        // A NaN would pass the clamp below and put the entity in no cell of the grid.
        if (!Number.isFinite(x) || !Number.isFinite(y)) throw new RangeError(`spawn needs a finite position, got (${x}, ${y})`);
        const b = engine.rules.bounds;
        return world.spawn(clampInside(x, b.minX, b.maxX), clampInside(y, b.minY, b.maxY), kind);
      },
      send(playerId, topic, payload) {
        const bytes = engine.gameMessage(topic, payload);
        const session = engine.byPlayer.get(playerId);
        return session !== undefined && engine.sendToSession(session, bytes);
      },
      broadcast(topic, payload) {
        const bytes = engine.gameMessage(topic, payload);
        let sent = 0;
        for (const session of engine.byPlayer.values()) if (engine.sendToSession(session, bytes)) sent++;
        return sent;
      },
      despawn(entityId) {
        const slot = world.indexOf(entityId);
        if (slot < 0) return false;
        const kind = world.kind[slot] as number;
        // Players' entities (kind 1) are the engine's to remove (with their sessions, waits and
        // handoffs), NPCs' (kind 0) the shard's: a game despawns only its own.
        if (kind < 2) {
          throw new RangeError(
            `despawn removes game entities (kind ≥ 2) only; entity ${entityId} is ${kind === KIND_PLAYER ? "a player's (kind 1)" : 'an NPC (kind 0)'}`,
          );
        }
        if (world.mode[slot] !== MODE_OWNED) throw new Error(`entity ${entityId} is a neighbouring shard's (a ghost here)`);
        return world.despawn(entityId);
      },
      get log() {
        return engine.log as Logger;
      },
    };
  }

  /**
   * Runs a game hook, for `session`'s player when it is about one; an exception is counted and
   * logged (at most once a second per hook, so a hook failing every tick cannot flood the log),
   * never propagated into the tick.
   */
  private callHook(name: string, fn: () => unknown, session?: Session): void {
    if (this.hooksUntil !== Number.POSITIVE_INFINITY && performance.now() > this.hooksUntil) {
      this.hooksSkipped++;
      return;
    }
    try {
      const result = fn();
      // An async hook is not awaited (the tick goes on), but its failure is the hook's failure.
      if (result !== undefined && result !== null && typeof (result as PromiseLike<unknown>).then === 'function') {
        const caller = hookCaller(session);
        (result as PromiseLike<unknown>).then(undefined, (err: unknown) => this.hookFailed(name, err, caller));
      }
    } catch (err) {
      this.hookFailed(name, err, hookCaller(session));
    }
  }

  private readonly hookLoggedAt = new Map<string, number>();
  /** See `limitHooks`. */
  private hooksUntil = Number.POSITIVE_INFINITY;
  /** Hooks not called since `limitHooks`: its time was up. */
  hooksSkipped = 0;

  /**
   * Past `until` (performance.now()), hooks are no longer called (counted in `hooksSkipped`): a
   * drain gives the game's onLeave hooks, which run on its thread where no timer can stop them,
   * part of its time and keeps the rest for the final snapshot. One hook already running still
   * takes what it takes.
   */
  limitHooks(until: number): void {
    this.hooksUntil = until;
  }
  /**
   * Sessions with RPCs waiting for a tick, from `rpcTurnHead` on, in turn: each runs one call a
   * turn and, with more waiting, queues again at the end (`runRpcs`).
   */
  private rpcTurns: Session[] = [];
  private rpcTurnHead = 0;
  /** The calls in the sessions' queues. */
  private rpcWaiting = 0;

  /**
   * A hook failed (for `caller`, the player whose session ran it: on the line when there is one).
   * What the game threw is its own: reading it to log it may throw too (a getter, a revoked
   * Proxy), and that must not reach the tick either.
   */
  private hookFailed(name: string, err: unknown, caller?: HookCaller): void {
    this.metrics?.hookErrors.inc({ hook: name });
    const now = performance.now();
    if (now - (this.hookLoggedAt.get(name) ?? Number.NEGATIVE_INFINITY) >= 1000) {
      this.hookLoggedAt.set(name, now);
      const msg = 'game hook failed (further failures of this hook within 1 s are only counted)';
      try {
        this.log?.error({ err, hook: name, ...caller }, msg);
      } catch (unreadable) {
        this.log?.error({ err: `${describeThrown(err)} (unreadable: ${describeThrown(unreadable)})`, hook: name, ...caller }, msg);
      }
    }
  }

  private hookPlayer(session: Session): HookPlayer {
    return { playerId: session.playerId, entityId: session.entityId };
  }

  /** A hook's message to players, checked and encoded once (see GameContext.send). */
  private gameMessage(topic: string, payload: Uint8Array): Uint8Array {
    if (typeof topic !== 'string' || !GAME_TOPIC.test(topic)) {
      throw new RangeError(`a game message topic is 1–64 of A–Z a–z 0–9 _ . : -, got ${JSON.stringify(String(topic)).slice(0, 80)}`);
    }
    if (!(payload instanceof Uint8Array)) throw new RangeError(`a game message payload is a Uint8Array, got ${typeof payload}`);
    if (payload.length > MAX_GAME_MESSAGE_BYTES) {
      throw new RangeError(`a game message payload is at most ${MAX_GAME_MESSAGE_BYTES} bytes, got ${payload.length}`);
    }
    return ServerMessage.encode({ gameMessage: { topic, payload, tick: this.tick } }).finish();
  }

  private sendToSession(session: Session, bytes: Uint8Array): boolean {
    if (!this.out.send(session.id, bytes)) return false;
    this.metrics?.messagesSent.inc();
    this.metrics?.bytesSent.inc(bytes.length);
    return true;
  }

  /**
   * Tells the game a session ended; `dropped`: its entity waits for the player to rejoin;
   * `handedOver`: it went on to a neighbouring shard.
   */
  private announceLeave(session: Session, dropped: boolean, handedOver = false): void {
    if (this.hooks.onLeave)
      this.callHook('onLeave', () => this.hooks.onLeave?.(this.context, this.hookPlayer(session), { dropped, handedOver }), session);
  }

  /**
   * Answers an RPC through the game's handler for `method`: UNKNOWN_METHOD when there is none, the
   * handler's code when it throws an RpcError (a valid code not the shard's own), TIMEOUT when its
   * promise has not settled within `rpc.timeout_ms` of the call's arrival, INTERNAL (details only
   * in the log) otherwise — a result that is not a Uint8Array or is over 16 KiB among them. The
   * answer to a call whose session ends first is NOT_JOINED, at once: nothing of the caller is kept
   * for a handler that never settles.
   *
   * Handlers run at the start of the next tick, like Nakama's match loop takes its messages: a
   * tick runs them until `rpc.max_ms_per_tick` is spent (at least one a tick), one call of each
   * caller in turn and each caller's in arrival order, and the rest wait for the next. So slow
   * handlers spread over ticks instead of stalling the tick thread between two of them, whatever
   * the number of callers, and one caller's backlog delays another's call by a turn at most.
   */
  rpc(sessionId: number, method: string, payload: Uint8Array): Promise<RpcOutcome> {
    const session = this.sessions.get(sessionId);
    if (!session) return Promise.resolve(NOT_JOINED);
    // Handed over: the game saw the player leave here; the client may call again on the new shard.
    if (session.redirected) return Promise.resolve({ ok: false, errorCode: 'HANDED_OVER' });
    if (!this.rpcHandler(method)) return Promise.resolve({ ok: false, errorCode: 'UNKNOWN_METHOD' });
    return new Promise<RpcOutcome>((resolve) => {
      session.rpcs ??= new Set();
      const pendingOf = session.rpcs;
      const call: QueuedRpc = { session, method, payload, at: performance.now(), answer: undefined };
      const answer = (r: RpcOutcome) => {
        call.answer = undefined;
        clearTimeout(call.timer);
        pendingOf.delete(answer);
        resolve(r);
      };
      call.answer = answer;
      pendingOf.add(answer);
      session.rpcQueue ??= [];
      const own = session.rpcQueue;
      if (own.length === 0) this.rpcTurns.push(session);
      own.push(call);
      this.rpcWaiting++;
    });
  }

  private rpcHandler(method: string) {
    return this.hooks.rpc && Object.hasOwn(this.hooks.rpc, method) ? this.hooks.rpc[method] : undefined;
  }

  /** RPCs waiting for a tick. */
  get queuedRpcs(): number {
    return this.rpcWaiting;
  }

  /**
   * Runs the queued RPCs' handlers until `rpc.max_ms_per_tick` is spent, at least one: one call of
   * each session with calls waiting in turn (round robin), each session's in arrival order, so a
   * few players with many slow calls queued cannot hold everyone else's back past a turn of
   * theirs. Calls whose session ended are gone already (answered NOT_JOINED), those past
   * `rpc.timeout_ms` are answered TIMEOUT without calling the game.
   */
  private runRpcs(): void {
    const turns = this.rpcTurns;
    const budgetMs = this.settings['rpc.max_ms_per_tick'];
    const timeoutMs = this.settings['rpc.timeout_ms'];
    const began = performance.now();
    let ran = 0;
    let now = began;
    while (this.rpcTurnHead < turns.length) {
      if (ran > 0 && now - began >= budgetMs) break;
      const session = turns[this.rpcTurnHead] as Session;
      turns[this.rpcTurnHead++] = undefined as unknown as Session;
      const own = session.rpcQueue;
      // Emptied when the session ended.
      if (!own || own.length === 0) continue;
      // Those past rpc.timeout_ms go at once, not one a turn: they wait in arrival order, so at the head.
      if (!session.redirected) {
        while (own.length > 0 && now - (own[0] as QueuedRpc).at >= timeoutMs) {
          const expired = own.shift() as QueuedRpc;
          this.rpcWaiting--;
          if (!expired.answer) continue;
          this.metrics?.rpcsRefused.inc({ reason: 'expired' });
          expired.answer({ ok: false, errorCode: 'TIMEOUT' });
        }
        if (own.length === 0) continue;
      }
      const call = own.shift() as QueuedRpc;
      this.rpcWaiting--;
      if (own.length > 0) turns.push(session);
      const answer = call.answer;
      if (!answer) continue;
      if (call.session.redirected) answer({ ok: false, errorCode: 'HANDED_OVER' });
      else {
        ran++;
        this.callRpc(call, answer, timeoutMs - (now - call.at));
        now = performance.now();
      }
    }
    if (this.rpcTurnHead === turns.length) {
      turns.length = 0;
      this.rpcTurnHead = 0;
    } else if (this.rpcTurnHead > 1024 && this.rpcTurnHead * 2 > turns.length) {
      this.rpcTurns = turns.slice(this.rpcTurnHead);
      this.rpcTurnHead = 0;
    }
    this.metrics?.rpcsQueued.set(this.queuedRpcs);
  }

  /** Calls one queued RPC's handler; a promise it returns is awaited for what is left of `rpc.timeout_ms`. */
  private callRpc(call: QueuedRpc, answer: (r: RpcOutcome) => void, leftMs: number): void {
    const { method } = call;
    const handler = this.rpcHandler(method) as NonNullable<ReturnType<ShardEngine['rpcHandler']>>;
    const caller = hookCaller(call.session);
    let result: unknown;
    let thenable: boolean;
    try {
      result = handler(this.context, this.hookPlayer(call.session), call.payload);
      // A game's object may have a `then` getter that throws: the handler's failure, not the tick's.
      thenable = result !== null && typeof (result as PromiseLike<unknown>)?.then === 'function';
    } catch (err) {
      answer(this.rpcFailure(method, err, caller));
      return;
    }
    if (!thenable) {
      answer(this.rpcAnswer(method, result, caller));
      return;
    }
    // From here the reactions on the game's promise keep only `call` (emptied once answered) and
    // the caller's player id and connection id for the log, so a game holding on to a promise it
    // never settles holds nothing else of the caller.
    call.session = undefined as unknown as Session;
    call.payload = EMPTY;
    const timeoutMs = this.settings['rpc.timeout_ms'];
    call.timer = setTimeout(
      () => {
        if (!call.answer) return;
        this.hookFailed(`rpc.${method}`, new Error(`rpc.${method} did not settle within rpc.timeout_ms (${timeoutMs} ms)`), caller);
        call.answer({ ok: false, errorCode: 'TIMEOUT' });
      },
      Math.max(0, leftMs),
    );
    try {
      this.settleRpc(method, result as PromiseLike<unknown>, call, caller);
    } catch (err) {
      call.answer?.(this.rpcFailure(method, err, caller));
    }
  }

  /** Apart from `callRpc`: the reactions on the game's promise close over `call` and `caller` alone, not the session. */
  private settleRpc(
    method: string,
    pending: PromiseLike<unknown>,
    call: { answer?: ((r: RpcOutcome) => void) | undefined },
    caller: HookCaller | undefined,
  ): void {
    pending.then(
      (value) => call.answer?.(this.rpcAnswer(method, value, caller)),
      (err: unknown) => call.answer?.(this.rpcFailure(method, err, caller)),
    );
  }

  /** A handler's result, checked. */
  private rpcAnswer(method: string, result: unknown, caller: HookCaller | undefined): RpcOutcome {
    if (!(result instanceof Uint8Array)) return this.rpcFailure(method, new TypeError(`rpc.${method} must return a Uint8Array`), caller);
    if (result.length > MAX_GAME_MESSAGE_BYTES) {
      return this.rpcFailure(
        method,
        new RangeError(`rpc.${method} returned ${result.length} bytes, over the limit of ${MAX_GAME_MESSAGE_BYTES} for a result`),
        caller,
      );
    }
    return { ok: true, payload: result };
  }

  /**
   * What a handler threw: its code when it is an error named RpcError (ours, or a game's own class)
   * with a code a game may use; otherwise INTERNAL, counted and logged.
   */
  private rpcFailure(method: string, err: unknown, caller: HookCaller | undefined): RpcOutcome {
    const e = err as { name?: unknown; code?: unknown } | null | undefined;
    let name: unknown;
    let code: unknown;
    try {
      // The game's value: its `name` or `code` may be a getter that throws (then it is no RpcError).
      name = e?.name;
      code = name === 'RpcError' ? e?.code : undefined;
    } catch {
      name = undefined;
    }
    if (name === 'RpcError') {
      const problem = rpcCodeProblem(code);
      if (problem === undefined) return { ok: false, errorCode: code as string };
      this.hookFailed(
        `rpc.${method}`,
        new Error(`rpc.${method} threw an RpcError the client cannot get: ${problem}`, { cause: err }),
        caller,
      );
      return { ok: false, errorCode: 'INTERNAL' };
    }
    this.hookFailed(`rpc.${method}`, err, caller);
    return { ok: false, errorCode: 'INTERNAL' };
  }

  /**
   * The state to persist as one blob, built at once: entities, tick, entity → player map and game
   * states (tests and tools; the shard takes `captureState` on the tick and assembles it off it).
   * `awaitingResume`: entities adopted in a handoff whose player has not resumed yet — they are
   * players' entities too, and restored without their player they would stay owned by nobody's
   * session (and never be dropped when a neighbour claims them).
   */
  persistentState(awaitingResume: Iterable<[entityId: number, playerId: string]> = []): Uint8Array {
    return encodeState(this.tick, this.world, this.persistentPlayers(awaitingResume));
  }

  /** As `persistentState`, taken now on the tick for `assembleState` to finish off it (game states can be large). */
  captureState(awaitingResume: Iterable<[entityId: number, playerId: string]> = []): CapturedState {
    return captureState(this.tick, this.world, this.persistentPlayers(awaitingResume));
  }

  private persistentPlayers(awaitingResume: Iterable<[entityId: number, playerId: string]>): Map<number, string> {
    const players = new Map<number, string>();
    for (const [playerId, entityId] of this.dormant) players.set(entityId, playerId);
    for (const [entityId, { playerId }] of this.droppedOnOffer) players.set(entityId, playerId);
    for (const [entityId, playerId] of awaitingResume) players.set(entityId, playerId);
    // A redirected session's entity is a neighbour's now (and not in the blob).
    for (const s of this.sessions.values()) if (!s.redirected) players.set(s.entityId, s.playerId);
    return players;
  }

  private spawnAnywhere(kind: number): number {
    const b = this.region;
    // Inside as stored: a float32 may round a point near an edge onto it, or past it.
    const x = clampInside(b.minX + this.rng() * (b.maxX - b.minX), b.minX, b.maxX);
    return this.world.spawn(x, clampInside(b.minY + this.rng() * (b.maxY - b.minY), b.minY, b.maxY), kind);
  }

  /**
   * The grid of the world as it is now, for a query between ticks (the viewer's focus): the tick's,
   * rebuilt when an entity came or went since (a leave, a ghost update), which moves entities
   * between slots. Only between ticks: snapshot threads read the grid during a step, and are done
   * with it when the step returns.
   */
  currentGrid(): Grid {
    if (this.gridLayout !== this.world.layout) {
      this.grid.rebuild(this.world.x, this.world.y, this.world.count);
      this.gridLayout = this.world.layout;
    }
    return this.grid;
  }

  get aoiRadius(): number {
    return this.settings['engine.aoi_radius'];
  }

  /** Players whose entity is here (a session redirected to a neighbour no longer counts). */
  get playerCount(): number {
    return this.byPlayer.size;
  }

  /**
   * Admits a player: spawns its entity at a random point, or takes over the entity of the same
   * player's previous session (which is kicked with REPLACED). Refuses with SHARD_FULL at the
   * player capacity (players here and those whose entity waits for them) or the entity capacity.
   */
  join(sessionId: number, playerId: string): JoinResult {
    const result = this.admit(sessionId, playerId);
    this.syncPlace(playerId);
    return result;
  }

  private admit(sessionId: number, playerId: string): JoinResult {
    const previous = this.byPlayer.get(playerId);
    if (!previous && !this.dormant.has(playerId)) {
      // Their entity is on offer (they dropped meanwhile): where it will be is decided within
      // handoff.timeout_ms; a new one now would be their second.
      if (this.waitsOnOffer(playerId)) {
        return {
          ok: false,
          reason: ReasonCode.REASON_CODE_NOT_READY,
          message: 'your entity is being handed over to a neighbouring shard; join again shortly',
        };
      }
      // By its time too (`redirectsJoin`): entries of different lengths (a commit's resume timeout,
      // a returned entity's rejoin window) are not in expiry order, and `expireHandedOver` stops at
      // the first. Spent either way.
      const handedOver = this.redirectsJoin(playerId) ? this.handedOver.get(playerId) : undefined;
      this.handedOver.delete(playerId);
      if (handedOver) {
        const { redirect } = handedOver;
        return {
          ok: false,
          reason: ReasonCode.REASON_CODE_WRONG_SHARD,
          message: `the player's entity was handed over to ${redirect.shardName}`,
          redirect,
        };
      }
    }
    if (previous) {
      this.forget(previous);
      // To the game a replaced session is a drop, and this join the rejoin that follows.
      this.announceLeave(previous, true);
      this.out.kick(previous.id, ReasonCode.REASON_CODE_REPLACED, 'the same player joined again');
      // As after a drop (below), the ticks the entity stood since the old session's last input
      // may be caught up on: the client re-sends the moves it made meanwhile (its connection
      // stalled). Not for the moves dropped from its queue: that would let a client that floods
      // and then replaces itself move faster than the ticks.
      const slot = this.world.indexOf(previous.entityId);
      // On offer: the ticks since the offer are granted by its rollback (`rollback`), not twice.
      const until = Math.min(this.tick, this.offeredAt.get(previous.entityId) ?? this.tick);
      const stood = slot < 0 ? 0 : Math.max(this.world.credit[slot] as number, until - previous.inputTick);
      this.dropWaitingInputs(previous.entityId);
      if (slot >= 0) this.world.grantCredit(slot, stood);
    }
    // Players whose entity waits for them keep their place: they can always come back.
    if (!previous && !this.dormant.has(playerId) && this.placesTaken >= this.settings['engine.max_players']) {
      return {
        ok: false,
        reason: ReasonCode.REASON_CODE_SHARD_FULL,
        message: `the shard is at its player capacity of ${this.settings['engine.max_players']} (${this.dormant.size + this.reservedPlayers} of them expected back)`,
      };
    }
    let entityId: number;
    let rejoined = true;
    const dormant = this.dormant.get(playerId);
    const waitedUntil = this.dormantUntil.get(playerId);
    const stored = this.storedTicks.get(playerId) ?? 0;
    // Restored from a snapshot (or handed back), never claimed: a neighbour restarted from an older
    // snapshot may hold it too, waiting for this player.
    // Or kept against a neighbour's away claim: that neighbour keeps its copy too until told.
    const unclaimed = dormant !== undefined && (!this.droppedHere.has(playerId) || this.sparedFor.has(playerId));
    if (dormant !== undefined) this.stopWaiting(playerId);
    if (previous && this.world.indexOf(previous.entityId) >= 0) {
      entityId = previous.entityId;
    } else if (dormant !== undefined && this.world.indexOf(dormant) >= 0) {
      entityId = dormant;
      const slot = this.world.indexOf(dormant);
      this.world.mode[slot] = MODE_OWNED;
      // The inputs the client made while it was away come back re-sent: the ticks the entity
      // waited, and no more, may be caught up on (see `step`) — a restored one's since the store
      // took the snapshot (its shard drained or crashed, and restarted).
      const waited = (waitedUntil === undefined ? 0 : this.tick - (waitedUntil - this.rejoinWindowTicks)) + stored;
      this.world.grantCredit(slot, waited);
      if (unclaimed) this.onRestoredRejoined?.(dormant);
    } else {
      rejoined = false;
      this.roomForPlayer();
      try {
        entityId = this.spawnAnywhere(KIND_PLAYER);
      } catch (err) {
        if (err instanceof CapacityError) return { ok: false, reason: ReasonCode.REASON_CODE_SHARD_FULL, message: err.message };
        throw err;
      }
    }
    return this.bind(sessionId, playerId, entityId, rejoined);
  }

  /**
   * A new session for a player on an entity this shard owns: tracked, announced to the game.
   * `rejoined`: the entity was already theirs here (it waited for them, or this session replaces
   * theirs, whose onLeave said `dropped`).
   */
  private bind(sessionId: number, playerId: string, entityId: number, rejoined: boolean, handedOver = false): JoinResult {
    const session: Session = {
      id: sessionId,
      playerId,
      entityId,
      ...this.placeSession(),
      ackTick: 0,
      joinTick: this.tick,
      inputTick: this.tick,
      rtt: 0,
      rttNow: Number.POSITIVE_INFINITY,
      rttBefore: Number.POSITIVE_INFINITY,
      rttSince: this.tick,
    };
    this.sessions.set(sessionId, session);
    this.byEntity.set(entityId, session);
    this.byPlayer.set(playerId, session);
    // Their entity is here now: a redirect to where it once went would send them away from it.
    this.handedOver.delete(playerId);
    if (this.hooks.onJoin)
      this.callHook('onJoin', () => this.hooks.onJoin?.(this.context, this.hookPlayer(session), { rejoined, handedOver }), session);
    return { ok: true, entityId, lastInputSeq: this.world.lastSeq[this.world.indexOf(entityId)] as number };
  }

  /**
   * Where a new session's snapshots are cut: the thread with the fewest sessions. On this thread
   * its history is reused from a session that ended, since clients that reconnect in a storm would
   * otherwise make every join allocate one.
   */
  private placeSession(): Pick<Session, 'thread' | 'history' | 'fresh'> {
    let thread = 0;
    for (let t = 1; t < this.threadLoad.length; t++) {
      if (this.threads[t - 1]?.usable && (this.threadLoad[t] as number) < (this.threadLoad[thread] as number)) thread = t;
    }
    this.threadLoad[thread] = (this.threadLoad[thread] as number) + 1;
    if (thread > 0) return { thread, history: undefined, fresh: true };
    return { thread, history: this.takeHistory(), fresh: false };
  }

  /** An empty history for a session cut on this thread: one of an ended session's, or a new one. */
  private takeHistory(): DeltaHistory {
    const spare = this.spareHistories.pop();
    spare?.reset();
    return spare ?? new DeltaHistory(this.settings['engine.max_visible']);
  }

  /** A history no longer used on this thread, kept for reuse (up to SPARE_HISTORIES). */
  private releaseHistory(history: DeltaHistory | undefined): void {
    if (history && this.spareHistories.length < SPARE_HISTORIES) this.spareHistories.push(history);
  }

  /**
   * A snapshot thread failed: its sessions are cut on this thread from now on, from full snapshots.
   * `writesStopped`: the result of the caller's own `stopWrites`, when it called it first.
   */
  private abandonThread(thread: number, writesStopped?: boolean): void {
    const given = this.threads[thread - 1] as SnapshotThread;
    this.log?.warn(
      { err: given.failed, thread, sessions: this.threadLoad[thread] },
      'snapshot thread given up; its sessions move to the tick thread',
    );
    // A thread that is only slow must not write into shared rows, nor to sockets, any more.
    if (!(writesStopped ?? given.stopWrites())) {
      this.log?.error({ thread }, 'snapshot thread held its socket write lock for 2 s; closed it anyway');
    }
    void given.close();
    for (const session of this.sessions.values()) {
      if (session.thread !== thread) continue;
      session.thread = 0;
      session.history = this.takeHistory();
      this.threadLoad[0] = (this.threadLoad[0] as number) + 1;
    }
    this.threadLoad[thread] = 0;
  }

  /**
   * Evens out the work of the tick thread and the snapshot threads: sessions join the thread with
   * the fewest, but the threads' costs differ (the tick thread also runs the simulation and writes
   * what the snapshot threads could not; without `directFd` it writes every message), so every
   * REBALANCE_TICKS steps up to REBALANCE_MAX_SHARE of the sessions move from the side that spent
   * more time to the other. A moved session restarts from a full snapshot.
   */
  private rebalance(tickThreadMs: number, stolenMs: number): void {
    const b = this.balance;
    let threadMs = 0;
    let usable = 0;
    for (const thread of this.threads) {
      if (!thread.usable) continue;
      threadMs += thread.busyMs;
      usable++;
    }
    if (usable === 0) return;
    b.tickThreadMs += tickThreadMs;
    // Jobs the tick thread stole were the threads' work.
    b.threadMs += (threadMs + stolenMs) / usable;
    if (++b.steps < this.rebalanceTicks) return;
    const { tickThreadMs: mainMs, threadMs: workerMs } = b;
    b.steps = 0;
    b.tickThreadMs = 0;
    b.threadMs = 0;
    const most = Math.max(1, Math.ceil(this.sessions.size * REBALANCE_MAX_SHARE));
    if (mainMs > workerMs * REBALANCE_SLACK && (this.threadLoad[0] as number) > 0) {
      const load = this.threadLoad[0] as number;
      this.moveSessions(0, Math.min(most, Math.ceil((load * (mainMs - workerMs)) / (2 * mainMs))));
    } else if (workerMs > mainMs * REBALANCE_SLACK) {
      let from = 0;
      for (let t = 1; t < this.threadLoad.length; t++) if ((this.threadLoad[t] as number) > (this.threadLoad[from] as number)) from = t;
      const load = this.threadLoad[from] as number;
      if (from > 0) this.moveSessions(from, Math.min(most, Math.ceil((load * (workerMs - mainMs)) / (2 * workerMs))));
    }
  }

  /** Moves `count` sessions off thread `from` (0: the tick thread) to the least loaded other thread. */
  private moveSessions(from: number, count: number): void {
    let to = -1;
    for (let t = 0; t < this.threadLoad.length; t++) {
      if (t === from || (t > 0 && !this.threads[t - 1]?.usable)) continue;
      if (to < 0 || (this.threadLoad[t] as number) < (this.threadLoad[to] as number)) to = t;
    }
    if (to < 0) return;
    let moved = 0;
    for (const session of this.sessions.values()) {
      if (moved === count) break;
      if (session.thread !== from) continue;
      if (from === 0) this.releaseHistory(session.history);
      else this.threads[from - 1]?.forget(session.id);
      session.thread = to;
      session.history = to === 0 ? this.takeHistory() : undefined;
      session.fresh = to > 0;
      moved++;
    }
    this.threadLoad[from] = (this.threadLoad[from] as number) - moved;
    this.threadLoad[to] = (this.threadLoad[to] as number) + moved;
  }

  /** Resolves when every snapshot thread is up (sessions that join before go to the tick thread). */
  async snapshotThreadsReady(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.ready));
  }

  /** Stops the snapshot threads (the engine cuts nothing more). */
  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.close()));
  }

  /**
   * Binds a new session to an entity this shard now owns after a handoff (the client resumed with
   * the token the former owner gave it). `frozenMs`: how long ago the offer was accepted — the
   * client re-sends what it made since, which may be caught up on (see `step`).
   */
  resume(sessionId: number, playerId: string, entityId: number, frozenMs = 0): JoinResult {
    const slot = this.world.indexOf(entityId);
    if (slot < 0 || this.world.mode[slot] !== MODE_OWNED) {
      return { ok: false, reason: ReasonCode.REASON_CODE_AUTH_FAILED, message: `entity ${entityId} is not owned by this shard` };
    }
    const previous = this.byPlayer.get(playerId);
    if (previous) {
      this.forget(previous);
      this.announceLeave(previous, true);
      this.out.kick(previous.id, ReasonCode.REASON_CODE_REPLACED, 'the same player resumed again');
      // Another entity of theirs here (a second device joined here meanwhile) is no one's now.
      if (previous.entityId !== entityId) this.removeEntity(previous.entityId);
      else this.dropWaitingInputs(entityId);
    }
    // So is one that waited here for them to rejoin: they are back on the handed-over one.
    const waiting = this.dormant.get(playerId);
    if (waiting !== undefined) {
      this.stopWaiting(playerId);
      if (waiting !== entityId) {
        this.removeEntity(waiting);
        // The place kept for that entity was not this one's: the player was elsewhere meanwhile
        // (they left by a handoff whose departure a crash lost, rejoined a neighbour, and came
        // back through one). Freed by that handoff and taken by this one, so the stream shows
        // them leaving and arriving, as the neighbours' streams do.
        if (!previous) this.syncPlace(playerId, true);
      }
    }
    const frozenTicks = Math.floor(frozenMs / this.settings['engine.tick_rate_ms']);
    // Steps it stood here since its adoption already earned credit: the same time, not more. (Its
    // slot again: removing the other entities moved slots.)
    const at = this.world.indexOf(entityId);
    this.world.grantCredit(at, Math.max(this.world.credit[at] as number, frozenTicks));
    // A second resume of the same entity replaces the session the game already saw arrive.
    const again = previous?.entityId === entityId;
    const result = this.bind(sessionId, playerId, entityId, again, !again);
    this.syncPlace(playerId, !again);
    return result;
  }

  /** Players' entities this shard owns and simulates, with their sessions and positions (handoff checks). */
  *ownedPlayers(): Generator<{ sessionId: number; entityId: number; playerId: string; x: number; y: number }> {
    const w = this.world;
    for (const s of this.sessions.values()) {
      if (s.redirected) continue;
      const slot = w.indexOf(s.entityId);
      if (slot < 0 || w.mode[slot] !== MODE_OWNED) continue;
      yield { sessionId: s.id, entityId: s.entityId, playerId: s.playerId, x: w.x[slot] as number, y: w.y[slot] as number };
    }
  }

  /** Whether a player plays `entityId` here now: a session holds it (on offer or not). */
  playsHere(entityId: number): boolean {
    const s = this.byEntity.get(entityId);
    const slot = this.world.indexOf(entityId);
    return (
      s !== undefined && !s.redirected && slot >= 0 && (this.world.mode[slot] === MODE_OWNED || this.world.mode[slot] === MODE_OFFERED)
    );
  }

  /**
   * The player entities this shard surely owns, for a restarted neighbour to drop its copies of:
   * its players' and those of players who dropped here and may rejoin — not those restored from
   * a snapshot and not yet rejoined, which may have moved on since.
   */
  *claimedPlayers(): Generator<number> {
    // Players on offer too: this shard owns them until a commit.
    for (const s of this.sessions.values()) if (this.playsHere(s.entityId)) yield s.entityId;
    for (const playerId of this.droppedHere) {
      const entityId = this.dormant.get(playerId);
      if (entityId !== undefined) yield entityId;
    }
    yield* this.droppedOnOffer.keys();
  }

  /** The state that travels with an entity, or undefined when there is no such entity. */
  transfer(entityId: number): EntityTransfer | undefined {
    const w = this.world;
    const i = w.indexOf(entityId);
    if (i < 0) return undefined;
    return {
      entityId,
      x: w.x[i] as number,
      y: w.y[i] as number,
      vx: w.vx[i] as number,
      vy: w.vy[i] as number,
      kind: w.kind[i] as number,
      flags: w.flags[i] as number,
      lastInputSeq: w.lastSeq[i] as number,
      state: w.gameState.get(entityId),
      generation: w.handoffs.get(entityId) ?? 0,
    };
  }

  /**
   * The slot of an entity whose game state and flags may change here now, or -1: not here, a
   * neighbour's (a ghost: the owner's updates decide), or on offer to a neighbour of a build that
   * would ignore the change. An entity on offer to any other neighbour may change: the change goes
   * with the commit.
   */
  gameWritableSlot(entityId: number): number {
    const slot = this.world.indexOf(entityId);
    if (slot < 0 || this.world.mode[slot] === MODE_GHOST || this.stateFrozen.has(entityId)) return -1;
    return slot;
  }

  /**
   * Freezes an owned entity while it is offered to a neighbour; its inputs are held from now on.
   * Moves already waiting stay, unapplied: they apply if the offer rolls back; after a commit the
   * client re-sends them to the new owner (they are after the `lastInputSeq` the offer carries).
   */
  offer(entityId: number, lateChanges = true): EntityTransfer | undefined {
    const i = this.world.indexOf(entityId);
    if (i < 0 || this.world.mode[i] !== MODE_OWNED) return undefined;
    this.world.mode[i] = MODE_OFFERED;
    this.offeredAt.set(entityId, this.tick);
    // A neighbour that ignores the changes a commit carries would lose them: no game writes then.
    if (!lateChanges) this.stateFrozen.add(entityId);
    return this.transfer(entityId);
  }

  /** The offer was not accepted: the entity is simulated here again and its held inputs apply. */
  rollback(entityId: number): void {
    const i = this.world.indexOf(entityId);
    const held = this.held.get(entityId) ?? [];
    this.held.delete(entityId);
    const offeredAt = this.offeredAt.get(entityId) ?? this.tick;
    this.offeredAt.delete(entityId);
    this.stateFrozen.delete(entityId);
    const dropped = this.droppedOnOffer.get(entityId);
    this.droppedOnOffer.delete(entityId);
    if (i < 0 || this.world.mode[i] !== MODE_OFFERED) return;
    if (dropped !== undefined) {
      // Its player's connection dropped while it was on offer: it waits for them here (the client
      // re-sends the held inputs after its rejoin), dropped when the connection did, not now.
      this.wait(dropped.playerId, entityId, i, dropped.at);
      if (dropped.claimedAway) this.sparedFor.add(dropped.playerId);
      return;
    }
    this.world.mode[i] = MODE_OWNED;
    // Frozen since the offer: those ticks' inputs may be caught up on (see `step`).
    this.world.grantCredit(i, (this.world.credit[i] as number) + (this.tick - offeredAt));
    const session = this.byEntity.get(entityId);
    // All of them wait, however many the offer's ticks held, and the live ones after them too
    // (`rollbackRoom`, until the queue has drained).
    for (const h of held) {
      if (session) this.input(session.id, h.seq, h.moveX, h.moveY, 0, h.buttons, held.length + MAX_QUEUED_MOVES);
    }
    if (held.length > 0) this.rollbackRoom.set(entityId, held.length);
  }

  /**
   * The neighbour owns the entity now: it stays here as a ghost (the neighbour's updates move it
   * from now on) and its session, if any, is marked redirected. Returns that session's id.
   * `redirect`: where its player continues (the message the client is sent), remembered for
   * `forMs` for a join of theirs here meanwhile (see `handedOver`): the redirect may never have
   * reached the client. (An offer whose player dropped meanwhile is rolled back by `Sharding`, not
   * committed; committed here, its player's join would be answered with the redirect.)
   */
  commitOffer(entityId: number, redirect?: { message: aethex.v1.IHandoffRedirect; forMs: number }): number | undefined {
    const i = this.world.indexOf(entityId);
    this.held.delete(entityId);
    // The backlog of an earlier rollback of it went with it too (else kept until the id is back).
    this.rollbackRoom.delete(entityId);
    this.offeredAt.delete(entityId);
    this.stateFrozen.delete(entityId);
    const dropped = this.droppedOnOffer.get(entityId)?.playerId;
    this.droppedOnOffer.delete(entityId);
    if (i < 0 || this.world.mode[i] !== MODE_OFFERED) return undefined;
    this.world.mode[i] = MODE_GHOST;
    this.world.vx[i] = 0;
    this.world.vy[i] = 0;
    this.world.clearMoves(i);
    // It went with the offer: the neighbour keeps it now.
    this.world.gameState.delete(entityId);
    this.world.handoffs.delete(entityId);
    const session = this.byEntity.get(entityId);
    const playerId = session?.playerId ?? dropped;
    if (playerId !== undefined && redirect) this.redirectJoins(playerId, redirect.message, redirect.forMs);
    if (!session) {
      if (dropped !== undefined) this.syncPlace(dropped, true);
      return undefined;
    }
    this.byEntity.delete(entityId);
    if (this.byPlayer.get(session.playerId) === session) this.byPlayer.delete(session.playerId);
    session.redirected = true;
    this.redirectedSessions++;
    // Its calls still waiting for a turn will not run here: answered now, not one a turn (a busy
    // tick's handlers could hold them past the time the client waits for them on this connection).
    if (session.rpcQueue && session.rpcQueue.length > 0) {
      const waiting = session.rpcQueue.splice(0);
      this.rpcWaiting -= waiting.length;
      for (const call of waiting) call.answer?.({ ok: false, errorCode: 'HANDED_OVER' });
    }
    this.announceLeave(session, false, true);
    this.syncPlace(session.playerId, true);
    return session.id;
  }

  /**
   * Takes ownership of an entity handed over by a neighbour: its ghost here, if any, is replaced.
   * Refuses (false) at the entity capacity.
   */
  adopt(e: EntityTransfer): boolean {
    const w = this.world;
    const existing = w.indexOf(e.entityId);
    if (existing >= 0) {
      if (w.mode[existing] !== MODE_GHOST) return true; // already ours (a repeated commit)
      w.despawn(e.entityId);
    }
    if (w.count >= w.capacity) this.evictGhost();
    if (w.count >= w.capacity) return false;
    w.spawn(e.x, e.y, e.kind, e.entityId);
    const i = w.indexOf(e.entityId);
    w.vx[i] = e.vx;
    w.vy[i] = e.vy;
    w.flags[i] = e.flags;
    w.lastSeq[i] = e.lastInputSeq;
    if (e.state !== undefined && e.state.length > 0) w.gameState.set(e.entityId, e.state);
    if (e.generation) w.handoffs.set(e.entityId, e.generation);
    return true;
  }

  /**
   * Forgets restored (dormant) players' entities that a neighbour owns now: those players moved on
   * after the snapshot this shard restarted from — a handoff whose own event here the crash may
   * have lost, so their place is freed as handed over. Returns how many were dropped.
   * `away`: those of `entityIds` whose player does not play on the neighbour now (they dropped or
   * left there): one whose player rejoined it and dropped here since stays, and this shard claims
   * its own — unless `awayAt` says the player dropped on the neighbour after they dropped here
   * (by `wallClock`): this copy is the older and goes. `earlier`: those the neighbour
   * played and last handed on at a time (`wallClock`'s): only a copy whose player dropped here
   * before that goes, or one restored or handed back if that is after this run started.
   */
  dropDormant(
    entityIds: Iterable<number>,
    away: ReadonlySet<number> = new Set(),
    earlier: ReadonlyMap<number, number> = new Map(),
    awayAt: ReadonlyMap<number, number> = new Map(),
  ): number {
    const ids = new Set(entityIds);
    let dropped = 0;
    for (const [playerId, entityId] of this.dormant) {
      const i = this.world.indexOf(entityId);
      if (!ids.has(entityId) || i < 0 || this.world.mode[i] !== MODE_DORMANT) continue;
      const theirs = awayAt.get(entityId);
      const ours = this.droppedAt.get(playerId);
      const olderHere = theirs !== undefined && ours !== undefined && theirs > ours;
      if (away.has(entityId) && this.droppedHere.has(playerId) && !olderHere) {
        this.sparedFor.add(playerId);
        continue;
      }
      // Played on the neighbour until it handed it on: only a copy whose player dropped here before
      // then is the older. One restored here (or handed back) is older if that play ended after
      // this run started (its snapshot, or the adoption, came before); if it ended before, the
      // copy may have reached here since, the newer and only one, and stays.
      const handedOnAt = earlier.get(entityId);
      if (handedOnAt !== undefined && !(handedOnAt > (this.droppedAt.get(playerId) ?? this.startedAtWall))) continue;
      this.stopWaiting(playerId);
      this.world.despawn(entityId);
      this.syncPlace(playerId, true);
      dropped++;
    }
    return dropped;
  }

  /**
   * When the players of those of `entityIds` that wait here since they dropped here dropped, or
   * whose connection dropped while it was on offer (it waits here once the offer rolls back), as
   * entity → `wallClock` ms.
   */
  droppedTimes(entityIds: Iterable<number>): Map<number, number> {
    const ids = new Set(entityIds);
    const times = new Map<number, number>();
    if (ids.size === 0) return times;
    for (const [playerId, at] of this.droppedAt) {
      const entityId = this.dormant.get(playerId);
      if (entityId !== undefined && ids.has(entityId)) times.set(entityId, at);
    }
    for (const [entityId, { at }] of this.droppedOnOffer) if (ids.has(entityId)) times.set(entityId, at);
    return times;
  }

  /**
   * Players dropped here whose entities this shard just claimed as away to a neighbour: the
   * neighbour may keep its own copy for them (`dropDormant`), so a rejoin here claims them again —
   * also of one on offer when its player dropped, once the offer rolls back (`rollback`).
   */
  claimedAway(entityIds: Iterable<number>): void {
    const ids = new Set(entityIds);
    if (ids.size === 0) return;
    for (const [playerId, entityId] of this.dormant) if (ids.has(entityId) && this.droppedHere.has(playerId)) this.sparedFor.add(playerId);
    for (const [entityId, dropped] of this.droppedOnOffer) if (ids.has(entityId)) dropped.claimedAway = true;
  }

  /**
   * Brings back a player's entity that a neighbour handed to this shard's previous run, which
   * crashed before storing it (the neighbour kept a copy: HandoffCustody): as a restored player's
   * comes back, waiting for its player to rejoin within the rejoin window, and dropped if a
   * neighbour claims it. False when this shard has the entity or the player already, or no room.
   */
  restoreWaiting(e: EntityTransfer, playerId: string): boolean {
    if (this.world.indexOf(e.entityId) >= 0 || this.hasPlace(playerId) || !this.hasRoomForPlayer) return false;
    if (!this.adoptWaiting(e, playerId)) return false;
    this.syncPlace(playerId);
    return true;
  }

  /** Adopts `e` as `playerId`'s entity waiting for them a whole rejoin window; false at the entity capacity. */
  private adoptWaiting(e: EntityTransfer, playerId: string): boolean {
    if (!this.adopt(e)) return false;
    const slot = this.world.indexOf(e.entityId);
    this.world.mode[slot] = MODE_DORMANT;
    this.world.vx[slot] = 0;
    this.world.vy[slot] = 0;
    this.dormant.set(playerId, e.entityId);
    this.dormantUntil.set(playerId, this.tick + this.rejoinWindowTicks);
    return true;
  }

  /**
   * The entity waiting for `playerId` since this shard started — restored from its snapshot or
   * handed back by a neighbour, and not played in this run since (not dropped here) — if any.
   */
  restoredWaitingOf(playerId: string): number | undefined {
    return this.droppedHere.has(playerId) ? undefined : this.dormant.get(playerId);
  }

  /**
   * Replaces the entity waiting for `playerId` — restored from the snapshot, or from an older copy —
   * with a newer copy a neighbour handed back (see `restoreWaiting`): its position, flags, game
   * state, last input and owner generation. It keeps waiting as before. False when the player's
   * waiting entity is not `e`'s.
   */
  replaceWaiting(e: EntityTransfer, playerId: string): boolean {
    const slot = this.world.indexOf(e.entityId);
    if (this.restoredWaitingOf(playerId) !== e.entityId || slot < 0 || this.world.mode[slot] !== MODE_DORMANT) return false;
    const w = this.world;
    w.x[slot] = e.x;
    w.y[slot] = e.y;
    // Moved between ticks: the tick's grid no longer describes the world (the viewer builds its own).
    w.layout++;
    w.flags[slot] = e.flags;
    w.lastSeq[slot] = e.lastInputSeq;
    if (e.state !== undefined && e.state.length > 0) w.gameState.set(e.entityId, e.state);
    else w.gameState.delete(e.entityId);
    if (e.generation) w.handoffs.set(e.entityId, e.generation);
    // Its stored credit was the snapshot's; the copy is from later.
    this.storedTicks.delete(playerId);
    return true;
  }

  /**
   * Puts a copy a neighbour handed back (see `restoreWaiting`) in place of another entity of
   * `playerId` waiting since the start, restored from the snapshot: the copy was adopted after that
   * snapshot was captured. The player's place is kept throughout; the copy waits a whole rejoin
   * window. False when no restored entity waits for the player or `e` is here already.
   */
  supplantWaiting(e: EntityTransfer, playerId: string): boolean {
    const old = this.restoredWaitingOf(playerId);
    const slot = old === undefined ? -1 : this.world.indexOf(old);
    if (slot < 0 || this.world.mode[slot] !== MODE_DORMANT || this.world.indexOf(e.entityId) >= 0) return false;
    // A swap: the player's place stays theirs and the copy takes the old entity's slot, so no
    // capacity check (a shard restored over its capacity would otherwise lose both).
    this.stopWaiting(playerId);
    this.world.despawn(old as number, false);
    if (this.adoptWaiting(e, playerId)) return true;
    this.syncPlace(playerId);
    return false;
  }

  /**
   * Answers the player's joins here with `redirect` (`WRONG_SHARD`, the gateway sends it) once, for
   * the next `forMs`: their entity is another shard's now, and their client may not know.
   */
  redirectJoins(playerId: string, redirect: aethex.v1.IHandoffRedirect, forMs: number): void {
    // Last in the expiry order (re-inserted: a Map keeps a key where it was first set).
    this.handedOver.delete(playerId);
    this.handedOver.set(playerId, { redirect, until: this.tick + Math.ceil(forMs / this.settings['engine.tick_rate_ms']) });
  }

  /** Whether a join of the player's here would be answered with a redirect (`redirectJoins`, or a commit's). */
  redirectsJoin(playerId: string): boolean {
    const handedOver = this.handedOver.get(playerId);
    return handedOver !== undefined && handedOver.until > this.tick;
  }

  /** An adopted entity whose player never resumed here goes, as if their socket had closed. */
  dropUnclaimed(entityId: number): void {
    const i = this.world.indexOf(entityId);
    if (i >= 0 && this.world.mode[i] === MODE_OWNED && !this.byEntity.has(entityId)) this.world.despawn(entityId);
  }

  /**
   * Whether this shard could adopt one more player now (places and slots already promised count as
   * taken; a neighbour's ghost gives its slot up to a player: `roomForPlayer`).
   */
  get hasRoomForPlayer(): boolean {
    return this.freeForPlayers() > 0 && this.placesTaken < this.settings['engine.max_players'];
  }

  /**
   * Entity slots a player could have now: those neither taken nor promised to an accepted offer,
   * and the neighbours' ghosts' (counted by a scan, only when no slot is free otherwise).
   */
  private freeForPlayers(): number {
    const w = this.world;
    const free = w.capacity - w.count - w.reserved;
    return free > 0 ? free : free + this.ghostCount();
  }

  /**
   * Players come before neighbours' ghosts: a player joining a shard whose entity slots are all
   * taken or promised (engine.max_entities, ghosts included) takes a ghost's, if the ghosts are
   * not all spoken for by accepted offers already. The ghost is back at the neighbour's next full
   * update (`GHOST_REFRESH_MS`) if a slot is free by then.
   */
  private roomForPlayer(): void {
    const w = this.world;
    if (w.count + w.reserved >= w.capacity && this.freeForPlayers() > 0) this.evictGhost();
  }

  /** Called with the id of each ghost dropped to make room for a player (Sharding forgets it as its neighbour's). */
  onGhostEvicted: ((entityId: number) => void) | undefined;

  /**
   * Called with the entity a player rejoined that was restored from a snapshot or handed back
   * (not `claimedPlayers` until now): Sharding claims it to the neighbours, whose restored copies
   * of it are stale.
   */
  onRestoredRejoined: ((entityId: number) => void) | undefined;

  /** Drops one ghost (the last in slot order), if there is one; whether it did. */
  private evictGhost(): boolean {
    const w = this.world;
    for (let i = w.count - 1; i >= 0; i--) {
      if (w.mode[i] !== MODE_GHOST) continue;
      const id = w.id[i] as number;
      w.despawn(id);
      this.onGhostEvicted?.(id);
      return true;
    }
    return false;
  }

  /** The neighbours' ghosts here: a scan, only when the shard is full. */
  private ghostCount(): number {
    const w = this.world;
    let n = 0;
    for (let i = 0; i < w.count; i++) if (w.mode[i] === MODE_GHOST) n++;
    return n;
  }

  /**
   * Places and entity slots promised to players handed over from a neighbour: an accepted offer
   * keeps a place until its player resumes (or the offer is forgotten), and a slot until its
   * entity is adopted. Joins, game spawns and ghosts leave them free.
   */
  reserve(players: number, entities: number): void {
    this.reservedPlayers = players;
    this.world.reserved = entities;
  }

  /** Sessions whose player was handed over (`redirected`): their connection lingers, their place is the neighbour's. */
  private redirectedSessions = 0;

  /** Players here, players whose entity waits for them, and places promised to handed-over ones. */
  private get placesTaken(): number {
    return this.sessions.size - this.redirectedSessions + this.dormant.size + this.droppedOnOffer.size + this.reservedPlayers;
  }

  /** Creates or moves a neighbour's ghost. Ignored (false) for an entity this shard owns. */
  upsertGhost(e: Omit<EntityTransfer, 'lastInputSeq' | 'generation'>): boolean {
    const w = this.world;
    let i = w.indexOf(e.entityId);
    if (i >= 0 && w.mode[i] !== MODE_GHOST) return false;
    if (i < 0) {
      // Slots promised to handed-over entities stay free.
      if (w.count + w.reserved >= w.capacity) return false;
      w.spawn(e.x, e.y, e.kind, e.entityId);
      i = w.indexOf(e.entityId);
      w.mode[i] = MODE_GHOST;
    } else if (w.x[i] !== Math.fround(e.x) || w.y[i] !== Math.fround(e.y)) {
      w.layout++; // moved between ticks: the tick's grid has it where it was
    }
    w.x[i] = e.x;
    w.y[i] = e.y;
    w.vx[i] = e.vx;
    w.vy[i] = e.vy;
    w.kind[i] = e.kind;
    w.flags[i] = e.flags;
    return true;
  }

  /** Drops a ghost (no-op for an entity this shard owns). */
  removeGhost(entityId: number): void {
    const i = this.world.indexOf(entityId);
    if (i >= 0 && this.world.mode[i] === MODE_GHOST) this.world.despawn(entityId);
  }

  private forget(session: Session): void {
    this.threadLoad[session.thread] = (this.threadLoad[session.thread] as number) - 1;
    if (session.thread > 0) this.threads[session.thread - 1]?.forget(session.id);
    else this.releaseHistory(session.history);
    this.sessions.delete(session.id);
    if (session.redirected) this.redirectedSessions--;
    if (this.byEntity.get(session.entityId) === session) this.byEntity.delete(session.entityId);
    if (this.byPlayer.get(session.playerId) === session) this.byPlayer.delete(session.playerId);
    // Its calls still running are answered (to no one): nothing of the session stays with them.
    if (session.rpcs) for (const answer of [...session.rpcs]) answer(NOT_JOINED);
    if (session.rpcQueue) {
      this.rpcWaiting -= session.rpcQueue.length;
      session.rpcQueue.length = 0;
    }
  }

  /**
   * The session ends but the player's entity stays, dormant, to be theirs again when they rejoin
   * (a drain: the final snapshot keeps it). Idempotent.
   */
  detach(sessionId: number): void {
    const session = this.sessions.get(sessionId);
    if (!session) return;
    this.forget(session);
    this.dormant.set(session.playerId, session.entityId);
    // The entity waits (the final snapshot keeps it) for them to rejoin after the restart.
    this.announceLeave(session, true);
  }

  /**
   * The session ended on purpose (the client closed, or was kicked for what it did): its entity
   * leaves the world. Idempotent. A dropped connection `suspend`s instead.
   */
  leave(sessionId: number): void {
    const session = this.sessions.get(sessionId);
    if (!session) return;
    this.forget(session);
    if (session.redirected) {
      // Its entity is a neighbour's now (its ghost here is the neighbour's to drop). The client
      // closes its old connection so (1000) once it has resumed, once the neighbour refused its
      // resume (the token is no good), or when it ends the session: no redirect is owed it. A
      // resume that failed without a word from the neighbour closes as a drop instead (the SDK's
      // RESUME_FAILED), which keeps the redirect for the rejoin that follows.
      this.handedOver.delete(session.playerId);
      return;
    }
    this.announceLeave(session, false);
    this.removeEntity(session.entityId, true);
    this.syncPlace(session.playerId);
  }

  /**
   * A player's entity leaves the world, with what waited for it (held inputs, an offer's tick).
   * `reuse`: it is gone for good (its player left while it was played here): its id may be handed
   * out again after it rested — one of another shard's range by that shard (`Sharding.releaseIds`).
   */
  private removeEntity(entityId: number, reuse = false): void {
    this.held.delete(entityId);
    this.rollbackRoom.delete(entityId);
    this.offeredAt.delete(entityId);
    this.droppedOnOffer.delete(entityId);
    this.world.despawn(entityId, reuse);
  }

  /**
   * The player's connection dropped (a network cut, a crash, a lag or idle kick): the session ends,
   * and its entity waits where it stands, out of sight and out of the simulation, for
   * `engine.rejoin_window_ms`. A join by the same player in time takes it back, with the inputs it
   * applied (the client re-sends the rest); after that it goes. An entity on offer to a neighbour
   * stays on offer, its player keeping their place (their join is refused `NOT_READY`) until the
   * offer is decided: the shard rolls it back, also when the neighbour accepts it (`Sharding`), and
   * it waits so, for the whole window from the rollback. A redirected session's
   * entity is the neighbour's: that session just ends (the redirect stays remembered: the client
   * may not have got it), and a session whose entity is gone ends as `leave` ends it. Idempotent.
   * Returns whether the entity waits (or may, on offer).
   */
  suspend(sessionId: number): boolean {
    const session = this.sessions.get(sessionId);
    if (!session) return false;
    if (session.redirected) {
      this.forget(session);
      return false;
    }
    const slot = this.world.indexOf(session.entityId);
    const mode = slot < 0 ? undefined : this.world.mode[slot];
    if (mode !== MODE_OWNED && mode !== MODE_OFFERED) {
      this.leave(sessionId);
      return false;
    }
    this.forget(session);
    if (mode === MODE_OFFERED) {
      this.droppedOnOffer.set(session.entityId, { playerId: session.playerId, at: this.wallClock() });
    } else this.wait(session.playerId, session.entityId, slot);
    this.announceLeave(session, true);
    return true;
  }

  /**
   * The entity in `slot` waits, out of sight and out of the simulation, for its player, whose
   * connection dropped here (at `droppedAt`, by `wallClock`: now unless told), to rejoin within the window.
   */
  private wait(playerId: string, entityId: number, slot: number, droppedAt = this.wallClock()): void {
    const w = this.world;
    w.mode[slot] = MODE_DORMANT;
    w.vx[slot] = 0;
    w.vy[slot] = 0;
    this.dropWaitingInputs(entityId);
    // Last in the expiry order (re-inserted: a Map keeps a key where it was first set).
    this.stopWaiting(playerId);
    this.dormant.set(playerId, entityId);
    this.dormantUntil.set(playerId, this.tick + this.rejoinWindowTicks);
    this.droppedHere.add(playerId);
    this.droppedAt.set(playerId, droppedAt);
  }

  /**
   * What waited to move `entityId` goes with the session that sent it: the moves queued and the
   * inputs an offer held are not acknowledged, and the client that comes next (a rejoin, a session
   * replacing this one) re-sends its own from Welcome.last_input_seq. Kept, they would run in its
   * place and its inputs with the same numbers be ignored as stale, yet acknowledged.
   */
  private dropWaitingInputs(entityId: number): void {
    const slot = this.world.indexOf(entityId);
    if (slot >= 0) this.world.clearMoves(slot);
    this.held.delete(entityId);
    this.rollbackRoom.delete(entityId);
  }

  /** Whether the player of `entityId`, on offer, dropped meanwhile (see `suspend`). */
  droppedWhileOffered(entityId: number): boolean {
    return this.droppedOnOffer.has(entityId);
  }

  /** Whether the player's connection dropped while their entity was on offer, and the offer is not decided yet. */
  private waitsOnOffer(playerId: string): boolean {
    for (const p of this.droppedOnOffer.values()) if (p.playerId === playerId) return true;
    return false;
  }

  /** Players whose entity waits for them to rejoin (see `suspend`). */
  get waitingPlayers(): number {
    return this.dormant.size;
  }

  private stopWaiting(playerId: string): void {
    this.dormant.delete(playerId);
    this.dormantUntil.delete(playerId);
    this.storedTicks.delete(playerId);
    this.droppedHere.delete(playerId);
    this.droppedAt.delete(playerId);
    this.sparedFor.delete(playerId);
  }

  /** Whether the player has a place here: a session, an entity waiting for them, or one on offer since their connection dropped. */
  hasPlace(playerId: string): boolean {
    return this.byPlayer.has(playerId) || this.dormant.has(playerId) || this.waitsOnOffer(playerId);
  }

  /**
   * Tells `onPlace` if the player's place here was taken or freed since it was last told;
   * `handedOver`: by a handoff (the player walked on to a neighbour, or arrived from one).
   */
  private syncPlace(playerId: string, handedOver = false): void {
    const has = this.hasPlace(playerId);
    if (has === this.placed.has(playerId)) return;
    if (has) this.placed.add(playerId);
    else this.placed.delete(playerId);
    this.onPlace?.(has ? 'taken' : 'freed', playerId, handedOver);
  }

  /**
   * The shard is going away (a drain, after every session was detached): every place is told as
   * freed. The state is kept — the final snapshot keeps the entities, and a restart from it tells
   * their players' places as taken again.
   */
  releasePlaces(): void {
    for (const playerId of this.placed) this.onPlace?.('freed', playerId, false);
    this.placed.clear();
  }

  /** The entities of players who did not rejoin within the window go. */
  private expireDormant(): void {
    for (const [playerId, until] of this.dormantUntil) {
      if (until > this.tick) return;
      const entityId = this.dormant.get(playerId);
      // Dropped here in this run: the entity was ours to the end. (A restored one may be a
      // neighbour's now, the claims of the neighbours that were down at the restart not in.)
      const ours = this.droppedHere.has(playerId);
      this.stopWaiting(playerId);
      const slot = entityId === undefined ? -1 : this.world.indexOf(entityId);
      if (slot >= 0 && this.world.mode[slot] === MODE_DORMANT) this.world.despawn(entityId as number, ours);
      this.syncPlace(playerId);
      this.log?.info({ player: playerId, entity: entityId }, 'rejoin window ended; player left');
    }
  }

  /** Redirects past the neighbour's resume timeout are forgotten: its token is no good any more. */
  private expireHandedOver(): void {
    for (const [playerId, { until }] of this.handedOver) {
      if (until > this.tick) return;
      this.handedOver.delete(playerId);
    }
  }

  /**
   * Applies a movement intent and the acknowledgement it carries; `buttons` go to the game's
   * onInput. `maxQueued`: the moves that may wait, for a rollback's replay of what its offer held;
   * otherwise MAX_QUEUED_MOVES, and more while such a replay's backlog waits (`rollbackRoom`).
   */
  input(
    sessionId: number,
    seq: number,
    moveX: number,
    moveY: number,
    ackTick: number,
    buttons = 0,
    maxQueued?: number,
  ): InputResult | 'unknown' {
    const session = this.sessions.get(sessionId);
    if (!session) return 'unknown';
    session.inputTick = this.tick;
    this.ack(sessionId, ackTick);
    const slot = this.world.indexOf(session.entityId);
    if (slot < 0) return 'unknown';
    const mode = this.world.mode[slot];
    if (session.redirected || mode === MODE_GHOST) return 'stale';
    if (mode === MODE_OFFERED) {
      // Frozen while on offer: held in order, applied if the offer rolls back; after a commit
      // the client re-sends them to the new owner. Past what the offer's ticks explain (a flood),
      // an input moves nothing and is answered with the newest, as with a full queue (`applyInput`).
      if (!Number.isFinite(moveX) || !Number.isFinite(moveY)) return 'invalid';
      const held = this.held.get(session.entityId) ?? [];
      const last = held.at(-1);
      if (seq <= (last?.seq ?? (this.world.lastSeq[slot] as number))) return 'stale';
      if (last !== undefined && held.length >= this.maxHeldInputs) last.seq = seq;
      else held.push({ seq, moveX, moveY, buttons });
      this.held.set(session.entityId, held);
      return 'applied';
    }
    // After a rollback, room for what the offer held until that backlog has drained.
    let queueBound = maxQueued ?? MAX_QUEUED_MOVES;
    const room = maxQueued === undefined && this.rollbackRoom.size > 0 ? this.rollbackRoom.get(session.entityId) : undefined;
    if (room !== undefined) {
      if (this.world.queued.has(session.entityId)) queueBound += room;
      else this.rollbackRoom.delete(session.entityId);
    }
    const result = applyInput(this.world, slot, seq, moveX, moveY, queueBound);
    if (result === 'applied' && this.hooks.onInput) {
      this.callHook('onInput', () => this.hooks.onInput?.(this.context, this.hookPlayer(session), { seq, buttons }), session);
    }
    return result;
  }

  /**
   * Records that the client applied the snapshot of the tick `wireTick` (0: none). Only forward: the delta base never
   * goes back, so clients give up older frames (docs/protocol.md). Ignores ticks past the last
   * snapshot sent to it: a client that reads nothing and acknowledges guessed ticks must still
   * look slow, and be dropped as slow clients are.
   */
  ack(sessionId: number, wireTick: number): void {
    const session = this.sessions.get(sessionId);
    if (!session || wireTick === 0) return;
    const tick = unwrapTick(wireTick, this.tick);
    if (tick <= session.ackTick || tick > (session.sentTick ?? 0)) return;
    session.ackTick = tick;
    const age = this.tick - tick;
    if (this.tick - session.rttSince >= RTT_WINDOW_TICKS) {
      session.rttBefore = session.rttNow;
      session.rttNow = age;
      session.rttSince = this.tick;
    } else if (age < session.rttNow) {
      session.rttNow = age;
    }
    session.rtt = Math.min(session.rttNow, session.rttBefore, this.maxRttTicks);
  }

  /**
   * The tick loop dropped `ticks` ticks (it fell further behind than it catches up on). The
   * players' inputs of that time arrive all the same: each player here may catch up on them (see
   * `step`) instead of lagging behind by that much for as long as it keeps moving.
   */
  skipped(ticks: number): void {
    const w = this.world;
    for (let i = 0; i < w.count; i++) {
      if (w.kind[i] === KIND_PLAYER && w.mode[i] === MODE_OWNED) w.grantCredit(i, (w.credit[i] as number) + ticks);
    }
  }

  /** Runs one simulation step and sends this tick's snapshots and corrections. */
  step(): void {
    const tick = ++this.tick;
    // Snapshots, their delta history and the protocol carry ticks as uint32 (see `ack`).
    const wireTick = tick >>> 0;
    const world = this.world;
    world.clock = tick;
    this.rng.reseed(tickSeed(this.settings['engine.seed'], tick));
    if (this.settings['engine.npc_count'] > 0) wander(world, this.rng, KIND_NPC, this.rules.maxSpeed * 0.5, 0.02);
    if (this.dormantUntil.size > 0) this.expireDormant();
    if (this.handedOver.size > 0) this.expireHandedOver();
    // The calls that came in since the last tick, before the movement: what they change is simulated this tick.
    if (this.rpcTurnHead < this.rpcTurns.length) this.runRpcs();
    const nCorrected = step(world, this.rules, this.corrected);
    if (this.hooks.onTick) this.callHook('onTick', () => this.hooks.onTick?.(this.context));
    // The world is final for this tick. Snapshot threads wake now, and the first of them quantizes
    // the world while this thread rebuilds the grid.
    for (let t = 0; t < this.threads.length; t++) {
      if (this.threads[t]?.failed && (this.threadLoad[t + 1] as number) > 0) this.abandonThread(t + 1);
    }
    let quantizer: SnapshotThread | undefined;
    const begun = this.threadBegun;
    for (let t = 0; t < this.threads.length; t++) {
      const thread = this.threads[t] as SnapshotThread;
      begun[t] = thread.usable;
      if (!begun[t]) continue;
      thread.begin(wireTick, world.count, quantizer === undefined);
      quantizer ??= thread;
    }
    if (quantizer) this.quantized.world = world;
    else this.quantized.update(world, this.quanta, wireTick);
    this.grid.rebuild(world.x, world.y, world.count);
    this.gridLayout = world.layout;

    const skip = this.settings['gateway.slow_skip_ticks'];
    const drop = this.settings['gateway.slow_drop_ticks'];
    let queries = 0;
    // Of them, those with more in range than engine.max_visible (the nearest kept).
    let capped = 0;
    let dropped = 0;
    let sentBytes = 0;
    let sent = 0;
    // Clients too far behind leave after the loop: a despawn moves slots, and the grid and the
    // quantized row of this tick must describe the world every snapshot of this tick is cut from.
    const tooSlow: [Session, number][] = [];
    // Who gets a snapshot this tick, by the slot of their entity.
    const due = this.dueBySlot;
    for (const session of this.sessions.values()) {
      const lag = tick - Math.max(session.ackTick, session.joinTick);
      if (lag > drop) {
        tooSlow.push([session, lag]);
        continue;
      }
      // A client that lags gets a snapshot only every SLOW_SNAPSHOT_EVERY ticks: less to read, and
      // still something to acknowledge, so its lag can shrink again (skipping every snapshot would
      // leave it nothing to acknowledge until the drop bound kicks it). Its round trip is not lag:
      // a far client reading everything would otherwise be held at a quarter of the rate for good.
      if (lag - session.rtt > skip && tick - (session.sentTick ?? 0) < SLOW_SNAPSHOT_EVERY) {
        dropped++;
        continue;
      }
      const slot = world.indexOf(session.entityId);
      if (slot >= 0) due[slot] = session;
    }
    // Snapshots are cut in grid order: neighbouring clients see mostly the same entities, so each
    // one finds their data still in the CPU cache (measured: a third less time than session order).
    // Sessions of snapshot threads become jobs for them first, so that they run alongside this one.
    const order = this.grid.order();
    // Snapshot threads write their frames to the sockets themselves when the output allows it.
    const framed = this.out.directFd !== undefined && this.out.sendFrame !== undefined;
    const mine = this.mine;
    mine.length = 0;
    for (const jobs of this.threadJobs) jobs.length = 0;
    for (let k = 0; k < order.length; k++) {
      const slot = order[k] as number;
      const session = due[slot];
      if (session === undefined) continue;
      due[slot] = undefined;
      queries++;
      if (session.thread === 0) {
        mine.push(session);
        continue;
      }
      const thread = this.threads[session.thread - 1] as SnapshotThread;
      const jobs = this.threadJobs[session.thread - 1] as Session[];
      if (jobs.length === thread.maxJobs) {
        // More sessions than the job table holds (engine.max_players + 64; resumes are not capped).
        dropped++;
        continue;
      }
      const o = jobs.length * JOB_WORDS;
      thread.jobs[o] = session.id;
      thread.jobs[o + 1] = slot;
      thread.jobs[o + 2] = session.ackTick >>> 0;
      thread.jobs[o + 3] = session.fresh ? 1 : 0;
      thread.jobs[o + 4] = framed ? (this.out.directFd?.(session.id) ?? -1) : -1;
      session.fresh = false;
      jobs.push(session);
    }
    // Every thread reads the quantized row: it must be complete before any cutting starts.
    if (quantizer && !quantizer.awaitQuantized(SNAPSHOT_THREAD_TIMEOUT_MS)) {
      this.quantized.update(world, this.quanta, wireTick); // the thread is failed; its jobs are dropped below
    }
    for (let t = 0; t < this.threads.length; t++) {
      if (begun[t]) (this.threads[t] as SnapshotThread).cut(order.length, (this.threadJobs[t] as Session[]).length);
    }
    const deliver = (session: Session, bytes: Uint8Array | undefined) => {
      if (bytes && this.out.send(session.id, bytes)) {
        sent++;
        sentBytes += bytes.length;
        session.sentTick = tick;
      } else {
        dropped++;
      }
    };
    // Finished jobs of the snapshot threads are sent as they come, between this thread's own
    // snapshots: socket writes overlap the threads' cutting.
    const delivered = this.threadDelivered;
    // A frame the thread wrote whole is sent; one it wrote in part, or not at all, goes to the output.
    const deliverFrame = (session: Session, thread: SnapshotThread, j: number) => {
      const frame = thread.frame(j);
      const written = thread.written(j);
      if (frame && (written === frame.length || this.out.sendFrame?.(session.id, frame, written))) {
        sent++;
        sentBytes += thread.messageLength(j);
        session.sentTick = tick;
      } else {
        dropped++;
      }
    };
    const sendFinished = (t: number, upTo: number) => {
      const jobs = this.threadJobs[t] as Session[];
      const thread = this.threads[t] as SnapshotThread;
      for (let j = delivered[t] as number; j < upTo; j++) {
        if (framed) deliverFrame(jobs[j] as Session, thread, j);
        else deliver(jobs[j] as Session, thread.message(j));
      }
      delivered[t] = upTo;
    };
    for (let t = 0; t < this.threads.length; t++) delivered[t] = 0;
    const cutStarted = performance.now();
    let waited = 0;
    this.cutter.capped = 0;
    for (let i = 0; i < mine.length; i++) {
      const session = mine[i] as Session;
      deliver(session, this.cutter.cut(session.history as DeltaHistory, world.indexOf(session.entityId), wireTick, session.ackTick >>> 0));
      if ((i & 7) !== 7) continue;
      for (let t = 0; t < this.threads.length; t++) if (begun[t]) sendFinished(t, (this.threads[t] as SnapshotThread).progress());
    }
    // Then the threads' rounds: their finished jobs are sent, and while a thread is behind, this
    // thread writes its last unwritten jobs itself (the thread stops where they begin) rather than
    // wait: a thread descheduled in the middle of its writes no longer holds the tick up.
    let stolenMs = 0;
    let stolen = 0;
    for (let t = 0; t < this.threads.length; t++) {
      const jobs = this.threadJobs[t] as Session[];
      const thread = this.threads[t] as SnapshotThread;
      if (!begun[t]) {
        dropped += jobs.length; // none: a thread without a round has no sessions
        continue;
      }
      let ok = true;
      // Jobs from `back` on were stolen (and written) here.
      let back = jobs.length;
      let cutSeen = false;
      while ((delivered[t] as number) < back) {
        const done = Math.min(thread.progress(), back);
        if (done > (delivered[t] as number)) {
          sendFinished(t, done);
          continue;
        }
        if (framed && (cutSeen || thread.allCut())) {
          cutSeen = true;
          if (thread.steal(back - 1)) {
            const from = performance.now();
            back--;
            deliverFrame(jobs[back] as Session, thread, back);
            stolen++;
            stolenMs += performance.now() - from;
            continue;
          }
          // The thread claimed it: it is writing its last job.
        }
        const from = performance.now();
        const upTo = thread.awaitProgress(delivered[t] as number, framed && !cutSeen, SNAPSHOT_THREAD_TIMEOUT_MS);
        waited += performance.now() - from;
        if (upTo === false) {
          ok = false;
          break;
        }
      }
      if (ok) ok = thread.finish(SNAPSHOT_THREAD_TIMEOUT_MS);
      if (ok) capped += thread.capped;
      if (!ok) {
        // Whatever the thread began to write must be completed before anything else goes to those sockets.
        const writesStopped = thread.stopWrites();
        sendFinished(t, Math.min(back, thread.progress()));
        this.abandonThread(t + 1, writesStopped);
        dropped += back - (delivered[t] as number);
      }
    }
    if (this.rebalanceTicks > 0 && this.threads.length > 0) this.rebalance(performance.now() - cutStarted - waited - stolenMs, stolenMs);
    for (const [session, lag] of tooSlow) {
      // Probably a bad network: the entity waits for the client to rejoin.
      this.suspend(session.id);
      this.out.kick(session.id, ReasonCode.REASON_CODE_TOO_SLOW, `no acknowledgement for ${lag} ticks`);
    }
    for (let k = 0; k < nCorrected; k++) {
      const session = this.byEntity.get(this.corrected[k] as number);
      if (!session) continue;
      const slot = world.indexOf(session.entityId);
      const bytes = ServerMessage.encode({
        correction: {
          tick,
          lastInputSeq: world.lastSeq[slot] as number,
          position: { x: world.x[slot] as number, y: world.y[slot] as number },
          velocity: { x: world.vx[slot] as number, y: world.vy[slot] as number },
        },
      }).finish();
      if (this.out.send(session.id, bytes)) {
        sent++;
        sentBytes += bytes.length;
      }
    }
    const m = this.metrics;
    if (m) {
      m.aoiQueries.inc(queries);
      capped += this.cutter.capped;
      if (capped > 0) m.aoiCapped.inc(capped);
      if (dropped > 0) m.snapshotsDropped.inc(dropped);
      if (stolen > 0) m.snapshotWritesStolen.inc(stolen);
      if (nCorrected > 0) m.corrections.inc(nCorrected);
      m.messagesSent.inc(sent);
      m.bytesSent.inc(sentBytes);
      m.entityCount.set(world.count);
      m.entityIdsLeft.set(world.idLimit - world.nextEntityId);
      m.players.set(this.byPlayer.size);
      m.waitingPlayers.set(this.dormant.size);
      for (let t = 0; t < this.threadLoad.length; t++) m.threadSessions.set({ thread: String(t) }, this.threadLoad[t] as number);
    }
  }
}
