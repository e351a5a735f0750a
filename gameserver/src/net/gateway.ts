import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { aethex, CLOSE_CODE_CANNOT_READ, inputFields, MAX_CLIENT_VERSION_BYTES, PROTOCOL_VERSION, readInputMessage } from '@aethex/proto';
import { type JoinClaims, JoinTokenError, type Logger, readProxyHeader, TrustedProxies } from '@aethex/runtime';
import { binaryFrame, directWriteFd, readFrames, writeWhole } from '@aethex/runtime/ws-frames';
import { type WebSocket, WebSocketServer } from 'ws';
import type { GameserverSettings } from '../config.js';
import type { RpcOutcome, ShardEngine } from '../engine.js';
import type { Clock } from '../loop/fixed-timestep.js';
import type { ShardMetrics } from '../metrics.js';
import { addressKey, KeyedTokenBuckets, LogBudget, TokenBucket } from './rate-limit.js';

/** For errors on a socket being upgraded: `ws` (or the connection's own handlers) report them. */
const ignoreError = (): undefined => undefined;

const { ClientMessage, ServerMessage, ReasonCode } = aethex.v1;
type Reason = aethex.v1.ReasonCode;

/** Standard WebSocket close codes (RFC 6455 §7.4.1) of the kick reasons one fits: see `closeCode`. */
const CLOSE_CODES: Partial<Record<Reason, number>> = {
  [ReasonCode.REASON_CODE_AUTH_FAILED]: 1008,
  [ReasonCode.REASON_CODE_AUTH_TIMEOUT]: 1008,
  [ReasonCode.REASON_CODE_WRONG_SHARD]: 1008,
  [ReasonCode.REASON_CODE_RATE_LIMITED]: 1008,
  [ReasonCode.REASON_CODE_TOO_SLOW]: 1008,
  [ReasonCode.REASON_CODE_MESSAGE_TOO_LARGE]: 1009,
  [ReasonCode.REASON_CODE_PROTOCOL_ERROR]: 1002,
  [ReasonCode.REASON_CODE_SHUTTING_DOWN]: 1001,
  [ReasonCode.REASON_CODE_SHARD_FULL]: 1013,
  [ReasonCode.REASON_CODE_NOT_READY]: 1013,
  [ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS]: 1013,
  [ReasonCode.REASON_CODE_INTERNAL]: 1011,
};

/**
 * The close code of a kick: the standard one where one fits (`CLOSE_CODES`), else 4000 + the
 * ReasonCode number (RFC 6455 §7.4.2 leaves 4000–4999 to applications): REPLACED closes with 4009,
 * IDLE_TIMEOUT with 4010. No kick closes with 1000: to the shard and to clients, that is a player
 * leaving on purpose.
 */
function closeCode(reason: Reason): number {
  return CLOSE_CODES[reason] ?? 4000 + reason;
}

/**
 * Node's bound on receiving the upgrade request (and any plain HTTP request) on the players' port,
 * checked every HTTP_TIMEOUT_CHECK_MS: a WebSocket handshake is a few hundred bytes sent at once,
 * so a socket still sending its headers after this is stalling (Node answers 408 and closes it).
 * Independently, the sweep closes every socket not upgraded within gateway.auth_timeout_ms.
 */
const HTTP_REQUEST_TIMEOUT_MS = 3000;
/** A trusted proxy's client over its per-address limits, refused at the upgrade (`count`). */
const TOO_MANY_CONNECTIONS_ANSWER =
  'HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 48\r\n\r\ntoo many connections from this client address.\r\n';
const HTTP_TIMEOUT_CHECK_MS = 1000;

/**
 * Frames one client message may come in at most (`ws`'s `maxFragments`): a client has no reason to
 * fragment a message of at most gateway.max_message_size, and each fragment costs the shard a
 * frame's work. One in more is refused by `ws`, which closes with 1008 ("Too many message
 * fragments"): kicked PROTOCOL_ERROR. Each fragment also spends the message rate.
 */
export const MAX_FRAGMENTS = 16;

/** How long a kicked client has to answer the close handshake before its socket is destroyed. */
const CLOSE_TIMEOUT_MS = 2000;

/**
 * `Error` replies to one connection's bad messages: each is explained up to the burst, then one a
 * second at most. Bad messages already spend the message rate and end the connection at
 * gateway.max_protocol_errors; this keeps the replies few whatever those two are set to, so junk
 * from a client cannot be turned into a larger stream back to it.
 */
const ERROR_REPLY_BURST = 10;
const ERROR_REPLIES_PER_S = 1;

/**
 * Lines logged about connections that never joined, at most, across every connection: a burst,
 * then so many a second. They are a refused join or resume (`join refused`, `resume refused`: one
 * line each, the kick that goes with it is not logged apart) and a kick before any session (`kicked`:
 * the auth deadline passed, a bad or oversized frame, a flood). A client — or many — retrying a bad
 * token or opening connections only to misbehave at the connection limits would otherwise write a
 * line per attempt (430 in 10 s from one address at the default limits). Every one is still counted
 * (aether_joins_total, aether_kicks_total); the next line logged says how many were not
 * (`unlogged`). A joined player's kick is not one of them: it is always logged.
 */
export const UNJOINED_LOGGED_BURST = 10;
export const UNJOINED_LOGGED_PER_S = 1;

/**
 * A client's free-form string as it goes into a log line: control characters (C0, DEL, C1, and
 * the line and paragraph separators) replaced by `?`, so that it cannot break or forge lines of a
 * log read as text.
 */
function loggable(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0) as number;
    out += c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x2028 || c === 0x2029 ? '?' : ch;
  }
  return out;
}

/** The metric label of a reason: `REASON_CODE_TOO_SLOW` → `too_slow`. */
export function reasonLabel(reason: Reason): string {
  return (ReasonCode[reason] ?? 'unknown').replace(/^REASON_CODE_/, '').toLowerCase();
}

/**
 * What a client is told about its refused join token: a category it can act on (expired, not yet
 * valid, wrong issuer or audience, a claim missing, not signed by a key the shard trusts,
 * malformed, for another shard), never the token, a key or the shard's own settings; the whole
 * error goes to the shard's log. Reads the `jose` error the verifier gives as `cause` by its stable
 * `code`; an error without a cause is one of the verifier's own checks of the claims, whose
 * message names only the claim.
 */
const BAD_SIGNATURE = 'join token rejected: bad signature (not signed by a key this shard trusts)';

