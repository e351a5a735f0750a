import {
  CLIENT_ADDRESS_HEADERS,
  ConfigError,
  DEFAULT_POSITION_SCALE,
  DNS_LABEL,
  type Env,
  envName,
  joinPublicKey,
  jwksUrlProblem,
  LOG_LEVELS,
  loadSettings,
  MAX_GRID_CELLS,
  type Settings,
  type SettingsSchema,
  type ShardKey,
  shownValue,
  TrustedProxies,
  WORLD_SETTING_RANGES,
  worldBoundsProblem,
} from '@aethex/runtime';
import { EVENTS_MAX_LEN, MAX_QUEUED_EVENTS, OUTBOX_RETENTION_MS } from './persist/outbox.js';

/**
 * An offer to a neighbour lasts at most handoff.timeout_ms, which the checks below bound to this
 * many ticks (6 s at 40 Hz, 1.2 s at 200 Hz). The inputs held meanwhile (`ShardEngine.input`) are
 * bounded by the offer's ticks plus MAX_QUEUED_MOVES (sim/world.ts), so a client's one a tick is
 * never dropped; after a rollback they wait with that much more room in the queue until it has
 * drained, and the credit for the frozen ticks (at most MAX_CREDIT, which this stays under) lets
 * the step catch up on them. Here, not in sim/world.ts: the operator loads this file alone.
 */
export const MAX_OFFER_TICKS = 240;

/**
 * Every setting of the shard server. A YAML file (`--config`) nests them by the dots; each is
 * overridden by `AETHEX_GAMESERVER_<KEY>` (dots → underscores, upper case). docs/gameserver.md lists
 * them with their meaning.
 */
