import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { aethex, inputFields, PROTOCOL_VERSION, readInputMessage } from '@aethex/proto';
import { type JoinClaims, JoinTokenError, type Logger } from '@aethex/runtime';
import { binaryFrame, directWriteFd, readFrames, writeWhole } from '@aethex/runtime/ws-frames';
import { type WebSocket, WebSocketServer } from 'ws';
import type { GameserverSettings } from '../config.js';
import type { ShardEngine } from '../engine.js';
import type { Clock } from '../loop/fixed-timestep.js';
import type { ShardMetrics } from '../metrics.js';
import { TokenBucket } from './rate-limit.js';

/** For errors on a socket being upgraded: `ws` (or the connection's own handlers) report them. */
const ignoreError = (): undefined => undefined;

const { ClientMessage, ServerMessage, ReasonCode } = aethex.v1;
type Reason = aethex.v1.ReasonCode;

/** WebSocket close codes per kick reason (RFC 6455 §7.4.1). */
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

/** The metric label of a reason: `REASON_CODE_TOO_SLOW` → `too_slow`. */
export function reasonLabel(reason: Reason): string {
  return (ReasonCode[reason] ?? 'unknown').replace(/^REASON_CODE_/, '').toLowerCase();
}

type Phase = 'auth' | 'authenticating' | 'joined' | 'closed';

interface Connection {
  id: number;
  ws: WebSocket;
  /** The upgraded TCP socket under `ws`: every message to the client is written to it as one whole frame. */
  socket: Duplex;
  address: string;
  phase: Phase;
  openedAt: number;
  lastMessageAt: number;
  bucket: TokenBucket;
  errors: number;
  /** Made by `Gateway.log` when the connection first logs: an open socket that has not logged holds none. */
  logger: Logger | undefined;
  /** Messages for the session sent before its Welcome (a game's onJoin), written right after it. */
  early?: Uint8Array[];
}

export type GatewaySettings = Pick<
  GameserverSettings,
  | 'gateway.bind_addr'
  | 'gateway.max_message_size'
  | 'gateway.max_messages_per_second'
  | 'gateway.message_burst'
  | 'gateway.auth_timeout_ms'
  | 'gateway.idle_timeout_ms'
  | 'gateway.max_connections'
  | 'gateway.max_connections_per_address'
  | 'gateway.max_protocol_errors'
  | 'gateway.max_buffered_bytes'
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
  upgrades?: { path: string; handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void };
  /** False while the shard may not admit players yet (sharded, restored, neighbours not heard). */
  admitting?: () => boolean;
  /** Redeems a handoff resume token: the player and entity it continues, or undefined. */
  resume?: (token: string) => { playerId: string; entityId: number; frozenMs: number } | undefined;
}

/**
 * The players' WebSocket endpoint. It enforces every limit before a message reaches the engine:
 * connections in total and per address, frame size (ws closes with 1009 before buffering a larger
 * frame), message rate, the authentication deadline, idle time and repeated protocol errors. It
 * reads clients' binary frames off the socket itself (runtime's ws-frames.ts) and leaves every other
 * frame to `ws`. It implements the engine's SessionOutput: one `send` is one socket write.
 */
export class Gateway {
  private server: WebSocketServer | undefined;
  private http: Server | undefined;
  private readonly connections = new Map<number, Connection>();
  private readonly perAddress = new Map<string, number>();
  private readonly players = new Map<number, string>();
  /** The input being handled, read in place (one object for every message). */
  private readonly input = inputFields();
  private nextId = 1;
  private accepting = true;
  /** A connection read less directly than it could be was logged (once: every connection reads alike). */
  private warnedReadMode = false;
  private acceptedSinceAsked = false;
  private sweeper: NodeJS.Timeout | undefined;

  constructor(private readonly deps: GatewayDeps) {}