function joinRefusal(err: unknown): string {
  if (!(err instanceof JoinTokenError)) return 'join token could not be verified';
  if (err.kind === 'wrong_shard') return 'join token is for another shard (its namespace, world, instance or shard claim)';
  if (err.kind === 'keys_unavailable') return 'join token could not be verified: the shard could not load its keys';
  if (err.cause === undefined) return err.message;
  const cause = err.cause as { code?: unknown; claim?: unknown; reason?: unknown };
  const claim = typeof cause.claim === 'string' ? cause.claim : 'unknown';
  switch (cause.code) {
    case 'ERR_JWT_EXPIRED':
      return 'join token rejected: expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (cause.reason === 'missing') return `join token rejected: missing claim ${claim}`;
      if (claim === 'iss') return 'join token rejected: wrong issuer';
      if (claim === 'aud') return 'join token rejected: wrong audience';
      if (claim === 'nbf') return 'join token rejected: not valid yet (nbf)';
      return `join token rejected: invalid claim ${claim}`;
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'join token rejected: signing algorithm not allowed';
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
    case 'ERR_JWKS_NO_MATCHING_KEY':
    // A key of another type than the token's algorithm (an ES256 token for an Ed25519 key): jose
    // finds no way to use the key for it.
    case 'ERR_JOSE_NOT_SUPPORTED':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return BAD_SIGNATURE;
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return 'join token rejected: malformed (not a signed JWT)';
  }
  // jose refuses a key of another type than the token's algorithm names (an ES256 token for an
  // Ed25519 key) with a TypeError: for the client, a token signed by a key the shard does not trust.
  if (cause instanceof TypeError) return BAD_SIGNATURE;
  return 'join token rejected';
}

type Phase = 'auth' | 'authenticating' | 'joined' | 'closed';

interface Connection {
  id: number;
  ws: WebSocket;
  /** The upgraded TCP socket under `ws`: every message to the client is written to it as one whole frame. */
  socket: Duplex;
  /** The client's address: the TCP peer's, or behind a trusted proxy the one it forwarded. */
  address: string;
  /** The trusted proxy the connection came through (gateway.trusted_proxies), if it did. */
  via: string | undefined;
  phase: Phase;
  openedAt: number;
  lastMessageAt: number;
  bucket: TokenBucket;
  errors: number;
  /** Made at the first protocol error: limits the `Error` replies (ERROR_REPLY_BURST). */
  errorReplies: TokenBucket | undefined;
  /** Made by `Gateway.log` when the connection first logs: an open socket that has not logged holds none. */
  logger: Logger | undefined;
  /** Messages for the session sent before its Welcome (a game's onJoin), written right after it. */
  early?: Uint8Array[];
  /** RPCs sent to the game and not answered yet (`rpc.max_in_flight`). */
  rpcsInFlight: number;
  /** Made at the first RPC: `rpc.max_per_second`. */
  rpcBucket: TokenBucket | undefined;
  /** When its player was handed over to a neighbour (`redirect`): closed handoff.resume_timeout_ms later. */
  redirectedAt?: number;
}

export type GatewaySettings = Pick<
  GameserverSettings,
  | 'gateway.bind_addr'
  | 'gateway.max_message_size'
  | 'gateway.max_messages_per_second'
  | 'gateway.message_burst'
  | 'gateway.auth_timeout_ms'
  | 'gateway.idle_timeout_ms'
  | 'handoff.resume_timeout_ms'
  | 'gateway.max_connections'
  | 'gateway.max_connections_per_address'
  | 'gateway.connections_per_address_per_second'
  | 'gateway.ipv6_prefix_length'
  | 'gateway.trusted_proxies'
  | 'gateway.client_address_header'
  | 'gateway.proxy_protocol'
  | 'gateway.max_protocol_errors'
  | 'gateway.max_buffered_bytes'
  | 'rpc.max_in_flight'
  | 'rpc.max_per_second'
  | 'engine.tick_rate_ms'
  | 'engine.world_bounds'
  | 'engine.aoi_radius'
  | 'engine.max_speed'
  | 'engine.position_scale'
  | 'shard.name'
>;

export interface GatewayDeps {
  settings: GatewaySettings;
  engine: ShardEngine;
  verifyJoin: (token: string) => Promise<JoinClaims>;
  log: Logger;
  metrics: ShardMetrics;
  clock: Clock;
  /** Upgrades on another path than the players' (shard links at /shard-link) go here. */
  /**
   * Another WebSocket endpoint on this port (the neighbours' links); `proven` is called once the
   * peer has proved it is one (its socket then stops counting against its address).
   */
  upgrades?: { path: string; handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, proven: () => void): void };
  /**
   * Why the shard may not admit this player yet (sharded, restored: neighbours not heard, or the
   * player's entity handed back and not taken yet), or undefined when it may. `hadEntity`: the
   * entity a rejoining client had (`Join.entity_id`; 0 for none).
   */
  notAdmitting?: (playerId: string, hadEntity: number) => string | undefined;
  /** Redeems a handoff resume token: the player and entity it continues, or undefined. */
  resume?: (token: string) => { playerId: string; entityId: number; frozenMs: number } | undefined;
  /**
   * A joining player's entity handed over to this shard that their client has not resumed: theirs
   * now (as on a resume), 'pending' while the former owner has not decided the handoff, or
   * undefined when there is none.
   */
  handedIn?: (playerId: string) => { entityId: number; frozenMs: number } | 'pending' | undefined;
  /**
   * Whether players handed over to this shard may still resume (their entity is held or adopted
   * here, their client not arrived yet): while draining, upgrades are still taken for them.
   */
  resumesPending?: () => boolean;
}

/**
 * The players' WebSocket endpoint. It enforces every limit before a message reaches the engine:
 * TCP sockets in total (Node's `maxConnections`) and per address, counted from the moment they
 * arrive, upgraded or not (a trusted proxy's, gateway.trusted_proxies, against the client address
 * it forwards, from the upgrade), and new ones per address a second; the time from the TCP connection to
 * a valid Join; frame size (ws closes with 1009 before buffering a larger frame); the message rate
 * (WebSocket pings and pongs included, and each fragment of a message); idle time; and repeated protocol errors, each explained to
 * the client with an `Error`. It reads clients' binary frames off the socket itself (runtime's
 * ws-frames.ts) and leaves every other frame to `ws`. It implements the engine's SessionOutput:
 * one `send` is one socket write.
 */
export class Gateway {
  private server: WebSocketServer | undefined;
  private http: Server | undefined;
  private readonly connections = new Map<number, Connection>();
  /**
   * Open TCP sockets of the players' port by remote address, from their arrival to their close (a
   * trusted proxy's by the client address it forwards, from the upgrade).
   */
  private readonly perAddress = new Map<string, number>();
  /** The address each socket counted in `perAddress` counts against. */
  private readonly counted = new Map<Socket, string>();
  /** New TCP connections by remote address (gateway.connections_per_address_per_second). */
  private readonly arrivals: KeyedTokenBuckets;
  /** gateway.trusted_proxies: their sockets count against the client they forward, from the upgrade. */
  private readonly proxies: TrustedProxies;
  /** The client address a trusted proxy's PROXY protocol header named, by socket (gateway.proxy_protocol). */
  private readonly proxiedFor = new WeakMap<Socket, string>();
  /**
   * Trusted proxies' sockets whose PROXY protocol header named no client (v1 UNKNOWN, v2 LOCAL or
   * an address that is no IP): theirs to count, and X-Forwarded-For is not read from them — the
   * header would name a client for a connection with one, so whatever such a request says about
   * its client is the client's own writing.
   */
  private readonly proxyNamedNone = new WeakSet<Socket>();
  /** Trusted proxies' sockets whose PROXY protocol header has not all arrived: closed with the gateway. */
  private readonly awaitingHeader = new Set<Socket>();
  /** Node's own 'connection' listener of the players' port, which starts HTTP on a socket (`listen`). */
  private startHttp: ((socket: Socket) => void) | undefined;
  /**
   * Sockets not yet upgraded, with when they arrived (clock ms), in order of arrival: closed at
   * gateway.auth_timeout_ms. A joined connection's deadline also counts from its arrival — for a
   * trusted proxy's socket with gateway.proxy_protocol, from its header's (at most 3 s later).
   */
  private readonly handshaking = new Map<Socket, number>();
  private readonly players = new Map<number, string>();
  /** The input being handled, read in place (one object for every message). */
  private readonly input = inputFields();
  private nextId = 1;
  private accepting = true;
  /** `close` began: every session is being ended, and no resume is taken any more. */
  private closing = false;
  /** A connection read less directly than it could be was logged (once: every connection reads alike). */
  private warnedReadMode = false;
  private acceptedSinceAsked = false;
  private sweeper: NodeJS.Timeout | undefined;
  /** Lines about connections that never joined that may be logged (UNJOINED_LOGGED_BURST, UNJOINED_LOGGED_PER_S). */
  private readonly unjoinedLogged: LogBudget;

