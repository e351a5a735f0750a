import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import { VIEWER_HTML } from './viewer/page.js';

/**
 * What the viewer shows. All run on the tick thread, between ticks: `state` is O(entities) and is
 * called at most once per `version` (about once a tick) whoever polls; `focus` is one area-of-interest query,
 * answered per request.
 */
export interface ViewerSource {
  /** Changes whenever the state may have (a new tick; between ticks, a handoff settled). */
  version(): string;
  /** The shard's picture, as a JSON object (without a focus). */
  state(): object;
  /** The player entity `id`'s area of interest, or undefined when it is no player entity here. */
  focus(id: number): object | undefined;
}

/** /viewer/state responses being sent at once, at most; more are answered 503 (a slow reader holds one). */
export const VIEWER_MAX_CONCURRENT = 8;

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
 * /viewer/state is read by the page its own shard serves (same origin), and cross-origin only by
 * loopback pages: a world on one machine is drawn whole by the viewer of one of its shards. The
 * state is built again only when its `version` changed (a tick, or a handoff settled between
 * ticks) and its bytes serve every poller meanwhile: pollers cost the tick thread about one build
 * per tick, not one per request. A join, leave or resume between ticks shows from the next tick.
 */
export function createOpsServer(probes: Probes, registry: Registry, viewer?: ViewerSource): Server {
  let cached: { version: string; json: string; bytes: Buffer } | undefined;
  let sending = 0;
  const stateJson = () => {
    const source = viewer as ViewerSource;
    const version = source.version();
    if (cached?.version !== version) {
      const json = JSON.stringify(source.state());
      cached = { version, json, bytes: Buffer.from(json) };
    }
    return cached;
  };
  const send = (res: ServerResponse, body: Buffer | string, cors: Record<string, string>) => {
    sending++;
    res.once('close', () => sending--);
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', ...cors }).end(body);
  };
  const server = createServer((req, res) => {
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
      const focus = raw === null || raw === '' ? undefined : Number(raw);
      if (focus !== undefined && !(Number.isInteger(focus) && focus >= 0 && focus <= 0xffffffff)) {
        res.writeHead(400, { 'content-type': 'text/plain', ...cors }).end('focus must be an entity id (a non-negative integer)\n');
        return;
      }
      if (sending >= VIEWER_MAX_CONCURRENT) {
        res
          .writeHead(503, { 'content-type': 'text/plain', 'retry-after': '1', ...cors })
          .end(`the viewer is sending ${VIEWER_MAX_CONCURRENT} states already; try again\n`);
        return;
      }
      const state = stateJson();
      const seen = focus === undefined ? undefined : viewer.focus(focus);
      // The focus goes into the cached object's JSON as its last member.
      send(res, seen === undefined ? state.bytes : `${state.json.slice(0, -1)},"focus":${JSON.stringify(seen)}}`, cors);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  return server;
}
