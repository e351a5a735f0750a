import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, envName } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { parse } from 'yaml';
import { configProblem, GAMESERVER_SETTINGS, loadConfig, redirectUrl, shardKey } from './config.js';

const pem = (k: { publicKey: { export(o: { type: 'spki'; format: 'pem' }): string | Buffer } }) =>
  k.publicKey.export({ type: 'spki', format: 'pem' }).toString();
const key = { AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: pem(generateKeyPairSync('ed25519')) };

/** The ConfigError loadConfig throws for `env` (and a YAML file), as the operator would read it. */
function refusal(env: Record<string, string>, yaml?: string): string {
  let file: string | undefined;
  if (yaml !== undefined) {
    file = join(mkdtempSync(join(tmpdir(), 'aethex-config-')), 'shard.yaml');
    writeFileSync(file, yaml);
  }
  try {
    loadConfig({ ...key, ...env }, file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

test('docs/gameserver.md lists every setting with its variable', () => {
  const doc = readFileSync(join(import.meta.dirname, '../../docs/gameserver.md'), 'utf8');
  for (const k of Object.keys(GAMESERVER_SETTINGS)) {
    // A row of its own (at the start of a line), not text pasted into another table's row.
    expect(doc).toContain(`\n| \`${k}\` | \`${envName('AETHEX_GAMESERVER', k)}\` |`);
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

test('settings that carry secrets are marked, and errors never print them', () => {
  const secrets = Object.entries(GAMESERVER_SETTINGS)
    .filter(([, spec]) => 'secret' in spec)
    .map(([k, spec]) => [k, (spec as { secret: string }).secret]);
  expect(Object.fromEntries(secrets)).toEqual({
    'auth.jwks_url': 'url',
    'handoff.redirect_url': 'url',
    'links.secret': 'value',
    'persistence.postgres_url': 'url',
    'presence.redis_url': 'url',
  });
  const url = 'postgress://aethex:Sup3rS3cretPassw0rd@db.internal:5432/aethex';
  expect(refusal({ AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: url })).toBe(
    'persistence.postgres_url: expected a postgres:// URL, or empty for snapshots in persistence.directory, got "postgress://aethex:***@db.internal:5432/aethex" (from AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL)',
  );
  expect(refusal({ AETHEX_GAMESERVER_PRESENCE_REDIS_URL: 'http://:hunter2@cache:6379' })).toMatch(
    /^presence\.redis_url: expected a redis:\/\/ URL, or empty for in-process presence, got "http:\/\/:\*\*\*@cache:6379"/,
  );
  const yaml = refusal({}, 'links:\n  secret: [0123456789abcdef0123456789abcdef]\n');
  expect(yaml).toMatch(/^links\.secret: expected a string, got a value not shown \(secret\) \(from .*shard\.yaml\)$/);
});

test('auth.jwks_url with credentials (user:password@), which fetch refuses to send, is refused naming the key and why', () => {
  const jwks = { AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: '' };
  const url = 'http://jwksuser:hunter2@127.0.0.1:30996/jwks.json?token=SEKRETTOKEN&access_token=SEKRET2&sig=SEKRET3&k=SEKRET4';
  const message = refusal({ ...jwks, AETHEX_GAMESERVER_AUTH_JWKS_URL: url });
  expect(message).toBe(
    'auth.jwks_url: carries credentials (user:password@), which fetch refuses to send, so the keys could never load: give the key server a token in the query instead (?token=…; every query value is masked in the logs), got "http://jwksuser:***@127.0.0.1:30996/jwks.json?token=***&access_token=***&sig=***&k=***"',
  );
  expect(message).not.toMatch(/hunter2|SEKRET/);
  expect(refusal({ ...jwks, AETHEX_GAMESERVER_AUTH_JWKS_URL: 'https://TOKEN@keys.example/jwks' })).toMatch(
    /^auth\.jwks_url: carries credentials/,
  );
  expect(refusal({ ...jwks, AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://keys example/jwks' })).toMatch(/^auth\.jwks_url: is not a URL/);
  // A token in the query is the way.
  expect(loadConfig({ AETHEX_GAMESERVER_AUTH_JWKS_URL: 'https://keys.example/jwks.json?token=SEKRETTOKEN' })['auth.jwks_url']).toBe(
    'https://keys.example/jwks.json?token=SEKRETTOKEN',
  );
});

test('gateway.client_address_header: X-Forwarded-For by default; Forwarded needs gateway.trusted_proxies; nothing else', () => {
  const forwarded = { AETHEX_GAMESERVER_GATEWAY_CLIENT_ADDRESS_HEADER: 'forwarded' };
  expect(loadConfig(key)['gateway.client_address_header']).toBe('x-forwarded-for');
  expect(
    loadConfig({ ...key, ...forwarded, AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '10.0.0.0/8' })['gateway.client_address_header'],
  ).toBe('forwarded');
  expect(refusal(forwarded)).toBe(
    "gateway.client_address_header: is forwarded, which needs gateway.trusted_proxies: the proxies that write it (anyone else's is not read)",
  );
  expect(refusal({ AETHEX_GAMESERVER_GATEWAY_CLIENT_ADDRESS_HEADER: 'x-real-ip' })).toMatch(
    /^gateway\.client_address_header: .*x-forwarded-for.*forwarded/,
  );
});

test('gateway.proxy_protocol: off by default; on, it needs gateway.trusted_proxies (whose connections carry the header)', () => {
  const on = { AETHEX_GAMESERVER_GATEWAY_PROXY_PROTOCOL: 'true' };
  expect(loadConfig(key)['gateway.proxy_protocol']).toBe(false);
  expect(loadConfig({ ...key, ...on, AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: '10.0.0.0/8' })['gateway.proxy_protocol']).toBe(true);
  expect(refusal(on)).toBe(
    'gateway.proxy_protocol: needs gateway.trusted_proxies: the load balancers whose connections carry the header (everyone else sends none)',
  );
  expect(refusal({ AETHEX_GAMESERVER_GATEWAY_PROXY_PROTOCOL: 'v2' })).toMatch(/^gateway\.proxy_protocol: /);
});

test('gateway.trusted_proxies: addresses and CIDR blocks, comma-separated; a bad entry is refused naming the key and the entry', () => {
  const proxies = (value: string) => ({ AETHEX_GAMESERVER_GATEWAY_TRUSTED_PROXIES: value });
  expect(loadConfig(key)['gateway.trusted_proxies']).toBe('');
  expect(loadConfig({ ...key, ...proxies(' 10.0.0.0/8, 192.168.1.7 ,fd00::/8, ::1 ') })['gateway.trusted_proxies']).toBe(
    '10.0.0.0/8, 192.168.1.7 ,fd00::/8, ::1',
  );
  const notAnAddress = 'is not an IP address or a CIDR block (10.0.0.0/8, fd00::/8)';
  expect(refusal(proxies('127.0.0.1, 10.0.0.300/8'))).toBe(`gateway.trusted_proxies: "10.0.0.300/8" (entry 2 of 2) ${notAnAddress}`);
  expect(refusal(proxies('ingress.example.com'))).toBe(`gateway.trusted_proxies: "ingress.example.com" ${notAnAddress}`);
  expect(refusal(proxies('10.0.0.0/33'))).toBe('gateway.trusted_proxies: "10.0.0.0/33" has a prefix length past 32');
  expect(refusal(proxies('fd00::/129'))).toBe('gateway.trusted_proxies: "fd00::/129" has a prefix length past 128');
  expect(refusal(proxies('10.0.0.0/'))).toBe('gateway.trusted_proxies: "10.0.0.0/" has no prefix length after the / (0 to 32)');
  expect(refusal(proxies('10.0.0.0/8,'))).toBe(
    'gateway.trusted_proxies: "" (entry 2 of 2) is empty: a comma-separated list of IP addresses and CIDR blocks',
  );
  // The same in the file: one string, as in the environment.
  expect(refusal({}, 'gateway:\n  trusted_proxies: "10.0.0.0/8; 10.1.0.0/16"\n')).toBe(
    `gateway.trusted_proxies: "10.0.0.0/8; 10.1.0.0/16" ${notAnAddress}`,
  );
  // The operator refuses a GameWorld whose template.env sets a bad one (configProblem).
  expect(configProblem({ ...key, ...proxies('10.0.0.300/8') })?.error.message).toBe(
    `gateway.trusted_proxies: "10.0.0.300/8" ${notAnAddress}`,
  );
});

test('bind addresses must be IP addresses or host names', () => {
  expect(refusal({ AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '999.999.999.999:47001' })).toBe(
    'gateway.bind_addr: expected host:port (an IP address or a host name, and a port from 0 to 65535): 999.999.999.999 is not an IPv4 address, got "999.999.999.999:47001" (from AETHEX_GAMESERVER_GATEWAY_BIND_ADDR)',
  );
  expect(refusal({ AETHEX_GAMESERVER_OPS_BIND_ADDR: '-.-:47002' })).toMatch(/^ops\.bind_addr: .*-\.- is not a host name/);
  expect(refusal({ AETHEX_GAMESERVER_OPS_BIND_ADDR: '[:::::]:47002' })).toMatch(/^ops\.bind_addr: .*\[:::::\] is not an IPv6 address/);
});

test('world bounds are four decimal numbers', () => {
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-1000,,1000,1000' })).toBe(
    'engine.world_bounds: expected "minX,minY,maxX,maxY" decimal numbers (part 2 is ""), got "-1000,,1000,1000" (from AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS)',
  );
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0x10,0,1e3,0b11' })).toMatch(/^engine\.world_bounds: .*\(part 1 is "0x10"\)/);
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '0x10' })).toMatch(
    /^engine\.max_entities: expected an integer from 1 to 1000000/,
  );
});

test('float32 positions far from 0 must still resolve a small fraction of a full-speed step', () => {
  // 80 moves near 3e7 left a player where it was: float32 values there are 2 apart.
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '30000000,30000000,30001000,30001000' })).toBe(
    'engine.world_bounds: too far from 0 for engine.max_speed (5): positions are float32, 2 apart at 30001000, and must be at most engine.max_speed / 100 (0.05) apart; keep the bounds inside ±524288 or raise engine.max_speed',
  );
  // Within 2^19 of 0, float32 values are at most 1/32 apart: a hundredth of a step of 5 or more.
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-524287,-10,524287,10' })['engine.max_speed']).toBe(5);
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-524288,-10,524288,10' })).toMatch(/^engine\.world_bounds: too far from 0/);
  // A slower world resolves finer steps only nearer to 0.
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_MAX_SPEED: '0.01', AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-2000,-2000,2000,2000' })).toMatch(
    /engine\.max_speed \(0\.01\): positions are float32, 0\.0001220703125 apart at 2000, .*inside ±1024 /,
  );
});

test('shard links: the timeout outlasts two heartbeats', () => {
  expect(refusal({ AETHEX_GAMESERVER_LINKS_HEARTBEAT_MS: '2000', AETHEX_GAMESERVER_LINKS_TIMEOUT_MS: '500' })).toBe(
    'links.timeout_ms: must be more than twice links.heartbeat_ms (2000), or one late heartbeat drops the link: above 4000',
  );
  expect(() => loadConfig({ ...key, AETHEX_GAMESERVER_LINKS_HEARTBEAT_MS: '500', AETHEX_GAMESERVER_LINKS_TIMEOUT_MS: '1000' })).toThrow(
    /^links\.timeout_ms: must be more than twice links\.heartbeat_ms \(500\)/,
  );
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_LINKS_HEARTBEAT_MS: '499' })['links.timeout_ms']).toBe(1000);
  // The shared secret: 32 characters at least.
  expect(refusal({ AETHEX_GAMESERVER_LINKS_SECRET: 's'.repeat(31) })).toBe('links.secret: must be at least 32 characters');
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_LINKS_SECRET: 's'.repeat(32) })['links.secret']).toBe('s'.repeat(32));
});

