import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { parse } from 'yaml';
import { withDefaults } from '../api/gameworld.js';
import { localWorld, parseWorldFile } from './file.js';
import { CEL_RULES, type Schema, SPEC_SCHEMA, validateSpec } from './validate.js';

const root = join(import.meta.dirname, '../../..');
const crdSpec = () => {
  const crd = parse(readFileSync(join(root, 'crds/gameworld.yaml'), 'utf8'));
  const strip = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(strip)
      : v !== null && typeof v === 'object'
        ? Object.fromEntries(
            Object.entries(v)
              .filter(([k]) => k !== 'description')
              .map(([k, x]) => [k, strip(x)]),
          )
        : v;
  return strip(crd.spec.versions[0].schema.openAPIV3Schema.properties.spec);
};

it('validates with the CRD’s own schema (kept equal to crds/gameworld.yaml) and implements each of its CEL rules', () => {
  expect(SPEC_SCHEMA).toEqual(crdSpec());
  const rules: string[] = [];
  const walk = (s: Schema) => {
    for (const v of s['x-kubernetes-validations'] ?? []) rules.push(v.rule);
    for (const p of Object.values(s.properties ?? {})) walk(p);
    if (s.items) walk(s.items);
  };
  walk(SPEC_SCHEMA);
  expect(rules.length).toBe(3);
  for (const r of rules) expect(CEL_RULES[r], r).toBeTypeOf('function');
});

const good = { image: 'i:1', world: { bounds: { minX: 0, minY: 0, maxX: 100, maxY: 100 } } };

it('accepts the examples and refuses what the API server refuses, naming the field', () => {
  for (const f of ['examples/gameworld.yaml', 'examples/gameworld-arena.yaml']) {
    const r = parseWorldFile(readFileSync(join(root, f), 'utf8'));
    expect(r.ok && r.worlds.every((w) => w.errors.length === 0), f).toBe(true);
  }
  expect(validateSpec(good)).toEqual([]);
  const cases: [unknown, string][] = [
    [
      { ...good, world: { bounds: { minX: 5, minY: 0, maxX: 5, maxY: 1 } } },
      'spec.world.bounds.minX: bounds.minX must be less than bounds.maxX',
    ],
    [
      { ...good, world: { bounds: { minX: 0, minY: 2, maxX: 5, maxY: 1 } } },
      'spec.world.bounds.minY: bounds.minY must be less than bounds.maxY',
    ],
    [{ ...good, world: { bounds: { minX: 0, minY: 0, maxX: 5 } } }, 'spec.world.bounds.maxY: required'],
    [{ ...good, sharding: { columns: 9, rows: 8 } }, 'spec.sharding: sharding.columns × sharding.rows must be at most 64'],
    [{ ...good, sharding: { columns: 65 } }, 'spec.sharding.columns: must be at most 64, got 65'],
    [{ ...good, sharding: { rows: 0 } }, 'spec.sharding.rows: must be at least 1, got 0'],
    [{ ...good, instances: 1001 }, 'spec.instances: must be at most 1000, got 1001'],
    [{ ...good, instances: 1.5 }, 'spec.instances: must be an integer, got 1.5'],
    [{ ...good, instances: 'two' }, 'spec.instances: must be an integer, got string'],
    [{ ...good, world: { ...good.world, aoiRadius: 0.5 } }, 'spec.world.aoiRadius: must be at least 1, got 0.5'],
    [{ ...good, world: { ...good.world, maxSpeed: 20_000 } }, 'spec.world.maxSpeed: must be at most 10000, got 20000'],
    [{ ...good, world: { ...good.world, tickRate: 121 } }, 'spec.world.tickRate: must be at most 120, got 121'],
    [{ ...good, updateStrategy: { maxUnavailable: 0 } }, 'spec.updateStrategy.maxUnavailable: must be at least 1, got 0'],
    [{ ...good, persistence: { snapshotIntervalSeconds: 0 } }, 'spec.persistence.snapshotIntervalSeconds: must be at least 1, got 0'],
    [{ ...good, capacity: { playersPerShard: 100_001 } }, 'spec.capacity.playersPerShard: must be at most 100000, got 100001'],
    [{ ...good, image: '' }, 'spec.image: must be at least 1 characters'],
    [{ world: good.world }, 'spec.image: required'],
    [{ ...good, replicas: 3 }, 'spec.replicas: unknown field'],
    [{ ...good, world: { ...good.world, gravity: 1 } }, 'spec.world.gravity: unknown field'],
    [{ ...good, template: { env: [{ value: 'x' }] } }, 'spec.template.env[0].name: required'],
    [{ ...good, template: { env: [{ name: 'A', value: 20 }] } }, 'spec.template.env[0].value: must be a string, got number (quote it)'],
    [{ ...good, template: { nodeSelector: { a: 1 } } }, 'spec.template.nodeSelector.a: must be a string, got number'],
    [
      { ...good, template: { tolerations: Array.from({ length: 33 }, () => ({})) } },
      'spec.template.tolerations: must have at most 32 items, got 33',
    ],
    [undefined, 'spec: required'],
  ];
  for (const [spec, error] of cases) expect(validateSpec(spec), error).toEqual([error]);
  // Unknown fields where the CRD preserves them are fine.
  expect(validateSpec({ ...good, template: { resources: { limits: { cpu: 1 } }, env: [{ name: 'A', valueFrom: { x: 1 } }] } })).toEqual([]);
});

