import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** The operator's Prometheus metrics (served at /metrics). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    reconcileDuration: new Histogram({
      name: 'aethex_operator_reconcile_duration_seconds',
      help: 'Wall time of one reconcile pass of one world.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    queueDepth: new Gauge({ name: 'aethex_operator_queue_depth', help: 'Worlds waiting to be reconciled.', registers }),
    errors: new Counter({
      name: 'aethex_operator_reconcile_errors_total',
      help: 'Failed reconcile passes by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    apiRequests: new Gauge({
      name: 'aethex_operator_api_requests',
      help: 'API requests issued since start, by verb.',
      labelNames: ['verb'] as const,
      registers,
    }),
    leader: new Gauge({ name: 'aethex_operator_leader', help: '1 while this replica holds the lease.', registers }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
