import { parseArgs } from 'node:util';
import { ConfigError, type Env, loadSettings, type Settings } from '@aethex/runtime';
import { DEFAULT_COMMAND } from './local/command.js';
import { SHARD_GRACE_PERIOD_S } from './reconcile/desired.js';

/** Every operator setting; `AETHEX_OPERATOR_<KEY>` overrides (dots as underscores). Listed in docs/operator.md. */
export const OPERATOR_SETTINGS = {
  runtime: {
    type: 'enum',
    default: 'kubernetes',
    values: ['kubernetes', 'local'],
    doc: 'Where worlds run: pods through the API server, or local processes.',
  },
  namespace: { type: 'string', default: '', doc: 'Namespace to watch; empty watches all (needs the ClusterRole).' },
  workers: { type: 'int', default: 4, min: 1, max: 64, doc: 'Worlds reconciled at once (one worker per world at a time).' },
  resync_s: { type: 'int', default: 300, min: 10, max: 86_400, doc: 'Every world is reconciled at least this often.' },
  'leader.enabled': { type: 'bool', default: true, doc: 'Lease-based leader election (run two replicas with it on).' },
  'leader.namespace': { type: 'string', default: 'aethex-system', doc: 'Namespace of the Lease.' },
  'leader.name': { type: 'string', default: 'aethex-operator', doc: 'Name of the Lease.' },
  'leader.identity': { type: 'string', default: '', doc: 'This replica’s identity (default: hostname and pid).' },
  'leader.lease_s': { type: 'int', default: 15, min: 2, max: 600, doc: 'Lease duration: a leader that cannot renew within it stops.' },
  'leader.retry_ms': { type: 'int', default: 2000, min: 100, max: 60_000, doc: 'How often the leader renews and candidates retry.' },
  'cleanup.postgres_url': {
    type: 'string',
    default: '',
    secret: 'url',
    doc: 'PostgreSQL of the shards: a deleted world’s snapshot and outbox rows are removed from it (empty: skipped).',
  },
  'cleanup.redis_url': {
    type: 'string',
    default: '',
    secret: 'url',
    doc: 'Redis of the shards: a deleted world’s presence keys are removed from it and its event streams kept a day under another name (empty: skipped).',
  },
  'cleanup.shard_wait_s': {
    type: 'int',
    default: 120,
    min: SHARD_GRACE_PERIOD_S,
    max: 86_400,
    doc: 'A deleted world’s cleanup waits for its shard pods to finish draining at most this long after the deletion; pods still terminating then (their node lost) are named in a Warning Event and the cleanup goes on. At least the pods’ grace period.',
  },
  'http.listen': { type: 'listen', default: '0.0.0.0:8080', doc: 'Address of /healthz and /metrics (and /status in the local runtime).' },
  'log.level': { type: 'enum', default: 'info', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], doc: 'Log level.' },
  'local.file': {
    type: 'string',
    default: '',
    doc: 'Local runtime: the GameWorld YAML file (one or more documents); also `-f <file>`.',
  },
  'local.base_port': {
    type: 'int',
    default: 7700,
    min: 1024,
    max: 65534,
    doc: 'Local runtime: shard slot k listens on base + 2k (players) and base + 2k + 1 (ops).',
  },
  'local.directory': {
    type: 'string',
    default: '.aethex/local',
    doc: 'Local runtime: shard maps, status, per-shard snapshots and logs, the development key.',
  },
  'local.command': {
    type: 'string',
    default: DEFAULT_COMMAND,
    doc: 'Local runtime: the command that runs a shard — a command line, a JSON array, or a JSON object from image to command (`*`: any other image).',
  },
  'local.env': {
    type: 'string',
    default: '',
    secret: 'value',
    doc: 'Local runtime: extra shard variables, a JSON object, e.g. `{"AETHEX_GAMESERVER_ENGINE_NPC_COUNT":"100"}`.',
  },
} as const satisfies Parameters<typeof loadSettings>[0];

export type OperatorConfig = Settings<typeof OPERATOR_SETTINGS>;

export function loadConfig(env: Env): OperatorConfig {
  return loadSettings(OPERATOR_SETTINGS, { prefix: 'AETHEX_OPERATOR', env });
}

export const USAGE = 'usage: aethex-operator [--runtime kubernetes|local] [-f <gameworld.yaml>]   (settings: AETHEX_OPERATOR_<KEY>)';

/**
 * The settings with the command line applied on top: `--runtime` overrides AETHEX_OPERATOR_RUNTIME
 * and `-f`/`--file` overrides AETHEX_OPERATOR_LOCAL_FILE. Unknown flags, positionals, a bad runtime
 * and a file without the local runtime throw a ConfigError naming the flag.
 */
export function loadConfigWithArgs(argv: string[], env: Env): OperatorConfig {
  let values: { runtime?: string | undefined; file?: string | undefined };
  try {
    values = parseArgs({
      args: argv,
      options: { runtime: { type: 'string' }, file: { type: 'string', short: 'f' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new ConfigError('arguments', (err as Error).message);
  }
  const runtimes: readonly string[] = OPERATOR_SETTINGS.runtime.values;
  if (values.runtime !== undefined && !runtimes.includes(values.runtime)) {
    throw new ConfigError('--runtime', `expected one of ${runtimes.join(', ')}, got ${JSON.stringify(values.runtime)}`);
  }
  if (values.file !== undefined && values.file.trim() === '') throw new ConfigError('--file', 'expected a path, got ""');
  const config = loadConfig({
    ...env,
    ...(values.runtime !== undefined ? { AETHEX_OPERATOR_RUNTIME: values.runtime } : {}),
    ...(values.file !== undefined ? { AETHEX_OPERATOR_LOCAL_FILE: values.file } : {}),
  });
  if (config.runtime === 'local' && config['local.file'] === '') {
    throw new ConfigError('local.file', 'the local runtime needs a GameWorld file: -f <file> or AETHEX_OPERATOR_LOCAL_FILE');
  }
  if (config.runtime !== 'local' && values.file !== undefined) {
    throw new ConfigError('--file', 'a GameWorld file is read only by the local runtime (add --runtime local)');
  }
  return config;
}
