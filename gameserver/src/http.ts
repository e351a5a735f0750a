import { createServer, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { GAMESERVER_SETTINGS } from './config.js';
import { TokenBucket } from './net/rate-limit.js';
import { VIEWER_HTML } from './viewer/page.js';

/**
 * What the viewer shows. All run on the tick thread, between ticks: `state` is O(entities) and is
 * called at most once per `version` (about once a tick), and at most VIEWER_MAX_BUILDS_PER_SECOND
 * times a second, whoever polls; `focus` is one area-of-interest query, made at most once per state
 * and player.
 */
export interface ViewerSource {
  /** Changes whenever the state may have (a new tick; between ticks, a handoff settled). */
  version(): string;
  /**
   * Changes whenever who owns what may have changed between ticks (a neighbour's handoff message,
   * a link up or down): a state built before is never served after. Absent: only ticks change it.
   */
  ownership?(): string;
  /** The shard's picture, as a JSON object (without a focus). */
  state(): object;
  /** The player entity `id`'s area of interest, or undefined when it is no player entity here. */
  focus(id: number): object | undefined;
}

/**
 * /viewer/state responses being sent, or waiting for a state to be built, at once, at most; more
 * are answered 503 (a slow reader holds one).
 */
export const VIEWER_MAX_CONCURRENT = 8;

/**
 * Viewer states built a second at most, whoever polls (after a burst of VIEWER_BUILD_BURST): one
 * viewer page polls every 100 ms and sees every poll fresh; more viewers share the states built.
 * A poll that finds a new tick beyond it is answered the last state built (a tick or a few old),
 * unless ownership changed since: then it waits for the next build (about 100 ms at most).
 */
export const VIEWER_MAX_BUILDS_PER_SECOND = 10;
const VIEWER_BUILD_BURST = 2;
/** How long a poll that must have a new state waits when the budget is spent: about one build's worth of it. */
const VIEWER_BUILD_WAIT_MS = Math.ceil(1000 / VIEWER_MAX_BUILDS_PER_SECOND) + 5;
/**
 * Areas of interest worked out per state built (`?focus=`, each one query on the tick thread), at
 * most: a poll for another player's is answered 503 until the next state.
 */
export const VIEWER_MAX_FOCUS_PER_STATE = 64;

/**
 * Node's bounds on receiving a request on the ops port: its headers within OPS_HEADERS_TIMEOUT_MS
 * of the connection (or of the previous response), checked every OPS_TIMEOUT_CHECK_MS — a silent
 * socket, or one trickling its headers, is closed within about 6 s — and all of it within
 * OPS_REQUEST_TIMEOUT_MS.
 */
export const OPS_HEADERS_TIMEOUT_MS = 5000;
const OPS_REQUEST_TIMEOUT_MS = 10_000;
const OPS_TIMEOUT_CHECK_MS = 1000;

/** The ops port's socket limits (ops.max_connections, ops.idle_timeout_ms). */
export interface OpsLimits {
  /** Open TCP sockets at most; more are closed as they arrive (the server's 'drop'). */
  maxConnections: number;
  /** A kept-alive socket without a request, or a response not read, for this long is closed. */
  idleTimeoutMs: number;
}

const DEFAULT_LIMITS: OpsLimits = {
  maxConnections: GAMESERVER_SETTINGS['ops.max_connections'].default,
  idleTimeoutMs: GAMESERVER_SETTINGS['ops.idle_timeout_ms'].default,
};

export interface Probes {
  /** True while the process can make progress (the tick loop is alive). */
  healthy(): boolean;
  /** True while the shard accepts joins; false while starting and draining. */
  ready(): boolean;
}

/**
 * Origins of loopback pages: a world run on one machine (`npm run world`, `npm start`) serves each
 * shard's ops port on its own 127.0.0.1 port, and the viewer served by one shard reads the others.
 */
const LOOPBACK_ORIGIN = /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d{1,5})?$/;

/** The CORS header for a request from `origin`: only a loopback page of another port may read the state. */
function corsFor(origin: string | undefined): Record<string, string> {
  return origin !== undefined && LOOPBACK_ORIGIN.test(origin)
    ? { 'access-control-allow-origin': origin, vary: 'origin' }
    : { vary: 'origin' };
}

/**
 * The shard's operational HTTP endpoints: /healthz and /readyz (200 or 503 with a one-word body)
 * and /metrics in the Prometheus text format; with a viewer source, /viewer (a canvas page) and
 * /viewer/state (its JSON). Anything else is 404.
 *
 * The port holds `limits.maxConnections` sockets at most (Node's `maxConnections`, as the gateway's
 * port: more are closed as they arrive, before any HTTP, and the server emits 'drop'). A socket is
 * closed when its request's headers do not arrive within OPS_HEADERS_TIMEOUT_MS (a silent or a
 * trickling one), when kept alive without a request for `limits.idleTimeoutMs` (Node closes it a
 * second after the timeout it announces), and when a response goes unread that long.
 *
 * /viewer/state is read by the page its own shard serves (same origin), and cross-origin only by
 * loopback pages: a world on one machine is drawn whole by the viewer of one of its shards. The
 * state is built again only when its `version` changed (a tick, or a handoff settled between
 * ticks), at most VIEWER_MAX_BUILDS_PER_SECOND times a second, and its bytes serve every poller
 * meanwhile; a focus is computed once per state and player, and sent after those bytes (no copy).
 * Pollers cost the tick thread a bounded number of builds a second, however many they are. A
 * join, leave or resume between ticks shows from the next tick.
 */
