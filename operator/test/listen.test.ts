import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killProcesses, spawnSource } from '@aethex/testing/process';
import { afterEach, expect, it } from 'vitest';

const MAIN = join(import.meta.dirname, '../src/main.ts');
const EXAMPLE = join(import.meta.dirname, '../../examples/gameworld.yaml');

afterEach(killProcesses);

/** Runs the operator's main.ts to its exit; its exit code and output. */
async function runOperator(args: string[], env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const p = spawnSource(MAIN, args, { env });
  const { code } = await p.exit(30_000);
  return { code, output: p.output() };
}

// TEST-NET-2 (RFC 5737): an address, but none of this machine's.
const FOREIGN = { AETHEX_OPERATOR_HTTP_LISTEN: '198.51.100.7:0' };

it.each([
  ['kubernetes', [], { AETHEX_OPERATOR_LEADER_ENABLED: 'false' }],
  ['local', ['--runtime', 'local', '-f', EXAMPLE], {}],
])('an address the operator (%s runtime) cannot listen on stops it with exit 1, naming http.listen', async (_runtime, args, env) => {
  const directory = mkdtempSync(join(tmpdir(), 'aethex-operator-listen-'));
  const { code, output } = await runOperator(args, { ...FOREIGN, ...env, AETHEX_OPERATOR_LOCAL_DIRECTORY: directory });
  expect(code).toBe(1);
  expect(output).toContain(
    'operator: could not start: http.listen (198.51.100.7:0): no interface of this machine has that address (EADDRNOTAVAIL)',
  );
});

it('a malformed address is a configuration error: exit 2 naming it', async () => {
  const { code, output } = await runOperator([], { AETHEX_OPERATOR_HTTP_LISTEN: '999.999.999.999:8080' });
  expect(code).toBe(2);
  expect(output).toContain('operator: configuration error: http.listen: expected host:port');
  expect(output).toContain('999.999.999.999 is not an IPv4 address');
});
