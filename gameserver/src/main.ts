#!/usr/bin/env node
import { ConfigError, createLogger, listenFailure, parseCli } from '@aethex/runtime';
import { type GameserverSettings, loadConfig } from './config.js';
import { agonesPort } from './lifecycle/agones.js';
import { type RunningShard, startShard } from './shard.js';

const USAGE =
  'usage: aethex-gameserver [--config <file.yaml>] [--help]   (every key also as AETHEX_GAMESERVER_<KEY>; docs/gameserver.md lists them)';

function configure(): { settings: GameserverSettings; agonesPort: number | undefined } {
  const args = parseCli('aethex-gameserver', USAGE, { config: { type: 'string', short: 'c' } }).values as { config?: string };
  try {
    return { settings: loadConfig(process.env, args.config), agonesPort: agonesPort(process.env) };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`aethex-gameserver: invalid configuration: ${err.message}`);
      process.exit(2);
    }
    throw err;
  }
}

const { settings, agonesPort: port } = configure();
const log = createLogger('gameserver', settings['log.level']);
// The first SIGTERM or SIGINT drains; any later one is logged and ignored: the drain is already
// bounded by ops.drain_timeout_ms, and a signal's default action would end the process before the
// final snapshot is written (SIGKILL still ends it at once). Taken over before the start: a pod
// deleted while its shard starts (restoring, loading the game module) is drained once it has
// started — within the same bound — rather than killed by the signal's default action.
let shard: RunningShard | undefined;
let drainingSince: NodeJS.Signals | undefined;
let signalledAt = 0;
function drain(running: RunningShard): void {
  running.drain(signalledAt).then(
    () => {
      log.info('drained; exiting');
      process.exit(0);
    },
    (err: unknown) => {
      log.error({ err }, 'drain failed');
      process.exit(1);
    },
  );
}
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    if (drainingSince) {
      log.warn({ signal, since: drainingSince }, 'already draining; signal ignored (the drain ends within ops.drain_timeout_ms)');
      return;
    }
    drainingSince = signal;
    signalledAt = performance.now();
    log.info({ signal, ...(shard ? {} : { starting: true }) }, 'draining');
    const bound = setTimeout(() => {
      log.error({ timeoutMs: settings['ops.drain_timeout_ms'] }, 'drain did not finish in time; exiting');
      process.exit(1);
    }, settings['ops.drain_timeout_ms']);
    bound.unref();
    if (shard) drain(shard);
  });
}
process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled rejection'));

// V8 takes this flag only on node's command line (docs/gameserver.md: why the shard wants it).
if (!process.execArgv.some((flag) => flag === '--no-parallel-scavenge' || flag === '--single-threaded-gc')) {
  log.warn(
    'node runs without --no-parallel-scavenge: young-generation GC pauses wait on helper threads when the cores are busy (docs/gameserver.md)',
  );
}

shard = await startShard(settings, { log, ...(port === undefined ? {} : { agonesPort: port }) }).catch((err: NodeJS.ErrnoException) => {
  // A setting found wrong only on start (the shard map, which needs reading): as any other.
  if (err instanceof ConfigError) {
    console.error(`aethex-gameserver: invalid configuration: ${err.message}`);
    process.exit(2);
  }
  // A port in use, an address not this machine's or an unreachable database: one line naming
  // what failed (the setting, for an address), not a stack.
  const listen = listenFailure(err, { 'gateway.bind_addr': settings['gateway.bind_addr'], 'ops.bind_addr': settings['ops.bind_addr'] });
  log.fatal({ err }, 'could not start');
  console.error(`aethex-gameserver: could not start: ${listen ?? err.message}`);
  process.exit(1);
});
// A signal came while it started: it drains now.
if (drainingSince) drain(shard);