  /** Starts listening; resolves with the bound address. */
  async listen(): Promise<AddressInfo> {
    const { host, port } = this.deps.settings['gateway.bind_addr'];
    const server = new WebSocketServer({
      noServer: true,
      maxPayload: this.deps.settings['gateway.max_message_size'],
      perMessageDeflate: false,
      clientTracking: false,
    });
    this.server = server;
    const http = createServer((_req, res) => res.writeHead(426, { 'content-type': 'text/plain' }).end('WebSocket only\n'));
    this.http = http;
    http.on('connection', () => {
      this.acceptedSinceAsked = true;
    });
    const other = this.deps.upgrades;
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // Neither listener may close over `req`: a closure kept for the socket's life keeps every
      // variable it could see, and the upgrade request (headers, the URL, the join token) would
      // then live as long as the connection.
      socket.on('error', ignoreError);
      if (other && (req.url ?? '/').split('?')[0] === other.path) other.handleUpgrade(req, socket, head);
      else this.upgrade(server, req, socket, head);
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

  /** Open sockets, authenticated or not. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * The connection's logger: its id and address on every line. Made on first use: a pino child
   * runs the logger's redaction over its bindings (~4.5 µs and ~14 KB of garbage with the
   * wildcard paths), which sockets that never log should not pay for.
   */
  private log(conn: Connection): Logger {
    conn.logger ??= this.deps.log.child({ conn: conn.id, addr: conn.address });
    return conn.logger;
  }

  private upgrade(server: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const address = req.socket.remoteAddress ?? 'unknown';
    server.handleUpgrade(req, socket, head, (ws) => this.accept(ws, socket, address));
  }

  private accept(ws: WebSocket, socket: Duplex, address: string): void {
    const s = this.deps.settings;
    const now = this.deps.clock.now();
    const id = this.nextId++;
    const conn: Connection = {
      id,
      ws,
      socket,
      address,
      phase: 'auth',
      openedAt: now,
      lastMessageAt: now,
      bucket: new TokenBucket(s['gateway.max_messages_per_second'], s['gateway.message_burst'], now),
      errors: 0,
      logger: undefined,
    };
    this.connections.set(id, conn);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    this.deps.metrics.activeConnections.set(this.connections.size);
    // Binary frames are read here (runtime's ws-frames.ts); `ws` reads every other frame and emits it.
    const mode = readFrames(socket, 'client', s['gateway.max_message_size'], (payload) => this.onMessage(conn, payload, true));
    if (mode !== 'shared-buffer' && !this.warnedReadMode) {
      this.warnedReadMode = true;
      this.log(conn).warn(
        mode === 'ws'
          ? 'ws reads this socket in a way the gateway does not know: every frame goes through ws'
          : "this Node's sockets cannot read into a shared buffer: each read makes a Buffer (more garbage)",
      );
    }
    ws.on('message', (data, isBinary) => this.onMessage(conn, data as Buffer, isBinary));
    ws.on('error', (err: Error & { code?: string }) => this.onSocketError(conn, err));
    ws.on('close', (code) => this.onClose(conn, code));
    if (!this.accepting) {
      this.kick(conn, ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is draining');
    } else if (this.connections.size > s['gateway.max_connections']) {
      this.kick(conn, ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS, 'the shard has too many connections');
    } else if ((this.perAddress.get(address) ?? 0) > s['gateway.max_connections_per_address']) {
      this.kick(conn, ReasonCode.REASON_CODE_TOO_MANY_CONNECTIONS, 'too many connections from this address');
    }
  }

  /**
   * `ws` refused a frame of the client's and is already closing the connection with the code it
   * names (RFC 6455 §7.4.1): over `gateway.max_message_size` (1009), malformed (1002), text that is
   * not UTF-8 (1007), a message in too many pieces (1008). The client broke the protocol: it is
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
   * `code`: the WebSocket close code. 1000 is a client that left (the SDK's `close()`); anything
   * else — 1006 for a connection cut without a close frame, or a code the client sent, 1002 among
   * them — is a drop: the player's entity waits for them to rejoin (engine.rejoin_window_ms). A
   * connection the shard itself closed for a bad frame was kicked first (`onSocketError`): its
   * player has already left, whatever code the client answers with.
   */
  private onClose(conn: Connection, code: number): void {
    if (!this.connections.delete(conn.id)) return;
    conn.phase = 'closed';
    const left = (this.perAddress.get(conn.address) ?? 1) - 1;
    if (left <= 0) this.perAddress.delete(conn.address);
    else this.perAddress.set(conn.address, left);
    const playerId = this.players.get(conn.id);
    // Idempotent: also ends a session whose player was handed over (no longer in `players`) or
    // was kicked (the kick ended it).
    let waits = false;
    if (code === 1000) this.deps.engine.leave(conn.id);
    else waits = this.deps.engine.suspend(conn.id);
    if (playerId !== undefined) {
      this.players.delete(conn.id);
      this.log(conn).info({ player: playerId, code }, waits ? 'player dropped; their entity waits for them to rejoin' : 'player left');
    }
    this.deps.metrics.activeConnections.set(this.connections.size);
  }

  private protocolError(conn: Connection, reason: string): void {
    this.deps.metrics.badMessages.inc({ reason });
    conn.errors++;
    if (conn.errors >= this.deps.settings['gateway.max_protocol_errors']) {
      this.kick(conn, ReasonCode.REASON_CODE_PROTOCOL_ERROR, `too many bad messages (last: ${reason})`);
    }
  }

  private onInput(conn: Connection, seq: number, moveX: number, moveY: number, ackTick: number, buttons: number): void {
    if (conn.phase !== 'joined') {
      this.protocolError(conn, 'not_joined');
      return;
    }
    if (this.deps.engine.input(conn.id, seq, moveX, moveY, ackTick, buttons) === 'invalid') this.protocolError(conn, 'invalid_input');
  }

  private onMessage(conn: Connection, data: Buffer, isBinary: boolean): void {
    if (conn.phase === 'closed') return;
    const now = this.deps.clock.now();
    conn.lastMessageAt = now;
    this.deps.metrics.messagesReceived.inc();
    if (!conn.bucket.take(now)) {
      this.kick(
        conn,
        ReasonCode.REASON_CODE_RATE_LIMITED,
        `more than ${this.deps.settings['gateway.max_messages_per_second']} messages per second`,
      );
      return;
    }
    if (!isBinary) {
      this.protocolError(conn, 'text_frame');
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
    } catch {
      this.protocolError(conn, 'undecodable');
      return;
    }
    switch (msg.body) {
      case 'join':
        if (conn.phase !== 'auth') {
          this.protocolError(conn, 'join_twice');
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
          this.protocolError(conn, 'not_joined');
          return;
        }
        this.deps.engine.ack(conn.id, (msg.ack as aethex.v1.Ack).ackTick);
        return;
      case 'ping':
        this.write(
          conn,
          ServerMessage.encode({
            pong: { clientTimeMs: (msg.ping as aethex.v1.Ping).clientTimeMs, serverTick: this.deps.engine.tick },
          }).finish(),
        );
        return;
      case 'rpc': {
        if (conn.phase !== 'joined') {
          this.protocolError(conn, 'not_joined');
          return;
        }
        const rpc = msg.rpc as aethex.v1.Rpc;
        this.deps.engine.rpc(conn.id, rpc.method, rpc.payload).then((r) => {
          if (conn.phase !== 'joined') return;
          const rpcResult = r.ok
            ? { callId: rpc.callId, ok: true, payload: r.payload }
            : { callId: rpc.callId, ok: false, errorCode: r.errorCode };
          this.write(conn, ServerMessage.encode({ rpcResult }).finish());
        });
        return;
      }
      case 'resume':
        if (conn.phase !== 'auth') {
          this.protocolError(conn, 'resume_twice');
          return;
        }
        this.resume(conn, msg.resume as aethex.v1.Resume);
        return;
      default:
        this.protocolError(conn, 'empty_message');
    }
  }

  private join(conn: Connection, join: aethex.v1.Join): void {
    if (join.protocolVersion < PROTOCOL_VERSION) {
      this.kick(
        conn,
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
          this.kick(conn, ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is draining');
          return;
        }
        if (this.deps.admitting && !this.deps.admitting()) {
          this.deps.metrics.joins.inc({ result: 'not_ready' });
          this.kick(conn, ReasonCode.REASON_CODE_NOT_READY, 'the shard is starting; try again shortly');
          return;
        }
        const result = this.deps.engine.join(conn.id, claims.playerId);
        if (!result.ok) {
          this.deps.metrics.joins.inc({ result: 'full' });
          this.kick(conn, result.reason, result.message);
          return;
        }
        this.deps.metrics.joins.inc({ result: 'ok' });
        this.welcome(conn, claims.playerId, result.entityId, result.lastInputSeq);
        this.log(conn).info({ player: claims.playerId, entity: result.entityId }, 'player joined');
      },
      (err: unknown) => {
        if (conn.phase !== 'authenticating') return;
        const wrongShard = err instanceof JoinTokenError && err.kind === 'wrong_shard';
        this.deps.metrics.joins.inc({ result: wrongShard ? 'wrong_shard' : 'auth_failed' });
        this.log(conn).info({ err: (err as Error).message }, 'join refused');
        this.kick(conn, wrongShard ? ReasonCode.REASON_CODE_WRONG_SHARD : ReasonCode.REASON_CODE_AUTH_FAILED, 'join token rejected');
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
          serverTick: this.deps.engine.tick,
          region: { minX: r.minX, minY: r.minY, maxX: r.maxX, maxY: r.maxY },
          worldBounds: { minX: b.minX, minY: b.minY, maxX: b.maxX, maxY: b.maxY },
          aoiRadius: s['engine.aoi_radius'],
          maxSpeed: s['engine.max_speed'],
          positionScale: s['engine.position_scale'],
          lastInputSeq,
          shardName: s['shard.name'],
        },
      }).finish(),
    );
    if (conn.early) for (const bytes of conn.early) this.writeFrame(conn, bytes);
    conn.early = undefined;
  }

