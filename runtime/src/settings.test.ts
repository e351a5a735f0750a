import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError } from './config.js';
import { envName, loadSettings, type SettingsSchema } from './settings.js';

const schema = {
  'engine.tick_rate_ms': { type: 'int', default: 25, min: 5, max: 1000, doc: '' },
  'engine.max_speed': { type: 'number', default: 5, min: 0.01, max: 1000, doc: '' },
  'engine.world_bounds': { type: 'rect', default: { minX: -10, minY: -10, maxX: 10, maxY: 10 }, doc: '' },
  'gateway.bind_addr': { type: 'listen', default: '127.0.0.1:7777', doc: '' },
  'gateway.compress': { type: 'bool', default: false, doc: '' },
  'log.level': { type: 'enum', default: 'info', values: ['info', 'debug'], doc: '' },
  'shard.name': { type: 'string', default: 'shard-0', pattern: /^[a-z0-9-]{1,63}$/, patternDoc: 'a DNS label', doc: '' },
} satisfies SettingsSchema;

function file(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'aethex-settings-')), 'config.yaml');
  writeFileSync(path, text);
  return path;
}

const load = (env: Record<string, string> = {}, f?: string) =>
  loadSettings(schema, { prefix: 'AETHEX_GAMESERVER', env, ...(f ? { file: f } : {}) });

describe('loadSettings', () => {
  test('defaults, then the file, then the environment', () => {
    expect(load()).toEqual({
      'engine.tick_rate_ms': 25,
      'engine.max_speed': 5,
      'engine.world_bounds': { minX: -10, minY: -10, maxX: 10, maxY: 10 },
      'gateway.bind_addr': { host: '127.0.0.1', port: 7777 },
      'gateway.compress': false,
      'log.level': 'info',
      'shard.name': 'shard-0',
    });
    const f = file('engine:\n  tick_rate_ms: 50\n  world_bounds: { min_x: 0, min_y: 0, max_x: 100, max_y: 50 }\nlog: { level: debug }\n');
    const s = load({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '20', AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '[::1]:0' }, f);
    expect(s['engine.tick_rate_ms']).toBe(20);
    expect(s['engine.world_bounds']).toEqual({ minX: 0, minY: 0, maxX: 100, maxY: 50 });
    expect(s['log.level']).toBe('debug');
    expect(s['gateway.bind_addr']).toEqual({ host: '::1', port: 0 });
    expect(load({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-5, -5, 5, 6' })['engine.world_bounds']).toEqual({
      minX: -5,
      minY: -5,
      maxX: 5,
      maxY: 6,
    });
  });

  test.each([
    [
      { AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '0' },
      /^engine\.tick_rate_ms: expected an integer from 5 to 1000, got "0" \(from AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS\)$/,
    ],
    [{ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '12.5' }, /engine\.tick_rate_ms: expected an integer/],
    [{ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: 'fast' }, /engine\.max_speed: expected a number from 0\.01 to 1000/],
    [{ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '10,0,-10,5' }, /engine\.world_bounds: expected min_x < max_x/],
    [{ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '1,2,3' }, /engine\.world_bounds: expected \{ min_x/],
    [{ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: 'localhost' }, /gateway\.bind_addr: expected host:port/],
    [{ AETHEX_GAMESERVER_GATEWAY_COMPRESS: 'yes' }, /gateway\.compress: expected true or false/],
    [{ AETHEX_GAMESERVER_LOG_LEVEL: 'loud' }, /log\.level: expected one of info, debug/],
    [{ AETHEX_GAMESERVER_SHARD_NAME: 'Bad_Name' }, /shard\.name: expected a DNS label/],
  ])('%j is refused naming the key, the range and the source', (env, message) => {
    expect(() => load(env)).toThrow(ConfigError);
    expect(() => load(env)).toThrow(message);
  });

  test('the file: unknown keys, wrong types, bad YAML and a missing file are refused', () => {
    expect(() => load({}, file('engine:\n  tick_rate: 50\n'))).toThrow('engine.tick_rate: unknown key');
    expect(() => load({}, file('engine:\n  max_speed: "x"\n'))).toThrow(/engine\.max_speed: expected a number .* \(from .*config\.yaml\)/);
    expect(() => load({}, file('engine: [1, 2]\n'))).toThrow('engine: expected a mapping of settings');
    expect(() => load({}, file('nonsense: 1\n'))).toThrow('nonsense: unknown key');
    expect(() => load({}, file('engine: {\n'))).toThrow(/not valid YAML/);
    expect(() => load({}, '/nonexistent/aethex.yaml')).toThrow(/cannot read the configuration file \(ENOENT\)/);
  });

  test('a variable with the prefix that names no setting is refused, with the nearest one', () => {
    expect(() => load({ AETHEX_GAMESERVER_ENGINE_TICK_RATE: '20' })).toThrow(
      /^AETHEX_GAMESERVER_ENGINE_TICK_RATE: not a setting \(did you mean AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS\?\)$/,
    );
    expect(() => load({ AETHEX_GAMESERVER_ENGNE_MAX_SPEED: '3' })).toThrow(/did you mean AETHEX_GAMESERVER_ENGINE_MAX_SPEED\?/);
    // Kubernetes' variables for a Service named aethex-gameserver, and other prefixes, are not ours.
    const links = {
      AETHEX_GAMESERVER_SERVICE_HOST: '10.0.0.1',
      AETHEX_GAMESERVER_SERVICE_PORT: '7700',
      AETHEX_GAMESERVER_SERVICE_PORT_WS: '7700',
      AETHEX_GAMESERVER_PORT: 'tcp://10.0.0.1:7700',
      AETHEX_GAMESERVER_PORT_7700_TCP: 'tcp://10.0.0.1:7700',
      AETHEX_GAMESERVER_PORT_7700_TCP_ADDR: '10.0.0.1',
      AETHEX_OPERATOR_LOG_LEVEL: 'debug',
      AETHEX_GAMESERVERS: '1',
    };
    expect(load(links)['engine.tick_rate_ms']).toBe(25);
  });

  test('with a prefix shared by other programs, only variables under its sections are checked', () => {
    const shared = (env: Record<string, string>) => loadSettings(schema, { prefix: 'AETHEX', env, ownsPrefix: false });
    expect(shared({ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '3', AETHEX_TEST_PG_URL: 'postgres://x' })['engine.max_speed']).toBe(5);
    expect(() => shared({ AETHEX_LOG_LEVELS: 'debug' })).toThrow(/^AETHEX_LOG_LEVELS: not a setting \(did you mean AETHEX_LOG_LEVEL\?\)$/);
  });

  test('envName maps dotted keys to variables', () => {
    expect(envName('AETHEX_GAMESERVER', 'gateway.max_message_size')).toBe('AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGE_SIZE');
  });
});
