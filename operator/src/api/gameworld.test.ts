import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WORLD_SETTING_RANGES } from '@aethex/runtime';
import { expect, it } from 'vitest';
import { parse } from 'yaml';
import { MAX_WORLD_NAME, WORLD_NAME, WORLD_NAME_RULE, withDefaults } from './gameworld.js';

// Collects `default:` values from the CRD's schema by path, e.g. spec.world.tickRate → 40.
function crdDefaults(schema: Record<string, unknown>, path: string, out: Map<string, unknown>): void {
  if ('default' in schema && path !== '') out.set(path, schema.default);
  for (const [k, v] of Object.entries((schema.properties as Record<string, Record<string, unknown>>) ?? {}))
    crdDefaults(v, path ? `${path}.${k}` : k, out);
}

it('applies the same defaults as the CRD', () => {
  const crd = parse(readFileSync(join(import.meta.dirname, '../../../crds/gameworld.yaml'), 'utf8'));
  const defaults = new Map<string, unknown>();
  crdDefaults(crd.spec.versions[0].schema.openAPIV3Schema.properties.spec, '', defaults);
  const spec = withDefaults({ image: 'i', world: { bounds: { minX: 0, minY: 0, maxX: 1, maxY: 1 } } }) as unknown as Record<
    string,
    unknown
  >;
  expect(defaults.size).toBeGreaterThanOrEqual(10);
  for (const [path, value] of defaults) {
    const got = path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], spec);
    if (typeof value === 'object') expect(got, path).toBeTypeOf('object');
    else expect(got, path).toBe(value);
  }
});

it('holds world names to the same rule as the CRD', () => {
  const crd = parse(readFileSync(join(import.meta.dirname, '../../../crds/gameworld.yaml'), 'utf8'));
  const [rule] = crd.spec.versions[0].schema.openAPIV3Schema['x-kubernetes-validations'] as { rule: string; message: string }[];
  expect(rule?.rule).toBe(
    `oldSelf.hasValue() || (self.metadata.name.size() <= ${MAX_WORLD_NAME} && self.metadata.name.matches('${WORLD_NAME.source}'))`,
  );
  expect(rule?.message).toBe(`metadata.name must be ${WORLD_NAME_RULE}`);
  // The longest name gives the longest children within their limits.
  const longest = `a${'b'.repeat(MAX_WORLD_NAME - 1)}`;
  expect(`${longest}-shards`.length).toBeLessThanOrEqual(63);
  expect(`${longest}-999-63`.length).toBeLessThanOrEqual(63);
});

it("states the shard's ranges of aoiRadius and maxSpeed, which the hints of InvalidSpec stay within", () => {
  const crd = parse(readFileSync(join(import.meta.dirname, '../../../crds/gameworld.yaml'), 'utf8'));
  const world = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.world.properties;
  for (const name of ['aoiRadius', 'maxSpeed'] as const) {
    expect({ min: world[name].minimum, max: world[name].maximum }, name).toEqual(WORLD_SETTING_RANGES[name]);
  }
});