test('NPCs leave room for engine.max_players within engine.max_entities', () => {
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '10000' })).toBe(
    'engine.npc_count: 10000 NPCs and engine.max_players (2000) players need more than engine.max_entities (10000): at most 8000 NPCs',
  );
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '8001' })).toMatch(/^engine\.npc_count: .*at most 8000 NPCs$/);
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '8000' })['engine.npc_count']).toBe(8000);
  // Without NPCs every entity slot is a player's: a smaller capacity than max_players only lowers the cap.
  expect(
    loadConfig({ ...key, AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '3', AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '5' })['engine.max_entities'],
  ).toBe(3);
});

test('an offer lasts at most 240 ticks: the inputs a player makes meanwhile are all held, and caught up on after a rollback', () => {
  expect(refusal({ AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: '6001' })).toBe(
    "handoff.timeout_ms: must be at most 240 × engine.tick_rate_ms (25): a player's inputs are held for the whole offer and caught up on after a rollback; at most 6000",
  );
  expect(loadConfig({ ...key, AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: '6000' })['handoff.timeout_ms']).toBe(6000);
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '10', AETHEX_GAMESERVER_HANDOFF_TIMEOUT_MS: '2410' })).toMatch(
    /^handoff\.timeout_ms: must be at most 240 × engine\.tick_rate_ms \(10\)/,
  );
  // The default holds at every tick rate: 1 s at 5 ms is 200 ticks.
  const fastest = { AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '5', AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '400' };
  expect(loadConfig({ ...key, ...fastest })['handoff.timeout_ms']).toBe(1000);
});