export const GAMESERVER_SETTINGS = {
  'engine.tick_rate_ms': { type: 'int', default: 25, min: 5, max: 1000, doc: 'Simulation step in milliseconds (25 = 40 Hz).' },
  'engine.max_entities': { type: 'int', default: 10_000, min: 1, max: 1_000_000, doc: 'Entity capacity; spawns beyond it are refused.' },
  'engine.max_players': {
    type: 'int',
    default: 2_000,
    min: 1,
    max: 100_000,
    doc: 'Players at most, connected or expected back (engine.rejoin_window_ms); later joins get SHARD_FULL.',
  },
  'engine.world_bounds': {
    type: 'rect',
    default: { minX: -1000, minY: -1000, maxX: 1000, maxY: 1000 },
    doc: 'The whole world in world units; near enough to 0 that float32 positions there are at most engine.max_speed / 100 apart (within ±524288 at a max_speed of 5).',
  },
  'engine.max_speed': { type: 'number', default: 5, ...WORLD_SETTING_RANGES.maxSpeed, doc: 'Largest move per tick in world units.' },
  'engine.aoi_radius': { type: 'number', default: 200, ...WORLD_SETTING_RANGES.aoiRadius, doc: 'Area-of-interest radius in world units.' },
  'engine.max_visible': {
    type: 'int',
    default: 256,
    min: 1,
    max: 4096,
    doc: 'Entities tracked per client at most: its own entity, then, when more are within engine.aoi_radius, the nearest others (ties in distance to the lowest entity id; those in the last snapshot made for the client, when that view was full, counted 10 % nearer); each query so capped counts in aether_aoi_capped_total.',
  },
  'engine.snapshot_threads': {
    type: 'int',
    default: 1,
    min: 1,
    max: 16,
    doc: 'Threads that cut snapshots (area of interest, delta, envelope), the tick thread included: 2 or more use worker threads over shared memory, for a shard with cores to spare.',
  },
  'engine.max_catch_up_ticks': {
    type: 'int',
    default: 4,
    min: 1,
    max: 100,
    doc: 'Steps run at most on one wake-up after a stall; the rest is dropped.',
  },
  'engine.position_scale': {
    type: 'number',
    default: DEFAULT_POSITION_SCALE,
    ...WORLD_SETTING_RANGES.positionScale,
    doc: 'Snapshot position quantum in world units; the world bounds must lie within 2^31 quanta of 0.',
  },
  'engine.npc_count': {
    type: 'int',
    default: 0,
    min: 0,
    max: 1_000_000,
    doc: 'Wandering NPCs spawned at start (demos and benchmarks); at most engine.max_entities − engine.max_players.',
  },
  'engine.rejoin_window_ms': {
    type: 'int',
    default: 30_000,
    min: 1000,
    max: 3_600_000,
    doc: "How long a player's entity waits, out of sight, for them to rejoin after their connection dropped (or after a restart); then it goes.",
  },
  'engine.seed': { type: 'int', default: 1, min: 0, max: 2 ** 31 - 1, doc: 'Seed of the simulation RNG.' },
  'gateway.bind_addr': { type: 'listen', default: '127.0.0.1:7777', doc: 'WebSocket listen address for players.' },
  'gateway.max_message_size': {
    type: 'int',
    default: 4096,
    min: 1024,
    max: 1 << 20,
    doc: 'Largest client frame in bytes; larger closes with 1009 before decoding. At least 1024: a Join carrying a signed join token is about 330 bytes, and longer player ids and claims must still fit.',
  },
  'gateway.max_messages_per_second': {
    type: 'int',
    default: 120,
    min: 1,
    max: 100_000,
    doc: 'Sustained client message rate; above it closes with 1008. A moving player sends an input a tick: it must be more than the tick rate (ticks a second), and raise it with the tick rate (the operator sets 3 × the tick rate for worlds ticking faster than 80 Hz).',
  },
  'gateway.message_burst': {
    type: 'int',
    default: 240,
    min: 1,
    max: 100_000,
    doc: 'Messages a client may send at once: the bucket holds this many and refills at gateway.max_messages_per_second.',
  },
  'gateway.auth_timeout_ms': {
    type: 'int',
    default: 5000,
    min: 100,
    max: 120_000,
    doc: 'Time from the TCP connection to a valid Join or Resume; a socket not upgraded to a WebSocket by then is closed.',
  },
  'gateway.idle_timeout_ms': {
    type: 'int',
    default: 15_000,
    min: 1000,
    max: 600_000,
    doc: 'A session without any message for this long is closed; more than 3 × engine.tick_rate_ms (a client standing still acknowledges about every 1.5 ticks).',
  },
  'gateway.max_connections': {
    type: 'int',
    default: 4000,
    min: 1,
    max: 200_000,
    doc: 'Open TCP sockets on gateway.bind_addr at most, upgraded or not; more are closed as they arrive.',
  },
  'gateway.max_connections_per_address': {
    type: 'int',
    default: 16,
    min: 1,
    max: 200_000,
    doc: 'Open TCP sockets per remote address at most, upgraded or not; more are closed as they arrive.',
  },
  'gateway.connections_per_address_per_second': {
    type: 'int',
    default: 20,
    min: 1,
    max: 100_000,
    doc: 'New connections one remote address may open a second, after a burst of gateway.max_connections_per_address; more are closed as they arrive.',
  },
  'gateway.ipv6_prefix_length': {
    type: 'int',
    default: 64,
    min: 32,
    max: 128,
    doc: 'The per-address limits count an IPv6 client by this many leading bits of its address (one subscriber or host usually holds a whole /64); 128 counts each address. IPv4 (and IPv4-mapped IPv6) addresses count each on their own.',
  },
  'gateway.trusted_proxies': {
    type: 'string',
    default: '',
    doc: "Proxies in front of the shard (an ingress, a load balancer), as a comma-separated list of IP addresses and CIDR blocks: a connection from one counts against the client address its X-Forwarded-For (or gateway.client_address_header) names (the right-most entry that is not a trusted proxy), checked at the WebSocket upgrade, not against the proxy's. Anyone else's header is ignored. Empty: every connection counts against its TCP peer.",
  },
  'gateway.client_address_header': {
    type: 'enum',
    default: 'x-forwarded-for',
    values: CLIENT_ADDRESS_HEADERS,
    doc: "The header gateway.trusted_proxies name the client in: x-forwarded-for (ingress-nginx, Envoy, HAProxy's option forwardfor, cloud load balancers), or forwarded (RFC 7239: HAProxy's option forwarded), its for= parameters read the same way. Only this one is read; a trusted proxy passes the other on as the client wrote it. Not x-forwarded-for: needs gateway.trusted_proxies.",
  },
  'gateway.proxy_protocol': {
    type: 'bool',
    default: false,
    doc: "Connections from gateway.trusted_proxies start with a PROXY protocol header, v1 or v2 (a layer-4 load balancer's: an AWS Network Load Balancer with proxy protocol v2 on, HAProxy's send-proxy): the client address it names counts and is logged as a direct client's, from the connection's arrival. A trusted proxy's connection without a valid header within 3 s is closed. Other peers' connections carry none and are read as they are. Needs gateway.trusted_proxies.",
  },
  'gateway.max_protocol_errors': {
    type: 'int',
    default: 10,
    min: 1,
    max: 10_000,
    doc: 'Bad messages that close a session: the last is answered with Kick PROTOCOL_ERROR (close 1002), the ones before with an Error.',
  },
  'gateway.max_buffered_bytes': {
    type: 'int',
    default: 262_144,
    min: 1024,
    max: 64 << 20,
    doc: 'Bytes queued in the process for one socket at most: beyond it snapshots are dropped, pings and bad messages go unanswered, and an RPC result ends the session (TOO_SLOW: its client does not read).',
  },
  'gateway.slow_skip_ticks': {
    type: 'int',
    default: 8,
    min: 1,
    max: 10_000,
    doc: 'Acknowledgement lag (ticks) beyond the client’s own round trip above which it gets a snapshot only every 4 ticks.',
  },
  'gateway.slow_drop_ticks': {
    type: 'int',
    default: 200,
    min: 2,
    max: 100_000,
    doc: 'Acknowledgement lag (ticks) above which a client is disconnected.',
  },
  'auth.public_key': {
    type: 'string',
    default: '',
    doc: 'PEM (SPKI) public key, Ed25519 or P-256, that verifies join tokens; or use auth.jwks_url.',
  },
  'auth.jwks_url': {
    type: 'string',
    default: '',
    pattern: /^(|https?:\/\/.+)$/,
    patternDoc: 'an http(s) URL',
    secret: 'url',
    doc: "JWK set of the keys that sign join tokens; or use auth.public_key. Not the control plane's access-token JWKS.",
  },
  'auth.issuer': { type: 'string', default: 'aethex-control-plane', doc: 'Required `iss` of join tokens.' },
  'auth.audience': { type: 'string', default: 'aethex-shard', doc: 'Required `aud` of join tokens.' },
  'auth.max_token_lifetime_s': {
    type: 'int',
    default: 3600,
    min: 60,
    max: 86_400,
    doc: 'Longest lifetime (`exp` − `iat`, seconds) of a join token the shard accepts: a token is a bearer credential, good for any number of joins until it expires.',
  },
  'shard.namespace': {
    type: 'string',
    default: '',
    pattern: new RegExp(`^(|${DNS_LABEL.source.slice(1, -1)})$`),
    patternDoc: 'a DNS label, or empty outside Kubernetes',
    doc: "The GameWorld's namespace (set by the operator): part of every key the shard stores under, and the `namespace` claim join tokens must carry.",
  },
  'shard.world': { type: 'string', default: 'local', pattern: DNS_LABEL, patternDoc: 'a DNS label', doc: 'World this shard serves.' },
  'shard.world_created_s': {
    type: 'int',
    default: 0,
    min: 0,
    max: 4_102_444_800,
    doc: 'When the GameWorld was created, in Unix seconds (set by the operator): a shard takes over rows from before namespaces only if they were written since.',
  },
  'shard.instance': { type: 'int', default: 0, min: 0, max: 100_000, doc: 'Instance of the world.' },
  'shard.name': {
    type: 'string',
    default: 'local-0-0',
    pattern: DNS_LABEL,
    patternDoc: 'a DNS label',
    doc: 'This shard (the pod name under the operator).',
  },
  'shard.map_file': {
    type: 'string',
    default: '',
    doc: "The world's shard map (JSON, written by the operator): this shard's region and its neighbours. Empty: the shard is the whole world.",
  },
  'links.secret': {
    type: 'string',
    default: '',
    secret: 'value',
    doc: 'Shared secret that authenticates links between the shards of a world (at least 32 characters; required with neighbours). Never logged.',
  },
  'links.heartbeat_ms': { type: 'int', default: 250, min: 10, max: 60_000, doc: 'Ping interval on shard links.' },
  'links.timeout_ms': {
    type: 'int',
    default: 1000,
    min: 50,
    max: 600_000,
    doc: "A link silent this long is closed and the neighbour's ghosts are dropped; more than twice links.heartbeat_ms.",
  },
  'handoff.margin': {
    type: 'number',
    default: 4,
    min: 0,
    max: 100_000,
    doc: 'How far (world units) a player must be past the border before it is handed over (hysteresis).',
  },
  'handoff.redirect_url': {
    type: 'string',
    default: '',
    // Refused with credentials, but an error must not print them (nor a query's token).
    secret: 'url',
    doc: "Where a handed-over player's client is sent to reach the neighbour: a ws:// or wss:// URL in which {name} is the neighbour's shard name and {address} its address in the shard map (e.g. wss://{name}.play.example.com, behind an ingress); empty: ws://{address}, reachable inside the cluster only.",
  },
  'handoff.timeout_ms': {
    type: 'int',
    default: 1000,
    min: 10,
    max: 600_000,
    doc: "An offer not accepted within this is rolled back; at most 240 × engine.tick_rate_ms (the player's inputs are held for the whole offer, and caught up on after a rollback).",
  },
  'handoff.resume_timeout_ms': {
    type: 'int',
    default: 10_000,
    min: 100,
    max: 600_000,
    doc: "How long a handed-over player's resume token stays valid; an entity nobody resumed is then removed.",
  },
  'rpc.timeout_ms': {
    type: 'int',
    default: 9000,
    min: 100,
    max: 600_000,
    doc: "Longest a game's RPC handler may take to settle; then the client gets TIMEOUT (keep it under the clients' own timeout: the SDK's is 10 s).",
  },
  'rpc.max_in_flight': {
    type: 'int',
    default: 32,
    min: 1,
    max: 10_000,
    doc: 'RPCs a connection may have waiting for their answers (queued for a tick or running); a further one is answered BUSY without calling the game.',
  },
  'rpc.max_per_second': {
    type: 'int',
    default: 20,
    min: 1,
    max: 100_000,
    doc: 'RPCs a connection may make a second, sustained and in a burst; a further one is answered RATE_LIMITED without calling the game (the connection stays).',
  },
  'rpc.max_ms_per_tick': {
    type: 'int',
    default: 5,
    min: 1,
    max: 1000,
    doc: "Time a tick spends at most on the game's RPC handlers (those that came in since the last tick, one call of each connection in turn, at least one a tick); the rest wait for the next tick. At most engine.tick_rate_ms.",
  },
  'persistence.postgres_url': {
    type: 'string',
    default: '',
    pattern: /^(|postgres(ql)?:\/\/.+)$/,
    patternDoc: 'a postgres:// URL, or empty for snapshots in persistence.directory',
    secret: 'url',
    doc: 'PostgreSQL for snapshots and the outbox; empty: a local directory and an in-process outbox.',
  },
  'persistence.directory': { type: 'string', default: '.aethex/snapshots', doc: 'Where snapshots go without PostgreSQL.' },
  'persistence.snapshot_interval_ms': { type: 'int', default: 5000, min: 100, max: 3_600_000, doc: 'How often the state is snapshotted.' },
  'persistence.outbox_retention_ms': {
    type: 'int',
    default: OUTBOX_RETENTION_MS,
    min: 60_000,
    max: 2_592_000_000,
    doc: 'How long relayed domain events stay in the PostgreSQL outbox (a retried append is still recognised meanwhile); then they are pruned.',
  },
  'persistence.max_queued_events': {
    type: 'int',
    default: MAX_QUEUED_EVENTS,
    min: 1000,
    max: 10_000_000,
    doc: 'Domain events held in process at most while the outbox fails (and, with the in-process outbox, while the relay to Redis fails); beyond it new events are dropped, counted and logged.',
  },
  'persistence.postgres_connect_timeout_ms': {
    type: 'int',
    default: 5000,
    min: 100,
    max: 120_000,
    doc: "Time to open a PostgreSQL connection, or to wait for one of the pool's 4, before the operation fails; at start, before the shard gives up.",
  },
  'persistence.postgres_query_timeout_ms': {
    type: 'int',
    default: 10_000,
    min: 100,
    max: 600_000,
    doc: 'A PostgreSQL query without an answer this long fails and its connection is dropped (client side; statement_timeout and idle_in_transaction_session_timeout on the server too).',
  },
  'presence.redis_url': {
    type: 'string',
    default: '',
    pattern: /^(|rediss?:\/\/.+)$/,
    patternDoc: 'a redis:// URL, or empty for in-process presence',
    secret: 'url',
    doc: 'Redis for presence and relayed events; empty: in process.',
  },
  'presence.ttl_ms': {
    type: 'int',
    default: 15_000,
    min: 1000,
    max: 3_600_000,
    doc: 'Presence entries expire this long after their last refresh.',
  },
  'presence.events_max_len': {
    type: 'int',
    default: EVENTS_MAX_LEN,
    min: 100,
    max: 1_000_000_000,
    doc: "Entries each shard's Redis event stream keeps, about (XADD MAXLEN ~); consumers further behind miss the oldest.",
  },
  'presence.redis_connect_timeout_ms': {
    type: 'int',
    default: 5000,
    min: 100,
    max: 120_000,
    doc: 'Time to connect to Redis; at start, before the shard gives up.',
  },
  'presence.redis_command_timeout_ms': {
    type: 'int',
    default: 2000,
    min: 100,
    max: 60_000,
    doc: 'A Redis command without an answer this long fails, and a connection silent this long with commands outstanding is dropped and reconnected; below a third of presence.ttl_ms.',
  },
  'game.module': { type: 'string', default: '', doc: "Path of the game's hooks module (join, leave, input, tick, rpc); empty: none." },
  'ops.bind_addr': { type: 'listen', default: '127.0.0.1:7350', doc: 'Listen address of /healthz, /readyz, /metrics and the viewer.' },
  'ops.drain_timeout_ms': {
    type: 'int',
    default: 10_000,
    min: 1000,
    max: 600_000,
    doc: 'Bound on SIGTERM drain before the process exits (at least 1000: the final snapshot needs time to be written).',
  },
  'ops.max_connections': {
    type: 'int',
    default: 64,
    min: 1,
    max: 10_000,
    doc: 'Open TCP sockets on ops.bind_addr at most (Prometheus, a few viewers, the probes); more are closed as they arrive.',
  },
  'ops.idle_timeout_ms': {
    type: 'int',
    default: 65_000,
    min: 1000,
    max: 600_000,
    doc: 'A kept-alive ops socket with no request for this long is closed (above Prometheus’ scrape interval, so its connection is reused), and so is one whose reader stopped reading a response for this long.',
  },
  'ops.viewer': {
    type: 'bool',
    default: true,
    doc: 'Serve /viewer and /viewer/state on the ops port (false: only health, readiness and metrics).',
  },
  'ops.viewer_max_entities': {
    type: 'int',
    default: 20_000,
    min: 1,
    max: 1_000_000,
    doc: 'Entities /viewer/state lists at most (its entityCount says how many there are).',
  },
  'agones.connect_timeout_ms': {
    type: 'int',
    default: 30_000,
    min: 100,
    max: 30_000,
    doc: "With AGONES_SDK_GRPC_PORT set: time to reach the Agones SDK server before start fails (at most the SDK's own 30 s).",
  },
  'agones.health_interval_ms': {
    type: 'int',
    default: 2000,
    min: 100,
    max: 60_000,
    doc: 'With AGONES_SDK_GRPC_PORT set: period of Agones health pings, sent while the tick loop runs.',
  },
  'log.level': { type: 'enum', default: 'info', values: LOG_LEVELS, doc: 'pino log level.' },
} satisfies SettingsSchema;

