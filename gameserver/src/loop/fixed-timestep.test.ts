import { once } from 'node:events';
import { type AddressInfo, connect, createServer } from 'node:net';
import { expect, test, vi } from 'vitest';
import { FixedTimestep, MAX_YIELD_TURNS, runLoop } from './fixed-timestep.js';

/**
 * Polls until `check` returns true, or fails after `timeoutMs` (before the test's own timeout)
 * naming `what`: a stalled process only makes it wait longer.
 */
async function until(what: string, check: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

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

test('runLoop steps at the rate, survives a throwing step, and stops', () => {
  // Fake timers and clock: the counts are exact, however the machine schedules the test.
  vi.useFakeTimers();
  try {
    let steps = 0;
    const errors: unknown[] = [];
    const skipped: number[] = [];
    // The loop's clock, with a stall of the process added at will (timers do not see it).
    let stalled = 0;
    const clock = { now: () => performance.now() + stalled };
    const loop = runLoop(new FixedTimestep(10, 4, clock.now()), clock, {
      onStep() {
        steps++;
        if (steps === 2) throw new Error('boom');
      },
      onSkip: (ticks) => skipped.push(ticks),
      onError: (err) => errors.push(err),
    });
    vi.advanceTimersByTime(9);
    expect(steps).toBe(0);
    vi.advanceTimersByTime(196);
    expect(steps).toBe(20);
    expect(errors).toHaveLength(1);
    expect(skipped).toEqual([]);
    // A stall of 1 s: at the wake-up at 210, 101 ticks are due; it runs 4 of them, one per turn (a
    // fake turn takes 1 ms), and drops the other 97. The next tick is due at 220.
    stalled = 1000;
    vi.advanceTimersByTime(14);
    expect(steps).toBe(24);
    expect(skipped).toEqual([97]);
    vi.advanceTimersByTime(1);
    expect(steps).toBe(25);
    loop.stop();
    vi.advanceTimersByTime(50);
    expect(steps).toBe(25);
    expect(errors).toHaveLength(1);
  } finally {
    vi.useRealTimers();
  }
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
  // A step that takes 3 ticks' time: every step leaves the loop further behind, so from the first
  // tick it drops on, it is catching up for good (steps pending at every turn).
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
      onSkip: () => order.push('skip'),
      onError: () => undefined,
    },
  );
  // The first steps are run by the timer, not caught up: what follows the first skip is. As many
  // of them as 300 ms hold, however long the machine takes to run them.
  const catchingUp = () => (order.includes('skip') ? order.slice(order.indexOf('skip')).filter((o) => o !== 'skip') : []);
  try {
    await until('20 catch-up steps', () => catchingUp().filter((o) => o === 'step').length >= 20);
  } finally {
    loop.stop();
    client.destroy();
    server.close();
  }
  // Never two catch-up steps without the socket being read in between.
  expect(catchingUp().join(' ')).not.toContain('step step');
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
  try {
    await until('20 steps', () => between.length >= 20);
  } finally {
    loop.stop();
  }
  expect(Math.max(...between)).toBe(MAX_YIELD_TURNS);
});

test('runLoop: steps that fall due while a late step waits for yieldFirst are capped at maxCatchUp, the rest dropped', async () => {
  // A clock that moves only when told: 100 ticks late at the first wake-up, 5 more while it yields.
  let now = 0;
  let steps = 0;
  let skipped = 0;
  let asked = 0;
  const loop = runLoop(
    new FixedTimestep(10, 4, 0),
    { now: () => now },
    {
      onStep: () => steps++,
      onSkip: (ticks) => {
        skipped += ticks;
      },
      onError: () => undefined,
      yieldFirst() {
        if (asked++ > 0) return false;
        now += 50;
        return true;
      },
    },
  );
  now = 1000;
  try {
    await until('the late steps', () => steps >= 4);
    await new Promise((r) => setTimeout(r, 50));
  } finally {
    loop.stop();
  }
  // One wake-up runs maxCatchUp steps at most, however many fell due while it waited.
  expect({ steps, skipped }).toEqual({ steps: 4, skipped: 101 });
});