  constructor(private readonly deps: GatewayDeps) {
    const s = deps.settings;
    this.arrivals = new KeyedTokenBuckets(s['gateway.connections_per_address_per_second'], s['gateway.max_connections_per_address']);
    this.proxies = TrustedProxies.parse(s['gateway.trusted_proxies']);
    this.unjoinedLogged = new LogBudget(UNJOINED_LOGGED_PER_S, UNJOINED_LOGGED_BURST, deps.clock.now());
  }

  /** Starts listening; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    const { host, port } = this.deps.settings['gateway.bind_addr'];
    const server = new WebSocketServer({
      noServer: true,
      maxPayload: this.deps.settings['gateway.max_message_size'],
      maxFragments: MAX_FRAGMENTS,
      perMessageDeflate: false,
      clientTracking: false,
      // A ping spends the connection's message rate like a message: only those within it are
      // answered (`accept`).
      autoPong: false,
      // While draining, an upgrade is answered 503 before a WebSocket is made only to be closed —
      // unless a player handed over to this shard may still resume: theirs may be that one.
      verifyClient: (_info, done) => {
        if (this.accepting || (!this.closing && (this.deps.resumesPending?.() ?? false))) return done(true);
        this.deps.metrics.kicks.inc({ reason: reasonLabel(ReasonCode.REASON_CODE_SHUTTING_DOWN) });
        done(false, 503, 'the shard is draining');
      },
    });
    this.server = server;
    const http = createServer(
      {
        headersTimeout: HTTP_REQUEST_TIMEOUT_MS,
        requestTimeout: HTTP_REQUEST_TIMEOUT_MS,
        connectionsCheckingInterval: HTTP_TIMEOUT_CHECK_MS,
      },
      // One answer per connection: a client pipelining requests gets the first answered and the
      // connection closed, not one answer for each.
      (_req, res) => res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' }).end('WebSocket only\n'),
    );
    this.http = http;
    // Node closes a connection that would exceed it before any listener sees it ('drop').
    http.maxConnections = this.deps.settings['gateway.max_connections'];
    http.on('drop', () => this.deps.metrics.kicks.inc({ reason: reasonLabel(ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS) }));
    // Node's listener (added by createServer) starts HTTP on every socket as it arrives. The
    // gateway calls it itself (`admit`): after the socket is counted, and after the PROXY protocol
    // header a trusted proxy sends ahead of the request (gateway.proxy_protocol).
    const [nodeConnection, ...others] = http.listeners('connection');
    if (nodeConnection === undefined || others.length > 0)
      throw new Error(
        `the players' port: expected Node's one 'connection' listener on a new HTTP server, found ${others.length + (nodeConnection ? 1 : 0)}`,
      );
    http.removeAllListeners('connection');
    this.startHttp = (socket) => nodeConnection.call(http, socket);
    http.on('connection', (socket: Socket) => this.arrived(socket));
    const other = this.deps.upgrades;
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Neither listener may close over `req`: a closure kept for the socket's life keeps every
      // variable it could see, and the upgrade request (headers, the URL, the join token) would
      // then live as long as the connection.
      socket.on('error', ignoreError);
      // A trusted proxy's socket counts from here, against the client it names (`arrived`). A
      // client a PROXY protocol header named stands in for the TCP peer (a load balancer), and is
      // itself read for X-Forwarded-For if it is a trusted proxy (one behind the load balancer).
      const tcpPeer = req.socket.remoteAddress ?? 'unknown';
      const proxiedFor = this.proxiedFor.get(socket as Socket);
      const peer = proxiedFor ?? tcpPeer;
      let address = peer;
      let via = proxiedFor === undefined ? undefined : tcpPeer;
      if (this.proxyNamedNone.has(socket as Socket)) {
        if (!this.count(socket as Socket, peer, this.deps.clock.now(), true)) return;
      } else if (this.proxies.trusts(peer)) {
        const header = this.deps.settings['gateway.client_address_header'];
        address = this.proxies.forwardedClient(req.headers[header], header) ?? peer;
        via = peer;
        if (!this.count(socket as Socket, address, this.deps.clock.now(), true)) return;
      }
      const arrivedAt = this.handshaking.get(socket as Socket) ?? this.deps.clock.now();
      this.handshaking.delete(socket as Socket);
      if (other && (req.url ?? '/').split('?')[0] === other.path) {
        // A neighbour's link is not a player's connection: outside Kubernetes every shard of a
        // world is on 127.0.0.1, and a shard with eight neighbours would fill half its address's
        // cap with links. It stops counting once the neighbour has proved the secret; until then
        // it counts like any socket, so a stranger cannot open more of them than of any other.
        const linked = socket as Socket;
        other.handleUpgrade(req, socket, head, () => this.uncount(linked));
      } else this.upgrade(server, req, socket, head, arrivedAt, address, via);
    });
    http.listen(port, host);
    await once(http, 'listening');
    this.sweeper = setInterval(() => this.sweep(), 100);
    this.sweeper.unref();
    return http.address() as AddressInfo;
  }

  /**
   * Whether a TCP connection was accepted since the last call: more may be waiting in the accept
   * queue, which libuv drains one per turn of the event loop (the tick loop's `yieldFirst`).
   */
  takeAccepted(): boolean {
    const accepted = this.acceptedSinceAsked;
    this.acceptedSinceAsked = false;
    return accepted;
  }

  /** Open players' WebSockets, authenticated or not (not sockets still in their HTTP handshake). */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Open TCP sockets of the players' port, upgraded or not: what Node counts against gateway.max_connections. */
  openSockets(): Promise<number> {
    const http = this.http;
    if (!http) return Promise.resolve(0);
    return new Promise((resolve, reject) => http.getConnections((err, n) => (err ? reject(err) : resolve(n))));
  }

  /**
   * The connection's logger: its id and address on every line. Made on first use: a pino child
   * runs the logger's redaction over its bindings (~4.5 µs and ~14 KB of garbage with the
   * wildcard paths), which sockets that never log should not pay for.
   */
  private log(conn: Connection): Logger {
    conn.logger ??= this.deps.log.child(
      conn.via === undefined ? { conn: conn.id, addr: conn.address } : { conn: conn.id, addr: conn.address, via: conn.via },
    );
    return conn.logger;
  }

