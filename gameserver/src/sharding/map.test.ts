import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { regions } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { distanceToRect, IDS_PER_SHARD, idRange, inRect, loadShardMap } from './map.js';

const dir = mkdtempSync(join(tmpdir(), 'aethex-map-'));
const write = (doc: unknown) => {
  const file = join(dir, `${Math.random()}.json`);
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc));
  return file;
};
const bounds = { minX: 0, minY: 0, maxX: 1000, maxY: 500 };
const map = {
  world: 'w',
  bounds,
  instances: [
    {
      instance: 0,
      shards: regions(bounds, 2, 1).map((r) => ({
        shard: r.shard,
        name: `w-0-${r.shard}`,
        region: r.bounds,
        neighbours: r.neighbours,
        address: `w-0-${r.shard}.w-shards.ns.svc:7777`,
      })),
    },
  ],
};

test('a shard finds its region and its neighbours in the map the operator writes', () => {
  const p = loadShardMap(write(map), 0, 'w-0-1');
  expect(p).toEqual({
    bounds,
    shard: 1,
    region: { minX: 500, minY: 0, maxX: 1000, maxY: 500 },
    address: 'w-0-1.w-shards.ns.svc:7777',
    neighbours: [{ shard: 0, name: 'w-0-0', region: { minX: 0, minY: 0, maxX: 500, maxY: 500 }, address: 'w-0-0.w-shards.ns.svc:7777' }],
  });
});

test('a broken map is refused with an error that names the setting and the problem', () => {
  const shard0 = map.instances[0]?.shards[0];
  const cases: [unknown, RegExp][] = [
    ['{not json', /shard\.map_file: .*cannot read it as JSON/],
    [{ ...map, bounds: { minX: 5, minY: 0, maxX: 1, maxY: 1 } }, /no valid "bounds"/],
    [{ ...map, instances: [] }, /does not list instance 0/],
    [{ ...map, instances: [{ instance: 0, shards: [{ ...shard0, address: 'no-port' }] }] }, /no valid "address"/],
    [{ ...map, instances: [{ instance: 0, shards: [{ ...shard0, shard: 300 }] }] }, /no valid "shard" index/],
    [{ ...map, instances: [{ instance: 0, shards: [{ ...shard0, shard: 256 }] }] }, /shard #0 has no valid "shard" index \(0-255\)/],
    [{ ...map, bounds: { minX: 0, minY: 0, maxX: 0, maxY: 500 } }, /no valid "bounds"/],
    [{ ...map, instances: [{ instance: 0, shards: [{ ...shard0, neighbours: [7] }] }] }, /names neighbour 7, which is not listed/],
    [{ ...map, instances: [{ instance: 0, shards: [{ ...shard0, region: null }] }] }, /has no valid "region"/],
  ];
  // Maps that read, but name a shard twice, a neighbour twice or a shard its own neighbour (its
  // handoffs to that neighbour would never be accepted), or regions that overlap or leave the bounds.
  const [s0, s1] = (map.instances[0] as (typeof map.instances)[number]).shards as [typeof shard0 & object, typeof shard0 & object];
  const instance = (...shards: unknown[]) => ({ ...map, instances: [{ instance: 0, shards }] });
  cases.push(
    [instance(s0, { ...s1, shard: 0 }), /lists shard index 0 twice \(w-0-0 and w-0-1\)/],
    [instance(s0, { ...s1, name: 'w-0-0' }), /lists shard w-0-0 twice/],
    [instance({ ...s0, neighbours: [1, 1] }, s1), /shard w-0-0 names neighbour 1 twice/],
    [instance({ ...s0, neighbours: [0, 1] }, s1), /shard w-0-0 names itself as its neighbour/],
    [instance(s0, { ...s1, region: { minX: 400, minY: 0, maxX: 1000, maxY: 500 } }), /the regions of shards w-0-0 and w-0-1 overlap/],
    [instance(s0, { ...s1, region: { minX: 500, minY: 0, maxX: 1200, maxY: 500 } }), /shard w-0-1's region is not inside the bounds/],
    [instance(s0, { ...s1, region: { minX: 500, minY: 0, maxX: 500, maxY: 500 } }), /shard w-0-1 has no valid "region"/],
    [instance(s0, { ...s1, region: { minX: 500, minY: 0, maxX: 1000, maxY: 0 } }), /shard w-0-1 has no valid "region"/],
  );
  for (const [doc, message] of cases) expect(() => loadShardMap(write(doc), 0, 'w-0-0'), String(message)).toThrow(message);
  expect(() => loadShardMap(write(map), 0, 'w-0-9')).toThrow(/does not list shard w-0-9 in instance 0/);
  expect(() => loadShardMap(join(dir, 'missing.json'), 0, 'w-0-0')).toThrow(/cannot read it/);
});

test('each shard hands out entity ids from its own range', () => {
  expect(idRange(0)).toEqual({ first: 1, limit: IDS_PER_SHARD });
  expect(idRange(3)).toEqual({ first: 3 * IDS_PER_SHARD + 1, limit: 4 * IDS_PER_SHARD });
  expect((idRange(255).limit - 1) >>> 0).toBe(2 ** 32 - 1);
});

test('distance to a region and membership use min-inclusive, max-exclusive edges', () => {
  const r = { minX: 0, minY: 0, maxX: 10, maxY: 10 };
  expect(inRect(0, 0, r)).toBe(true);
  expect(inRect(10, 5, r)).toBe(false);
  expect(distanceToRect(5, 5, r)).toBe(0);
  expect(distanceToRect(13, 14, r)).toBe(5);
  expect(distanceToRect(-3, 5, r)).toBe(3);
});