export type GameserverSettings = Settings<typeof GAMESERVER_SETTINGS>;

const PREFIX = 'AETHEX_GAMESERVER';

/**
 * The shard's checks of its settings together (each setting's type and range are the table's), in
 * the order loadConfig makes them; each throws a ConfigError naming a key. `required`: a check the
 * defaults alone fail, asking for a setting the shard cannot run without (a join-token key).
 */
export const GAMESERVER_CHECKS: readonly { required?: true; check: (s: GameserverSettings) => void }[] = [
  {
    check: (s) => {
      if (s['gateway.slow_drop_ticks'] <= s['gateway.slow_skip_ticks']) {
        throw new ConfigError('gateway.slow_drop_ticks', `must be greater than gateway.slow_skip_ticks (${s['gateway.slow_skip_ticks']})`);
      }
    },
  },
  {
    check: (s) => {
      if (s['auth.public_key'] !== '' && s['auth.jwks_url'] !== '') {
        throw new ConfigError('auth.public_key', 'set either auth.public_key or auth.jwks_url, not both');
      }
    },
  },
  {
    required: true,
    check: (s) => {
      if (s['auth.public_key'] === '' && s['auth.jwks_url'] === '') {
        throw new ConfigError(
          'auth.public_key',
          'set auth.public_key or auth.jwks_url: the shard verifies join tokens with it (the public key of whatever signs them)',
        );
      }
    },
  },
  {
    // A URL fetch cannot load (credentials in it, which fetch refuses) would keep the shard unready
    // for ever, retrying: refused now, naming why.
    check: (s) => {
      const problem = s['auth.jwks_url'] === '' ? undefined : jwksUrlProblem(s['auth.jwks_url']);
      if (problem !== undefined) {
        throw new ConfigError('auth.jwks_url', `${problem}, got ${shownValue(GAMESERVER_SETTINGS['auth.jwks_url'], s['auth.jwks_url'])}`);
      }
    },
  },
  {
    check: (s) => {
      if (s['auth.public_key'] === '') return;
      // The verifier's own import, run now: a bad key is a bad setting (exit 2), not a failed start.
      try {
        joinPublicKey(s['auth.public_key']);
      } catch (err) {
        throw new ConfigError('auth.public_key', (err as Error).message);
      }
    },
  },
  {
    // A player's inputs are held while their entity is on offer (applied if it rolls back): one a
    // tick, kept for all of the offer's ticks, so their count is bounded here.
    check: (s) => {
      const most = MAX_OFFER_TICKS * s['engine.tick_rate_ms'];
      if (s['handoff.timeout_ms'] > most)
        throw new ConfigError(
          'handoff.timeout_ms',
          `must be at most ${MAX_OFFER_TICKS} × engine.tick_rate_ms (${s['engine.tick_rate_ms']}): a player's inputs are held for the whole offer and caught up on after a rollback; at most ${most}`,
        );
    },
  },
  {
    // A client standing still sends nothing but acknowledgements, about every 1.5 ticks (the SDK
    // batches them): a timeout within two of those gaps kicks players who are only waiting.
    check: (s) => {
      if (s['gateway.idle_timeout_ms'] <= 3 * s['engine.tick_rate_ms']) {
        throw new ConfigError(
          'gateway.idle_timeout_ms',
          `must be more than 3 × engine.tick_rate_ms (${s['engine.tick_rate_ms']}): a client standing still acknowledges only about every 1.5 ticks; above ${3 * s['engine.tick_rate_ms']}`,
        );
      }
    },
  },
  {
    // A moving player sends an input every tick (its pongs and RPCs count too): a rate the tick
    // rate alone fills kicks players for playing (the operator raises it with a GameWorld's tickRate).
    check: (s) => {
      const least = Math.floor(1000 / s['engine.tick_rate_ms']) + 1;
      if (s['gateway.max_messages_per_second'] < least) {
        throw new ConfigError(
          'gateway.max_messages_per_second',
          `must be more than the tick rate (at least ${least} at engine.tick_rate_ms ${s['engine.tick_rate_ms']}): a moving player sends an input every tick`,
        );
      }
    },
  },
  {
    // NPCs are spawned at start and keep their slots: past max_entities − max_players, players the
    // shard admits (and reports ready for) would be refused SHARD_FULL. Without NPCs every slot is a
    // player's, and a capacity below max_players only lowers the cap (a GameWorld may ask for that).
    check: (s) => {
      const npcs = s['engine.npc_count'];
      const roomForNpcs = Math.max(0, s['engine.max_entities'] - s['engine.max_players']);
      if (npcs > roomForNpcs) {
        throw new ConfigError(
          'engine.npc_count',
          `${npcs} NPCs and engine.max_players (${s['engine.max_players']}) players need more than engine.max_entities (${s['engine.max_entities']}): at most ${roomForNpcs} NPCs`,
        );
      }
    },
  },
  {
    // RPC handlers run inside the tick: a budget past a whole tick would let them alone overrun it.
    check: (s) => {
      if (s['rpc.max_ms_per_tick'] > s['engine.tick_rate_ms']) {
        throw new ConfigError(
          'rpc.max_ms_per_tick',
          `must be at most engine.tick_rate_ms (${s['engine.tick_rate_ms']}): the handlers run inside the tick`,
        );
      }
    },
  },
  {
    // A heartbeat stuck on a command must fail before the next one is due, or presence lapses.
    check: (s) => {
      if (s['presence.redis_url'] !== '' && s['presence.redis_command_timeout_ms'] * 3 >= s['presence.ttl_ms']) {
        throw new ConfigError('presence.redis_command_timeout_ms', `must be below a third of presence.ttl_ms (${s['presence.ttl_ms']})`);
      }
    },
  },
  {
    check: (s) => {
      if (s['links.secret'] !== '' && s['links.secret'].length < 32) {
        throw new ConfigError('links.secret', 'must be at least 32 characters');
      }
    },
  },
  {
    // A neighbour is dropped after links.timeout_ms of silence: with less than two heartbeats in it,
    // one late ping (a GC pause, a busy tick) drops a healthy link and its ghosts.
    check: (s) => {
      if (s['links.timeout_ms'] <= 2 * s['links.heartbeat_ms']) {
        throw new ConfigError(
          'links.timeout_ms',
          `must be more than twice links.heartbeat_ms (${s['links.heartbeat_ms']}), or one late heartbeat drops the link: above ${2 * s['links.heartbeat_ms']}`,
        );
      }
    },
  },
  {
    check: (s) => {
      const problem = redirectUrlProblem(s['handoff.redirect_url']);
      if (problem !== undefined)
        throw new ConfigError(
          'handoff.redirect_url',
          `${problem}, got ${shownValue(GAMESERVER_SETTINGS['handoff.redirect_url'], s['handoff.redirect_url'])}`,
        );
    },
  },
  {
    check: (s) => {
      try {
        TrustedProxies.parse(s['gateway.trusted_proxies']);
      } catch (err) {
        throw new ConfigError('gateway.trusted_proxies', (err as Error).message);
      }
      if (s['gateway.client_address_header'] !== 'x-forwarded-for' && s['gateway.trusted_proxies'].trim() === '')
        throw new ConfigError(
          'gateway.client_address_header',
          `is ${s['gateway.client_address_header']}, which needs gateway.trusted_proxies: the proxies that write it (anyone else's is not read)`,
        );
      if (s['gateway.proxy_protocol'] && s['gateway.trusted_proxies'].trim() === '')
        throw new ConfigError(
          'gateway.proxy_protocol',
          'needs gateway.trusted_proxies: the load balancers whose connections carry the header (everyone else sends none)',
        );
    },
  },
  { check: (s) => checkWorldBounds(s) },
];