test('the idle timeout outlasts the acknowledgements of a client standing still', () => {
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '1000', AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '1500' })).toBe(
    'gateway.idle_timeout_ms: must be more than 3 × engine.tick_rate_ms (1000): a client standing still acknowledges only about every 1.5 ticks; above 3000',
  );
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '1000', AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '3000' })).toMatch(
    /^gateway\.idle_timeout_ms: must be more than 3 × engine\.tick_rate_ms/,
  );
  expect(
    loadConfig({ ...key, AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '1000', AETHEX_GAMESERVER_GATEWAY_IDLE_TIMEOUT_MS: '3001' })[
      'gateway.idle_timeout_ms'
    ],
  ).toBe(3001);
});

test('the message rate leaves room for an input every tick', () => {
  // 6 ms ticks are 166.7 a second: the default 120 messages a second would kick a player for moving.
  expect(refusal({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '6' })).toBe(
    'gateway.max_messages_per_second: must be more than the tick rate (at least 167 at engine.tick_rate_ms 6): a moving player sends an input every tick',
  );
  expect(
    loadConfig({ ...key, AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '6', AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '167' })[
      'gateway.max_messages_per_second'
    ],
  ).toBe(167);
  expect(refusal({ AETHEX_GAMESERVER_GATEWAY_MAX_MESSAGES_PER_SECOND: '40' })).toMatch(/\(at least 41 at engine\.tick_rate_ms 25\)/);
  expect(loadConfig(key)['gateway.max_messages_per_second']).toBe(120);
});

