import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { type GameWorldSpec, withDefaults } from '../api/gameworld.js';
import { nameProblem, specProblem } from './spec-problem.js';

const spec = (world: Record<string, unknown>, env?: GameWorldSpec['template']['env']): GameWorldSpec =>
  withDefaults({ image: 'i', world, ...(env ? { template: { env } } : {}) });
const far = { bounds: { minX: -2_000_000, minY: -1000, maxX: 2_000_000, maxY: 1000 }, maxSpeed: 5 };
const huge = { bounds: { minX: -300_000_000, minY: -2000, maxX: 300_000_000, maxY: 2000 }, maxSpeed: 5000, aoiRadius: 100_000 };
const SCALE = 'AETHEX_GAMESERVER_ENGINE_POSITION_SCALE';

it('accepts the examples', () => {
  for (const f of ['examples/gameworld.yaml', 'examples/gameworld-arena.yaml']) {
    for (const doc of parseAllDocuments(readFileSync(join(import.meta.dirname, '../../..', f), 'utf8'))) {
      const o = doc.toJS();
      if (o?.kind === 'GameWorld') expect(specProblem(withDefaults(o.spec)), f).toBeUndefined();
    }
  }
});

it.each<[string, GameWorldSpec, { field: string; message: string } | undefined]>([
  [
    'bounds too far for float32 at the max speed',
    spec(far),
    {
      field: 'spec.world.bounds',
      message:
        'too far from 0 for spec.world.maxSpeed (5): the shard keeps positions as float32, 0.125 apart at 2000000, and they must be at most max speed / 100 (0.05) apart; keep the bounds inside ±524288, or raise spec.world.maxSpeed to at least 12.5',
    },
  ],
  ['the same bounds at the max speed it names', spec({ ...far, maxSpeed: 12.5 }), undefined],
  [
    'bounds no max speed in range fits: no hint past the maximum',
    spec({ bounds: { minX: -2e9, minY: -1000, maxX: 2e9, maxY: 1000 }, maxSpeed: 5 }, [{ name: SCALE, value: '1' }]),
    {
      field: 'spec.world.bounds',
      message:
        'too far from 0 for spec.world.maxSpeed (5): the shard keeps positions as float32, 128 apart at 2000000000, and they must be at most max speed / 100 (0.05) apart; keep the bounds inside ±524288 (a max speed of 12800 would fit them, past its maximum, 10000)',
    },
  ],
  [
    'a grid no radius in range fits: make the bounds smaller',
    spec({ bounds: { minX: 0, minY: 0, maxX: 100_000_000, maxY: 100_000_000 }, maxSpeed: 10_000 }),
    {
      field: 'spec.world.aoiRadius',
      message:
        "too small for spec.world.bounds (100000000 × 100000000): the shard's area-of-interest grid, cells of 0.5 × the radius, would need 1000000000000 cells, at most 1048576; it would take a radius of 195312.5, past its maximum (100000): make the bounds smaller",
    },
  ],
  [
    'bounds past 2^31 − 1 quanta of the largest position scale',
    spec({ bounds: { minX: -3e11, minY: 0, maxX: 3e11, maxY: 1000 }, maxSpeed: 10_000 }, [{ name: SCALE, value: '100' }]),
    {
      field: 'spec.world.bounds',
      message:
        "too far from 0 for the shard's position quantum (engine.position_scale 100, from AETHEX_GAMESERVER_ENGINE_POSITION_SCALE in spec.template.env[0]): snapshots carry positions as int32 quanta, and 300000000000 is past 2^31 − 1 of them; keep the bounds inside ±214748364700 (no position scale up to its maximum, 100, fits them)",
    },
  ],
  [
    'bounds past 2^31 − 1 quanta of the default position scale',
    spec(huge),
    {
      field: 'spec.world.bounds',
      message:
        "too far from 0 for the shard's position quantum (engine.position_scale 0.125, the shard's default): snapshots carry positions as int32 quanta, and 300000000 is past 2^31 − 1 of them; keep the bounds inside ±268435455.875, or set AETHEX_GAMESERVER_ENGINE_POSITION_SCALE in spec.template.env to at least 0.139699",
    },
  ],
  ['the same bounds with the position scale it names in template.env', spec(huge, [{ name: SCALE, value: '0.139699' }]), undefined],
  [
    'a position scale in template.env still too small',
    spec(huge, [{ name: SCALE, value: '0.1' }]),
    {
      field: 'spec.world.bounds',
      message:
        "too far from 0 for the shard's position quantum (engine.position_scale 0.1, from AETHEX_GAMESERVER_ENGINE_POSITION_SCALE in spec.template.env[0]): snapshots carry positions as int32 quanta, and 300000000 is past 2^31 − 1 of them; keep the bounds inside ±214748364.7, or raise it to at least 0.139699",
    },
  ],
  [
    'a grid of too many cells for the area-of-interest radius',
    spec({ bounds: { minX: 0, minY: 0, maxX: 400_000, maxY: 400_000 } }),
    {
      field: 'spec.world.aoiRadius',
      message:
        "too small for spec.world.bounds (400000 × 400000): the shard's area-of-interest grid, cells of 0.5 × the radius, would need 16000000 cells, at most 1048576; raise it to at least 781.25",
    },
  ],
  [
    'the same grid at the radius it names',
    spec({ bounds: { minX: 0, minY: 0, maxX: 400_000, maxY: 400_000 }, aoiRadius: 781.25 }),
    undefined,
  ],
  [
    // As in the pod, the last entry of a variable wins, and that entry is the field named.
    'a radius overridden in template.env',
    spec({ bounds: { minX: 0, minY: 0, maxX: 400_000, maxY: 400_000 }, aoiRadius: 1000 }, [
      { name: 'AETHEX_GAMESERVER_ENGINE_AOI_RADIUS', value: '2000' },
      { name: 'AETHEX_GAMESERVER_ENGINE_AOI_RADIUS', value: '500' },
    ]),
    {
      field: 'spec.template.env[1].value',
      message:
        "too small for spec.world.bounds (400000 × 400000): the shard's area-of-interest grid, cells of 0.5 × the radius, would need 2560000 cells, at most 1048576; raise it to at least 781.25",
    },
  ],
  [
    'a max speed lowered in template.env',
    spec({ ...far, maxSpeed: 20 }, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: ' 2 ' }]),
    {
      field: 'spec.world.bounds',
      message:
        'too far from 0 for AETHEX_GAMESERVER_ENGINE_MAX_SPEED in spec.template.env[0] (2): the shard keeps positions as float32, 0.125 apart at 2000000, and they must be at most max speed / 100 (0.02) apart; keep the bounds inside ±262144, or raise AETHEX_GAMESERVER_ENGINE_MAX_SPEED in spec.template.env[0] to at least 12.5',
    },
  ],
  ['a max speed raised in template.env', spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: '20' }]), undefined],
  // What only the shard knows is the shard's to judge.
  [
    'a max speed from valueFrom',
    spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', valueFrom: { configMapKeyRef: {} } }]),
    undefined,
  ],
  ['a position scale from valueFrom', spec(huge, [{ name: SCALE, valueFrom: { configMapKeyRef: {} } }]), undefined],
  // In a sharded world the shard map's bounds (the spec's) replace an override, and are checked too.
  [
    'a sharded world whose bounds template.env overrides',
    withDefaults({
      image: 'i',
      world: far,
      sharding: { columns: 2, rows: 1 },
      template: { env: [{ name: 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS', value: '0,0,1000,1000' }] },
    }),
    {
      field: 'spec.world.bounds',
      message:
        'too far from 0 for spec.world.maxSpeed (5): the shard keeps positions as float32, 0.125 apart at 2000000, and they must be at most max speed / 100 (0.05) apart; keep the bounds inside ±524288, or raise spec.world.maxSpeed to at least 12.5',
    },
  ],
  // What the bounds rule leaves out, the shard's own check of the pod's settings judges.
  [
    'an empty max speed: the shard default, 5, too small for the bounds',
    spec({ ...far, maxSpeed: 20 }, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: '' }]),
    {
      field: 'spec.world.bounds',
      message:
        "the shard would refuse its settings at start (exit 2): engine.world_bounds: too far from 0 for engine.max_speed (5): positions are float32, 0.125 apart at 2000000, and must be at most engine.max_speed / 100 (0.05) apart; keep the bounds inside ±524288 or raise engine.max_speed (engine.max_speed: the shard's default (AETHEX_GAMESERVER_ENGINE_MAX_SPEED in spec.template.env is empty); engine.position_scale: the shard's default; engine.aoi_radius: spec.world.aoiRadius)",
    },
  ],
  [
    'a max speed that does not parse',
    spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: '0x10' }]),
    {
      field: 'spec.template.env[AETHEX_GAMESERVER_ENGINE_MAX_SPEED]',
      message:
        'the shard would refuse its settings at start (exit 2): engine.max_speed: expected a number from 0.001 to 10000, got "0x10" (from AETHEX_GAMESERVER_ENGINE_MAX_SPEED)',
    },
  ],
  [
    'bounds that do not parse',
    spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS', value: '0,0,1' }]),
    {
      field: 'spec.template.env[AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS]',
      message:
        'the shard would refuse its settings at start (exit 2): engine.world_bounds: expected { min_x, min_y, max_x, max_y } numbers (or "minX,minY,maxX,maxY" in the environment), got "0,0,1" (from AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS)',
    },
  ],
])('%s', (_what, s, want) => {
  expect(specProblem(s)).toEqual(want);
});

