import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { aethex } from '@aethex/proto';
import {
  ConfigError,
  createJoinVerifier,
  type JoinClaims,
  type JoinVerifier,
  type JoinVerifierOptions,
  type Logger,
  redactUrl,
  redactUrlsIn,
  worldRef,
} from '@aethex/runtime';
import { checkWorldBounds, type GameserverSettings, shardKey } from './config.js';
import { ShardEngine } from './engine.js';
import { loadHooks } from './hooks.js';
import { createOpsServer } from './http.js';
import { Agones } from './lifecycle/agones.js';
import { BehindLog } from './loop/behind-log.js';
import { type Clock, FixedTimestep, runLoop, systemClock } from './loop/fixed-timestep.js';
import { createMetrics, registerJoinKeysAge, registerOpenSockets, type ShardMetrics } from './metrics.js';
import { Gateway } from './net/gateway.js';
import { ShardPersistence } from './persist/persistence.js';
import { settledWithin } from './persist/settled.js';
import { UnreadableSnapshotError } from './persist/snapshot-store.js';
import { assembleState, decodeState, RESTORE_ID_MARGIN } from './persist/state-codec.js';
import { openStores, type Stores } from './persist/stores.js';
import { LINK_PATH, ShardLinks } from './sharding/links.js';
import { idRange, loadShardMap, type ShardPlacement } from './sharding/map.js';
import { Sharding } from './sharding/sharding.js';
import { reachOf } from './sim/step.js';
import { Interest } from './spatial/aoi.js';
import { viewerFocus, viewerState } from './viewer/state.js';

/** A running shard: its engine, gateway, tick loop and operational endpoints. */
export interface RunningShard {
  engine: ShardEngine;
  gateway: Gateway;
  metrics: ShardMetrics;
  persistence: ShardPersistence;
  stores: Stores;
  /** ws://host:port of the players' endpoint. */
  gatewayUrl: string;
  /** http://host:port of /healthz, /readyz and /metrics. */
  opsUrl: string;
  /** This shard's place in a sharded world (absent: the shard is the whole world). */
  placement?: ShardPlacement;
  sharding?: Sharding;
  links?: ShardLinks;
  /**
   * Drains: readiness turns false, new joins are refused, every session is told SHUTTING_DOWN,
   * the loop stops and the listeners close. Idempotent; resolves when done. `since`: when the
   * drain's time (`ops.drain_timeout_ms`) began, by performance.now() — a signal that came while
   * the shard started; now by default.
   */
  drain(since?: number): Promise<void>;
}

export interface ShardOptions {
  log: Logger;
  clock?: Clock;
  /** Overrides the join-token check built from the `auth.*` settings (tests of other parts). */
  verifyJoin?: (token: string) => Promise<JoinClaims>;
  /** With auth.jwks_url: how the key set is fetched and kept (tests shorten its intervals). */
  jwks?: JoinVerifierOptions['jwks'];
  /**
   * Called after every tick with its wall time and the CPU time this process spent in it, in
   * milliseconds (benchmarks and tests: on a shared machine the two differ by the time the process
   * was not run).
   */
  onTick?: (ms: number, cpuMs: number) => void;
  /** Called just before each tick's timed span (benchmarks: to read per-thread scheduler counters). */
  onTickStart?: () => void;
  /**
   * Called with each garbage-collection pause of a snapshot thread, in milliseconds, shortly after
   * the round it happened in (benchmarks: the tick thread's own pauses are seen through perf_hooks).
   */
  onThreadGc?: (ms: number) => void;
  /**
   * The Agones SDK server's port (main reads `AGONES_SDK_GRPC_PORT`): the shard connects to it before
   * anything else, marks itself Ready once serving, pings health, tracks players and asks for
   * Shutdown after its drain. Absent: no Agones.
   */
  agonesPort?: number;
}

/** Kept from the drain's time for closing the stores and the ops server and asking Agones to shut down, at most. */
const DRAIN_CLOSE_RESERVE_MS = 2000;
/** The drain aims to end this much before main's bound (ops.drain_timeout_ms) would exit 1. */
const DRAIN_EXIT_MARGIN_MS = 100;
/**
 * How long a drain waits, at most, for the clients of players handed over to this shard who have
 * not resumed yet: their old shard has redirected them here, a round trip away.
 */