test('auth.public_key must be an Ed25519 or P-256 SPKI PEM', () => {
  expect(refusal({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'pem' })).toMatch(/^auth\.public_key: not a PEM public key/);
  const rsa = pem(generateKeyPairSync('rsa', { modulusLength: 1024 }));
  expect(refusal({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: rsa })).toBe(
    'auth.public_key: the public key is not an Ed25519 or P-256 SPKI PEM (it is an rsa key)',
  );
  const p384 = pem(generateKeyPairSync('ec', { namedCurve: 'secp384r1' }));
  expect(refusal({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: p384 })).toBe(
    'auth.public_key: the public key is not an Ed25519 or P-256 SPKI PEM (it is an ec key on secp384r1)',
  );
  const p256 = pem(generateKeyPairSync('ec', { namedCurve: 'P-256' }));
  expect(loadConfig({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: p256 })['auth.public_key']).toBe(p256.trim());
  // A private key would give its public half to createPublicKey: refused, and not printed.
  const priv = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const m = refusal({ AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: priv });
  expect(m).toMatch(/^auth\.public_key: not a PEM public key/);
  expect(m).not.toContain(priv.split('\n')[1]);
});

test('the GameWorld CRD admits only values the shard accepts for the settings the operator makes of them', () => {
  type Field = { minimum: number; maximum: number; exclusiveMinimum?: boolean };
  const crd = parse(readFileSync(join(import.meta.dirname, '../../crds/gameworld.yaml'), 'utf8'));
  const spec = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties;
  const range = (key: keyof typeof GAMESERVER_SETTINGS) => GAMESERVER_SETTINGS[key] as { min: number; max: number };
  const within = (field: Field, key: keyof typeof GAMESERVER_SETTINGS, scale = 1) => {
    expect(field.exclusiveMinimum, key).toBeUndefined();
    expect(field.minimum * scale, key).toBeGreaterThanOrEqual(range(key).min);
    expect(field.maximum * scale, key).toBeLessThanOrEqual(range(key).max);
  };
  // As operator/src/reconcile/desired.ts (shardEnv) sets them.
  within(spec.world.properties.aoiRadius, 'engine.aoi_radius');
  within(spec.world.properties.maxSpeed, 'engine.max_speed');
  within(spec.capacity.properties.entitiesPerShard, 'engine.max_entities');
  within(spec.capacity.properties.playersPerShard, 'engine.max_players');
  within(spec.persistence.properties.snapshotIntervalSeconds, 'persistence.snapshot_interval_ms', 1000);
  const tickRate: Field = spec.world.properties.tickRate;
  expect(Math.max(5, Math.round(1000 / tickRate.maximum))).toBeGreaterThanOrEqual(range('engine.tick_rate_ms').min);
  expect(Math.round(1000 / tickRate.minimum)).toBeLessThanOrEqual(range('engine.tick_rate_ms').max);
});

