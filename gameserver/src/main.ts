#!/usr/bin/env node
import { once } from 'node:events';
import { ConfigError, createLogger } from '@aethex/runtime';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { loadConfig } from './config.js';
import { createOpsServer } from './http.js';

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (err instanceof ConfigError) {
    console.error(`aethex-gameserver: invalid configuration: ${err.message}`);
    process.exit(2);
  }
  throw err;
}

const log = createLogger('gameserver', config.logLevel);
const registry = new Registry();
collectDefaultMetrics({ register: registry });

let draining = false;
const server = createOpsServer({ healthy: () => true, ready: () => !draining }, registry);
server.listen(config.http.port, config.http.host);
await once(server, 'listening');
const address = server.address();
log.info({ address }, 'serving /healthz, /readyz and /metrics');

process.once('SIGTERM', () => {
  draining = true;
  log.info('SIGTERM: draining');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 5_000).unref();
});
