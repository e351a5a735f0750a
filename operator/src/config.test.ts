import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envName } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { loadConfig, loadConfigWithArgs, OPERATOR_SETTINGS } from './config.js';

test('docs/operator.md lists every setting with its variable', () => {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/operator.md'), 'utf8');
  for (const k of Object.keys(OPERATOR_SETTINGS)) expect(doc).toContain(`| \`${envName('AETHEX_OPERATOR', k)}\` |`);
});

test('refuses a bad value naming the variable', () => {
  expect(() => loadConfig({ AETHEX_OPERATOR_WORKERS: '0' })).toThrow(
    /workers: expected an integer from 1 to 64, got "0" \(from AETHEX_OPERATOR_WORKERS\)/,
  );
  expect(() => loadConfig({ AETHEX_OPERATOR_RUNTIME: 'docker' })).toThrow(/runtime: expected one of kubernetes, local/);
  expect(loadConfig({}).workers).toBe(4);
  // The cleanup never waits less than a shard's grace period: it would clean under a draining shard.
  expect(() => loadConfig({ AETHEX_OPERATOR_CLEANUP_SHARD_WAIT_S: '10' })).toThrow(
    /cleanup\.shard_wait_s: expected an integer from 30 to 86400, got "10"/,
  );
  expect(loadConfig({})['cleanup.shard_wait_s']).toBe(120);
});

test('the command line: --runtime and -f override the environment; bad flags are refused naming them', () => {
  const local = loadConfigWithArgs(['--runtime', 'local', '-f', 'examples/gameworld.yaml'], { AETHEX_OPERATOR_RUNTIME: 'kubernetes' });
  expect(local.runtime).toBe('local');
  expect(local['local.file']).toBe('examples/gameworld.yaml');
  expect(local['local.base_port']).toBe(7700);
  expect(local['local.directory']).toBe('.aethex/local');
  expect(loadConfigWithArgs(['--file=w.yaml'], { AETHEX_OPERATOR_RUNTIME: 'local' })['local.file']).toBe('w.yaml');
  expect(loadConfigWithArgs([], { AETHEX_OPERATOR_RUNTIME: 'local', AETHEX_OPERATOR_LOCAL_FILE: 'x.yaml' })['local.file']).toBe('x.yaml');
  expect(loadConfigWithArgs([], {}).runtime).toBe('kubernetes');
  expect(() => loadConfigWithArgs(['--bogus'], {})).toThrow(/^arguments: Unknown option '--bogus'/);
  expect(() => loadConfigWithArgs(['stray'], {})).toThrow(/^arguments: .*stray/);
  expect(() => loadConfigWithArgs(['--runtime', 'docker'], {})).toThrow('--runtime: expected one of kubernetes, local, got "docker"');
  expect(() => loadConfigWithArgs(['--runtime', 'local'], {})).toThrow(/^local\.file: the local runtime needs a GameWorld file/);
  expect(() => loadConfigWithArgs(['-f', 'w.yaml'], {})).toThrow(/^--file: a GameWorld file is read only by the local runtime/);
  expect(() => loadConfigWithArgs(['--runtime', 'local', '-f', 'w.yaml'], { AETHEX_OPERATOR_LOCAL_BASE_PORT: '80' })).toThrow(
    /local\.base_port: expected an integer from 1024 to 65534, got "80" \(from AETHEX_OPERATOR_LOCAL_BASE_PORT\)/,
  );
});

test('settings that carry secrets are marked', () => {
  const marked = Object.fromEntries(
    Object.entries(OPERATOR_SETTINGS)
      .filter(([, spec]) => 'secret' in spec)
      .map(([k, spec]) => [k, (spec as { secret: string }).secret]),
  );
  // local.env passes variables to shards: links.secret or a database URL among them.
  expect(marked).toEqual({ 'cleanup.postgres_url': 'url', 'cleanup.redis_url': 'url', 'local.env': 'value' });
});
