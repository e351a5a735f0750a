import { ConfigError, type Env, jwksUrlProblem, loadSettings, type Settings, shownValue, TrustedProxies } from '@aethex/runtime';

/**
 * Every setting of the control plane, with its type, range and default. Each is read from
 * `AETHEX_<KEY>` with dots as underscores (`auth.access_ttl_s` → `AETHEX_AUTH_ACCESS_TTL_S`).
 * docs/control-plane.md lists them; a test keeps that table and this schema in step.
 */
export const CONTROL_PLANE_SETTINGS = {
  services: {
    type: 'string',
    default: 'auth,saves',
    pattern: /^(auth|saves)(,(auth|saves))*$/,
    patternDoc: 'a comma-separated list of auth, saves',
    doc: 'Services this process mounts. Development mounts all; a deployment runs one per process.',
  },
  'http.listen': { type: 'listen', default: '127.0.0.1:7400', doc: 'Address the HTTP server listens on.' },
  'http.trust_proxy': {
    type: 'string',
    default: '',
    doc: "Proxies in front of the control plane, as a comma-separated list of IP addresses and CIDR blocks: a request from one is taken to come from the client its X-Forwarded-For names (the right-most entry that is not a trusted proxy); rate limits and the audit log key on that address. Anyone else's X-Forwarded-For is ignored. Empty: the TCP peer. `true` (trust every hop) is refused: it would take the address a client writes itself.",
  },
  'http.body_limit_bytes': {
    type: 'int',
    default: 16_384,
    min: 1024,
    max: 1_048_576,
    doc: 'Largest request body for routes without their own limit (save uploads have theirs).',
  },
  'http.request_timeout_ms': { type: 'int', default: 30_000, min: 1000, max: 300_000, doc: 'Whole-request deadline.' },
  'http.keep_alive_timeout_ms': { type: 'int', default: 72_000, min: 1000, max: 600_000, doc: 'Idle keep-alive socket lifetime.' },
  'http.shutdown_grace_ms': {
    type: 'int',
    default: 10_000,
    min: 0,
    max: 120_000,
    doc: 'On SIGTERM, time given to requests in flight before the process exits.',
  },
  'log.level': {
    type: 'enum',
    default: 'info',
    values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    doc: 'Log level.',
  },
  'postgres.url': { type: 'string', default: '', secret: 'url', doc: 'PostgreSQL connection URL (required).' },
  'postgres.pool_size': { type: 'int', default: 10, min: 1, max: 200, doc: 'Connections in the pool.' },
  'postgres.schema': {
    type: 'string',
    default: 'public',
    pattern: /^[a-z_][a-z0-9_]{0,62}$/,
    patternDoc: 'a lower-case SQL identifier',
    doc: 'Schema holding the control plane tables (created if missing).',
  },
  'redis.url': { type: 'string', default: '', secret: 'url', doc: 'Redis URL (required): rate limits and session revocations.' },
  'redis.key_prefix': {
    type: 'string',
    default: 'aethex:',
    pattern: /^[A-Za-z0-9:_-]{0,64}$/,
    patternDoc: 'up to 64 of A-Z a-z 0-9 : _ -',
    doc: 'Prefix of every Redis key.',
  },
  's3.endpoint': {
    type: 'string',
    default: '',
    secret: 'url',
    doc: 'S3/MinIO endpoint URL, e.g. http://127.0.0.1:9000 (required for saves).',
  },
  's3.access_key': { type: 'string', default: '', secret: 'value', doc: 'S3 access key.' },
  's3.secret_key': { type: 'string', default: '', secret: 'value', doc: 'S3 secret key.' },
  's3.region': { type: 'string', default: 'us-east-1', doc: 'S3 region.' },
  's3.bucket': {
    type: 'string',
    default: 'aethex-saves',
    pattern: /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    patternDoc: 'an S3 bucket name (3–63 of a-z 0-9 . -)',
    doc: 'Bucket for save blobs; created with versioning on if missing.',
  },
  'auth.issuer': { type: 'string', default: 'aethex', doc: 'The `iss` of access tokens.' },
  'auth.audience': { type: 'string', default: 'aethex-api', doc: 'The `aud` of access tokens.' },
  'auth.signing_keys_file': {
    type: 'string',
    default: '',
    doc: 'JSON file `{ "keys": [private JWK, …] }` (EdDSA/Ed25519 or ES256/P-256, each with `kid`). The first signs; all verify and are published in the JWKS, so rotation is: prepend a new key, wait an access-token lifetime, drop the old one. Required when auth runs.',
  },
  'auth.jwks_url': {
    type: 'string',
    default: '',
    secret: 'url',
    doc: "Where a process without the signing keys (saves alone) fetches the public keys: the auth service's `/.well-known/jwks.json`.",
  },
  'auth.access_ttl_s': { type: 'int', default: 900, min: 60, max: 3600, doc: 'Access-token lifetime (15 minutes).' },
  'auth.refresh_ttl_s': {
    type: 'int',
    default: 2_592_000,
    min: 3600,
    max: 31_536_000,
    doc: 'Absolute lifetime of a refresh-token family (30 days): rotation never extends it.',
  },
  'auth.clock_tolerance_s': { type: 'int', default: 5, min: 0, max: 60, doc: 'Clock skew allowed when checking `exp`, `nbf` and `iat`.' },
  'auth.hash_concurrency': {
    type: 'int',
    default: 2,
    min: 1,
    max: 64,
    doc: 'Password hashes computed at once; more wait in a queue.',
  },
  'auth.hash_queue': {
    type: 'int',
    default: 64,
    min: 0,
    max: 10_000,
    doc: 'Password hashes that may wait; past it requests get 503 AUTH_BUSY with Retry-After.',
  },
  'auth.argon2_memory_kib': { type: 'int', default: 19_456, min: 19_456, max: 1_048_576, doc: 'argon2id memory cost m (KiB).' },
  'auth.argon2_iterations': { type: 'int', default: 2, min: 2, max: 20, doc: 'argon2id time cost t.' },
  'auth.login_window_s': { type: 'int', default: 900, min: 1, max: 86_400, doc: 'Window of the login budgets below.' },
  'auth.login_account_budget': {
    type: 'int',
    default: 20,
    min: 1,
    max: 10_000,
    doc: 'Login attempts per account per window that may reach the hasher. Once spent, only an address that has not yet tried this account gets one attempt, so the owner can still log in from a new address.',
  },
  'auth.login_pair_budget': { type: 'int', default: 5, min: 1, max: 1000, doc: 'Login attempts per account and address per window.' },
  'auth.login_address_budget': {
    type: 'int',
    default: 100,
    min: 1,
    max: 100_000,
    doc: 'Login attempts per address per window, over all accounts.',
  },
  'auth.signup_address_budget': {
    type: 'int',
    default: 20,
    min: 1,
    max: 100_000,
    doc: 'Registrations and guest logins per address per window (`auth.login_window_s`).',
  },
  'auth.refresh_address_budget': {
    type: 'int',
    default: 600,
    min: 1,
    max: 1_000_000,
    doc: 'Refreshes per address per minute.',
  },
  'saves.max_bytes': {
    type: 'int',
    default: 1_048_576,
    min: 1024,
    max: 67_108_864,
    doc: 'Largest save (uncompressed bytes); larger gets 413.',
  },
  'saves.quota_bytes': {
    type: 'int',
    default: 16_777_216,
    min: 1024,
    max: 10_737_418_240,
    doc: "A user's total of current saves (uncompressed bytes); a write past it gets 413.",
  },
  'saves.max_slots': { type: 'int', default: 64, min: 1, max: 10_000, doc: 'Slots per user.' },
  'saves.history_limit': {
    type: 'int',
    default: 20,
    min: 1,
    max: 1000,
    doc: 'Versions kept per slot; older ones are pruned as new ones are written.',
  },
} as const satisfies Parameters<typeof loadSettings>[0];

