import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The metrics of the shard's persistence (state snapshots, the outbox, presence). On their own so
 * that a `ShardPersistence` outside a shard (tests, tools) can have them unregistered (`registers` empty).
 */
export function createPersistenceMetrics(registers: Registry[] = []) {
  return {
    stateSnapshotFailures: new Counter({
      name: 'aether_state_snapshot_failures_total',
      help: 'State snapshots not written, by reason: error (the store failed or timed out), stale (the store holds a newer tick and refused it).',
      labelNames: ['reason'] as const,
      registers,
    }),
    stateSnapshotLastTick: new Gauge({
      name: 'aether_state_snapshot_last_saved_tick',
      help: 'Tick of the last state snapshot written by this process (0: none yet).',
      registers,
    }),
    stateSnapshotLastSaved: new Gauge({
      name: 'aether_state_snapshot_last_saved_timestamp_seconds',
      help: 'Unix time of the last state snapshot written, or of the start until the first: alert on time() minus it.',
      registers,
    }),
    stateSnapshotWriteDuration: new Histogram({
      name: 'aether_state_snapshot_write_duration_seconds',
      help: 'Time to write one state snapshot to its store, successful writes only.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    outboxQueued: new Gauge({
      name: 'aether_outbox_queued_events',
      help: 'Domain events held in the process waiting to be appended to the outbox (persistence.max_queued_events at most).',
      registers,
    }),
    outboxPending: new Gauge({
      name: 'aether_outbox_pending_events',
      help: 'Domain events appended to the outbox and not yet relayed, as of the last relay.',
      registers,
    }),
    outboxDropped: new Counter({
      name: 'aether_outbox_events_dropped_total',
      help: 'Domain events dropped: persistence.max_queued_events were already waiting for the outbox, or PostgreSQL refused the event for its data.',
      registers,
    }),
    outboxAppendFailures: new Counter({
      name: 'aether_outbox_append_failures_total',
      help: 'Failed appends to the outbox (each retried with the same events at the next flush).',
      registers,
    }),
    outboxRelayFailures: new Counter({
      name: 'aether_outbox_relay_failures_total',
      help: "Failed relays, by reason: error (a store failed or timed out), id_conflict (the stream holds other events under the outbox's ids).",
      labelNames: ['reason'] as const,
      registers,
    }),
    outboxRelayed: new Counter({ name: 'aether_outbox_events_relayed_total', help: 'Domain events relayed to the sink.', registers }),
    presenceFailures: new Counter({
      name: 'aether_presence_write_failures_total',
      help: 'Failed presence writes, by operation (set, remove); each is retried at the next flush.',
      labelNames: ['op'] as const,
      registers,
    }),
  };
}

export type PersistenceMetrics = ReturnType<typeof createPersistenceMetrics>;