const DRAIN_RESUME_WAIT_MS = 1000;
/**
 * A snapshot is taken this soon after an entity is adopted from a neighbour (or at the periodic
 * one, if sooner): until then a crash of this shard would lose the entity, which the neighbour let go of.
 */
const ADOPTED_SNAPSHOT_MS = 1000;
/**
 * A restore leaves out players who played on another shard from this long after the snapshot's
 * capture (`ShardPersistence.movedOnSince`): that shard's events are on its own clock, and a
 * handoff in here just before the capture must not count on one ahead of this shard's.
 */
const MOVED_ON_MARGIN_MS = 2000;
/** How long a drain gives clients to answer the close handshake, at most, before their sockets are cut. */
const DRAIN_SOCKET_CLOSE_MS = 1000;
/** The stall bound of /healthz and Agones' health pings, in ticks: no tick ended for this long, or ticks each as long. */
const STALL_TICKS = 40;
/** The ticks whose length /healthz looks at (at most 31), and how many of them over the stall bound make the shard unhealthy. */
const RECENT_TICKS = 8;
const RECENT_TICKS_MASK = (1 << RECENT_TICKS) - 1;
const SLOW_TICKS_UNHEALTHY = 3;

/** Set bits of a 32-bit integer. */
function bitCount(n: number): number {
  let bits = 0;
  for (let v = n >>> 0; v !== 0; v &= v - 1) bits++;
  return bits;
}

/** A JWKS that could not be loaded is asked for again after this, doubling up to JWKS_RETRY_MAX_MS. */
const JWKS_RETRY_MS = 500;
const JWKS_RETRY_MAX_MS = 10_000;
/** While the JWKS keeps failing to load, one warning per this. */
const JWKS_WARN_EVERY_MS = 30_000;

