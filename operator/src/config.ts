import { type Env, loadSettings, type Settings } from '@aethex/runtime';

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
    doc: 'PostgreSQL of the shards: a deleted world’s snapshot rows are removed from it (empty: skipped).',
  },
  'cleanup.redis_url': { type: 'string', default: '', doc: 'Redis of the shards: a deleted world’s presence keys are removed from it (empty: skipped).' },
  'http.listen': { type: 'listen', default: '0.0.0.0:8080', doc: 'Address of /healthz and /metrics.' },
  'log.level': { type: 'enum', default: 'info', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], doc: 'Log level.' },
} as const satisfies Parameters<typeof loadSettings>[0];

export type OperatorConfig = Settings<typeof OPERATOR_SETTINGS>;

export function loadConfig(env: Env): OperatorConfig {
  return loadSettings(OPERATOR_SETTINGS, { prefix: 'AETHEX_OPERATOR', env });
}
