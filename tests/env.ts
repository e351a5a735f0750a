/**
 * Where the test environment's servers are, read from the variables `npm run test-env -- env`
 * prints. Integration tests import this instead of reading process.env themselves.
 */
export interface TestEnv {
  pgUrl: string;
  redisUrl: string;
  s3: { endpoint: string; accessKey: string; secretKey: string };
  kubeconfig: string;
  helm: string;
  kubectl: string;
  logs: string;
  chromium: string;
  /** HAProxy, a layer-4 load balancer that sends the PROXY protocol (tests start their own). */
  haproxy: string;
  /** The MinIO server binary, for tests that run (and kill) a private MinIO. */
  minioBin: string;
}

const REQUIRED = [
  'AETHEX_TEST_PG_URL',
  'AETHEX_TEST_REDIS_URL',
  'AETHEX_TEST_S3_ENDPOINT',
  'AETHEX_TEST_S3_ACCESS_KEY',
  'AETHEX_TEST_S3_SECRET_KEY',
  'AETHEX_TEST_KUBECONFIG',
  'AETHEX_TEST_HELM',
  'AETHEX_TEST_KUBECTL',
  'AETHEX_TEST_LOGS',
  'AETHEX_TEST_CHROMIUM',
  'AETHEX_TEST_HAPROXY',
  'AETHEX_TEST_MINIO_BIN',
] as const;

/** Returns the environment, or throws naming every missing variable and how to get them. */
export function testEnv(env: NodeJS.ProcessEnv = process.env): TestEnv {
  const missing = REQUIRED.filter((k) => !env[k]);
  if (missing.length > 0) {
    throw new Error(
      `integration tests need the test environment (missing ${missing.join(', ')}); run \`npm test\`, ` +
        'or `npm run test-env -- up` and then `eval "$(npm run -s test-env -- env)"`',
    );
  }
  const get = (k: (typeof REQUIRED)[number]) => env[k] as string;
  return {
    pgUrl: get('AETHEX_TEST_PG_URL'),
    redisUrl: get('AETHEX_TEST_REDIS_URL'),
    s3: {
      endpoint: get('AETHEX_TEST_S3_ENDPOINT'),
      accessKey: get('AETHEX_TEST_S3_ACCESS_KEY'),
      secretKey: get('AETHEX_TEST_S3_SECRET_KEY'),
    },
    kubeconfig: get('AETHEX_TEST_KUBECONFIG'),
    helm: get('AETHEX_TEST_HELM'),
    kubectl: get('AETHEX_TEST_KUBECTL'),
    logs: get('AETHEX_TEST_LOGS'),
    chromium: get('AETHEX_TEST_CHROMIUM'),
    haproxy: get('AETHEX_TEST_HAPROXY'),
    minioBin: get('AETHEX_TEST_MINIO_BIN'),
  };
}

/** A name unique to this test run, safe for schemas, buckets, namespaces and key prefixes. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${Math.floor(Math.random() * 1e6).toString(36)}`;
}