/** The placeholders of `handoff.redirect_url`. */
const REDIRECT_PLACEHOLDERS = /\{(name|address)\}/g;

/**
 * The URL a handed-over player's client is sent to for the neighbour `name` at `address` (its
 * address in the shard map): `handoff.redirect_url` with its placeholders filled in, or, empty,
 * `ws://<address>`.
 */
export function redirectUrl(template: string, name: string, address: string): string {
  if (template === '') return `ws://${address}`;
  return template.replace(REDIRECT_PLACEHOLDERS, (_, key: string) => (key === 'name' ? name : address));
}

/** What is wrong with a `handoff.redirect_url` template, if anything. */
function redirectUrlProblem(template: string): string | undefined {
  if (template === '') return undefined;
  const unknown = template.replace(REDIRECT_PLACEHOLDERS, '').match(/\{[^}]*\}?/);
  if (unknown) return `${unknown[0]} is no placeholder of it (there are {name} and {address})`;
  // One URL for every neighbour would send each handed-over client to the same place, whichever shard holds its entity.
  if (!/\{(name|address)\}/.test(template)) return 'must name the neighbour with {name} or {address}';
  let url: URL;
  try {
    url = new URL(redirectUrl(template, 'world-0-1', 'world-0-1.world-shards.default.svc:7777'));
  } catch {
    return 'must be a ws:// or wss:// URL';
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') return 'must be a ws:// or wss:// URL';
  if (url.username !== '' || url.password !== '') return 'must not carry credentials';
  if (url.hash !== '') return 'must not have a #fragment (a WebSocket URL cannot)';
  // LINK_PATH (sharding/links.ts, not imported here: the operator loads these checks).
  if (url.pathname === '/shard-link') return "must not be the shard links' path /shard-link";
  return undefined;
}

