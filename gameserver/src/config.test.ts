import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { envName } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { GAMESERVER_SETTINGS, loadConfig, shardKey } from './config.js';

const key = { AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'pem' };

test('docs/gameserver.md lists every setting with its variable', () => {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/gameserver.md'), 'utf8');
  for (const k of Object.keys(GAMESERVER_SETTINGS)) {
    expect(doc).toContain(`| \`${k}\` | \`${envName('AETHEX_GAMESERVER', k)}\` |`);
  }
});

test('cross-setting rules are enforced with the key named', () => {
  expect(() => loadConfig({})).toThrow(/auth\.public_key: set auth\.public_key or auth\.jwks_url/);
  expect(() => loadConfig({ ...key, AETHEX_GAMESERVER_AUTH_JWKS_URL: 'https://cp/jwks' })).toThrow(
    /either auth\.public_key or auth\.jwks_url/,
  );
  expect(() =>
    loadConfig({ ...key, AETHEX_GAMESERVER_GATEWAY_SLOW_SKIP_TICKS: '50', AETHEX_GAMESERVER_GATEWAY_SLOW_DROP_TICKS: '50' }),
  ).toThrow(/gateway\.slow_drop_ticks: must be greater than gateway\.slow_skip_ticks/);
  expect(() =>
    loadConfig({
      ...key,
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '1',
      AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-100000,-100000,100000,100000',
    }),
  ).toThrow(/engine\.aoi_radius: too small for the world bounds/);
  // Positions travel as int32 quanta: 300000 / 0.0001 would wrap.
  const far = {
    ...key,
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-300000,-300000,300000,300000',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '2000',
  };
  expect(() => loadConfig({ ...far, AETHEX_GAMESERVER_ENGINE_POSITION_SCALE: '0.0001' })).toThrow(
    /^engine\.position_scale: too small for the world bounds: 300000 \/ 0\.0001 quanta is past the 2\^31 snapshots hold \(at least 0\.00014\)$/,
  );
  expect(loadConfig({ ...far, AETHEX_GAMESERVER_ENGINE_POSITION_SCALE: '0.00014' })['engine.position_scale']).toBe(0.00014);
  // A heartbeat waiting on a hung Redis must not outlive the entries it keeps alive.
  const redis = { AETHEX_GAMESERVER_PRESENCE_REDIS_URL: 'redis://127.0.0.1:6379' };
  expect(() => loadConfig({ ...key, ...redis, AETHEX_GAMESERVER_PRESENCE_TTL_MS: '6000' })).toThrow(
    /^presence\.redis_command_timeout_ms: must be below a third of presence\.ttl_ms \(6000\)$/,
  );
  expect(
    loadConfig({
      ...key,
      ...redis,
      AETHEX_GAMESERVER_PRESENCE_TTL_MS: '6000',
      AETHEX_GAMESERVER_PRESENCE_REDIS_COMMAND_TIMEOUT_MS: '1900',
    })['presence.redis_command_timeout_ms'],
  ).toBe(1900);
  // Without Redis (presence in process) there is no command to time out.
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_PRESENCE_TTL_MS: '3000' })['presence.ttl_ms']).toBe(3000);
  expect(() => loadConfig({ ...key, AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: 'mysql://x' })).toThrow(
    /persistence\.postgres_url: expected a postgres/,
  );
  expect(loadConfig(key)['engine.tick_rate_ms']).toBe(25);
});

test('the namespace is empty outside Kubernetes, a DNS label under the operator, and part of the shard key', () => {
  expect(shardKey(loadConfig(key))).toEqual({ namespace: '', world: 'local', instance: 0, shard: 'local-0-0' });
  expect(shardKey(loadConfig({ ...key, AETHEX_GAMESERVER_SHARD_NAMESPACE: 'games-prod' })).namespace).toBe('games-prod');
  for (const bad of ['Games', 'a/b', '-x', 'x'.repeat(64)])
    expect(() => loadConfig({ ...key, AETHEX_GAMESERVER_SHARD_NAMESPACE: bad })).toThrow(
      /shard\.namespace: expected a DNS label, or empty outside Kubernetes/,
    );
});
