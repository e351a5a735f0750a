import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';
import { VIEWER_HTML } from './viewer/page.js';

/** Serves the viewer's JSON state; `focus` is a player entity id or undefined. */
export type ViewerSource = (focus: number | undefined) => unknown;

export interface Probes {
  /** True while the process can make progress (the tick loop is alive). */
  healthy(): boolean;
  /** True while the shard accepts joins; false while starting and draining. */
  ready(): boolean;
}

/**
 * The shard's operational HTTP endpoints: /healthz and /readyz (200 or 503 with a one-word body)
 * and /metrics in the Prometheus text format; with a viewer source, /viewer (a canvas page) and
 * /viewer/state (its JSON). Anything else is 404.
 *
 * /viewer/state allows any origin: the viewer served by one shard draws the whole world by
 * reading every shard's state, and that state is read-only and carries nothing secret.
 */
export function createOpsServer(probes: Probes, registry: Registry, viewer?: ViewerSource): Server {
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
      const raw = new URL(req.url ?? '/', 'http://x').searchParams.get('focus');
      const focus = raw === null || raw === '' ? undefined : Number(raw);
      if (focus !== undefined && !(Number.isInteger(focus) && focus >= 0 && focus <= 0xffffffff)) {
        res
          .writeHead(400, { 'content-type': 'text/plain', 'access-control-allow-origin': '*' })
          .end('focus must be an entity id (a non-negative integer)\n');
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'access-control-allow-origin': '*' })
        .end(JSON.stringify(viewer(focus)));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  return server;
}