export type ControlPlaneConfig = Settings<typeof CONTROL_PLANE_SETTINGS> & { serviceList: ('auth' | 'saves')[] };

/**
 * Reads and validates the configuration once. Throws a ConfigError naming the variable when a value
 * is malformed or out of range, or when a service is mounted without the store it needs.
 */
export function loadConfig(env: Env): ControlPlaneConfig {
  // AETHEX_ begins every component's variables (and the test environment's): only those under
  // the control plane's sections are checked for misspellings.
  const s = loadSettings(CONTROL_PLANE_SETTINGS, { prefix: 'AETHEX', env, ownsPrefix: false });
  const serviceList = [...new Set(s.services.split(','))] as ('auth' | 'saves')[];
  const need = (key: keyof typeof CONTROL_PLANE_SETTINGS, why: string) => {
    if (s[key] === '') throw new ConfigError(`AETHEX_${key.replaceAll('.', '_').toUpperCase()}`, `required ${why}`);
  };
  need('postgres.url', 'by every service');
  need('redis.url', 'by every service (rate limits, session revocation)');
  if (serviceList.includes('auth')) need('auth.signing_keys_file', 'when the auth service runs');
  else if (s['auth.signing_keys_file'] === '' && s['auth.jwks_url'] === '') {
    throw new ConfigError('AETHEX_AUTH_JWKS_URL', 'required (or AETHEX_AUTH_SIGNING_KEYS_FILE) to verify access tokens');
  }
  // Trusting every hop takes the left-most X-Forwarded-For entry, which the client writes: the
  // rate limits keyed on the address would be the client's to choose.
  if (s['http.trust_proxy'] === 'true') {
    throw new ConfigError(
      'AETHEX_HTTP_TRUST_PROXY',
      "list the proxies' addresses or CIDR blocks (10.0.0.0/8): true would take the client address from what the client writes itself",
    );
  }
  try {
    TrustedProxies.parse(s['http.trust_proxy'] === 'false' ? '' : s['http.trust_proxy']);
  } catch (err) {
    throw new ConfigError('AETHEX_HTTP_TRUST_PROXY', (err as Error).message);
  }
  // A URL fetch cannot load (credentials in it) would fail every verification: refused now.
  const jwksProblem = s['auth.jwks_url'] === '' ? undefined : jwksUrlProblem(s['auth.jwks_url']);
  if (jwksProblem !== undefined) throw new ConfigError('AETHEX_AUTH_JWKS_URL', jwksProblem);
  if (serviceList.includes('saves')) {
    need('s3.endpoint', 'when the saves service runs');
    need('s3.access_key', 'when the saves service runs');
    need('s3.secret_key', 'when the saves service runs');
    if (!/^https?:\/\/[^/]+\/?$/.test(s['s3.endpoint'])) {
      throw new ConfigError(
        'AETHEX_S3_ENDPOINT',
        `expected http(s)://host[:port], got ${shownValue(CONTROL_PLANE_SETTINGS['s3.endpoint'], s['s3.endpoint'])}`,
      );
    }
  }
  return { ...s, serviceList };
}
