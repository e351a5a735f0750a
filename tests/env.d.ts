/**
 * Where the test environment's servers are, read from the variables `npm run test-env -- env`
 * prints. Integration tests import this instead of reading process.env themselves.
 */
export interface TestEnv {
  pgUrl: string;
  redisUrl: string;
  s3: {
    endpoint: string;
    accessKey: string;
    secretKey: string;
  };
  kubeconfig: string;
  helm: string;
  kubectl: string;
  logs: string;
}
/** Returns the environment, or throws naming every missing variable and how to get them. */
export declare function testEnv(env?: NodeJS.ProcessEnv): TestEnv;
/** A name unique to this test run, safe for schemas, buckets, namespaces and key prefixes. */
export declare function uniqueName(prefix: string): string;
//# sourceMappingURL=env.d.ts.map