  /** A client continues on this shard after a handoff, with the token the former owner gave it. */
  private resume(conn: Connection, resume: aethex.v1.Resume): void {
    if (resume.protocolVersion < PROTOCOL_VERSION) {
      this.kick(conn, ReasonCode.REASON_CODE_PROTOCOL_ERROR, `protocol version ${resume.protocolVersion} is not supported`);
      return;
    }
    if (!this.accepting) {
      this.kick(conn, ReasonCode.REASON_CODE_SHUTTING_DOWN, 'the shard is draining');
      return;
    }
    const claim = this.deps.resume?.(resume.resumeToken);
    if (!claim) {
      this.deps.metrics.joins.inc({ result: 'resume_failed' });
      this.kick(conn, ReasonCode.REASON_CODE_AUTH_FAILED, 'unknown or expired resume token');
      return;
    }
    const result = this.deps.engine.resume(conn.id, claim.playerId, claim.entityId, claim.frozenMs);
    if (!result.ok) {
      this.deps.metrics.joins.inc({ result: 'resume_failed' });
      this.kick(conn, result.reason, result.message);
      return;
    }
    this.deps.metrics.joins.inc({ result: 'resumed' });
    this.welcome(conn, claim.playerId, result.entityId, result.lastInputSeq);
    this.log(conn).info({ player: claim.playerId, entity: result.entityId }, 'player resumed after a handoff');
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
    this.write(conn, ServerMessage.encode({ handoffRedirect: redirect }).finish());
    this.log(conn).info({ player: playerId, to: redirect.shardName }, 'player handed over; client redirected');
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
    if (!conn || conn.ws.bufferedAmount > this.deps.settings['gateway.max_buffered_bytes']) return false;
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
    if (written === 0 && (conn.ws.readyState !== 1 || conn.ws.bufferedAmount > this.deps.settings['gateway.max_buffered_bytes']))
      return false;
    // A view of a snapshot thread's arena, written again next tick: what is queued is copied.
    writeWhole(conn.socket, frame.subarray(written), true);
    return true;
  }

