import { percentile } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { LatencyHistogram } from './latency-histogram.js';

test('percentiles match runtime’s nearest rank over the sorted latencies, to the 0.1 ms bucket below', () => {
  const values = Array.from({ length: 5000 }, (_, i) => ((i * 7919) % 5000) / 37);
  const h = new LatencyHistogram();
  h.addAll(values);
  const sorted = [...values].sort((a, b) => a - b);
  for (const p of [0, 1, 50, 95, 99, 100]) {
    const exact = percentile(sorted, p);
    expect(h.percentile(p)).toBeLessThanOrEqual(exact);
    expect(h.percentile(p)).toBeGreaterThan(exact - 0.1);
  }
  expect(h.max).toBe(sorted[sorted.length - 1]);
  expect(new LatencyHistogram().percentile(50)).toBeNaN();
});

test('a run of any length takes the same memory: 3 hours of 40 Hz input fit, over 1 s in the last bucket', () => {
  const h = new LatencyHistogram();
  // More than `push(...values)` (or any spread) takes as arguments.
  const batch = Array.from({ length: 40 * 3600 }, (_, i) => 5 + (i % 100) / 10);
  for (let hour = 0; hour < 3; hour++) h.addAll(batch);
  expect(h.percentile(50)).toBe(9.9);
  h.add(2500);
  expect(h.count).toBe(3 * 40 * 3600 + 1);
  expect(h.max).toBe(2500);
  const perMs = h.perMillisecond();
  expect(perMs).toHaveLength(1000);
  expect(perMs.reduce((a, b) => a + b, 0)).toBe(h.count);
  expect(perMs[999]).toBe(1);
  // Below 0 (a clock stepped back) counts in the first bucket, not nowhere.
  h.add(-3);
  expect(h.perMillisecond()[0]).toBe(1);
  expect(h.perMillisecond().reduce((a, b) => a + b, 0)).toBe(h.count);
});
