import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envName } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { loadConfig, OPERATOR_SETTINGS } from './config.js';

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
});