  /** SessionOutput: the engine ended a session (already forgotten there). */
  kickSession(sessionId: number, reason: Reason, message: string): void {
    const conn = this.connections.get(sessionId);
    if (conn) this.kick(conn, reason, message);
  }

  /** Ends a session, telling the client why. `quiet`: one of many (a drain), logged at debug only. */
  private kick(conn: Connection, reason: Reason, message: string, quiet = false): void {
    if (conn.phase === 'closed') return;
    const wasJoined = conn.phase === 'joined';
    conn.phase = 'closed';
    this.deps.metrics.kicks.inc({ reason: reasonLabel(reason) });
    this.log(conn)[quiet ? 'debug' : 'info']({ reason: reasonLabel(reason), message }, 'kicked');
    if (conn.ws.readyState === 1) {
      this.write(conn, ServerMessage.encode({ kick: { reason, message } }).finish());
      conn.ws.close(CLOSE_CODES[reason] ?? 1000, reasonLabel(reason));
    }
    // Leave the world now; the close event only cleans up the bookkeeping. On a drain the entity
    // stays so the final snapshot keeps it for the player's return; a player kicked for lag or
    // silence is probably on a bad network, and theirs waits for them to rejoin.
    const playerId = this.players.get(conn.id);
    if (wasJoined && playerId !== undefined) {
      this.players.delete(conn.id);
      if (reason === ReasonCode.REASON_CODE_SHUTTING_DOWN) this.deps.engine.detach(conn.id);
      else if (reason === ReasonCode.REASON_CODE_TOO_SLOW || reason === ReasonCode.REASON_CODE_IDLE_TIMEOUT)
        this.deps.engine.suspend(conn.id);
      else this.deps.engine.leave(conn.id);
    }
    // A peer that never answers the close handshake is cut off.
    setTimeout(() => conn.ws.terminate(), 2000).unref();
  }

