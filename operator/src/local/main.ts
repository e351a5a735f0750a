import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { resolve } from 'node:path';
import { ConfigError, type Env, type Logger } from '@aethex/runtime';
import type { OperatorConfig } from '../config.js';
import { createMetrics } from '../metrics.js';
import { parseCommandSetting } from './command.js';
import { parseEnvSetting } from './env.js';
import { LocalRuntime } from './runtime.js';

/**
 * `--runtime local`: reconciles the worlds of `local.file` into shard processes on this machine and
 * serves /healthz, /metrics and /status (JSON) on `http.listen`. SIGTERM or SIGINT stops every
 * shard and exits 0; a second signal kills them at once and exits 1. Exits 2 on a bad setting or
 * an unreadable file.
 */
export async function runLocal(config: OperatorConfig, env: Env, log: Logger): Promise<void> {
  let commands: ReturnType<typeof parseCommandSetting>;
  let extraEnv: Record<string, string>;
  try {
    commands = parseCommandSetting(config['local.command']);
    extraEnv = parseEnvSetting(config['local.env']);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`operator: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  const file = resolve(config['local.file']);
  try {
    readFileSync(file, 'utf8');
  } catch (err) {
    process.stderr.write(`operator: cannot read the GameWorld file ${file}: ${(err as NodeJS.ErrnoException).code ?? err}\n`);
    process.exit(2);
  }
  const metrics = createMetrics();
  const runtime = new LocalRuntime({
    file,
    directory: resolve(config['local.directory']),
    basePort: config['local.base_port'],
    commands,
    extraEnv,
    parentEnv: env,
    log,
    metrics,
  });

  const { host, port } = config['http.listen'];
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/metrics') {
      void metrics.registry.metrics().then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text));
    } else if (path === '/status') {
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(JSON.stringify(runtime.statusJson(), null, 2));
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
  log.info(
    { address: typeof address === 'object' && address ? `${address.address}:${address.port}` : address, status: '/status' },
    'operator listening (local runtime)',
  );

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: killing every shard now');
      runtime.kill();
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    void runtime.stop().then(() => {
      server.close();
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await runtime.start();
}
