import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterAll, expect, test } from 'vitest';
import { testEnv, uniqueName } from '../env.js';

const env = testEnv();
const prefix = uniqueName('smoke');
const redis = new Redis(env.redisUrl);
const subscriber = new Redis(env.redisUrl);

afterAll(async () => {
  const keys = await redis.keys(`${prefix}:*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
  subscriber.disconnect();
});

test('Redis 7 answers commands, TTLs and sorted sets', async () => {
  const info = await redis.info('server');
  expect(Number(/redis_version:(\d+)/.exec(info)?.[1])).toBeGreaterThanOrEqual(7);

  await redis.set(`${prefix}:k`, 'v', 'PX', 60_000);
  expect(await redis.get(`${prefix}:k`)).toBe('v');
  expect(await redis.pttl(`${prefix}:k`)).toBeGreaterThan(0);

  await redis.zadd(`${prefix}:board`, 10, 'alice', 30, 'bob', 20, 'carol');
  expect(await redis.zrevrange(`${prefix}:board`, 0, -1)).toEqual(['bob', 'carol', 'alice']);
});

test('Redis delivers pub/sub messages between two connections', async () => {
  const channel = `${prefix}:events`;
  await subscriber.subscribe(channel);
  const received = once(subscriber, 'message');
  expect(await redis.publish(channel, 'hello')).toBe(1);
  const [gotChannel, message] = await received;
  expect([gotChannel, message]).toEqual([channel, 'hello']);
});
