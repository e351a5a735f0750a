#!/usr/bin/env node
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { ConfigError, createLogger, type LogLevel } from '@aethex/runtime';
import * as k8s from '@kubernetes/client-node';
import { createExternalCleanup } from './cleanup.js';
import { loadConfig } from './config.js';
import { KubeClient } from './kube/client.js';
import { createMetrics } from './metrics.js';
import { Reconciler } from './reconcile/reconciler.js';
import { Controller } from './runtime/controller.js';
import { LeaderElector } from './runtime/leader.js';

// The operator process: reconciles GameWorlds into shard pods. Kubeconfig from KUBECONFIG or the
// in-cluster ServiceAccount. With leader election on, only the lease holder reconciles; a leader
// that loses its lease exits (the Deployment restarts it as a candidate).

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`operator: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger('operator', config['log.level'] as LogLevel);

async function main(): Promise<void> {
  if (config.runtime === 'local') {
    process.stderr.write('operator: --runtime local is not built yet; see docs/operator.md\n');
    process.exit(2);
  }
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  let elector: LeaderElector | undefined;
  const kube = new KubeClient(kc, () => !config['leader.enabled'] || elector?.holds() === true);
  const metrics = createMetrics();
  const external = createExternalCleanup({ postgresUrl: config['cleanup.postgres_url'], redisUrl: config['cleanup.redis_url'], log });
  const reconciler = new Reconciler({ kube, now: () => new Date(), log, cleanup: external.cleanup });
  const controller = new Controller({
    kc,
    kube,
    reconciler,
    metrics,
    namespace: config.namespace,
    workers: config.workers,
    resyncMs: config.resync_s * 1000,
    log,
  });

  const { host, port } = config['http.listen'];
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (req.url === '/metrics') {
      void metrics.registry.metrics().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  log.info({ address: typeof address === 'object' && address ? `${address.address}:${address.port}` : address }, 'operator listening');

  const stop = (signal: string) => {
    log.info({ signal }, 'shutting down');
    controller.stop();
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  if (config['leader.enabled']) {
    const identity = config['leader.identity'] || `${hostname()}-${process.pid}`;
    elector = new LeaderElector({
      kc,
      namespace: config['leader.namespace'],
      name: config['leader.name'],
      identity,
      leaseDurationS: config['leader.lease_s'],
      retryMs: config['leader.retry_ms'],
    });
    log.info({ identity }, 'waiting for the lease');
    await elector.run(() => {
      metrics.leader.set(0);
      log.error({ identity }, 'lost the lease; exiting so that nothing more is written');
      process.exit(3);
    });
    metrics.leader.set(1);
    log.info({ identity }, 'leading');
  }
  await controller.start();
}

main().catch((err) => {
  log.fatal({ err: (err as Error).message }, 'operator failed');
  process.exit(1);
});