// The shard's own check (configProblem) over the env of a shard pod: the operator's settings, then
// template.env. Capacity 4000 entities, 500 players: room for 3500 NPCs.
const small = { entitiesPerShard: 4000, playersPerShard: 500 };
const shardSpec = (env: NonNullable<GameWorldSpec['template']['env']>, more: Record<string, unknown> = {}) =>
  withDefaults({
    image: 'i',
    world: { bounds: { minX: 0, minY: 0, maxX: 1000, maxY: 1000 } },
    capacity: small,
    template: { env },
    ...more,
  });
const REFUSED = 'the shard would refuse its settings at start (exit 2): ';
const GS = 'AETHEX_GAMESERVER_';
const jwks = { name: `${GS}AUTH_JWKS_URL`, value: 'https://tokens.example.org/jwks.json' };

it.each<[string, GameWorldSpec, { field: string; message: string } | undefined]>([
  [
    'more NPCs in template.env than the capacity leaves room for',
    shardSpec([{ name: `${GS}ENGINE_NPC_COUNT`, value: '5000' }]),
    {
      field: `spec.template.env[${GS}ENGINE_NPC_COUNT]`,
      message: `${REFUSED}engine.npc_count: 5000 NPCs and engine.max_players (500) players need more than engine.max_entities (4000): at most 3500 NPCs (engine.max_entities: spec.capacity.entitiesPerShard; engine.max_players: spec.capacity.playersPerShard)`,
    },
  ],
  ['as many NPCs as the capacity leaves room for', shardSpec([{ name: `${GS}ENGINE_NPC_COUNT`, value: '3500' }]), undefined],
  [
    // The setting the error names is the shard's default: the field is the entry that broke the rule.
    'a player cap in template.env that leaves no room for the NPCs',
    shardSpec([
      { name: `${GS}ENGINE_NPC_COUNT`, value: '200' },
      { name: `${GS}ENGINE_MAX_PLAYERS`, value: '3900' },
    ]),
    {
      field: `spec.template.env[${GS}ENGINE_NPC_COUNT]`,
      message: `${REFUSED}engine.npc_count: 200 NPCs and engine.max_players (3900) players need more than engine.max_entities (4000): at most 100 NPCs (engine.max_entities: spec.capacity.entitiesPerShard; engine.max_players: ${GS}ENGINE_MAX_PLAYERS in spec.template.env)`,
    },
  ],
  [
    'a tick that is not an integer',
    shardSpec([{ name: `${GS}ENGINE_TICK_RATE_MS`, value: 'abc' }]),
    {
      field: `spec.template.env[${GS}ENGINE_TICK_RATE_MS]`,
      message: `${REFUSED}engine.tick_rate_ms: expected an integer from 5 to 1000, got "abc" (from ${GS}ENGINE_TICK_RATE_MS)`,
    },
  ],
  [
    'a fraction where the shard takes an integer',
    shardSpec([{ name: `${GS}ENGINE_NPC_COUNT`, value: '2.5' }]),
    {
      field: `spec.template.env[${GS}ENGINE_NPC_COUNT]`,
      message: `${REFUSED}engine.npc_count: expected an integer from 0 to 1000000, got "2.5" (from ${GS}ENGINE_NPC_COUNT)`,
    },
  ],
  [
    // The shard refuses a variable of its prefix that names no setting (a misspelt one).
    'an unknown AETHEX_GAMESERVER_ variable',
    shardSpec([{ name: `${GS}ENGINE_NPC_COUNTS`, value: '10' }]),
    {
      field: `spec.template.env[${GS}ENGINE_NPC_COUNTS]`,
      message: `${REFUSED}${GS}ENGINE_NPC_COUNTS: not a setting (did you mean ${GS}ENGINE_NPC_COUNT?)`,
    },
  ],
  [
    'an unknown variable from valueFrom: its name is known',
    shardSpec([{ name: `${GS}PERSISTENCE_POSTGRES_URI`, valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }]),
    {
      field: `spec.template.env[${GS}PERSISTENCE_POSTGRES_URI]`,
      message: `${REFUSED}${GS}PERSISTENCE_POSTGRES_URI: not a setting (did you mean ${GS}PERSISTENCE_POSTGRES_URL?)`,
    },
  ],
  [
    'a value the kubelet expands ($(NAME)) is left to the shard, as one from valueFrom',
    shardSpec([
      { name: 'NPCS', value: '100' },
      { name: `${GS}ENGINE_NPC_COUNT`, value: '$(NPCS)' },
      { name: `${GS}LINKS_SECRET`, value: '$(LINK_SECRET_FROM_A_SECRET)' },
    ]),
    undefined,
  ],
  [
    'an escaped $$( is a literal: judged',
    shardSpec([{ name: `${GS}ENGINE_NPC_COUNT`, value: '$$(NPCS)' }]),
    {
      field: `spec.template.env[${GS}ENGINE_NPC_COUNT]`,
      message: `${REFUSED}engine.npc_count: expected an integer from 0 to 1000000, got "$(NPCS)" (from ${GS}ENGINE_NPC_COUNT)`,
    },
  ],
  ['other variables are not the shard’s', shardSpec([{ name: 'NODE_OPTIONS', value: '--max-old-space-size=512' }]), undefined],
  [
    'a setting the operator makes, overridden in template.env',
    shardSpec([{ name: `${GS}GATEWAY_BIND_ADDR`, value: 'everywhere' }]),
    {
      field: `spec.template.env[${GS}GATEWAY_BIND_ADDR]`,
      message: `${REFUSED}gateway.bind_addr: expected host:port (an IP address or a host name, and a port from 0 to 65535), got "everywhere" (from ${GS}GATEWAY_BIND_ADDR)`,
    },
  ],
  [
    'a rule against a setting the operator makes from the spec',
    shardSpec([{ name: `${GS}RPC_MAX_MS_PER_TICK`, value: '30' }]),
    {
      field: `spec.template.env[${GS}RPC_MAX_MS_PER_TICK]`,
      message: `${REFUSED}rpc.max_ms_per_tick: must be at most engine.tick_rate_ms (25): the handlers run inside the tick (engine.tick_rate_ms: spec.world.tickRate)`,
    },
  ],
  [
    'a rule against a setting template.env does not give: its default',
    shardSpec([{ name: `${GS}GATEWAY_SLOW_DROP_TICKS`, value: '5' }]),
    {
      field: `spec.template.env[${GS}GATEWAY_SLOW_DROP_TICKS]`,
      message: `${REFUSED}gateway.slow_drop_ticks: must be greater than gateway.slow_skip_ticks (8) (gateway.slow_skip_ticks: the shard's default)`,
    },
  ],
  [
    'a link secret too short, not shown',
    shardSpec([{ name: `${GS}LINKS_SECRET`, value: 'hunter2' }]),
    { field: `spec.template.env[${GS}LINKS_SECRET]`, message: `${REFUSED}links.secret: must be at least 32 characters` },
  ],
  [
    'a database URL of another scheme, its password masked',
    shardSpec([{ name: `${GS}PERSISTENCE_POSTGRES_URL`, value: 'mysql://aethex:hunter2@db/aethex' }]),
    {
      field: `spec.template.env[${GS}PERSISTENCE_POSTGRES_URL]`,
      message: `${REFUSED}persistence.postgres_url: expected a postgres:// URL, or empty for snapshots in persistence.directory, got "mysql://aethex:***@db/aethex" (from ${GS}PERSISTENCE_POSTGRES_URL)`,
    },
  ],
  [
    'both a public key and a JWK set',
    shardSpec([{ name: `${GS}AUTH_PUBLIC_KEY`, valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }, jwks]),
    undefined,
  ],
  [
    'both a public key and a JWK set, each given',
    shardSpec([{ name: `${GS}AUTH_PUBLIC_KEY`, value: 'not a key' }, jwks]),
    {
      field: `spec.template.env[${GS}AUTH_PUBLIC_KEY]`,
      message: `${REFUSED}auth.public_key: set either auth.public_key or auth.jwks_url, not both (auth.jwks_url: ${GS}AUTH_JWKS_URL in spec.template.env)`,
    },
  ],
  // What the operator cannot know is the shard's to judge.
  [
    'a setting from valueFrom',
    shardSpec([{ name: `${GS}ENGINE_NPC_COUNT`, valueFrom: { configMapKeyRef: { name: 'c', key: 'npcs' } } }]),
    undefined,
  ],
  [
    'a rule that reads a setting from valueFrom',
    shardSpec([
      { name: `${GS}PRESENCE_REDIS_URL`, valueFrom: { secretKeyRef: { name: 's', key: 'redis' } } },
      { name: `${GS}PRESENCE_TTL_MS`, value: '3000' },
    ]),
    undefined,
  ],
  [
    'the same rule with every setting given',
    shardSpec([
      { name: `${GS}PRESENCE_REDIS_URL`, value: 'redis://redis:6379' },
      { name: `${GS}PRESENCE_TTL_MS`, value: '3000' },
    ]),
    {
      field: `spec.template.env[${GS}PRESENCE_REDIS_URL]`,
      message: `${REFUSED}presence.redis_command_timeout_ms: must be below a third of presence.ttl_ms (3000) (presence.redis_command_timeout_ms: the shard's default; presence.ttl_ms: ${GS}PRESENCE_TTL_MS in spec.template.env)`,
    },
  ],
  // A shard needs a join-token key, which the image (or the local runtime) may give.
  ['no join-token key in the pod', shardSpec([]), undefined],
  [
    'a valid world',
    shardSpec(
      [
        jwks,
        { name: `${GS}ENGINE_NPC_COUNT`, value: '100' },
        { name: `${GS}PERSISTENCE_POSTGRES_URL`, valueFrom: { secretKeyRef: { name: 's', key: 'postgres' } } },
        { name: `${GS}GATEWAY_SLOW_DROP_TICKS`, value: ' 300 ' },
        { name: `${GS}OPS_VIEWER`, value: 'false' },
      ],
      { sharding: { columns: 2, rows: 2 }, instances: 3 },
    ),
    undefined,
  ],
])('%s', (_what, s, want) => {
  expect(specProblem(s)).toEqual(want);
});