function url(scheme: string, a: AddressInfo): string {
  return `${scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
}

/** Whether players handed over to this shard may still resume here: their entity is held or adopted, their client not arrived. */
function resumesPending(sharding: Sharding): boolean {
  return sharding.inFlight.held.length > 0 || sharding.adoptedAwaitingResume().length > 0;
}

/**
 * Loads the join-token keys (a JWKS) until they are in hand or `stopped()`: the shard is not ready
 * meanwhile. A key server briefly down does not fail the start; failures are warned about,
 * once per JWKS_WARN_EVERY_MS.
 */
async function loadJoinKeys(verifier: JoinVerifier, url: string, log: Logger, stopped: () => boolean): Promise<void> {
  let wait = JWKS_RETRY_MS;
  let failures = 0;
  let warnedAt = Number.NEGATIVE_INFINITY;
  // auth.jwks_url is a secret setting: a password or token in it never reaches the log.
  const shownUrl = redactUrl(url) ?? '(not shown)';
  while (!verifier.keysLoaded() && !stopped()) {
    try {
      await verifier.loadKeys();
      log.info({ url: shownUrl, failures }, 'join-token keys loaded');
    } catch (err) {
      failures++;
      if (performance.now() - warnedAt >= JWKS_WARN_EVERY_MS) {
        warnedAt = performance.now();
        log.warn(
          // Why, masked as the URL is: a fetch error may quote the URL it failed on.
          { url: shownUrl, failures, reason: redactUrlsIn((err as Error).message, url) },
          'the join-token keys at auth.jwks_url could not be loaded; not ready (every join would fail) until they are, retrying',
        );
      }
      await new Promise((r) => setTimeout(r, wait).unref());
      wait = Math.min(wait * 2, JWKS_RETRY_MAX_MS);
    }
  }
}

/** Starts a shard from its settings. */
export async function startShard(configured: GameserverSettings, options: ShardOptions): Promise<RunningShard> {
  const { log } = options;
  // In a sharded world the map says what the world is and which part of it is ours.
  const placement = configured['shard.map_file']
    ? loadShardMap(configured['shard.map_file'], configured['shard.instance'], configured['shard.name'])
    : undefined;
  if (placement && placement.neighbours.length > 0 && configured['links.secret'] === '') {
    throw new ConfigError('links.secret', 'is required: the shard map lists neighbours, and links between shards are authenticated');
  }
  const settings: GameserverSettings = placement ? { ...configured, 'engine.world_bounds': placement.bounds } : configured;
  if (placement) checkWorldBounds(settings, 'shard.map_file');
  const ids = placement ? idRange(placement.shard) : undefined;
  const clock = options.clock ?? systemClock;
  const metrics = createMetrics();
  const verifier = options.verifyJoin
    ? undefined
    : await createJoinVerifier({
        ...(settings['auth.public_key'] ? { publicKeyPem: settings['auth.public_key'] } : {}),
        ...(settings['auth.jwks_url'] ? { jwksUrl: settings['auth.jwks_url'] } : {}),
        issuer: settings['auth.issuer'],
        audience: settings['auth.audience'],
        namespace: settings['shard.namespace'],
        world: settings['shard.world'],
        instance: settings['shard.instance'],
        shard: settings['shard.name'],
        maxLifetimeS: settings['auth.max_token_lifetime_s'],
        ...(options.jwks ? { jwks: options.jwks } : {}),
      });
  const verifyJoin = options.verifyJoin ?? (verifier as JoinVerifier);
  if (verifier && settings['auth.jwks_url']) registerJoinKeysAge(metrics.registry, () => verifier.keysAgeMs());

  // On Agones, a shard that cannot reach its SDK server fails to start rather than never becoming Ready.
  const agones =
    options.agonesPort === undefined
      ? undefined
      : await Agones.connect({
          port: options.agonesPort,
          connectTimeoutMs: settings['agones.connect_timeout_ms'],
          healthIntervalMs: settings['agones.health_interval_ms'],
          log: log.child({ part: 'agones' }),
        });
  const stores = await openStores(settings, log);
  const key = shardKey(settings);
  let saved: Awaited<ReturnType<typeof stores.snapshots.load>>;
  let restored: ReturnType<typeof decodeState> | undefined;
  try {
    saved = await stores.snapshots.load(key);
    restored = saved ? decodeState(saved.state, settings['engine.max_entities'], ids?.limit, ids?.first) : undefined;
  } catch (err) {
    // A store that cannot be reached is not the snapshot's fault.
    if (saved === undefined && !(err instanceof UnreadableSnapshotError)) {
      await stores.close(0);
      throw err;
    }
    // Which snapshot, and what to do about it: the shard cannot start from it.
    const at = stores.snapshots.locate(key);
    await stores.close(0);
    throw new Error(`the snapshot in ${at.where} could not be restored: ${(err as Error).message}; ${at.moveAside}`, { cause: err });
  }
  if (saved && restored) {
    // The blob holds the tick's low 32 bits (a world may run past 2^32 ticks: 3.4 years at 40 Hz);
    // the store keeps it whole, and refuses saves below it. Both are written by one save: when
    // they disagree, the store's record (not covered by the blob's checksum) is damaged — a flipped
    // bit of the file's header can make it 4.6e18, where the tick stops advancing.
    if (saved.tick % 2 ** 32 !== restored.tick) {
      const at = stores.snapshots.locate(key);
      await stores.close(0);
      throw new Error(
        `the snapshot in ${at.where} could not be restored: its store's tick (${saved.tick}) is not its checksummed blob's (${restored.tick}), so the store's record is damaged; ${at.moveAside}`,
      );
    }
    restored.tick = saved.tick;
    // Its players stood still from then until now (a drain, a crash, the restart).
    if (saved.savedAtMs !== undefined) restored.storedMs = Math.max(0, Date.now() - saved.savedAtMs);
  }
  if (restored) log.info({ tick: restored.tick, entities: restored.world.count, players: restored.players.size }, 'restored from snapshot');
  const hooks = settings['game.module'] ? await loadHooks(settings['game.module']) : {};
  let sharding: Sharding | undefined;
  const persistence = new ShardPersistence({
    key,
    ...stores,
    log,
    presenceTtlMs: settings['presence.ttl_ms'],
    maxQueuedEvents: settings['persistence.max_queued_events'],
    metrics,
    // Ids freed before a snapshot the store took may go again (World.reuseThrough), ids of
    // neighbours' ranges freed before it go home, and the neighbours that handed over entities
    // adopted before it may forget their copies. "Before" is through the tick before its capture's:
    // an id freed between ticks, after the capture at the end of tick t, carries t too and is still
    // in that snapshot.
    onSaved: (tick, mark) => {
      engine.world.reuseThrough = Math.max(engine.world.reuseThrough, tick - 1);
      sharding?.stored(mark);
      sharding?.releaseIds(tick - 1);
    },
  });
  // The places the outbox holds open from before: the restored players' are not told again, the rest are freed.
  await persistence.loadOpenPlaces();
  // Players who left after the snapshot (a stale one: the store was down, or a crash came between
  // two) are not brought back. Their entity ids are not reused: a neighbour may hold one now.
  // The snapshot's capture time where the store keeps it (on the clock of the events it is compared
  // with), else when the store took it.
  const snapshotAtMs = saved?.capturedAtMs ?? saved?.savedAtMs;
  if (restored && restored.players.size > 0 && snapshotAtMs !== undefined) {
    const players = [...restored.players.values()];
    const departed = await persistence.departedSince(snapshotAtMs, players);
    // Nor those who played on another shard since (its events are on its clock: a margin, so a
    // handoff in here just before the capture, on a clock ahead, does not count).
    const movedOn = await persistence.movedOnSince(snapshotAtMs + MOVED_ON_MARGIN_MS, players);
    for (const [entityId, playerId] of restored.players) {
      if (!departed.has(playerId) && !movedOn.has(playerId)) continue;
      restored.world.despawn(entityId);
      restored.players.delete(entityId);
    }
    if (departed.size > 0) log.info({ players: departed.size }, 'players who left after the snapshot were not restored');
    if (movedOn.size > 0) log.info({ players: movedOn.size }, 'players who played on another shard after the snapshot were not restored');
  }
  persistence.start();

  let gateway: Gateway | undefined;
  const engine = new ShardEngine(
    settings,
    {
      send: (id, bytes) => gateway?.send(id, bytes) ?? false,
      directFd: (id) => gateway?.directFd(id) ?? -1,
      sendFrame: (id, frame, written) => gateway?.sendFrame(id, frame, written) ?? false,
      kick: (id, reason, message) => gateway?.kickSession(id, reason, message),
    },
    {
      metrics,
      restored,
      hooks,
      log,
      ...(placement
        ? { region: placement.region, reach: reachOf(placement.bounds, [placement.region, ...placement.neighbours.map((n) => n.region)]) }
        : {}),
      ...(ids ? { ids } : {}),
      onThreadGc: options.onThreadGc,
      // A dropped player's place is kept until their rejoin window ends, and so is their presence
      // and their part of Agones' player count: an allocator reading it must not fill the place.
      onPlace: (event, playerId, handedOver) => {
        if (event === 'taken') persistence.playerJoined(playerId, Date.now(), handedOver);
        else persistence.playerLeft(playerId, Date.now(), handedOver);
        agones?.player(event === 'taken' ? 'joined' : 'left', playerId);
      },
    },
  );
  // The places open from before that no restored player took are freed — once the neighbours have
  // handed back what the previous run adopted and never stored (see Sharding.settled): until then
  // such a player's place is theirs, and a copy taking it back is no departure and no new join.
  let placesSettled = false;
  const settlePlaces = () => {
    if (placesSettled) return;
    placesSettled = true;
    persistence.placesRestored();
  };
  if (!placement) settlePlaces();
  // Players who join before a snapshot thread is up stay on the tick thread for good: wait for them.
  await engine.snapshotThreadsReady();
  let links: ShardLinks | undefined;
  // Counts the events that may change who owns what between ticks (a neighbour's handoff messages
  // and claims, links going up and down): the viewer builds its state again after one.
  let ownershipEvents = 0;
  if (placement) {
    sharding = new Sharding({
      engine,
      placement,
      margin: settings['handoff.margin'],
      offerTimeoutMs: settings['handoff.timeout_ms'],
      resumeTimeoutMs: settings['handoff.resume_timeout_ms'],
      positionScale: settings['engine.position_scale'],
      log: log.child({ part: 'sharding' }),
      metrics,
      redirect: (sessionId, redirect) => gateway?.redirect(sessionId, redirect),
      redirectUrl: settings['handoff.redirect_url'],
      restored: restored !== undefined,
      // An entity a neighbour hands back (adopted by the run before, never stored) is not brought
      // back for a player whose last event here since the snapshot is leaving the game (a handoff
      // away, and back, is no departure); without a snapshot, every one is.
      departedSince: (players) =>
        snapshotAtMs === undefined ? Promise.resolve(new Set()) : persistence.departedSince(snapshotAtMs, players, true),
      rejoinWindowMs: settings['engine.rejoin_window_ms'],
    });
    const s = sharding;
    links = new ShardLinks(
      {
        world: settings['shard.world'],
        instance: settings['shard.instance'],
        name: settings['shard.name'],
        secret: settings['links.secret'],
        neighbours: placement.neighbours,
        heartbeatMs: settings['links.heartbeat_ms'],
        timeoutMs: settings['links.timeout_ms'],
        log: log.child({ part: 'links' }),
        metrics,
      },
      {
        onMessage: (from, msg) => {
          if (msg.body !== 'ghostUpdate') ownershipEvents++;
          s.onMessage(from, msg);
        },
        onInboundUp: (from, epoch) => {
          ownershipEvents++;
          s.onInboundUp(from, epoch);
        },
        onInboundDown: (from) => {
          ownershipEvents++;
          s.onInboundDown(from);
        },
        onOutboundUp: (to, epoch) => {
          ownershipEvents++;
          s.onOutboundUp(to, epoch);
        },
      },
    );
    sharding.attach(links);
  }
  gateway = new Gateway({
    settings,
    engine,
    verifyJoin,
    log,
    metrics,
    clock,
    ...(links ? { upgrades: { path: LINK_PATH, handleUpgrade: links.handleUpgrade.bind(links) } } : {}),
    ...(sharding
      ? {
          resume: sharding.claimResume.bind(sharding),
          handedIn: sharding.claimForJoin.bind(sharding),
          notAdmitting: (playerId, hadEntity) => sharding?.notAdmitting(playerId, hadEntity),
          resumesPending: () => sharding !== undefined && resumesPending(sharding),
        }
      : {}),
  });
  const gatewayAddress = await gateway.listen();
  links?.start();
  const snapshotEvery = Math.max(1, Math.round(settings['persistence.snapshot_interval_ms'] / settings['engine.tick_rate_ms']));
  // Saved at once, restored or not, so that a crash before the first periodic snapshot does not
  // restart from the same id counter again: a restart numbers on past a margin (state-codec), and
  // an id handed out before the crash may live on at a neighbour. Until it is taken, no freed id
  // goes again (World.reuseThrough).
  engine.world.reuseThrough = -1;
  // A snapshot is taken every `snapshotEvery` ticks, and sooner once half the restore margin of new
  // ids has been handed out since the last one: a restart from it must number on past them all.
  let capturedNextId = 0;
  // And within ADOPTED_SNAPSHOT_MS of adopting an entity from a neighbour: the neighbour let go of
  // it at the commit, so until then a crash here would lose it (its position, its game state).
  const adoptedSnapshotTicks = Math.min(snapshotEvery, Math.max(1, Math.round(ADOPTED_SNAPSHOT_MS / settings['engine.tick_rate_ms'])));
  let capturedAdoptions = 0;
  let adoptedAtTick = -1;
  const takeSnapshot = () => {
    capturedNextId = engine.world.nextEntityId;
    capturedAdoptions = sharding?.adoptions ?? 0;
    adoptedAtTick = -1;
    persistence.snapshot(engine.tick, assembleState(engine.captureState(sharding?.adoptedAwaitingResume())), capturedAdoptions);
  };
  takeSnapshot();

  let lastTickAt = clock.now();
  // A tick longer than this is a stall (/healthz); the last RECENT_TICKS ticks' are bits of `slowTicks`, the latest lowest.
  const stallMs = settings['engine.tick_rate_ms'] * STALL_TICKS;
  let slowTicks = 0;
  // Dropped ticks are logged at a bounded rate: the first, then a count now and then.
  const behind = new BehindLog(log, () => clock.now());
  const tickMs = settings['engine.tick_rate_ms'];
  const loop = runLoop(new FixedTimestep(tickMs, settings['engine.max_catch_up_ticks'], clock.now()), clock, {
    onStep: () => {
      if (!placesSettled && (sharding?.settled ?? true)) settlePlaces();
      // Read the CPU clock (a syscall) outside the timed span.
      const cpu = options.onTick ? process.cpuUsage() : undefined;
      options.onTickStart?.();
      // The timed span is the whole of the tick's work on this thread: the engine's step, the
      // sharding's (ghosts, handoffs) and the periodic state capture.
      const started = performance.now();
      engine.step();
      sharding?.afterStep();
      if (sharding && adoptedAtTick < 0 && sharding.adoptions !== capturedAdoptions) adoptedAtTick = engine.tick;
      if (
        engine.tick % snapshotEvery === 0 ||
        engine.world.nextEntityId - capturedNextId >= RESTORE_ID_MARGIN / 2 ||
        (adoptedAtTick >= 0 && engine.tick - adoptedAtTick >= adoptedSnapshotTicks)
      )
        takeSnapshot();
      const ms = performance.now() - started;
      metrics.tickDuration.observe(ms / 1000);
      lastTickAt = clock.now();
      slowTicks = ((slowTicks << 1) | (ms > stallMs ? 1 : 0)) & RECENT_TICKS_MASK;
      behind.stepped();
      if (cpu) {
        const used = process.cpuUsage(cpu);
        options.onTick?.(ms, (used.user + used.system) / 1000);
      }
    },
    onSkip: (n) => {
      metrics.ticksSkipped.inc(n);
      engine.skipped(n);
      behind.skipped(n);
    },
    onError: (err) => log.error({ err }, 'tick failed'),
    yieldFirst: () => gateway?.takeAccepted() ?? false,
  });

  let draining = false;
  // Healthy (/healthz, Agones' health pings) while ticks keep coming at a pace: a loop stalled
  // for the stall bound (40 ticks) is not, and neither is one whose ticks each take that long
  // (SLOW_TICKS_UNHEALTHY of the last RECENT_TICKS; one long tick is a stall that passed). While
  // draining the loop has stopped on purpose: the process is alive until the drain ends, which
  // ops.drain_timeout_ms bounds.
  const healthy = () => draining || (clock.now() - lastTickAt < stallMs && bitCount(slowTicks) < SLOW_TICKS_UNHEALTHY);
  // Ready while joins can succeed: not draining, settled with the neighbours after a restart (the
  // gateway refuses joins NOT_READY until then), and with the join-token keys in hand.
  const ready = () => !draining && (sharding?.settled ?? true) && (verifier?.keysLoaded() ?? true);
  const interest = new Interest(settings['engine.max_visible']);
  const viewer = settings['ops.viewer']
    ? {
        // A new tick, or a handoff settled between ticks: the state is built again (a poller must
        // never see an entity still owned here that a neighbour already owns).
        version: () => `${engine.tick}:${ownershipEvents}`,
        ownership: () => String(ownershipEvents),
        state: () => viewerState(engine, settings['shard.name'], settings['ops.viewer_max_entities'], sharding),
        focus: (id: number) => viewerFocus(engine, interest, id),
      }
    : undefined;
  const ops = createOpsServer({ healthy, ready }, metrics.registry, viewer, {
    maxConnections: settings['ops.max_connections'],
    idleTimeoutMs: settings['ops.idle_timeout_ms'],
  });
  ops.on('drop', () => metrics.opsConnectionsRefused.inc());
  registerOpenSockets(metrics.registry, {
    gateway: () => gateway?.openSockets() ?? Promise.resolve(0),
    ops: () => new Promise((resolve, reject) => ops.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
  });
  ops.listen(settings['ops.bind_addr'].port, settings['ops.bind_addr'].host);
  await once(ops, 'listening');
  if (verifier && settings['auth.jwks_url']) void loadJoinKeys(verifier, settings['auth.jwks_url'], log, () => draining);
  await agones?.ready(healthy);

  let drained: Promise<void> | undefined;
  const shard: RunningShard = {
    engine,
    gateway,
    metrics,
    persistence,
    stores,
    gatewayUrl: url('ws', gatewayAddress),
    opsUrl: url('http', ops.address() as AddressInfo),
    ...(placement ? { placement } : {}),
    ...(sharding ? { sharding } : {}),
    ...(links ? { links } : {}),
    drain(since?: number) {
      drained ??= (async () => {
        const started = Math.min(since ?? Number.POSITIVE_INFINITY, performance.now());
        draining = true;
        verifier?.stop();
        const g = gateway as Gateway;
        g.stopAccepting();
        loop.stop();
        // No more offers are taken, and this shard's own undecided ones are rolled back before
        // anything else can come in: its players are detached next, and a commit could no longer
        // send them on. The links stay up until the final snapshot is stored (nothing they bring
        // after its capture goes into it): the neighbours then hear which of the entities they
        // handed over it holds, and do not hand older copies back to the next run.
        sharding?.stopAccepting();
        await engine.close();
        // Persistence gets the drain's time but a reserve for closing; every stage after it is
        // bounded by what is left, so the drain ends before main's ops.drain_timeout_ms bound.
        const end = started + settings['ops.drain_timeout_ms'] - DRAIN_EXIT_MARGIN_MS;
        const reserve = Math.min(settings['ops.drain_timeout_ms'] / 4, DRAIN_CLOSE_RESERVE_MS);
        const left = () => Math.max(0, end - performance.now());
        // Players handed over here whose client is on its way still resume (the gateway takes their
        // resumes until it closes): they are then told to rejoin like everyone else, and the final
        // snapshot keeps them with their entity.
        if (sharding) {
          const by = performance.now() + Math.min(DRAIN_RESUME_WAIT_MS, (left() - reserve) / 4);
          while (resumesPending(sharding) && performance.now() < by) await new Promise((r) => setTimeout(r, 10));
        }
        // The game's onLeave hooks of these detaches run on this thread, where no timer can stop
        // them: they get half of what is left before the reserve, the final snapshot the rest.
        engine.limitHooks(performance.now() + Math.max(0, left() - reserve) / 2);
        // Every client is told why (its Kick) and detached at once; the state is captured and saved
        // while their sockets close, which a client that stops reading would otherwise hold up.
        const closingGateway = g.close(
          aethex.v1.ReasonCode.REASON_CODE_SHUTTING_DOWN,
          'the shard is shutting down; reconnect through matchmaking',
          Math.max(0, Math.min(DRAIN_SOCKET_CLOSE_MS, left() - reserve)),
        );
        settlePlaces();
        persistence.releasingForDrain();
        engine.releasePlaces();
        if (engine.hooksSkipped > 0)
          log.warn({ skipped: engine.hooksSkipped }, "the drain ran out of time for the game's hooks: the rest were not called");
        try {
          const final = persistence.drain(
            engine.tick,
            assembleState(engine.captureState(sharding?.adoptedAwaitingResume())),
            end - reserve,
            sharding?.adoptions ?? 0,
          );
          // The links close cleanly once the final snapshot is stored: its HandoffStored answers go first.
          await Promise.all([final.finally(() => links?.close(Math.min(DRAIN_SOCKET_CLOSE_MS, left() / 4))), closingGateway]);
        } finally {
          const closingOps = new Promise<void>((resolve) => ops.close(() => resolve()));
          ops.closeIdleConnections();
          // Agones is asked to shut down whatever the stores did.
          const shutdown = agones?.shutdown();
          await Promise.all([
            stores.close(left() / 2),
            settledWithin(closingOps, left()).then((closed) => closed || ops.closeAllConnections()),
            shutdown &&
              settledWithin(shutdown, left()).then((answered) => {
                if (!answered) throw new Error('Agones did not confirm the shutdown within the drain (ops.drain_timeout_ms)');
                return shutdown;
              }),
          ]);
        }
      })();
      return drained;
    },
  };
  // What it stores in says whether a restart keeps anything: a directory in the pod, an unset or
  // misnamed database URL, show here.
  log.info(
    { gateway: shard.gatewayUrl, ops: shard.opsUrl, world: worldRef(key.namespace, key.world), shard: key.shard, stores: stores.describe },
    'shard started',
  );
  return shard;
}
