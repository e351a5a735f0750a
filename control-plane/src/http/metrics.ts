import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

/** The control plane's Prometheus metrics on their own registry (served at /metrics). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    requestDuration: new Histogram({
      name: 'aethex_http_request_duration_seconds',
      help: 'HTTP request latency by route (the route pattern, not the URL), method and status code.',
      labelNames: ['method', 'route', 'status_code'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    passwordHashes: new Counter({
      name: 'aethex_auth_password_hashes_total',
      help: 'argon2id computations started (hash or verify): what reached the hasher.',
      labelNames: ['op'] as const,
      registers,
    }),
    rateLimited: new Counter({
      name: 'aethex_rate_limited_total',
      help: 'Requests refused by a rate limit, by scope.',
      labelNames: ['scope'] as const,
      registers,
    }),
    refreshReuse: new Counter({
      name: 'aethex_auth_refresh_reuse_total',
      help: 'Spent refresh tokens presented again; each revoked its family.',
      registers,
    }),
    saveConflicts: new Counter({ name: 'aethex_saves_conflicts_total', help: 'Save writes refused as stale (409).', registers }),
    saveCorrupt: new Counter({
      name: 'aethex_saves_checksum_failures_total',
      help: 'Save blobs whose checksum did not match on read; never served.',
      registers,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
