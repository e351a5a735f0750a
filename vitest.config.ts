import { defaultClientConditions, defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// Workspaces resolve each other's source through the `aethex-source` export condition, so tests
// never need a build first.
const resolve = { conditions: ['aethex-source', ...defaultClientConditions] };
const ssr = { resolve: { conditions: ['aethex-source', ...defaultServerConditions], externalConditions: ['aethex-source'] } };

const workspaces = ['proto', 'runtime', 'gameserver', 'operator', 'control-plane', 'sdk'];

export default defineConfig({
  test: {
    globalSetup: ['./tests/scratch.ts'],
    // One test file at a time: the integration tests measure timing (snapshot gaps, convergence
    // after chaos) on a 2-core machine, and the long fault tests would otherwise starve them.
    maxWorkers: 1,
    projects: [
      // Unit tests live next to the code and need no server (the soak's pure checks too: the soak
      // itself, `npm run soak`, is a script, not a test).
      ...workspaces.map((ws) => ({
        resolve,
        ssr,
        test: { name: `${ws}:unit`, root: ws, include: ['src/**/*.test.{ts,js}', 'soak/**/*.test.ts'] },
      })),
      // Integration tests run against the real servers of `npm run test-env -- up`.
      ...workspaces.map((ws) => ({
        resolve,
        ssr,
        test: {
          name: `${ws}:integration`,
          root: ws,
          include: ['test/**/*.test.ts'],
          globalSetup: ['../tests/require-env.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      })),
      {
        resolve,
        ssr,
        test: {
          name: 'smoke:integration',
          root: 'tests',
          include: ['smoke/**/*.test.ts'],
          globalSetup: ['./require-env.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
