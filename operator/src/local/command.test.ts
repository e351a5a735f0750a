import { ConfigError } from '@aethex/runtime';
import { expect, it } from 'vitest';
import { commandFor, DEFAULT_COMMAND, parseCommandSetting, splitCommand } from './command.js';
import { parseEnvSetting, shardProcessEnv } from './env.js';

const node = '/usr/local/bin/node';

it('runs the gameserver from source by default, with this operator’s node', () => {
  const map = parseCommandSetting(DEFAULT_COMMAND);
  expect(commandFor(map, 'ghcr.io/aethex/gameserver:0.1.0', node)).toEqual({
    argv: [node, '--no-parallel-scavenge', '--conditions=aethex-source', '--import', 'tsx', 'gameserver/src/main.ts'],
    known: true,
  });
  expect(parseCommandSetting('').fallback).toEqual(splitCommand(DEFAULT_COMMAND));
});

it('maps images to commands from a JSON object; an unknown image falls back (and says so)', () => {
  const map = parseCommandSetting(
    JSON.stringify({
      'ghcr.io/aethex/gameserver:0.1.0': 'node gameserver/dist/main.js',
      'my/game:dev': ['./bin/my game', '--fast'],
    }),
  );
  expect(commandFor(map, 'ghcr.io/aethex/gameserver:0.1.0', node)).toEqual({ argv: [node, 'gameserver/dist/main.js'], known: true });
  expect(commandFor(map, 'my/game:dev', node)).toEqual({ argv: ['./bin/my game', '--fast'], known: true });
  expect(commandFor(map, 'other:1', node)).toEqual({ argv: [node, ...splitCommand(DEFAULT_COMMAND).slice(1)], known: false });
  expect(commandFor(parseCommandSetting('["node", "my game.js"]'), 'x', node)).toEqual({ argv: [node, 'my game.js'], known: true });
  const withStar = parseCommandSetting('{"a:1": "node a.js", "*": "node b.js --x"}');
  expect(commandFor(withStar, 'z:9', node)).toEqual({ argv: [node, 'b.js', '--x'], known: false });
});

it('refuses a bad local.command naming the setting', () => {
  expect(() => parseCommandSetting('{"a": ')).toThrow(/^local\.command: not valid JSON/);
  expect(() => parseCommandSetting('[]')).toThrow(/^local\.command: command: expected a command line/);
  expect(() => parseCommandSetting('[1, 2]')).toThrow(/^local\.command: command: expected a command line/);
  expect(() => parseCommandSetting('{"a:1": ""}')).toThrow(/^local\.command: image "a:1": expected a command line/);
  expect(() => parseCommandSetting('{"a:1": [1]}')).toThrow(/expected a command line or a non-empty array of strings/);
  expect(() => parseCommandSetting('{"": "x"}')).toThrow(/an image name is empty/);
});

it('reads local.env as a JSON object and refuses anything else', () => {
  expect(parseEnvSetting('')).toEqual({});
  expect(parseEnvSetting('{"AETHEX_GAMESERVER_ENGINE_NPC_COUNT": 20, "X": "y", "B": true}')).toEqual({
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '20',
    X: 'y',
    B: 'true',
  });
  expect(() => parseEnvSetting('A=1')).toThrow(/^local\.env: not valid JSON/);
  expect(() => parseEnvSetting('{"1A": "x"}')).toThrow(/"1A" is not a variable name/);
  expect(() => parseEnvSetting('{"A": {"b": 1}}')).toThrow(/A: expected a string, number or boolean/);
  // local.env may carry a shard's secrets: no error quotes it (JSON.parse's own message would).
  const secret = 'ThisIsTheLinksSecretOfTheWorld1234';
  for (const text of [`{"AETHEX_GAMESERVER_LINKS_SECRET": ${secret}}`, `{"X": {"password": "${secret}"}}`]) {
    expect(() => parseEnvSetting(text)).toThrow(ConfigError);
    expect(() => parseEnvSetting(text)).not.toThrow(secret);
  }
  expect(() => parseEnvSetting('{"A": "x",}')).toThrow(/^local\.env: not valid JSON \(at position 10\)$/);
});

it('builds a shard’s environment: pod env, auth pass-through, local.env, then the local addresses and no namespace', () => {
  const base = {
    podEnv: [
      { name: 'AETHEX_GAMESERVER_SHARD_NAMESPACE', value: 'local' },
      { name: 'AETHEX_GAMESERVER_SHARD_NAME', value: 'w-0-1' },
      { name: 'AETHEX_GAMESERVER_GATEWAY_BIND_ADDR', value: '0.0.0.0:7777' },
      { name: 'AETHEX_GAMESERVER_AUTH_JWKS_URL', value: 'http://control-plane.svc/jwks' },
      { name: 'FROM_SECRET', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } },
    ],
    gatewayPort: 7702,
    opsPort: 7703,
    persistenceDirectory: '/d/w/w-0-1/snapshots',
    shardDirectory: '/d/w/w-0-1',
    devPublicKey: () => 'DEV',
  };
  const { env, skipped, devKey } = shardProcessEnv({
    ...base,
    parentEnv: {
      PATH: '/bin',
      AETHEX_OPERATOR_LOCAL_FILE: 'x.yaml',
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '999',
      AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'PEM',
      AETHEX_GAMESERVER_AUTH_JWKS_URL: '',
    },
    extraEnv: {
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '7',
      AETHEX_GAMESERVER_OPS_BIND_ADDR: '0.0.0.0:1',
      AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '50',
    },
  });
  expect(env).toMatchObject({
    // Every client of a local shard is on 127.0.0.1: no per-address limits unless local.env sets one.
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '50',
    AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '100000',
    PATH: '/bin',
    AETHEX_GAMESERVER_SHARD_NAME: 'w-0-1',
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'PEM',
    AETHEX_GAMESERVER_AUTH_JWKS_URL: '',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '7',
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:7702',
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:7703',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: '/d/w/w-0-1/snapshots',
    AETHEX_LOCAL_SHARD_DIR: '/d/w/w-0-1',
    // Local join tokens (the bots') carry no namespace.
    AETHEX_GAMESERVER_SHARD_NAMESPACE: '',
  });
  expect(env.AETHEX_OPERATOR_LOCAL_FILE).toBeUndefined();
  expect(skipped).toEqual(['FROM_SECRET']);
  expect(devKey).toBe(false);

  // Nothing gives a key: the development key's public half.
  const dev = shardProcessEnv({ ...base, podEnv: [], parentEnv: { PATH: '/bin' }, extraEnv: {} });
  expect(dev.devKey).toBe(true);
  expect(dev.env.AETHEX_GAMESERVER_AUTH_PUBLIC_KEY).toBe('DEV');
  expect(dev.env.AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS).toBe('200000');
  // A JWKS URL in the template is a key too.
  const jwks = shardProcessEnv({ ...base, parentEnv: {}, extraEnv: {} });
  expect(jwks.devKey).toBe(false);
  expect(jwks.env.AETHEX_GAMESERVER_AUTH_JWKS_URL).toBe('http://control-plane.svc/jwks');
});
