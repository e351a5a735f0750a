import { once } from 'node:events';
import { type AddressInfo, connect, createServer } from 'node:net';
import { expect, test } from 'vitest';
import { FixedTimestep, MAX_YIELD_TURNS, runLoop } from './fixed-timestep.js';

test('ticks fall due every stepMs, from the start', () => {
  const ts = new FixedTimestep(25, 4, 1000);
  expect(ts.due(1000)).toEqual({ steps: 0, skipped: 0 });
  expect(ts.msUntilNext(1000)).toBe(25);
  expect(ts.due(1024.9)).toEqual({ steps: 0, skipped: 0 });
  expect(ts.due(1025)).toEqual({ steps: 1, skipped: 0 });
  expect(ts.due(1049)).toEqual({ steps: 0, skipped: 0 });
  expect(ts.due(1076)).toEqual({ steps: 2, skipped: 0 });
  expect(ts.msUntilNext(1076)).toBe(24);
});

test('after a stall it catches up at most maxCatchUp steps and drops the rest', () => {
  const ts = new FixedTimestep(25, 4, 0);
  expect(ts.due(1000)).toEqual({ steps: 4, skipped: 36 });
  expect(ts.due(1025)).toEqual({ steps: 1, skipped: 0 });
});

test('refuses nonsense', () => {
  expect(() => new FixedTimestep(0, 4, 0)).toThrow(/stepMs/);
  expect(() => new FixedTimestep(25, 0, 0)).toThrow(/maxCatchUp/);
});

test('runLoop steps at the rate, survives a throwing step, and stops', async () => {
  let steps = 0;
  const errors: unknown[] = [];
  const loop = runLoop(
    new FixedTimestep(10, 4, performance.now()),
    { now: () => performance.now() },
    {
      onStep() {
        steps++;
        if (steps === 2) throw new Error('boom');
      },
      onSkip() {},
      onError: (err) => errors.push(err),
    },
  );
  await new Promise((r) => setTimeout(r, 205));
  loop.stop();
  const atStop = steps;
  await new Promise((r) => setTimeout(r, 50));
  expect(steps).toBe(atStop);
  expect(atStop).toBeGreaterThanOrEqual(5);
  expect(atStop).toBeLessThanOrEqual(21);
  expect(errors).toHaveLength(1);
});

test('runLoop runs catch-up steps one per turn of the event loop, reading sockets in between', async () => {
  // A loopback ping-pong: there is always a socket read waiting, as on a busy shard.
  const order: string[] = [];
  const server = createServer((socket) => {
    socket.on('error', () => undefined);
    socket.on('data', (d) => {
      order.push('io');
      socket.write(d);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  client.on('error', () => undefined);
  await once(client, 'connect');
  client.on('data', (d) => {
    order.push('io');
    client.write(d);
  });
  client.write('ping');
  // A step that takes 3 ticks' time: every step leaves the loop behind, so steps catch up.
  const loop = runLoop(
    new FixedTimestep(5, 4, performance.now()),
    { now: () => performance.now() },
    {
      onStep() {
        order.push('step');
        const until = performance.now() + 15;
        while (performance.now() < until) {
          // busy: a slow tick
        }
      },
      onSkip: () => undefined,
      onError: () => undefined,
    },
  );
  await new Promise((r) => setTimeout(r, 300));
  loop.stop();
  client.destroy();
  server.close();
  const steps = order.filter((o) => o === 'step').length;
  expect(steps).toBeGreaterThan(5);
  // Never two steps without the socket being read in between.
  expect(order.join(' ')).not.toContain('step step');
});

test('runLoop gives a burst of connections extra turns before a late step: one per turn is accepted', async () => {
  let accepted = 0;
  let askedAt = 0;
  const server = createServer((socket) => {
    accepted++;
    socket.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  let steps = 0;
  const loop = runLoop(
    new FixedTimestep(5, 4, performance.now()),
    { now: () => performance.now() },
    {
      // Every step takes twice the interval: the loop runs late steps back to back.
      onStep() {
        steps++;
        const until = performance.now() + 10;
        while (performance.now() < until) {
          // busy
        }
      },
      onSkip: () => undefined,
      onError: () => undefined,
      yieldFirst() {
        const more = accepted > askedAt;
        askedAt = accepted;
        return more;
      },
    },
  );
  await new Promise((r) => setTimeout(r, 30));
  const before = steps;
  const clients = Array.from({ length: 90 }, () => connect(port, '127.0.0.1').on('error', () => undefined));
  const started = performance.now();
  while (accepted < clients.length && performance.now() - started < 5000) await new Promise((r) => setTimeout(r, 5));
  const took = steps - before;
  loop.stop();
  for (const c of clients) c.destroy();
  server.close();
  expect(accepted).toBe(clients.length);
  // Without the extra turns this takes one step per connection (90); with them, about 90 / 9.
  expect(took).toBeLessThanOrEqual(30);
});

test('runLoop: a yieldFirst that always asks delays a step by at most MAX_YIELD_TURNS turns', async () => {
  let turns = 0;
  const between: number[] = [];
  const loop = runLoop(
    new FixedTimestep(5, 4, performance.now()),
    { now: () => performance.now() },
    {
      onStep() {
        between.push(turns);
        turns = 0;
      },
      onSkip: () => undefined,
      onError: () => undefined,
      yieldFirst() {
        turns++;
        return true;
      },
    },
  );
  await new Promise((r) => setTimeout(r, 100));
  loop.stop();
  expect(between.length).toBeGreaterThan(5);
  expect(Math.max(...between)).toBe(MAX_YIELD_TURNS);
});