/** The shard's Prometheus metrics, registered on their own registry (served at /metrics). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    ...createPersistenceMetrics(registers),
    tickDuration: new Histogram({
      name: 'aether_tick_duration_seconds',
      help: "Wall time of one tick's work on the tick thread: simulation, grid, area of interest, snapshot encoding and sends, the sharding's ghosts and handoffs, and the periodic state capture.",
      buckets: [0.0005, 0.001, 0.002, 0.004, 0.008, 0.012, 0.016, 0.025, 0.05, 0.1, 0.25],
      registers,
    }),
    ticksSkipped: new Counter({
      name: 'aether_ticks_skipped_total',
      help: 'Ticks dropped because the loop fell behind by more than the catch-up bound.',
      registers,
    }),
    entityCount: new Gauge({
      name: 'aether_entity_count',
      help: "Entities in this shard's world: its own (players waiting to rejoin too) and its neighbours' ghosts.",
      registers,
    }),
    entityIdsLeft: new Gauge({
      name: 'aether_entity_ids_left',
      help: "Entity ids of this shard's range never handed out (freed ones are handed out again first); at 0 joins and spawns are refused.",
      registers,
    }),
    aoiQueries: new Counter({ name: 'aether_aoi_queries_total', help: 'Area-of-interest queries run.', registers }),
    aoiCapped: new Counter({
      name: 'aether_aoi_capped_total',
      help: "Area-of-interest queries that found more entities in range than engine.max_visible: the snapshot carried the player's own entity and the nearest others.",
      registers,
    }),
    activeConnections: new Gauge({
      name: 'aether_active_connections',
      help: 'Open WebSocket connections, authenticated or not.',
      registers,
    }),
    players: new Gauge({ name: 'aether_players', help: 'Authenticated players in the shard.', registers }),
    waitingPlayers: new Gauge({
      name: 'aether_players_awaiting_rejoin',
      help: 'Players whose connection dropped (or who were here before a restart) and whose entity waits for them (engine.rejoin_window_ms).',
      registers,
    }),
    threadSessions: new Gauge({
      name: 'aether_snapshot_thread_sessions',
      help: 'Sessions whose snapshots each thread cuts (thread 0: the tick thread; see engine.snapshot_threads).',
      labelNames: ['thread'] as const,
      registers,
    }),
    threadGc: new Histogram({
      name: 'aether_snapshot_thread_gc_duration_seconds',
      help: "Garbage-collection pauses of the snapshot threads, by kind (the tick thread's own: nodejs_gc_duration_seconds).",
      labelNames: ['kind'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers,
    }),
    snapshotWritesStolen: new Counter({
      name: 'aether_snapshot_writes_stolen_total',
      help: 'Snapshots a snapshot thread had cut that the tick thread wrote itself, rather than wait for the thread to write them.',
      registers,
    }),
    messagesSent: new Counter({ name: 'aether_messages_sent_total', help: 'Messages sent to clients.', registers }),
    bytesSent: new Counter({ name: 'aether_bytes_sent_total', help: 'Payload bytes sent to clients.', registers }),
    messagesReceived: new Counter({ name: 'aether_messages_received_total', help: 'Messages received from clients.', registers }),
    badMessages: new Counter({
      name: 'aether_bad_messages_total',
      help: 'Client messages rejected, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    snapshotsDropped: new Counter({
      name: 'aether_snapshots_dropped_total',
      help: 'Snapshots not sent: the client lagged in acknowledging, or its socket already held gateway.max_buffered_bytes.',
      registers,
    }),
    corrections: new Counter({
      name: 'aether_corrections_total',
      help: 'Moves the rules clamped (over max speed, or past the bounds); each is answered with a Correction to its client when its socket takes it.',
      registers,
    }),
    kicks: new Counter({
      name: 'aether_kicks_total',
      help: "Sessions the server ended, by reason, and connections to the players' port it closed before any session: too_many_connections (closed as they arrived, before any HTTP: a connection cap), auth_timeout (not upgraded within gateway.auth_timeout_ms), shutting_down (an upgrade answered 503 while draining).",
      labelNames: ['reason'] as const,
      registers,
    }),
    opsConnectionsRefused: new Counter({
      name: 'aether_ops_connections_refused_total',
      help: 'TCP connections to the ops port (ops.bind_addr) closed as they arrived: ops.max_connections were open.',
      registers,
    }),
    hookErrors: new Counter({
      name: 'aether_hook_errors_total',
      help: 'Exceptions thrown by the game module, by hook.',
      labelNames: ['hook'] as const,
      registers,
    }),
    rpcsRefused: new Counter({
      name: 'aether_rpcs_refused_total',
      help: 'RPCs answered without calling the game, by reason: rate_limited (rpc.max_per_second), busy (rpc.max_in_flight), expired (rpc.timeout_ms passed while it waited for a tick).',
      labelNames: ['reason'] as const,
      registers,
    }),
    rpcsQueued: new Gauge({
      name: 'aether_rpcs_queued',
      help: 'RPCs waiting for a tick to run their handlers (rpc.max_ms_per_tick), after the last tick.',
      registers,
    }),
    joins: new Counter({ name: 'aether_joins_total', help: 'Join attempts, by result.', labelNames: ['result'] as const, registers }),
    handoffs: new Counter({
      name: 'aether_handoffs_total',
      help: 'Handoffs this shard offered, by result: ok, rolled_back (not accepted in time), rejected.',
      labelNames: ['result'] as const,
      registers,
    }),
    handoffCustody: new Gauge({
      name: 'aether_handoff_custody',
      help: 'Entities handed over whose new owner has not yet said a snapshot holding them is stored: copies kept here, handed back if it restarts first.',
      registers,
    }),
    handoffDuration: new Histogram({
      name: 'aether_handoff_duration_seconds',
      help: 'From offering an entity to the neighbour accepting it.',
      buckets: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    ghosts: new Gauge({
      name: 'aether_ghosts',
      help: "Read-only mirrors of neighbours' entities held here, by neighbour.",
      labelNames: ['neighbour'] as const,
      registers,
    }),
    linksUp: new Gauge({
      name: 'aether_shard_links_up',
      help: 'Shard links established, by neighbour and direction (1 up, 0 down).',
      labelNames: ['neighbour', 'direction'] as const,
      registers,
    }),
    ghostBytes: new Counter({
      name: 'aether_ghost_bytes_sent_total',
      help: 'Bytes of ghost updates sent, by neighbour.',
      labelNames: ['neighbour'] as const,
      registers,
    }),
  };
}

export type ShardMetrics = ReturnType<typeof createMetrics>;

/**
 * `aether_join_keys_age_seconds` on `registry`, read from `ageMs` at each scrape: for a shard
 * verifying join tokens against auth.jwks_url, seconds since the key set it uses was fetched
 * (0 until it first loads: an unlabelled gauge always has a value; `/readyz` is false until then). It is refreshed every few minutes; a value growing past that
 * means the key server has been failing since (the shard keeps using the last set).
 */
export function registerJoinKeysAge(registry: Registry, ageMs: () => number | undefined): Gauge {
  return new Gauge({
    name: 'aether_join_keys_age_seconds',
    help: 'Seconds since the join-token key set (auth.jwks_url) in use was fetched.',
    registers: [registry],
    collect() {
      const ms = ageMs();
      if (ms === undefined) this.reset();
      else this.set(ms / 1000);
    },
  });
}

/**
 * `aether_open_sockets` and `aether_ops_open_sockets` on `registry`, read at each scrape: the open
 * TCP sockets of the players' port (upgraded or not: what gateway.max_connections bounds) and of
 * the ops port (what ops.max_connections bounds; the scrape's own included), as Node counts them.
 */
export function registerOpenSockets(registry: Registry, count: { gateway: () => Promise<number>; ops: () => Promise<number> }): void {
  new Gauge({
    name: 'aether_open_sockets',
    help: "Open TCP sockets on the players' port (gateway.bind_addr), WebSockets and sockets still in their HTTP handshake alike; gateway.max_connections at most.",
    registers: [registry],
    async collect() {
      this.set(await count.gateway());
    },
  });
  new Gauge({
    name: 'aether_ops_open_sockets',
    help: 'Open TCP sockets on the ops port (ops.bind_addr), the scrape reading this included; ops.max_connections at most.',
    registers: [registry],
    async collect() {
      this.set(await count.ops());
    },
  });
}