/** Parses the configuration once; throws a ConfigError naming the first invalid key. */
export function loadConfig(env: Env, file?: string): GameserverSettings {
  const s = loadSettings(GAMESERVER_SETTINGS, { prefix: PREFIX, env, ...(file ? { file } : {}) });
  for (const { check } of GAMESERVER_CHECKS) check(s);
  return s;
}

/** A setting the shard would refuse: its ConfigError, and the settings it rests on. */
export interface ConfigProblem {
  error: ConfigError;
  /**
   * The settings whose values the error rests on, in the order they were read: the one key of a
   * value out of its type or range (or the variable of an unknown name), every setting a check read.
   */
  reads: string[];
}

/**
 * The first error loadConfig(env) (no file) would throw, for a caller that sees a shard's
 * environment but not all of it — the operator, which sees a pod's `valueFrom` entries but not
 * their values. `unread` names such variables: their names are checked, their settings taken as
 * unset, and a check that reads one of them is left out (the next one's error, if any, is
 * returned). A `required` check is left out too when a setting it reads is not set in `env`: it
 * may be set where the caller does not look (the image's own environment, a file its command
 * names). Undefined when nothing the caller knows breaks a rule. No file is read; nothing is
 * logged.
 */
export function configProblem(env: Env, unread: ReadonlySet<string> = new Set()): ConfigProblem | undefined {
  const known: Record<string, string | undefined> = { ...env };
  // An empty value is an unset setting to the shard: the name is checked, the value is the default.
  for (const name of unread) known[name] = '';
  let s: GameserverSettings;
  try {
    s = loadSettings(GAMESERVER_SETTINGS, { prefix: PREFIX, env: known });
  } catch (err) {
    if (err instanceof ConfigError) return { error: err, reads: [err.key] };
    throw err;
  }
  const unknown = (key: string) => unread.has(envName(PREFIX, key));
  const unset = (key: string) => (known[envName(PREFIX, key)] ?? '').trim() === '';
  for (const { required, check } of GAMESERVER_CHECKS) {
    // The settings a check reads are recorded as it reads them: what it rests on is what it read,
    // with no list of them to keep in step with its code.
    const reads = new Set<string>();
    const recorded = new Proxy(s, {
      get(target, key, receiver) {
        if (typeof key === 'string') reads.add(key);
        return Reflect.get(target, key, receiver);
      },
    });
    try {
      check(recorded);
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      const keys = [...reads];
      if (keys.some((k) => unknown(k) || (required && unset(k)))) continue;
      return { error: err, reads: keys };
    }
  }
  return undefined;
}

