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
  ['an empty max speed (the shard default)', spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: '' }]), undefined],
  ['a max speed that does not parse', spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_MAX_SPEED', value: '0x10' }]), undefined],
  ['bounds that do not parse', spec(far, [{ name: 'AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS', value: '0,0,1' }]), undefined],
])('%s', (_what, s, want) => {
  expect(specProblem(s)).toEqual(want);
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