test('handoff.redirect_url: a ws:// or wss:// URL with {name} and {address}, or empty', () => {
  for (const ok of ['', 'wss://{name}.play.example.com', 'ws://{address}', 'wss://play.example.com/shards/{name}?via=edge']) {
    expect(loadConfig({ ...key, AETHEX_GAMESERVER_HANDOFF_REDIRECT_URL: ok })['handoff.redirect_url']).toBe(ok);
  }
  expect(redirectUrl('', 'w-0-1', 'w-0-1.w-shards.ns.svc:7777')).toBe('ws://w-0-1.w-shards.ns.svc:7777');
  expect(redirectUrl('wss://{name}.play.example.com/{name}', 'w-0-1', 'x:1')).toBe('wss://w-0-1.play.example.com/w-0-1');
  const refused = (value: string) => refusal({ AETHEX_GAMESERVER_HANDOFF_REDIRECT_URL: value });
  expect(refused('https://{name}.example.com')).toBe(
    'handoff.redirect_url: must be a ws:// or wss:// URL, got "https://{name}.example.com"',
  );
  // No scheme://: nothing tells what of it may be secret (u:p@{name}…), so it is not shown.
  expect(refused('{name}.example.com')).toBe('handoff.redirect_url: must be a ws:// or wss:// URL, got a value not shown (secret)');
  expect(refused('wss://{shard}.example.com')).toBe(
    'handoff.redirect_url: {shard} is no placeholder of it (there are {name} and {address}), got "wss://{shard}.example.com"',
  );
  // Refused for its credentials, which the error does not print.
  expect(refused('wss://admin:s3cretPassw0rd@{name}.example.com')).toBe(
    'handoff.redirect_url: must not carry credentials, got "wss://admin:***@{name}.example.com"',
  );
  expect(refused('wss://{name}.example.com/#x')).toMatch(/must not have a #fragment/);
  expect(refused('wss://edge.example.com')).toBe(
    'handoff.redirect_url: must name the neighbour with {name} or {address}, got "wss://edge.example.com"',
  );
  expect(refused('ws://{address}/shard-link')).toMatch(/must not be the shard links' path/);
  // The check holds on every load (no regular expression state carried over).
  for (let i = 0; i < 3; i++) expect(refused('wss://edge.example.com')).toMatch(/must name the neighbour/);
});
