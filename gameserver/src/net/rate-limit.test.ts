import { expect, test } from 'vitest';
import { addressKey, KeyedTokenBuckets, LogBudget, TokenBucket } from './rate-limit.js';

test('addressKey: IPv4 as it is, IPv4-mapped IPv6 as IPv4, IPv6 by its prefix', () => {
  expect(addressKey('203.0.113.7', 64)).toBe('203.0.113.7');
  expect(addressKey('::ffff:203.0.113.7', 64)).toBe('203.0.113.7');
  expect(addressKey('::FFFF:cb00:7107', 64)).toBe('203.0.113.7');
  // Every address of one /64 is one key, written however.
  const a = addressKey('2001:db8:1:2::1', 64);
  expect(a).toBe('2001:db8:1:2:0:0:0:0/64');
  for (const same of ['2001:db8:1:2:ffff:ffff:ffff:ffff', '2001:0db8:0001:0002:0000:0000:0000:0abc', '2001:db8:1:2::5:1%eth0'])
    expect(addressKey(same, 64)).toBe(a);
  expect(addressKey('2001:db8:1:3::1', 64)).not.toBe(a);
  // Other lengths, within a group and at the whole address.
  expect(addressKey('2001:db8:1:2::1', 56)).toBe('2001:db8:1:0:0:0:0:0/56');
  expect(addressKey('2001:db8:1:2ff::1', 56)).toBe('2001:db8:1:200:0:0:0:0/56');
  expect(addressKey('2001:db8::1', 128)).toBe('2001:db8:0:0:0:0:0:1');
  expect(addressKey('2001:db8::2', 128)).not.toBe(addressKey('2001:db8::1', 128));
  expect(addressKey('::1', 64)).toBe('0:0:0:0:0:0:0:0/64');
  // Not an address: its own key.
  // `::` stands for one group at least: with eight groups around it, there is none for it.
  for (const odd of ['unknown', '1::2::3', 'fe80::zz', '1:2:3:4:5:6:7:8:9', '1:2:3:4::5:6:7:8']) expect(addressKey(odd, 64)).toBe(odd);
});

test('LogBudget: a burst of lines, then so many a second; the next line written says how many were left out', () => {
  const budget = new LogBudget(1, 3, 0);
  const written = Array.from({ length: 10 }, (_, i) => budget.take(0, { n: i }));
  expect(written.filter(Boolean)).toEqual([{ n: 0 }, { n: 1 }, { n: 2 }]);
  // One second later: one more, carrying the 7 left out.
  expect(budget.take(999, { n: 10 })).toBeUndefined();
  expect(budget.take(1000, { n: 11 })).toEqual({ n: 11, unlogged: 8 });
  expect(budget.take(2000, { n: 12 })).toEqual({ n: 12 });
});

test('TokenBucket: however long it sat idle, it holds burst tokens at most', () => {
  const bucket = new TokenBucket(10, 3, 0);
  // An hour idle refills it to 3, not to 36,000.
  const taken = Array.from({ length: 10 }, () => bucket.take(3_600_000)).filter(Boolean).length;
  expect(taken).toBe(3);
  // Then 10 a second again.
  expect(bucket.take(3_600_100)).toBe(true);
  expect(bucket.take(3_600_100)).toBe(false);
});

test('KeyedTokenBuckets: prune forgets only the keys whose buckets refilled; a key still limited stays limited', () => {
  const buckets = new KeyedTokenBuckets(1, 2);
  const size = () => (buckets as unknown as { buckets: Map<string, unknown> }).buckets.size;
  expect([buckets.take('a', 0), buckets.take('a', 0), buckets.take('a', 0)]).toEqual([true, true, false]);
  expect(buckets.take('b', 0)).toBe(true);
  // At 1 s, 'a' has one token of two back and 'b' is full again: 'b' goes, 'a' is kept, spent.
  buckets.prune(1000);
  expect(size()).toBe(1);
  expect([buckets.take('a', 1000), buckets.take('a', 1000)]).toEqual([true, false]);
  // Once full again (2 s later), it is forgotten too: memory follows the keys seen lately.
  buckets.prune(3000);
  expect(size()).toBe(0);
});