it('names the world’s own settings by what the pod gets: its namespace, name and pods’ names', () => {
  const s = shardSpec([]);
  expect(specProblem(s, { name: 'forest', namespace: 'games' })).toBeUndefined();
  // A namespace no shard takes (the API server allows none such: the check is the shard's).
  expect(specProblem(s, { name: 'forest', namespace: 'Games' })).toEqual({
    field: 'metadata.namespace',
    message: `${REFUSED}shard.namespace: expected a DNS label, or empty outside Kubernetes, got "Games" (from ${GS}SHARD_NAMESPACE)`,
  });
});

it('keeps the message bounded whatever the spec holds', () => {
  const long = 'x'.repeat(20_000);
  for (const env of [[{ name: `${GS}ENGINE_TICK_RATE_MS`, value: long }], [{ name: `${GS}${long}`, value: '1' }]]) {
    const p = specProblem(shardSpec(env));
    expect(p?.message).toMatch(/^the shard would refuse its settings at start \(exit 2\): .*…$/);
    expect(`${p?.field}: ${p?.message}`.length).toBeLessThanOrEqual(1000);
  }
});

it('imports from the shard only its settings: no sockets, stores or other packages', async () => {
  // The operator runs the shard's configuration check (gameserver/src/config.ts, the package's
  // `./config` export): what that module pulls in at run time comes into the operator too.
  const { build } = await import('esbuild');
  const out = await build({
    absWorkingDir: join(import.meta.dirname, '../../..'),
    entryPoints: ['gameserver/src/config.ts'],
    bundle: true,
    write: false,
    metafile: true,
    platform: 'node',
    format: 'esm',
    conditions: ['aethex-source'],
    packages: 'external',
    logLevel: 'silent',
  });
  const imports = Object.values(out.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
  expect(new Set(imports)).toEqual(new Set(['@aethex/runtime']));
  expect(Object.keys(out.metafile.inputs).sort()).toEqual(
    ['config.ts', 'persist/outbox.ts', 'persist/pg-client.ts'].map((f) => `gameserver/src/${f}`),
  );
});

it('holds a world stored under a name its Service and pods cannot have (the CRD checks names on create only)', () => {
  expect(nameProblem('forest')).toBeUndefined();
  expect(nameProblem(`w${'x'.repeat(55)}`)).toBeUndefined();
  for (const name of ['my.world', '1world', `w${'x'.repeat(56)}`]) {
    expect(nameProblem(name)).toEqual({
      field: 'metadata.name',
      message: expect.stringMatching(
        /must be at most 56 characters of lower-case letters, digits and '-', starting with a letter.*recreate the world/,
      ),
    });
  }
});