export function createOpsServer(probes: Probes, registry: Registry, viewer?: ViewerSource, limits: OpsLimits = DEFAULT_LIMITS): Server {
  let built: { version: string; ownership: string; bytes: Buffer; focus: Map<number, string> } | undefined;
  const builds = new TokenBucket(VIEWER_MAX_BUILDS_PER_SECOND, VIEWER_BUILD_BURST, performance.now());
  let sending = 0;
  /**
   * The state to serve: this version's, or the last built when over the budget and ownership has
   * not changed since; else undefined (the poll waits for the next build).
   */
  const currentState = (source: ViewerSource) => {
    const version = source.version();
    if (built?.version === version) return built;
    const ownership = source.ownership?.() ?? '';
    if (builds.take(performance.now())) {
      built = { version, ownership, bytes: Buffer.from(JSON.stringify(source.state())), focus: new Map() };
      return built;
    }
    return built?.ownership === ownership ? built : undefined;
  };
  /**
   * The end of the state's JSON with player `id`'s area of interest as its last member (`}` alone:
   * none); undefined when this state has worked out VIEWER_MAX_FOCUS_PER_STATE already.
   */
  const focusSuffix = (source: ViewerSource, state: NonNullable<typeof built>, id: number) => {
    let suffix = state.focus.get(id);
    if (suffix === undefined) {
      if (state.focus.size >= VIEWER_MAX_FOCUS_PER_STATE) return undefined;
      const seen = source.focus(id);
      suffix = seen === undefined ? '}' : `,"focus":${JSON.stringify(seen)}}`;
      state.focus.set(id, suffix);
    }
    return suffix;
  };
  /** Polls waiting for the next build (ownership changed and the budget is spent): answered together when it comes. */
  let waiting: (() => void)[] = [];
  const answerState = (source: ViewerSource, res: ServerResponse, focus: number | undefined, cors: Record<string, string>) => {
    if (res.destroyed) return;
    const state = currentState(source);
    if (state) {
      const suffix = focus === undefined ? '}' : focusSuffix(source, state, focus);
      if (suffix === undefined) {
        res
          .writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...cors })
          .end(`the viewer has worked out ${VIEWER_MAX_FOCUS_PER_STATE} players' areas of interest for this state already; try again\n`);
        return;
      }
      send(res, state.bytes, suffix, cors);
      return;
    }
    waiting.push(() => answerState(source, res, focus, cors));
    if (waiting.length > 1) return;
    setTimeout(() => {
      const due = waiting;
      waiting = [];
      for (const answer of due) answer();
    }, VIEWER_BUILD_WAIT_MS);
  };
  const send = (res: ServerResponse, bytes: Buffer, suffix: string, cors: Record<string, string>) => {
    sending++;
    res.once('close', () => sending--);
    const head = suffix === '}' ? bytes : bytes.subarray(0, bytes.length - 1);
    const tail = suffix === '}' ? '' : suffix;
    res.writeHead(200, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': head.length + Buffer.byteLength(tail),
      ...cors,
    });
    res.write(head);
    res.end(tail);
  };
  const server = createServer(
    {
      headersTimeout: OPS_HEADERS_TIMEOUT_MS,
      requestTimeout: OPS_REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: OPS_TIMEOUT_CHECK_MS,
      keepAliveTimeout: limits.idleTimeoutMs,
    },
    (req, res) => {
      const path = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (path === '/healthz' || path === '/readyz') {
        const ok = path === '/healthz' ? probes.healthy() : probes.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'unavailable\n');
        return;
      }
      if (path === '/metrics') {
        registry.metrics().then(
          (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
          () => res.writeHead(500).end(),
        );
        return;
      }
      if (viewer && path === '/viewer') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(VIEWER_HTML);
        return;
      }
      if (viewer && path === '/viewer/state') {
        const cors = corsFor(req.headers.origin);
        const raw = new URL(req.url ?? '/', 'http://x').searchParams.get('focus');
        // Decimal digits only: Number() would also take 0x10, 1e3 and ' 7 '.
        const focus = raw === null || raw === '' ? undefined : /^\d{1,10}$/.test(raw) ? Number(raw) : Number.NaN;
        if (focus !== undefined && !(Number.isInteger(focus) && focus <= 0xffffffff)) {
          res.writeHead(400, { 'content-type': 'text/plain', ...cors }).end('focus must be an entity id (a non-negative integer)\n');
          return;
        }
        if (sending + waiting.length >= VIEWER_MAX_CONCURRENT) {
          res
            .writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...cors })
            .end(`the viewer is sending ${VIEWER_MAX_CONCURRENT} states already; try again\n`);
          return;
        }
        answerState(viewer, res, focus, cors);
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    },
  );
  // A socket whose reader stopped reading (or that sent nothing more) for this long is closed.
  server.timeout = limits.idleTimeoutMs;
  server.maxConnections = limits.maxConnections;
  return server;
}