  /**
   * A TCP connection arrived (Node has already closed it if gateway.max_connections were open). It
   * counts against its address from now until it closes, upgraded or not (`count`): what one
   * address holds is bounded before it has sent a byte. A trusted proxy's socket
   * (gateway.trusted_proxies) is the exception: it carries the clients of many addresses, and
   * counts against the one its upgrade request forwards, from the upgrade; until then it is held
   * by gateway.max_connections, Node's request timeout and the auth deadline alone. With
   * gateway.proxy_protocol a trusted proxy's socket first names its client in a PROXY protocol
   * header (`awaitProxyHeader`), and then counts against that client as a direct socket would.
   */
  private arrived(socket: Socket): void {
    this.acceptedSinceAsked = true;
    const peer = socket.remoteAddress ?? 'unknown';
    if (this.deps.settings['gateway.proxy_protocol'] && this.proxies.trusts(peer)) this.awaitProxyHeader(socket, peer);
    else this.admit(socket, peer);
  }

  /**
   * Counts `socket` against `peer` (unless `peer` is a trusted proxy, `arrived`), starts its auth
   * deadline, and hands it to HTTP for its upgrade request.
   */
  private admit(socket: Socket, peer: string): void {
    const now = this.deps.clock.now();
    if (!this.proxies.trusts(peer) && !this.count(socket, peer, now)) return;
    this.handshaking.set(socket, now);
    socket.once('close', () => {
      this.handshaking.delete(socket);
      this.uncount(socket);
    });
    this.startHttp?.(socket);
  }

  /**
   * A trusted proxy's connection with gateway.proxy_protocol: reads its PROXY protocol header (v1
   * or v2) and admits it as from the client the header names — or, when it names none (a health
   * check, a client of no IP address), as the proxy's own, counted against it at the upgrade with
   * no X-Forwarded-For read (`proxyNamedNone`). No valid header within HTTP_REQUEST_TIMEOUT_MS:
   * closed, counted as a PROTOCOL_ERROR kick and logged (as `logUnjoined` bounds such lines). The
   * bytes after the header (the upgrade request, if it came along) are put back for HTTP to read.
   */
  private awaitProxyHeader(socket: Socket, peer: string): void {
    this.awaitingHeader.add(socket);
    let got: Buffer | undefined;
    const done = () => {
      clearTimeout(timer);
      this.awaitingHeader.delete(socket);
      socket.off('data', onData);
      socket.off('close', done);
    };
    const refuse = (error: string) => {
      done();
      this.deps.metrics.kicks.inc({ reason: reasonLabel(ReasonCode.REASON_CODE_PROTOCOL_ERROR) });
      this.logUnjoined(
        () => this.deps.log.child({ addr: peer }),
        { err: error },
        'connection from a trusted proxy refused: no valid PROXY protocol header',
      );
      socket.destroy();
    };
    const onData = (chunk: Buffer) => {
      got = got === undefined ? chunk : Buffer.concat([got, chunk]);
      const header = readProxyHeader(got);
      if (header.state === 'more') return;
      if (header.state === 'error') return refuse(header.error);
      done();
      if (header.source !== undefined) this.proxiedFor.set(socket, header.source);
      else this.proxyNamedNone.add(socket);
      this.admit(socket, header.source ?? peer);
      // What came after the header goes to HTTP now (the stream flows), ahead of the socket's next read.
      if (header.length < got.length && !socket.destroyed) socket.unshift(got.subarray(header.length));
    };
    const timer = setTimeout(() => refuse(`no PROXY protocol header within ${HTTP_REQUEST_TIMEOUT_MS} ms`), HTTP_REQUEST_TIMEOUT_MS);
    socket.on('error', ignoreError);
    socket.on('close', done);
    socket.on('data', onData);
  }

  /**
   * Counts `socket` against `address` until it closes; false, and the socket closed, when the
   * address holds gateway.max_connections_per_address or has opened new connections faster than
   * gateway.connections_per_address_per_second. Refusals are counted as TOO_MANY_CONNECTIONS
   * kicks, not logged. At an upgrade (`answer`: a trusted proxy's client) the refusal is answered
   * HTTP 429 first, so the proxy can tell its client why rather than fail with a reset (a direct
   * socket is refused on arrival, before it has sent a request to answer). An IPv6 address counts
   * by its gateway.ipv6_prefix_length prefix, an IPv4-mapped one as its IPv4 address (`addressKey`).
   */
  private count(socket: Socket, address: string, now: number, answer = false): boolean {
    const key = addressKey(address, this.deps.settings['gateway.ipv6_prefix_length']);
    const open = this.perAddress.get(key) ?? 0;
    if (open >= this.deps.settings['gateway.max_connections_per_address'] || !this.arrivals.take(key, now)) {
      this.deps.metrics.kicks.inc({ reason: reasonLabel(ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS) });
      if (answer) {
        socket.end(TOO_MANY_CONNECTIONS_ANSWER);
        // Ended, not kept: a peer that never closes its side is dropped once the answer is out.
        socket.destroySoon();
      } else socket.destroy();
      return false;
    }
    this.perAddress.set(key, open + 1);
    this.counted.set(socket, key);
    return true;
  }

  /** `socket` no longer counts against its address (it closed, or is a neighbour's link). */
  private uncount(socket: Socket): void {
    const address = this.counted.get(socket);
    if (address === undefined) return;
    this.counted.delete(socket);
    const left = (this.perAddress.get(address) ?? 1) - 1;
    if (left <= 0) this.perAddress.delete(address);
    else this.perAddress.set(address, left);
  }

  /** `address`: the client's (the peer's, or the one a trusted proxy `via` forwarded). */
  private upgrade(
    server: WebSocketServer,
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    arrivedAt: number,
    address: string,
    via: string | undefined,
  ): void {
    server.handleUpgrade(req, socket, head, (ws) => this.accept(ws, socket, address, via, arrivedAt));
  }

  private accept(ws: WebSocket, socket: Duplex, address: string, via: string | undefined, arrivedAt: number): void {
    const s = this.deps.settings;
    const now = this.deps.clock.now();
    const id = this.nextId++;
    const conn: Connection = {
      id,
      ws,
      socket,
      address,
      via,
      phase: 'auth',
      openedAt: arrivedAt,
      lastMessageAt: now,
      bucket: new TokenBucket(s['gateway.max_messages_per_second'], s['gateway.message_burst'], now),
      errors: 0,
      errorReplies: undefined,
      logger: undefined,
      rpcsInFlight: 0,
      rpcBucket: undefined,
    };
    this.connections.set(id, conn);
    this.deps.metrics.activeConnections.set(this.connections.size);
    // Binary frames are read here (runtime's ws-frames.ts); `ws` reads every other frame and emits it.
    // Every frame spends the message rate: `ws` emits a fragmented message once, so each
    // continuation frame is charged here as it goes to `ws` (the message itself when it is emitted).
    const mode = readFrames(
      socket,
      'client',
      s['gateway.max_message_size'],
      (payload) => this.onMessage(conn, payload, true),
      () => this.received(conn),
    );
    if (mode !== 'shared-buffer' && !this.warnedReadMode) {
      this.warnedReadMode = true;
      this.log(conn).warn(
        mode === 'ws'
          ? 'ws reads this socket in a way the gateway does not know: every frame goes through ws'
          : "this Node's sockets cannot read into a shared buffer: each read makes a Buffer (more garbage)",
      );
    }
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    ws.on('ping', (data: Buffer) => {
      // Not answered while the client is not reading what it was sent (`backedUp`).
      if (this.received(conn) && !this.backedUp(conn)) ws.pong(data);
    });
    ws.on('pong', () => this.received(conn));
    ws.on('error', (err: Error & { code?: string }) => this.onSocketError(conn, err));
    ws.on('close', (code) => this.onClose(conn, code));
  }

