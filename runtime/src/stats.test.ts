import fc from 'fast-check';
import { expect, it } from 'vitest';
import { bucketPercentile, percentile } from './stats.js';

it('percentile is nearest-rank', () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  expect([percentile(v, 50), percentile(v, 95), percentile(v, 99), percentile(v, 100)]).toEqual([50, 95, 99, 100]);
  expect(percentile([7], 99)).toBe(7);
  expect(percentile([], 50)).toBeNaN();
});

it('bucketPercentile finds the bucket of the value percentile gives', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 19 }), { maxLength: 200 }), fc.integer({ min: 0, max: 100 }), (values, p) => {
      const counts = new Uint32Array(20);
      for (const v of values) counts[v] = (counts[v] as number) + 1;
      const sorted = [...values].sort((a, b) => a - b);
      expect(bucketPercentile(counts, p)).toStrictEqual(percentile(sorted, p));
    }),
  );
});
