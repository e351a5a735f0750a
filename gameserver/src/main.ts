#!/usr/bin/env node
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { ConfigError, createLogger } from '@aethex/runtime';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { type GameserverSettings, loadConfig } from './config.js';
import { createOpsServer } from './http.js';

const USAGE = 'usage: aethex-gameserver [--config <file.yaml>]';

function startup(): { config: GameserverSettings } {
  let args: { config?: string | undefined };
  try {
    args = parseArgs({ options: { config: { type: 'string', short: 'c' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    console.error(`aethex-gameserver: ${(err as Error).message}\n${USAGE}`);
    process.exit(2);
  }
  try {
    return { config: loadConfig(process.env, args.config) };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`aethex-gameserver: invalid configuration: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}

const { config } = startup();
const log = createLogger('gameserver', config['log.level']);
const registry = new Registry();
collectDefaultMetrics({ register: registry });

let draining = false;
const server = createOpsServer({ healthy: () => true, ready: () => !draining }, registry);
server.listen(config['ops.bind_addr'].port, config['ops.bind_addr'].host);
await once(server, 'listening');
log.info({ address: server.address() }, 'serving /healthz, /readyz and /metrics');

process.once('SIGTERM', () => {
  draining = true;
  log.info('SIGTERM: draining');
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), config['ops.drain_timeout_ms']).unref();
});
