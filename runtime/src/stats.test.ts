import { expect, it } from 'vitest';
import { intFlag, percentile } from './stats.js';

it('percentile is nearest-rank', () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  expect([percentile(v, 50), percentile(v, 95), percentile(v, 99), percentile(v, 100)]).toEqual([50, 95, 99, 100]);
  expect(percentile([7], 99)).toBe(7);
  expect(percentile([], 50)).toBeNaN();
});

it('intFlag accepts integers in range and names the flag otherwise', () => {
  expect(intFlag('count', '12', 1, 100)).toBe(12);
  for (const bad of ['0', '101', '1.5', 'x', '', ' ', undefined]) {
    expect(() => intFlag('count', bad, 1, 100)).toThrow(/^--count must be an integer from 1 to 100, got '/);
  }
});