it('refuses a world its shards would refuse at start, naming the field and what it may be', () => {
  const far = { ...good, world: { bounds: { minX: -2_000_000, minY: -1000, maxX: 2_000_000, maxY: 1000 }, maxSpeed: 5 } };
  expect(validateSpec(far)).toEqual([
    'spec.world.bounds: too far from 0 for spec.world.maxSpeed (5): the shard keeps positions as float32, 0.125 apart at 2000000, and they must be at most max speed / 100 (0.05) apart; keep the bounds inside ±524288, or raise spec.world.maxSpeed to at least 12.5',
  ]);
  expect(validateSpec({ ...far, world: { ...far.world, maxSpeed: 12.5 } })).toEqual([]);
  expect(validateSpec({ ...good, world: { bounds: { minX: 0, minY: 0, maxX: 400_000, maxY: 400_000 } } })).toEqual([
    "spec.world.aoiRadius: too small for spec.world.bounds (400000 × 400000): the shard's area-of-interest grid, cells of 0.5 × the radius, would need 16000000 cells, at most 1048576; raise it to at least 781.25",
  ]);
  // In a file, the world is reported with the problem and not started.
  const r = parseWorldFile(`apiVersion: aethex.dev/v1alpha1\nkind: GameWorld\nmetadata: { name: far }\nspec: ${JSON.stringify(far)}\n`);
  expect(r).toMatchObject({
    ok: true,
    worlds: [{ name: 'far', spec: undefined, errors: [expect.stringMatching(/^spec\.world\.bounds: too far from 0/)] }],
  });
});

it('reads several documents; a bad spec is reported with its world, other worlds still read', () => {
  const text = `
apiVersion: aethex.dev/v1alpha1
kind: GameWorld
metadata: { name: alpha }
spec: { image: i, world: { bounds: { minX: 0, minY: 0, maxX: 10, maxY: 10 } }, sharding: { columns: 2 } }
---
# a comment-only document is skipped
---
apiVersion: v1
kind: ConfigMap
metadata: { name: unrelated }
---
apiVersion: aethex.dev/v1alpha1
kind: GameWorld
metadata: { name: beta }
spec: { image: i, world: { bounds: { minX: 10, minY: 0, maxX: 0, maxY: 10 } } }
`;
  const r = parseWorldFile(text);
  if (!r.ok) throw new Error(r.error);
  expect(r.ignored).toEqual(['document 3: kind "ConfigMap" is not GameWorld; ignored']);
  expect(r.worlds.map((w) => w.name)).toEqual(['alpha', 'beta']);
  const [alpha, beta] = r.worlds;
  expect(alpha?.spec).toEqual(
    withDefaults({ image: 'i', world: { bounds: { minX: 0, minY: 0, maxX: 10, maxY: 10 } }, sharding: { columns: 2 } }),
  );
  expect(alpha?.spec?.sharding).toEqual({ columns: 2, rows: 1 });
  expect(beta?.spec).toBeUndefined();
  expect(beta?.errors).toEqual(['spec.world.bounds.minX: bounds.minX must be less than bounds.maxX']);
});

it('rejects the whole file when it cannot tell which worlds it means', () => {
  const world = (name: string) =>
    `apiVersion: aethex.dev/v1alpha1\nkind: GameWorld\nmetadata: { name: ${name} }\nspec: { image: i, world: { bounds: { minX: 0, minY: 0, maxX: 1, maxY: 1 } } }\n`;
  expect(parseWorldFile(`${world('a')}---\n${world('a')}`)).toEqual({
    ok: false,
    error: 'document 2: metadata.name: a is already defined by an earlier document',
  });
  expect(parseWorldFile('kind: GameWorld\nspec: {}\n')).toEqual({ ok: false, error: 'document 1: metadata.name: required' });
  expect(parseWorldFile(world('Big_Name'))).toMatchObject({
    ok: false,
    error: expect.stringMatching(/^document 1: metadata.name: "Big_Name" must be/),
  });
  expect(parseWorldFile(`${world('a')}---\nkind: GameWorld\n  metadata: [`)).toMatchObject({
    ok: false,
    error: expect.stringMatching(/^document 2: not valid YAML/),
  });
  expect(parseWorldFile('- a\n- b\n')).toEqual({ ok: false, error: 'document 1: expected a mapping (a GameWorld)' });
  const wrong = parseWorldFile(world('a').replace('aethex.dev/v1alpha1', 'aethex.dev/v2').replace('spec:', 'extra: 1\nspec:'));
  expect(wrong).toEqual({
    ok: true,
    ignored: [],
    worlds: [
      { name: 'a', spec: undefined, errors: ['apiVersion: must be aethex.dev/v1alpha1, got "aethex.dev/v2"', 'extra: unknown field'] },
    ],
  });
  expect(parseWorldFile('')).toEqual({ ok: true, worlds: [], ignored: [] });
});

it('makes local GameWorld objects: namespace local, a uid stable per name', () => {
  const spec = withDefaults(good);
  const a = localWorld('frontier', spec, 3);
  expect(a.metadata).toMatchObject({ name: 'frontier', namespace: 'local', generation: 3 });
  expect(a.metadata.uid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  expect(localWorld('frontier', spec, 4).metadata.uid).toBe(a.metadata.uid);
  expect(localWorld('other', spec, 1).metadata.uid).not.toBe(a.metadata.uid);
});
