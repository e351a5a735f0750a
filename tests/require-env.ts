import { testEnv } from './env.js';

/** Vitest global setup for integration projects: fail the whole run at once when the test
 * environment is not configured, instead of letting each test fail (or worse, skip) on its own. */
export default function requireTestEnv(): void {
  testEnv();
}
