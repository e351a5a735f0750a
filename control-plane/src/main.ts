#!/usr/bin/env node
import { ConfigError, createLogger, type LogLevel, listenFailure } from '@aethex/runtime';
import { KeyRing, remoteKeySet } from './auth/keys.js';
import { loadConfig } from './config.js';
import { buildApp } from './http/app.js';
import { openStores } from './stores.js';

// The control plane process: `AETHEX_*` variables in, the configured services on one port out.
// SIGTERM or SIGINT stops accepting, lets requests in flight finish within the grace period, and exits 0.

let config: ReturnType<typeof loadConfig>;
try {
  config = loadConfig(process.env);
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`control-plane: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
const log = createLogger('control-plane', config['log.level'] as LogLevel);

async function main(): Promise<void> {
  const keys = config['auth.signing_keys_file'] ? await KeyRing.fromFile(config['auth.signing_keys_file']) : undefined;
  const verifyKeys = keys ? undefined : remoteKeySet(config['auth.jwks_url']);
  const stores = await openStores(config, log);
  const app = await buildApp(config, { stores, log, keys, verifyKeys });
  const { host, port } = config['http.listen'];
  const address = await app.listen({ host, port });
  log.info({ address, services: config.serviceList }, 'control plane listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.warn('grace period over; exiting with requests in flight');
      process.exit(1);
    }, config['http.shutdown_grace_ms']);
    force.unref();
    void app
      .close()
      .then(() => stores.close())
      .then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err) => {
  log.fatal({ err: (err as Error).message }, 'control plane failed to start');
  // An address that cannot be listened on: one line naming the setting.
  const listen = listenFailure(err, { 'http.listen': config['http.listen'] });
  if (listen !== undefined) process.stderr.write(`control-plane: could not start: ${listen}\n`);
  process.exit(1);
});
