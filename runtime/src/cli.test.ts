import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { intFlag } from './cli.js';

it('intFlag accepts integers in range and names the flag otherwise', () => {
  expect(intFlag('count', '12', 1, 100)).toBe(12);
  for (const bad of ['0', '101', '1.5', 'x', '', ' ', undefined, '0x10', '0b11', '1e1', '0o7']) {
    expect(() => intFlag('count', bad, 1, 100)).toThrow(/^--count must be an integer from 1 to 100, got '/);
  }
});

// A real script process: parseCli exits it.
const SCRIPT = `
import { parseCli } from ${JSON.stringify(join(import.meta.dirname, 'cli.ts'))};
const cli = parseCli('demo', 'usage: demo [--n N] [--json]', { n: { type: 'string', default: '5' }, json: { type: 'boolean', default: false } });
const n = cli.int('n', 1, 10);
if (n === 7) cli.fail('seven is not allowed');
console.log(JSON.stringify({ n, json: cli.values.json }));
`;
function run(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', SCRIPT, '--', ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr.trim() };
}

it('parseCli: --help or -h, among other flags too, prints the usage on stdout and exits 0', () => {
  for (const args of [['--help'], ['-h'], ['--n', '3', '--help'], ['--n', '99', '-h']]) {
    expect(run(...args), args.join(' ')).toEqual({ status: 0, stdout: 'usage: demo [--n N] [--json]', stderr: '' });
  }
}, 30_000);

it('parseCli: good flags parse; every bad one is one line naming it, the usage, and exit 2', () => {
  expect(run('--n', '3', '--json')).toEqual({ status: 0, stdout: '{"n":3,"json":true}', stderr: '' });
  expect(run()).toEqual({ status: 0, stdout: '{"n":5,"json":false}', stderr: '' });
  for (const [args, message] of [
    [['--bogus'], "demo: Unknown option '--bogus'"],
    [['extra'], "demo: Unexpected argument 'extra'"],
    [['--n', '0'], "demo: --n must be an integer from 1 to 10, got '0'"],
    [['--n', '7'], 'demo: seven is not allowed'],
  ] as const) {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.startsWith(message)).toBe(true);
    expect(r.stderr.endsWith('usage: demo [--n N] [--json]')).toBe(true);
  }
}, 30_000);
