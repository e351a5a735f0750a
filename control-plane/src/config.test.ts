import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envName } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { CONTROL_PLANE_SETTINGS, loadConfig } from './config.js';

const base = {
  AETHEX_POSTGRES_URL: 'postgres://u@h/db',
  AETHEX_REDIS_URL: 'redis://h:6379',
  AETHEX_S3_ENDPOINT: 'http://127.0.0.1:9000',
  AETHEX_S3_ACCESS_KEY: 'k',
  AETHEX_S3_SECRET_KEY: 's',
  AETHEX_AUTH_SIGNING_KEYS_FILE: '/keys.json',
};

test('docs/control-plane.md lists every setting with its variable', () => {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/control-plane.md'), 'utf8');
  for (const k of Object.keys(CONTROL_PLANE_SETTINGS)) expect(doc).toContain(`| \`${envName('AETHEX', k)}\` |`);
});

test('defaults are the issue’s: 15-minute access tokens, 30-day sessions, argon2id m=19 MiB t=2', () => {
  const c = loadConfig(base);
  expect(c['auth.access_ttl_s']).toBe(900);
  expect(c['auth.refresh_ttl_s']).toBe(30 * 24 * 3600);
  expect(c['auth.argon2_memory_kib']).toBe(19_456);
  expect(c['auth.argon2_iterations']).toBe(2);
  expect(c.serviceList).toEqual(['auth', 'saves']);
});

test.each([
  [{ AETHEX_POSTGRES_URL: '' }, /AETHEX_POSTGRES_URL: required/],
  [{ AETHEX_REDIS_URL: '' }, /AETHEX_REDIS_URL: required/],
  [{ AETHEX_AUTH_SIGNING_KEYS_FILE: '' }, /AETHEX_AUTH_SIGNING_KEYS_FILE: required when the auth service runs/],
  [{ AETHEX_SERVICES: 'saves', AETHEX_AUTH_SIGNING_KEYS_FILE: '' }, /AETHEX_AUTH_JWKS_URL: required/],
  [
    { AETHEX_SERVICES: 'saves', AETHEX_AUTH_SIGNING_KEYS_FILE: '', AETHEX_AUTH_JWKS_URL: 'http://user:pw@auth/.well-known/jwks.json' },
    /AETHEX_AUTH_JWKS_URL: carries credentials \(user:password@\), which fetch refuses to send/,
  ],
  [{ AETHEX_S3_ENDPOINT: '' }, /AETHEX_S3_ENDPOINT: required when the saves service runs/],
  [{ AETHEX_S3_ENDPOINT: 'minio:9000' }, /AETHEX_S3_ENDPOINT: expected http\(s\):\/\/host\[:port\]/],
  [{ AETHEX_SERVICES: 'auth,chat' }, /services: expected a comma-separated list of auth, saves.*AETHEX_SERVICES/],
  [
    { AETHEX_AUTH_ARGON2_MEMORY_KIB: '4096' },
    /auth\.argon2_memory_kib: expected an integer from 19456 to 1048576, got "4096" \(from AETHEX_AUTH_ARGON2_MEMORY_KIB\)/,
  ],
  [{ AETHEX_AUTH_ACCESS_TTL_S: 'soon' }, /AETHEX_AUTH_ACCESS_TTL_S/],
  [{ AETHEX_HTTP_LISTEN: 'nowhere' }, /http\.listen: expected host:port/],
  [{ AETHEX_POSTGRES_SCHEMA: 'Robert; DROP TABLE' }, /postgres\.schema: expected a lower-case SQL identifier/],
])('refuses %j naming the variable', (over, message) => {
  expect(() => loadConfig({ ...base, ...over })).toThrow(message);
});

test('a saves-only process verifies tokens through the JWKS URL', () => {
  const c = loadConfig({
    ...base,
    AETHEX_SERVICES: 'saves',
    AETHEX_AUTH_SIGNING_KEYS_FILE: '',
    AETHEX_AUTH_JWKS_URL: 'http://auth/.well-known/jwks.json',
  });
  expect(c.serviceList).toEqual(['saves']);
});

test('settings that carry secrets are marked, and errors never print them', () => {
  const marked = Object.fromEntries(
    Object.entries(CONTROL_PLANE_SETTINGS)
      .filter(([, spec]) => 'secret' in spec)
      .map(([k, spec]) => [k, (spec as { secret: string }).secret]),
  );
  expect(marked).toEqual({
    'postgres.url': 'url',
    'redis.url': 'url',
    's3.endpoint': 'url',
    's3.access_key': 'value',
    's3.secret_key': 'value',
    'auth.jwks_url': 'url',
  });
  expect(() => loadConfig({ ...base, AETHEX_S3_ENDPOINT: 'http://minio:S3cr3tPassw0rd@minio:9000/bucket' })).toThrow(
    /^AETHEX_S3_ENDPOINT: expected http\(s\):\/\/host\[:port\], got "http:\/\/minio:\*\*\*@minio:9000\/bucket"$/,
  );
});