  /**
   * `ws` refused a frame of the client's and is already closing the connection with the code it
   * names (RFC 6455 §7.4.1): over `gateway.max_message_size` (1009), malformed (1002), text that is
   * not UTF-8 (1007), a message in more than MAX_FRAGMENTS frames (1008). The client broke the protocol: it is
   * kicked for it, so its player leaves at once (the close that follows finds the session ended).
   * The connection is already closing, so no `Kick` goes out: the close code says why.
   */
  private onSocketError(conn: Connection, err: Error & { code?: string }): void {
    const code = err.code ?? '';
    if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' || code === 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH') {
      this.kick(
        conn,
        ReasonCode.REASON_CODE_MESSAGE_TOO_LARGE,
        `frame over gateway.max_message_size (${this.deps.settings['gateway.max_message_size']} bytes): closed with 1009`,
      );
    } else if (code.startsWith('WS_ERR_')) {
      this.kick(conn, ReasonCode.REASON_CODE_PROTOCOL_ERROR, `frame refused (${code}: ${err.message})`);
    } else {
      this.log(conn).debug({ err: err.message }, 'socket error');
    }
  }

  /**
   * `code`: the WebSocket close code. 1000 is a client that left (the SDK's `close()`), and so is
   * `CLOSE_CODE_CANNOT_READ` (a client that cannot read this shard will not rejoin it); anything
   * else — 1006 for a connection cut without a close frame, or a code the client sent, 1002 among
   * them — is a drop: the player's entity waits for them to rejoin (engine.rejoin_window_ms). A
   * connection the shard itself closed for a bad frame was kicked first (`onSocketError`): its
   * player has already left, whatever code the client answers with.
   */
  private onClose(conn: Connection, code: number): void {
    if (!this.connections.delete(conn.id)) return;
    conn.phase = 'closed';
    const playerId = this.players.get(conn.id);
    // Idempotent: also ends a session whose player was handed over (no longer in `players`) or
    // was kicked (the kick ended it).
    let waits = false;
    if (code === 1000 || code === CLOSE_CODE_CANNOT_READ) this.deps.engine.leave(conn.id);
    else waits = this.deps.engine.suspend(conn.id);
    if (playerId !== undefined) {
      this.players.delete(conn.id);
      this.log(conn).info({ player: playerId, code }, waits ? 'player dropped; their entity waits for them to rejoin' : 'player left');
    }
    this.deps.metrics.activeConnections.set(this.connections.size);
  }

  /**
   * A bad message: counted in `aether_bad_messages_total{reason}` and explained to the client with
   * an `Error` (PROTOCOL_ERROR; at most ERROR_REPLY_BURST, then one a second); the
   * gateway.max_protocol_errors-th is kicked instead. `message` goes to the client: it says what
   * was wrong with what the client sent, and nothing of the shard's.
   */
  private protocolError(conn: Connection, reason: string, message: string): void {
    this.deps.metrics.badMessages.inc({ reason });
    conn.errors++;
    const max = this.deps.settings['gateway.max_protocol_errors'];
    if (conn.errors >= max) {
      this.kick(conn, ReasonCode.REASON_CODE_PROTOCOL_ERROR, `${max} bad messages; the last: ${message}`);
      return;
    }
    const now = this.deps.clock.now();
    conn.errorReplies ??= new TokenBucket(ERROR_REPLIES_PER_S, ERROR_REPLY_BURST, now);
    if (!conn.errorReplies.take(now)) return;
    const error = {
      reason: ReasonCode.REASON_CODE_PROTOCOL_ERROR,
      message: `${message} (bad message ${conn.errors}; at ${max} the connection is closed)`,
    };
    if (!this.backedUp(conn)) this.write(conn, ServerMessage.encode({ error }).finish());
  }

  /** A message that needs a session (`what` names it) on a connection that has none yet. */
  private notJoined(conn: Connection, what: string): void {
    this.protocolError(conn, 'not_joined', `${what} before the Welcome: send Join (or Resume) first`);
  }

  private onInput(conn: Connection, seq: number, moveX: number, moveY: number, ackTick: number, buttons: number): void {
    if (conn.phase !== 'joined') {
      this.notJoined(conn, 'Input');
      return;
    }
    if (this.deps.engine.input(conn.id, seq, moveX, moveY, ackTick, buttons) === 'invalid')
      this.protocolError(conn, 'invalid_input', `Input ${seq} refused: its move is not a pair of finite numbers`);
  }

  /**
   * A frame arrived from the client — a message, a WebSocket ping or a pong: it is activity, and it
   * spends a token of the connection's message rate. False when it is not to be handled: the
   * connection is closed, or was just kicked RATE_LIMITED for it.
   */
  private received(conn: Connection): boolean {
    if (conn.phase === 'closed') return false;
    const now = this.deps.clock.now();
    conn.lastMessageAt = now;
    if (conn.bucket.take(now)) return true;
    this.kick(
      conn,
      ReasonCode.REASON_CODE_RATE_LIMITED,
      `more than ${this.deps.settings['gateway.max_messages_per_second']} messages per second (WebSocket pings and pongs count)`,
    );
    return false;
  }

  private onMessage(conn: Connection, data: Buffer, isBinary: boolean): void {
    if (conn.phase === 'closed') return;
    this.deps.metrics.messagesReceived.inc();
    if (!this.received(conn)) return;
    if (!isBinary) {
      this.protocolError(conn, 'text_frame', 'text frame: messages are binary frames, each one ClientMessage');
      return;
    }
    // Inputs, one per client per tick, are read in place; every other message, and anything the
    // in-place reader does not take as a plain input, is decoded by the generated code.
    const input = this.input;
    if (readInputMessage(data, input)) {
      this.onInput(conn, input.seq, input.moveX, input.moveY, input.ackTick, input.buttons);
      return;
    }
    let msg: aethex.v1.ClientMessage;
    try {
      // A copy: `data` may be a view of the shared read buffer, and decoded bytes fields are views.
      msg = ClientMessage.decode(Buffer.from(data));
    } catch (err) {
      this.protocolError(conn, 'undecodable', `not a ClientMessage (${(err as Error).message})`);
      return;
    }
    switch (msg.body) {
      case 'join':
        if (conn.phase !== 'auth') {
          this.protocolError(conn, 'join_twice', 'Join on a connection that already sent Join or Resume');
          return;
        }
        this.join(conn, msg.join as aethex.v1.Join);
        return;
      case 'input': {
        const { seq, move, ackTick, buttons } = msg.input as aethex.v1.Input;
        this.onInput(conn, seq, move?.x ?? 0, move?.y ?? 0, ackTick, buttons);
        return;
      }
      case 'ack':
        if (conn.phase !== 'joined') {
          this.notJoined(conn, 'Ack');
          return;
        }
        this.deps.engine.ack(conn.id, (msg.ack as aethex.v1.Ack).ackTick);
        return;
      case 'ping':
        if (this.backedUp(conn)) return;
        this.write(
          conn,
          ServerMessage.encode({
            pong: { clientTimeMs: (msg.ping as aethex.v1.Ping).clientTimeMs, serverTick: this.deps.engine.tick },
          }).finish(),
        );
        return;
      case 'rpc': {
        if (conn.phase !== 'joined') {
          this.notJoined(conn, 'Rpc');
          return;
        }
        const { callId, method, payload } = msg.rpc as aethex.v1.Rpc;
        const s = this.deps.settings;
        // Each call may cost the tick thread the handler's time: a rate of their own, below the
        // message rate, and a bound on those waiting for a handler's promise.
        const now = this.deps.clock.now();
        conn.rpcBucket ??= new TokenBucket(s['rpc.max_per_second'], s['rpc.max_per_second'], now);
        if (!conn.rpcBucket.take(now)) {
          this.deps.metrics.rpcsRefused.inc({ reason: 'rate_limited' });
          this.rpcResult(conn, callId, { ok: false, errorCode: 'RATE_LIMITED' });
          return;
        }
        if (conn.rpcsInFlight >= s['rpc.max_in_flight']) {
          this.deps.metrics.rpcsRefused.inc({ reason: 'busy' });
          this.rpcResult(conn, callId, { ok: false, errorCode: 'BUSY' });
          return;
        }
        conn.rpcsInFlight++;
        this.deps.engine.rpc(conn.id, method, payload).then((r) => {
          conn.rpcsInFlight--;
          if (conn.phase === 'joined') this.rpcResult(conn, callId, r);
        });
        return;
      }
      case 'resume':
        if (conn.phase !== 'auth') {
          this.protocolError(conn, 'resume_twice', 'Resume on a connection that already sent Join or Resume');
          return;
        }
        this.resume(conn, msg.resume as aethex.v1.Resume);
        return;
      default:
        this.protocolError(conn, 'empty_message', 'a ClientMessage without a body, or with one this shard does not know');
    }
  }

  private rpcResult(conn: Connection, callId: number, r: RpcOutcome): void {
    // A result cannot wait, and its client does not read: the session ends (its client's calls in
    // flight then fail as the connection's do, 'may have run').
    if (this.backedUp(conn)) {
      const held = conn.ws.bufferedAmount;
      this.kick(
        conn,
        ReasonCode.REASON_CODE_TOO_SLOW,
        `the client does not read what it is sent: ${held} bytes unsent, gateway.max_buffered_bytes is ${this.deps.settings['gateway.max_buffered_bytes']}`,
      );
      return;
    }
    const rpcResult = r.ok ? { callId, ok: true, payload: r.payload } : { callId, ok: false, errorCode: r.errorCode };
    this.write(conn, ServerMessage.encode({ rpcResult }).finish());
  }

  private join(conn: Connection, join: aethex.v1.Join): void {
    // Read before anything else: a Join refused for it leaves the connection as it was, free to
    // send a Join that fits.
    const clientVersionBytes = Buffer.byteLength(join.clientVersion, 'utf8');
    if (clientVersionBytes > MAX_CLIENT_VERSION_BYTES) {
      this.protocolError(
        conn,
        'bad_join',
        `Join.client_version is ${clientVersionBytes} bytes; at most ${MAX_CLIENT_VERSION_BYTES} (send Join again with a shorter one)`,
      );
      return;
    }
    const clientVersion = loggable(join.clientVersion);
    if (join.protocolVersion < PROTOCOL_VERSION) {
      this.refuse(
        conn,
        'join',
        ReasonCode.REASON_CODE_PROTOCOL_ERROR,
        `protocol version ${join.protocolVersion} is not supported (need ${PROTOCOL_VERSION})`,
      );
      return;
    }
    conn.phase = 'authenticating';
    this.deps.verifyJoin(join.joinToken).then(
      (claims) => {
        if (conn.phase !== 'authenticating') return;
        if (!this.accepting) {
          this.refuse(conn, 'join', ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is draining');
          return;
        }
        const notYet = this.deps.notAdmitting?.(claims.playerId, join.entityId);
        if (notYet !== undefined) {
          this.deps.metrics.joins.inc({ result: 'not_ready' });
          this.refuse(conn, 'join', ReasonCode.REASON_CODE_NOT_READY, notYet);
          return;
        }
        // Their entity was handed over here and their client's resume never came (its target
        // drained, or the connection failed): the join, as authentic as the token, takes it.
        const handedIn = this.deps.handedIn?.(claims.playerId);
        if (handedIn === 'pending') {
          this.deps.metrics.joins.inc({ result: 'not_ready' });
          this.refuse(conn, 'join', ReasonCode.REASON_CODE_NOT_READY, 'your entity is being handed over to this shard; join again shortly');
          return;
        }
        const result = handedIn
          ? this.deps.engine.resume(conn.id, claims.playerId, handedIn.entityId, handedIn.frozenMs)
          : this.deps.engine.join(conn.id, claims.playerId);
        if (!result.ok && result.redirect) {
          this.deps.metrics.joins.inc({ result: 'redirected' });
          this.redirectJoin(conn, claims.playerId, result.redirect);
          return;
        }
        if (!result.ok) {
          // Refused by the engine: not settled yet, full, or (a handed-over entity gone meanwhile) a failed resume.
          const refused =
            result.reason === ReasonCode.REASON_CODE_NOT_READY
              ? 'not_ready'
              : result.reason === ReasonCode.REASON_CODE_SHARD_FULL
                ? 'full'
                : 'resume_failed';
          this.deps.metrics.joins.inc({ result: refused });
          this.refuse(conn, 'join', result.reason, result.message);
          return;
        }
        this.deps.metrics.joins.inc({ result: 'ok' });
        this.welcome(conn, claims.playerId, result.entityId, result.lastInputSeq);
        this.log(conn).info({ player: claims.playerId, entity: result.entityId, clientVersion }, 'player joined');
      },
      (err: unknown) => {
        if (conn.phase !== 'authenticating') return;
        const wrongShard = err instanceof JoinTokenError && err.kind === 'wrong_shard';
        this.deps.metrics.joins.inc({ result: wrongShard ? 'wrong_shard' : 'auth_failed' });
        this.refuse(
          conn,
          'join',
          wrongShard ? ReasonCode.REASON_CODE_WRONG_SHARD : ReasonCode.REASON_CODE_AUTH_FAILED,
          joinRefusal(err),
          err,
        );
      },
    );
  }

  /** The session is on: the player is tracked and the client gets its Welcome. */
  private welcome(conn: Connection, playerId: string, entityId: number, lastInputSeq: number): void {
    conn.phase = 'joined';
    this.players.set(conn.id, playerId);
    const s = this.deps.settings;
    const b = s['engine.world_bounds'];
    const r = this.deps.engine.region;
    this.write(
      conn,
      ServerMessage.encode({
        welcome: {
          protocolVersion: PROTOCOL_VERSION,
          entityId,
          tickRateHz: Math.round(1000 / s['engine.tick_rate_ms']),
          // Exact, where the rounded rate is not (16 ms: 62.5 Hz, sent as 63): a client pacing by
          // the rate would send faster than the shard ticks, and its moves would queue here.
          tickIntervalUs: s['engine.tick_rate_ms'] * 1000,
          serverTick: this.deps.engine.tick,
          region: { minX: r.minX, minY: r.minY, maxX: r.maxX, maxY: r.maxY },
          worldBounds: { minX: b.minX, minY: b.minY, maxX: b.maxX, maxY: b.maxY },
          aoiRadius: s['engine.aoi_radius'],
          maxSpeed: s['engine.max_speed'],
          positionScale: s['engine.position_scale'],
          lastInputSeq,
          shardName: s['shard.name'],
          // A client that knows it refuses a larger message itself instead of being kicked for it.
          maxMessageSize: s['gateway.max_message_size'],
        },
      }).finish(),
    );
    if (conn.early) for (const bytes of conn.early) this.writeFrame(conn, bytes);
    conn.early = undefined;
  }

  /**
   * A client continues on this shard after a handoff, with the token the former owner gave it. Also
   * while draining, until `close`: the entity is this shard's (or becomes so with the resume), and
   * the player, ended with everyone else's session, rejoins it here after the restart.
   */
  private resume(conn: Connection, resume: aethex.v1.Resume): void {
    if (resume.protocolVersion < PROTOCOL_VERSION) {
      this.refuse(conn, 'resume', ReasonCode.REASON_CODE_PROTOCOL_ERROR, `protocol version ${resume.protocolVersion} is not supported`);
      return;
    }
    if (this.closing) {
      this.refuse(conn, 'resume', ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is shutting down');
      return;
    }
    const claim = this.deps.resume?.(resume.resumeToken);
    if (!claim) {
      this.deps.metrics.joins.inc({ result: 'resume_failed' });
      this.refuse(conn, 'resume', ReasonCode.REASON_CODE_AUTH_FAILED, 'unknown or expired resume token');
      return;
    }
    // Being set up: what the game's onJoin sends it waits for the Welcome (`send`).
    conn.phase = 'authenticating';
    const result = this.deps.engine.resume(conn.id, claim.playerId, claim.entityId, claim.frozenMs);
    if (!result.ok) {
      this.deps.metrics.joins.inc({ result: 'resume_failed' });
      this.refuse(conn, 'resume', result.reason, result.message);
      return;
    }
    this.deps.metrics.joins.inc({ result: 'resumed' });
    this.welcome(conn, claim.playerId, result.entityId, result.lastInputSeq);
    // Routine at a border (both ends of each handoff): at debug, as a world of many shards hands
    // players over many times a second.
    this.log(conn).debug({ player: claim.playerId, entity: result.entityId }, 'player resumed after a handoff');
  }

  /**
   * The session's entity moved to a neighbour: the client is told where to continue. The socket
   * stays open (snapshots continue) until the client closes it; the player is no longer here: an
   * RPC on it is answered `HANDED_OVER` without calling the game.
   */
  redirect(sessionId: number, redirect: aethex.v1.IHandoffRedirect): void {
    const conn = this.connections.get(sessionId);
    if (conn?.phase !== 'joined') return;
    const playerId = this.players.get(conn.id);
    if (playerId !== undefined) this.players.delete(conn.id);
    conn.redirectedAt = this.deps.clock.now();
    this.write(conn, ServerMessage.encode({ handoffRedirect: redirect }).finish());
    this.log(conn).debug({ player: playerId, to: redirect.shardName }, 'player handed over; client redirected');
  }

  /**
   * The player's join is answered with the redirect to the neighbour their entity was handed over
   * to (their client may never have got it: its connection dropped or stalled): the client resumes
   * there. No session here; the connection closes (1000) behind the redirect.
   */
  private redirectJoin(conn: Connection, playerId: string, redirect: aethex.v1.IHandoffRedirect): void {
    conn.phase = 'closed';
    this.write(conn, ServerMessage.encode({ handoffRedirect: redirect }).finish());
    conn.ws.close(1000, 'handed over');
    setTimeout(() => conn.ws.terminate(), CLOSE_TIMEOUT_MS).unref();
    this.log(conn).info({ player: playerId, to: redirect.shardName }, 'player joined while handed over; client redirected');
  }

  /**
   * Whether `conn`'s socket holds more than gateway.max_buffered_bytes unsent: its client does not
   * read. Snapshots are then dropped (`send`), pongs and error replies not sent, and an RPC result
   * ends the session (`rpcResult`): what one socket holds stays bounded by the setting and one
   * message. A Welcome, a redirect and a kick (one each, the last thing sent) always go.
   */
  private backedUp(conn: Connection): boolean {
    return conn.ws.bufferedAmount > this.deps.settings['gateway.max_buffered_bytes'];
  }

  /** The gateway's own messages (welcome, pong, RPC results, redirects, kicks), counted here. */
  private write(conn: Connection, bytes: Uint8Array): void {
    if (!this.writeFrame(conn, bytes)) return;
    this.deps.metrics.messagesSent.inc();
    this.deps.metrics.bytesSent.inc(bytes.length);
  }

  /**
   * Every message to a client goes to its socket as one whole binary frame (the bytes are copied
   * first, so the caller may reuse them), by `writeWhole`: straight to the descriptor when nothing
   * is queued, else behind the queue. `ws` writes its own frames (pongs, close) through the same
   * socket on this same thread, so frames never interleave; once `ws` closes or the socket fails,
   * readyState is no longer OPEN and nothing more is written.
   */
  private writeFrame(conn: Connection, bytes: Uint8Array): boolean {
    if (conn.ws.readyState !== 1) return false;
    writeWhole(conn.socket, binaryFrame(bytes));
    return true;
  }

  /**
   * SessionOutput: one snapshot, correction or game message to one session. Returns false when it was dropped
   * because the socket already holds `gateway.max_buffered_bytes` unsent (a client that does not
   * read): memory stays bounded, and its acknowledgement lag soon gets it skipped, then dropped.
   * The engine counts what it sends.
   */
  send(sessionId: number, bytes: Uint8Array): boolean {
    const conn = this.connections.get(sessionId);
    if (!conn || this.backedUp(conn)) return false;
    // Sent while the session is being set up (a game's onJoin): after the Welcome.
    if (conn.phase === 'authenticating') {
      conn.early ??= [];
      conn.early.push(bytes);
      return true;
    }
    return this.writeFrame(conn, bytes);
  }

  /**
   * SessionOutput: the descriptor a snapshot thread may write this session's frame to during the
   * tick, when the socket is open and nothing is queued on it (`directWriteFd`), else -1.
   * Nothing closes a socket while the tick runs: sockets close on this thread, between ticks.
   */
  directFd(sessionId: number): number {
    const conn = this.connections.get(sessionId);
    return conn?.ws.readyState === 1 ? directWriteFd(conn.socket) : -1;
  }

  /**
   * SessionOutput: a frame a snapshot thread wrote `written` bytes of (0: none), from its shared
   * arena: the rest is written (what the socket queues of it, copied). One not begun is dropped as
   * `send` drops a message; the rest of one begun is always written (the frame must end).
   */
  sendFrame(sessionId: number, frame: Uint8Array, written: number): boolean {
    const conn = this.connections.get(sessionId);
    if (!conn) return false;
    if (written === 0 && (conn.ws.readyState !== 1 || this.backedUp(conn))) return false;
    // A view of a snapshot thread's arena, written again next tick: what is queued is copied.
    writeWhole(conn.socket, frame.subarray(written), true);
    return true;
  }

  /** SessionOutput: the engine ended a session (already forgotten there). */
  kickSession(sessionId: number, reason: Reason, message: string): void {
    const conn = this.connections.get(sessionId);
    if (conn) this.kick(conn, reason, message);
  }

  /**
   * Refuses a Join or a Resume: the client is told why (its Kick, as `kick`), and the refusal is
   * one line, `join refused` or `resume refused`, with the reason, the message and (`err`) why the
   * token was refused, as `logUnjoined` bounds them.
   */
  private refuse(conn: Connection, what: 'join' | 'resume', reason: Reason, message: string, err?: unknown): void {
    if (conn.phase === 'closed') return;
    this.logUnjoined(
      () => this.log(conn),
      { reason: reasonLabel(reason), message, ...(err === undefined ? {} : { err: (err as Error).message }) },
      `${what} refused`,
    );
    this.kick(conn, reason, message, 'unlogged');
  }

  /**
   * Logs `msg` at `info` about a connection that never joined, within UNJOINED_LOGGED_BURST and
   * UNJOINED_LOGGED_PER_S across connections; the first line after some were left out says how
   * many (`unlogged`).
   */
  private logUnjoined(log: () => Logger, fields: Record<string, unknown>, msg: string): void {
    const line = this.unjoinedLogged.take(this.deps.clock.now(), fields);
    if (line) log().info(line, msg);
  }

  /**
   * Ends a session, telling the client why. `logged`: the `kicked` line's level — `debug` for one of
   * many (a drain), `unlogged` for a refusal (`refuse` logged it). At `info`, a joined player's kick
   * is always logged, with the player; that of a connection that never joined, as `logUnjoined`
   * bounds them.
   */
  private kick(conn: Connection, reason: Reason, message: string, logged: 'info' | 'debug' | 'unlogged' = 'info'): void {
    if (conn.phase === 'closed') return;
    const wasJoined = conn.phase === 'joined';
    conn.phase = 'closed';
    this.deps.metrics.kicks.inc({ reason: reasonLabel(reason) });
    const playerId = this.players.get(conn.id);
    const fields = { reason: reasonLabel(reason), message, ...(playerId === undefined ? {} : { player: playerId }) };
    if (logged === 'info' && !wasJoined) this.logUnjoined(() => this.log(conn), fields, 'kicked');
    else if (logged !== 'unlogged') this.log(conn)[logged](fields, 'kicked');
    if (conn.ws.readyState === 1) {
      this.write(conn, ServerMessage.encode({ kick: { reason, message } }).finish());
      conn.ws.close(closeCode(reason), reasonLabel(reason));
    }
    // Leave the world now; the close event only cleans up the bookkeeping. On a drain the entity
    // stays so the final snapshot keeps it for the player's return; a player kicked for lag or
    // silence is probably on a bad network, and theirs waits for them to rejoin.
    if (wasJoined && playerId !== undefined) {
      this.players.delete(conn.id);
      if (reason === ReasonCode.REASON_CODE_SHUTTING_DOWN) this.deps.engine.detach(conn.id);
      else if (reason === ReasonCode.REASON_CODE_TOO_SLOW || reason === ReasonCode.REASON_CODE_IDLE_TIMEOUT)
        this.deps.engine.suspend(conn.id);
      else this.deps.engine.leave(conn.id);
    }
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => conn.ws.terminate(), CLOSE_TIMEOUT_MS).unref();
  }

  private sweep(): void {
    const now = this.deps.clock.now();
    const authTimeout = this.deps.settings['gateway.auth_timeout_ms'];
    const idleTimeout = this.deps.settings['gateway.idle_timeout_ms'];
    const resumeTimeout = this.deps.settings['handoff.resume_timeout_ms'];
    // In order of arrival: the first one not yet due ends the search.
    for (const [socket, arrivedAt] of this.handshaking) {
      if (now - arrivedAt < authTimeout) break;
      this.handshaking.delete(socket);
      this.deps.metrics.kicks.inc({ reason: reasonLabel(ReasonCode.REASON_CODE_AUTH_TIMEOUT) });
      socket.destroy();
    }
    this.arrivals.prune(now);
    for (const conn of this.connections.values()) {
      if ((conn.phase === 'auth' || conn.phase === 'authenticating') && now - conn.openedAt >= authTimeout) {
        this.kick(conn, ReasonCode.REASON_CODE_AUTH_TIMEOUT, `no valid join within ${authTimeout} ms`);
      } else if (conn.redirectedAt !== undefined && now - conn.redirectedAt >= resumeTimeout) {
        // Its player was handed over and has resumed at the neighbour (the SDK then closes this
        // connection itself) or no longer can (the resume token has expired): nothing is owed it.
        conn.redirectedAt = undefined;
        conn.ws.close(1000, 'handed over');
        setTimeout(() => conn.ws.terminate(), CLOSE_TIMEOUT_MS).unref();
      } else if (conn.phase === 'joined' && now - conn.lastMessageAt >= idleTimeout) {
        this.kick(conn, ReasonCode.REASON_CODE_IDLE_TIMEOUT, `no message for ${idleTimeout} ms`);
      }
    }
  }

  /** Drain: refuse new joins from now on. */
  stopAccepting(): void {
    this.accepting = false;
  }

  /**
   * Ends every session with `reason` and stops listening. Every client is told why (its `Kick`)
   * at once; one that has not closed within `withinMs` is cut off, since closing the server waits
   * for every socket (a client that stops reading never answers the close handshake).
   */
  async close(
    reason: Reason = ReasonCode.REASON_CODE_SHUTTING_DOWN,
    message = 'the shard is shutting down',
    withinMs = CLOSE_TIMEOUT_MS,
  ): Promise<void> {
    this.accepting = false;
    this.closing = true;
    // One line for all of them: a drain of thousands of players is not thousands of log lines.
    let kicked = 0;
    for (const conn of this.connections.values()) {
      if (conn.phase === 'closed') continue;
      this.kick(conn, reason, message, 'debug');
      kicked++;
    }
    this.deps.log.info({ reason: reasonLabel(reason), message, sessions: kicked }, 'closed every session');
    clearInterval(this.sweeper);
    for (const socket of this.awaitingHeader) socket.destroy();
    const cut = setTimeout(() => {
      for (const conn of this.connections.values()) conn.ws.terminate();
      this.http?.closeAllConnections();
    }, withinMs);
    try {
      const server = this.server;
      if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
      const http = this.http;
      if (http) {
        http.closeAllConnections();
        await new Promise<void>((resolve) => http.close(() => resolve()));
      }
    } finally {
      clearTimeout(cut);
    }
  }
}