  private sweep(): void {
    const now = this.deps.clock.now();
    const authTimeout = this.deps.settings['gateway.auth_timeout_ms'];
    const idleTimeout = this.deps.settings['gateway.idle_timeout_ms'];
    for (const conn of this.connections.values()) {
      if ((conn.phase === 'auth' || conn.phase === 'authenticating') && now - conn.openedAt >= authTimeout) {
        this.kick(conn, ReasonCode.REASON_CODE_AUTH_TIMEOUT, `no valid join within ${authTimeout} ms`);
      } else if (conn.phase === 'joined' && now - conn.lastMessageAt >= idleTimeout) {
        this.kick(conn, ReasonCode.REASON_CODE_IDLE_TIMEOUT, `no message for ${idleTimeout} ms`);
      }
    }
  }

  /** Drain: refuse new joins from now on. */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** Ends every session with `reason` and stops listening. */
  async close(reason: Reason = ReasonCode.REASON_CODE_SHUTTING_DOWN, message = 'the shard is shutting down'): Promise<void> {
    this.accepting = false;
    // One line for all of them: a drain of thousands of players is not thousands of log lines.
    let kicked = 0;
    for (const conn of this.connections.values()) {
      if (conn.phase === 'closed') continue;
      this.kick(conn, reason, message, true);
      kicked++;
    }
    this.deps.log.info({ reason: reasonLabel(reason), message, sessions: kicked }, 'closed every session');
    clearInterval(this.sweeper);
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    const http = this.http;
    if (http) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    }
  }
}
