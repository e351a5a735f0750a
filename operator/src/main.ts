#!/usr/bin/env node
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { ConfigError, createLogger, type LogLevel, listenFailure } from '@aethex/runtime';
import { loadConfigWithArgs, USAGE } from './config.js';
import type { LeaderElector } from './runtime/leader.js';

// The operator process: reconciles GameWorlds into shard pods. Kubeconfig from KUBECONFIG or the
// in-cluster ServiceAccount. With leader election on, only the lease holder reconciles; a leader
// that loses its lease exits (the Deployment restarts it as a candidate). With `--runtime local
// -f <file>` it runs the worlds of a file as processes on this machine instead (local/main.ts).

let config: ReturnType<typeof loadConfigWithArgs>;
try {
  config = loadConfigWithArgs(process.argv.slice(2), process.env);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`operator: configuration error: ${err.message}\n${USAGE}\n`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger('operator', config['log.level'] as LogLevel);

async function main(): Promise<void> {
  // Each runtime loads only its own modules (the Kubernetes client alone takes a second or two).
  if (config.runtime === 'local') return (await import('./local/main.js')).runLocal(config, process.env, log);
  const k8s = await import('@kubernetes/client-node');
  const { createExternalCleanup } = await import('./cleanup.js');
  const { KubeClient } = await import('./kube/client.js');
  const { createMetrics } = await import('./metrics.js');
  const { Reconciler } = await import('./reconcile/reconciler.js');
  const { Controller } = await import('./runtime/controller.js');
  const { LeaderElector } = await import('./runtime/leader.js');
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  let elector: LeaderElector | undefined;
  const kube = new KubeClient(kc, () => !config['leader.enabled'] || elector?.holds() === true);
  const metrics = createMetrics();
  const external = createExternalCleanup({ postgresUrl: config['cleanup.postgres_url'], redisUrl: config['cleanup.redis_url'], log });
  const reconciler = new Reconciler({
    kube,
    now: () => new Date(),
    log,
    cleanup: external.cleanup,
    shardDrainWaitMs: config['cleanup.shard_wait_s'] * 1000,
  });
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
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      server.off('error', fail);
      ok();
    });
  });
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
  // An address that cannot be listened on: one line naming the setting (either runtime).
  const listen = listenFailure(err, { 'http.listen': config['http.listen'] });
  if (listen !== undefined) process.stderr.write(`operator: could not start: ${listen}\n`);
  process.exit(1);
});
