import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError } from './config.js';
import { envName, listenFailure, loadSettings, redactUrl, redactUrlsIn, type SettingsSchema } from './settings.js';

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
    [
      { AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '1001' },
      /^engine\.tick_rate_ms: expected an integer from 5 to 1000, got "1001" \(from AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS\)$/,
    ],
    [
      { AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '1000.5' },
      /^engine\.max_speed: expected a number from 0\.01 to 1000, got "1000\.5" \(from AETHEX_GAMESERVER_ENGINE_MAX_SPEED\)$/,
    ],
    [{ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '12.5' }, /engine\.tick_rate_ms: expected an integer/],
    [{ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: 'fast' }, /engine\.max_speed: expected a number from 0\.01 to 1000/],
    [{ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '10,0,-10,5' }, /engine\.world_bounds: expected min_x < max_x/],
    [{ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,0,5' }, /engine\.world_bounds: expected min_x < max_x/],
    [{ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '1,2,3' }, /engine\.world_bounds: expected \{ min_x/],
    [{ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: 'localhost' }, /gateway\.bind_addr: expected host:port/],
    [{ AETHEX_GAMESERVER_GATEWAY_COMPRESS: 'yes' }, /gateway\.compress: expected true or false/],
    [{ AETHEX_GAMESERVER_LOG_LEVEL: 'loud' }, /log\.level: expected one of info, debug/],
    [{ AETHEX_GAMESERVER_SHARD_NAME: 'Bad_Name' }, /shard\.name: expected a DNS label/],
  ])('%j is refused naming the key, the range and the source', (env, message) => {
    expect(() => load(env)).toThrow(ConfigError);
    expect(() => load(env)).toThrow(message);
  });

  test('the file: unknown keys, wrong types, values out of range, bad YAML and a missing file are refused', () => {
    expect(() => load({}, file('engine:\n  tick_rate: 50\n'))).toThrow('engine.tick_rate: unknown key');
    expect(() => load({}, file('engine:\n  max_speed: "x"\n'))).toThrow(/engine\.max_speed: expected a number .* \(from .*config\.yaml\)/);
    expect(() => load({}, file('engine:\n  tick_rate_ms: 5000\n'))).toThrow(
      /^engine\.tick_rate_ms: expected an integer from 5 to 1000, got "5000" \(from .*config\.yaml\)$/,
    );
    expect(() => load({}, file('engine: [1, 2]\n'))).toThrow('engine: expected a mapping of settings');
    expect(() => load({}, file('nonsense: 1\n'))).toThrow('nonsense: unknown key');
    expect(() => load({}, file('engine: {\n'))).toThrow(/not valid YAML/);
    expect(() => load({}, '/nonexistent/aethex.yaml')).toThrow(/cannot read the configuration file \(ENOENT\)/);
  });

  test.each([
    ['engine:\n  tick_rate_ms: 0x10\n', 'engine.tick_rate_ms: expected an integer from 5 to 1000, got "0x10"'],
    ['engine:\n  tick_rate_ms: 0o20\n', 'engine.tick_rate_ms: expected an integer from 5 to 1000, got "0o20"'],
    ['engine:\n  tick_rate_ms: 0b11\n', 'engine.tick_rate_ms: expected an integer from 5 to 1000, got "0b11"'],
    ['engine:\n  tick_rate_ms: !!int 0o20\n', 'engine.tick_rate_ms: expected an integer from 5 to 1000, got "0o20"'],
    ['engine:\n  tick_rate_ms: 1_000\n', 'engine.tick_rate_ms: expected an integer from 5 to 1000, got "1_000"'],
    ['engine:\n  max_speed: .inf\n', 'engine.max_speed: expected a number from 0.01 to 1000, got ".inf"'],
    ['engine:\n  max_speed: .nan\n', 'engine.max_speed: expected a number from 0.01 to 1000, got ".nan"'],
    ['gateway:\n  compress: True\n', 'gateway.compress: expected true or false, got "True"'],
    ['gateway:\n  compress: yes\n', 'gateway.compress: expected true or false, got "yes"'],
    [
      'engine:\n  world_bounds: { min_x: 0x10, min_y: 0, max_x: 100, max_y: 50 }\n',
      'engine.world_bounds: expected { min_x, min_y, max_x, max_y } decimal numbers (min_x is "0x10"), got {"min_x":"0x10","min_y":"0","max_x":"100","max_y":"50"}',
    ],
  ])('the file %j is read as the environment reads it: refused', (text, message) => {
    expect(() => load({}, file(text))).toThrow(`${message} (from `);
  });

  test('the file: decimal numbers, true and false, and strings as written are read', () => {
    const s = load(
      {},
      file(
        'engine:\n  tick_rate_ms: 1e2\n  max_speed: "+2.50"\n  world_bounds: { min_x: -1.5, min_y: 0, max_x: 1e2, max_y: "50" }\ngateway:\n  compress: true\nshard:\n  name: 123\n',
      ),
    );
    expect(s).toMatchObject({
      'engine.tick_rate_ms': 100,
      'engine.max_speed': 2.5,
      'engine.world_bounds': { minX: -1.5, minY: 0, maxX: 100, maxY: 50 },
      'gateway.compress': true,
      'shard.name': '123',
    });
    // An alias stands for its value, and a section for its mapping; a setting is no alias of a mapping.
    expect(load({}, file('engine:\n  tick_rate_ms: &t 30\n  max_speed: *t\n'))).toMatchObject({
      'engine.tick_rate_ms': 30,
      'engine.max_speed': 30,
    });
    expect(() => load({}, file('engine: &e { tick_rate_ms: 30 }\ngateway: *e\n'))).toThrow(/^gateway\.tick_rate_ms: unknown key$/);
    expect(() => load({}, file('gateway: &g { compress: true }\nengine:\n  world_bounds: *g\n'))).toThrow(
      /^engine\.world_bounds: an alias \(\*name\) of a mapping or a list is not supported here$/,
    );
  });

  test('the file: __proto__ and other keys of no setting are refused; a dotted key is refused, naming it', () => {
    expect(() => load({}, file('__proto__: { tick_rate_ms: 7 }\n'))).toThrow(/^__proto__: unknown key$/);
    expect(() => load({}, file('engine:\n  __proto__: { tick_rate_ms: 7 }\n'))).toThrow(/^engine\.__proto__: unknown key$/);
    expect(() => load({}, file('constructor: 1\n'))).toThrow(/^constructor: unknown key$/);
    expect(() => load({}, file('engine:\n  toString: 1\n'))).toThrow(/^engine\.toString: unknown key$/);
    expect(() => load({}, file('nonsense: { a: 1 }\n'))).toThrow(/^nonsense: unknown key$/);
    const dotted = 'engine.tick_rate_ms: a key with a dot: the file nests keys by their dots (engine: { tick_rate_ms: … })';
    expect(() => load({}, file('engine.tick_rate_ms: 30\n'))).toThrow(dotted);
    expect(() => load({}, file('engine.tick_rate_ms: 30\nengine:\n  tick_rate_ms: 40\n'))).toThrow(dotted);
    expect(() => load({}, file('engine:\n  tick_rate_ms: 40\nengine.tick_rate_ms: 30\n'))).toThrow(dotted);
    expect(() => load({}, file('engine:\n  tick_rate_ms: 30\n  tick_rate_ms: 40\n'))).toThrow(/not valid YAML: Map keys must be unique/);
    expect(() => load({}, file('engine:\n  ? [a]\n  : 1\n'))).toThrow(/^engine: a key must be a name, got \["a"\]$/);
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

  test('Kubernetes service variables are let through by their shape and their value together', () => {
    // A Service named aethex-gameserver-ops: its variables look like settings of an ops section.
    const links = {
      AETHEX_GAMESERVER_OPS_SERVICE_HOST: 'fd00::2',
      AETHEX_GAMESERVER_OPS_SERVICE_PORT: '7350',
      AETHEX_GAMESERVER_OPS_SERVICE_PORT_HTTP_METRICS: '7350',
      AETHEX_GAMESERVER_OPS_PORT: 'tcp://[fd00::2]:7350',
      AETHEX_GAMESERVER_OPS_PORT_7350_TCP: 'tcp://[fd00::2]:7350',
      AETHEX_GAMESERVER_OPS_PORT_7350_TCP_PROTO: 'tcp',
      AETHEX_GAMESERVER_OPS_PORT_7350_TCP_PORT: '7350',
      AETHEX_GAMESERVER_OPS_PORT_7350_TCP_ADDR: 'fd00::2',
      AETHEX_GAMESERVER_OPS_PORT_7351_UDP: 'udp://[fd00::2]:7351',
      AETHEX_GAMESERVER_OPS_PORT_7352_SCTP_PROTO: 'sctp',
      // Kubelets before net.JoinHostPort wrote an IPv6 address bare.
      AETHEX_GAMESERVER_LEGACY_PORT: 'tcp://fd00::3:80',
    };
    expect(load(links)['engine.tick_rate_ms']).toBe(25);
  });

  test.each([
    ['AETHEX_GAMESERVER_GATEWAY_PORT', '1'],
    ['AETHEX_GAMESERVER_OPS_PORT', '7350'],
    ['AETHEX_GAMESERVER_ENGINE_MAX_SPEED_PORT', '1'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP', '1'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP', 'tcp://10.0.0.1:81'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP', 'udp://10.0.0.1:80'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP_PROTO', 'udp'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP_PORT', '81'],
    ['AETHEX_GAMESERVER_ENGINE_PORT_80_TCP_ADDR', 'db.internal'],
    ['AETHEX_GAMESERVER_GATEWAY_SERVICE_HOST', 'shard.example'],
    ['AETHEX_GAMESERVER_GATEWAY_SERVICE_PORT', 'http'],
    ['AETHEX_GAMESERVER_GATEWAY_SERVICE_PORT_WS', '70000'],
    ['AETHEX_GAMESERVER_GATEWAY_PORT', 'http://10.0.0.1:7777'],
    ['AETHEX_GAMESERVER_GATEWAY_PORT', 'tcp://shard.example:7777'],
  ])('%s=%s only ends like a Kubernetes service variable: not a setting, with the nearest', (name, value) => {
    expect(() => load({ [name]: value })).toThrow(new RegExp(`^${name}: not a setting \\(did you mean AETHEX_GAMESERVER_[A-Z_]+\\?\\)$`));
  });

  test('an empty or blank variable is unset: it leaves the default, or the file’s value; an empty value in the file is refused', () => {
    const f = file('engine:\n  tick_rate_ms: 50\ngateway:\n  bind_addr: 0.0.0.0:1\n');
    for (const blank of ['', ' ', '\t \n']) {
      expect(load({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: blank, AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: blank }, f)).toMatchObject({
        'engine.tick_rate_ms': 50,
        'gateway.bind_addr': { host: '0.0.0.0', port: 1 },
      });
      expect(load({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: blank })['engine.tick_rate_ms']).toBe(25);
    }
    for (const [text, shown] of [
      ['engine:\n  tick_rate_ms:\n', 'null'],
      ['engine:\n  tick_rate_ms: ~\n', 'null'],
      ['engine:\n  tick_rate_ms: ""\n', '""'],
      ['engine:\n  tick_rate_ms: " "\n', '" "'],
    ] as const) {
      expect(() => load({}, file(text))).toThrow(`engine.tick_rate_ms: expected an integer from 5 to 1000, got ${shown} (from `);
    }
    expect(() => load({}, file('gateway:\n  bind_addr: ""\n'))).toThrow(/^gateway\.bind_addr: expected host:port/);
    expect(() => load({}, file('gateway:\n  compress:\n'))).toThrow(/^gateway\.compress: expected true or false, got null/);
    expect(() => load({}, file('shard:\n  name:\n'))).toThrow(/^shard\.name: expected a string, got null/);
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

describe('values are read strictly and secrets never printed', () => {
  const strict = {
    'engine.max_entities': { type: 'int', default: 10, min: 0, max: 100_000, doc: '' },
    'engine.max_speed': { type: 'number', default: 5, min: 0, max: 1e6, doc: '' },
    'engine.world_bounds': { type: 'rect', default: { minX: -10, minY: -10, maxX: 10, maxY: 10 }, doc: '' },
    'gateway.bind_addr': { type: 'listen', default: '127.0.0.1:7777', doc: '' },
    'persistence.postgres_url': {
      type: 'string',
      default: '',
      pattern: /^(|postgres(ql)?:\/\/.+)$/,
      patternDoc: 'a postgres:// URL',
      secret: 'url',
      doc: '',
    },
    'links.secret': { type: 'string', default: '', pattern: /^.{0,64}$/, patternDoc: 'at most 64 characters', secret: 'value', doc: '' },
  } satisfies SettingsSchema;
  const read = (env: Record<string, string>, f?: string) =>
    loadSettings(strict, { prefix: 'AETHEX_GAMESERVER', env, ...(f ? { file: f } : {}) });
  const message = (env: Record<string, string>, f?: string): string => {
    try {
      read(env, f);
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return (err as Error).message;
    }
    throw new Error('expected a ConfigError');
  };

  test('a URL setting marked secret is printed with its password masked, a secret value never', () => {
    const url = 'postgress://aethex:Sup3rS3cretPassw0rd@db.internal:5432/aethex?sslmode=require&password=Other';
    expect(message({ AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: url })).toBe(
      'persistence.postgres_url: expected a postgres:// URL, got "postgress://aethex:***@db.internal:5432/aethex?sslmode=***&password=***" (from AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL)',
    );
    // Not a URL at all: nothing of it can be shown safely.
    expect(message({ AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: 'aethex:Sup3r@db' })).toBe(
      'persistence.postgres_url: expected a postgres:// URL, got a value not shown (secret) (from AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL)',
    );
    expect(message({ AETHEX_GAMESERVER_LINKS_SECRET: 'S'.repeat(65) })).toBe(
      'links.secret: expected at most 64 characters, got a value not shown (secret) (from AETHEX_GAMESERVER_LINKS_SECRET)',
    );
    const yaml = file('links:\n  secret: [1234567890123]\npersistence:\n  postgres_url: postgres://u:pw@h/d\n');
    expect(message({}, yaml)).toMatch(/^links\.secret: expected a string, got a value not shown \(secret\) \(from .*config\.yaml\)$/);
    expect(message({}, yaml)).not.toContain('1234567890123');
  });

  test('redactUrl masks the password of the userinfo, the value of every query parameter and the fragment', () => {
    expect(redactUrl('redis://:hunter2@cache:6379/0')).toBe('redis://:***@cache:6379/0');
    expect(redactUrl('redis://cache:6379')).toBe('redis://cache:6379');
    // Userinfo without a password may be a token alone: masked whole.
    expect(redactUrl('postgres://user@db/x?sslmode=require')).toBe('postgres://***@db/x?sslmode=***');
    expect(redactUrl('https://ghp_T0KEN@cp.example/jwks')).toBe('https://***@cp.example/jwks');
    expect(redactUrl('https://u:p@cp.example/jwks?token=abc&x=1')).toBe('https://u:***@cp.example/jwks?token=***&x=***');
    expect(redactUrl('db:5432')).toBeUndefined();
    // Unescaped separators in a password: masked whole all the same.
    expect(redactUrl('postgres://u:pa/ss@host/db')).toBe('postgres://u:***@host/db');
    expect(redactUrl('postgres://u:p?s#s@host/db?sslmode=require')).toBe('postgres://u:***@host/db?sslmode=***');
  });

  test('a signed URL: the values of all its query parameters are masked, whatever their names', () => {
    const url =
      'https://keys.example/jwks.json?token=SEKRETTOKEN&access_token=SEKRET2&sig=SEKRET3&k=SEKRET4&X-Amz-Signature=SEKRET5&bare&empty=#frag=SEKRET6';
    const shown = redactUrl(url) as string;
    expect(shown).toBe('https://keys.example/jwks.json?token=***&access_token=***&sig=***&k=***&X-Amz-Signature=***&***&empty=#***');
    expect(shown).not.toMatch(/SEKRET/);
  });

  test('redactUrlsIn masks a URL quoted inside an error message, and the secrets of the URL wherever else they appear', () => {
    const url = 'http://jwksuser:hunter2@127.0.0.1:30996/jwks.json?token=SEKRETTOKEN&access_token=SEKRET2&sig=SEKRET3&k=SEKRET4';
    // What fetch throws for it (undici quotes the URL it refuses).
    const fetchMessage = `Request cannot be constructed from a URL that includes credentials: ${new URL(url).href}`;
    expect(redactUrlsIn(fetchMessage, url)).toBe(
      'Request cannot be constructed from a URL that includes credentials: http://jwksuser:***@127.0.0.1:30996/jwks.json?token=***&access_token=***&sig=***&k=***',
    );
    // Quoted in parentheses and followed by punctuation: the punctuation is not taken for the URL's.
    expect(redactUrlsIn(`failed (${url}).`)).toBe(
      'failed (http://jwksuser:***@127.0.0.1:30996/jwks.json?token=***&access_token=***&sig=***&k=***).',
    );
    // Its secrets alone, as written or decoded, outside any URL.
    expect(
      redactUrlsIn('password hunter2 refused; token SEKRETTOKEN; p@ss w0rd', 'postgres://u:p%40ss%20w0rd@db/x?t=SEKRETTOKEN&x=1'),
    ).toBe('password hunter2 refused; token ***; ***');
    expect(redactUrlsIn('nothing to hide here', url)).toBe('nothing to hide here');
    // A secret of 4 characters is masked wherever it appears; shorter ones are not (every `1` would be).
    expect(redactUrlsIn('password abcd refused', 'postgres://u:abcd@db/x')).toBe('password *** refused');
    expect(redactUrlsIn('password abc refused', 'postgres://u:abc@db/x')).toBe('password abc refused');
  });

  test.each([
    ['0x10', 'int'],
    ['0b11', 'int'],
    ['0o7', 'int'],
    ['1_000', 'int'],
    ['Infinity', 'int'],
    ['12abc', 'int'],
  ])('%s is not a decimal number (%s)', (raw) => {
    expect(message({ AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: raw })).toBe(
      `engine.max_entities: expected an integer from 0 to 100000, got ${JSON.stringify(raw)} (from AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES)`,
    );
  });

  test('decimal numbers, with a sign, a fraction or an exponent, are read; from YAML a string must be one too', () => {
    expect(read({ AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '1e3', AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '.5' })).toMatchObject({
      'engine.max_entities': 1000,
      'engine.max_speed': 0.5,
    });
    expect(read({ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '+2.50' })['engine.max_speed']).toBe(2.5);
    expect(message({ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '0x1f' })).toMatch(
      /^engine\.max_speed: expected a number from 0 to 1000000, got "0x1f"/,
    );
    expect(message({}, file('engine:\n  max_speed: " 0x1f"\n'))).toMatch(
      /^engine\.max_speed: expected a number from 0 to 1000000, got " 0x1f"/,
    );
    expect(message({}, file('engine:\n  max_speed: ""\n'))).toMatch(/^engine\.max_speed: expected a number/);
  });

  test.each([
    ['-1000,,1000,1000', 'part 2 is ""'],
    ['0x10,0,1e3,0b11', 'part 1 is "0x10"'],
    ['1,2,3,0b11', 'part 4 is "0b11"'],
    [' ,1,2,3', 'part 1 is ""'],
  ])('world bounds %j: each part must be a decimal number (%s)', (raw, part) => {
    expect(message({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: raw })).toBe(
      `engine.world_bounds: expected "minX,minY,maxX,maxY" decimal numbers (${part}), got ${JSON.stringify(raw.trim())} (from AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS)`,
    );
  });

  test.each([
    ['999.999.999.999:47001', '999.999.999.999 is not an IPv4 address'],
    ['1.2.3:80', '1.2.3 is not an IPv4 address'],
    ['-.-:47001', '-.- is not a host name (RFC 1123 labels of letters, digits and inner hyphens)'],
    ['a..b:80', 'a..b is not a host name (RFC 1123 labels of letters, digits and inner hyphens)'],
    [`${'x'.repeat(64)}.example:80`, `${'x'.repeat(64)}.example is not a host name (RFC 1123 labels of letters, digits and inner hyphens)`],
    ['[:::::]:47001', '[:::::] is not an IPv6 address'],
    ['[1.2.3.4]:80', '[1.2.3.4] is not an IPv6 address'],
    ['127.0.0.1:65536', 'the port 65536 is past 65535'],
  ])('listen address %j is refused: %s', (raw, why) => {
    expect(message({ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: raw })).toBe(
      `gateway.bind_addr: expected host:port (an IP address or a host name, and a port from 0 to 65535): ${why}, got ${JSON.stringify(raw)} (from AETHEX_GAMESERVER_GATEWAY_BIND_ADDR)`,
    );
  });

  test('IP addresses and host names listen', () => {
    const at = (v: string) => read({ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: v })['gateway.bind_addr'];
    expect(at('0.0.0.0:80')).toEqual({ host: '0.0.0.0', port: 80 });
    expect(at('[::]:0')).toEqual({ host: '::', port: 0 });
    expect(at('[::ffff:127.0.0.1]:7')).toEqual({ host: '::ffff:127.0.0.1', port: 7 });
    expect(at('localhost:7777')).toEqual({ host: 'localhost', port: 7777 });
    expect(at('shard-0.aethex.svc.cluster.local:7700')).toEqual({ host: 'shard-0.aethex.svc.cluster.local', port: 7700 });
    expect(at('1host.example:1')).toEqual({ host: '1host.example', port: 1 });
  });
});

describe('listenFailure', () => {
  /** What listening on `host:port` throws, as Node reports it. */
  async function listenError(host: string, port: number): Promise<NodeJS.ErrnoException> {
    const server = createServer();
    server.listen(port, host);
    const [err] = (await once(server, 'error')) as [NodeJS.ErrnoException];
    return err;
  }
  const listeners = { 'gateway.bind_addr': { host: '127.0.0.1', port: 0 }, 'ops.bind_addr': { host: '198.51.100.7', port: 7350 } };

  test('names the setting whose address failed, the address and why', async () => {
    // TEST-NET-2 (RFC 5737): an address, but none of this machine's.
    expect(listenFailure(await listenError('198.51.100.7', 7350), listeners)).toBe(
      'ops.bind_addr (198.51.100.7:7350): no interface of this machine has that address (EADDRNOTAVAIL)',
    );
    const taken = createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as { port: number }).port;
    try {
      expect(listenFailure(await listenError('127.0.0.1', port), { ...listeners, 'gateway.bind_addr': { host: '127.0.0.1', port } })).toBe(
        `gateway.bind_addr (127.0.0.1:${port}): the address is in use (EADDRINUSE)`,
      );
    } finally {
      taken.close();
    }
    expect(
      listenFailure(await listenError('nowhere.invalid', 0), { ...listeners, 'gateway.bind_addr': { host: 'nowhere.invalid', port: 0 } }),
    ).toBe('gateway.bind_addr (nowhere.invalid:0): the host name does not resolve (ENOTFOUND)');
  });

  test('is undefined for an error of no listener', async () => {
    expect(listenFailure(await listenError('203.0.113.9', 7350), listeners)).toBeUndefined();
    expect(listenFailure(new Error('boom'), listeners)).toBeUndefined();
  });
});