/**
 * Throws a ConfigError when the world's bounds break the shard's rule for them (`worldBoundsProblem`):
 * `engine.world_bounds` as configured, or (`boundsKey` 'shard.map_file') the shard map's bounds,
 * which replace them in a sharded world.
 */
export function checkWorldBounds(s: GameserverSettings, boundsKey: 'engine.world_bounds' | 'shard.map_file' = 'engine.world_bounds'): void {
  const fromMap = boundsKey === 'shard.map_file';
  const which = fromMap ? "the shard map's bounds" : 'the world bounds';
  // The bounds' rule is shared with the operator, which refuses a GameWorld that would break it
  // (runtime/src/world-bounds.ts). Snapshots carry positions as int32 quanta: a world whose edge is
  // past 2^31 quanta would send wrapped positions (clients saw 250000 as -179496). Positions are
  // float32 (sim/world.ts): each move is rounded to the float32 spacing where the entity is, so far
  // from 0 moves round away (near 3e7, where floats are 2 apart, 80 moves of a player stayed put).
  // engine.position_scale needs no such rule: a quantum finer than the spacing only spends bits.
  const problem = worldBoundsProblem({
    bounds: s['engine.world_bounds'],
    maxSpeed: s['engine.max_speed'],
    positionScale: s['engine.position_scale'],
    aoiRadius: s['engine.aoi_radius'],
  });
  switch (problem?.rule) {
    case 'quanta':
      throw new ConfigError(
        'engine.position_scale',
        `too small for ${which}: ${problem.farthest} / ${problem.positionScale} quanta is past the 2^31 snapshots hold (at least ${problem.minPositionScale})`,
      );
    case 'float32':
      throw new ConfigError(
        boundsKey,
        `${fromMap ? `${s['shard.map_file']}: its "bounds" are ` : ''}too far from 0 for engine.max_speed (${problem.maxSpeed}): positions are float32, ${problem.spacing} apart at ${problem.farthest}, and must be at most engine.max_speed / 100 (${problem.maxSpeed / 100}) apart; keep the bounds inside ±${problem.inside} or raise engine.max_speed`,
      );
    case 'grid':
      throw new ConfigError(
        'engine.aoi_radius',
        `too small for ${which}: the grid would need ${problem.cells} cells (at most ${MAX_GRID_CELLS}); at least ${problem.minAoiRadius}`,
      );
  }
}

/** The key the shard stores everything under: its namespace, world, instance and name. */
export function shardKey(s: GameserverSettings): ShardKey {
  return { namespace: s['shard.namespace'], world: s['shard.world'], instance: s['shard.instance'], shard: s['shard.name'] };
}
