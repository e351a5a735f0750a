// RPCs run on the tick, within a time budget (ShardEngine.rpc, docs/gameserver.md "Game logic: hooks").
import { createLogger } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { loadConfig } from './config.js';
import { type RpcOutcome, ShardEngine } from './engine.js';
import type { GameHooks } from './hooks.js';

const config = (env: Record<string, string> = {}) => loadConfig({ AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks', ...env });
const out = { send: () => true, kick: () => undefined };
const text = (r: RpcOutcome) => (r.ok ? new TextDecoder().decode(r.payload) : r.errorCode);

function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // the handler's own work
  }
}

function engineWith(
  rpc: GameHooks['rpc'],
  env: Record<string, string> = {},
  more: Omit<GameHooks, 'rpc'> = {},
  lines?: string[],
): ShardEngine {
  const log = lines && createLogger('gameserver', 'info', { write: (line: string) => void lines.push(line) });
  const e = new ShardEngine(config(env), out, { hooks: { rpc, ...more }, ...(log ? { log } : {}) });
  const r = e.join(1, 'ann');
  if (!r.ok) throw new Error(r.message);
  return e;
}

/** Answers so far, in the order they came. */
function collect(calls: Promise<RpcOutcome>[]): string[] {
  const answers: string[] = [];
  for (const c of calls) void c.then((r) => answers.push(text(r)));
  return answers;
}
const settle = () => new Promise((r) => setImmediate(r));

test('a call is run at the next tick, not when it arrives, and sees that tick', async () => {
  const ticks: number[] = [];
  const e = engineWith({
    when(ctx) {
      ticks.push(ctx.tick);
      return new TextEncoder().encode(String(ctx.tick));
    },
  });
  e.step();
  const answers = collect([e.rpc(1, 'when', new Uint8Array(0))]);
  await settle();
  expect(ticks).toEqual([]);
  expect(e.queuedRpcs).toBe(1);
  e.step();
  await settle();
  expect(answers).toEqual(['2']);
  expect(e.queuedRpcs).toBe(0);
});

test('a tick spends at most rpc.max_ms_per_tick on handlers, at least one call; the rest wait, in order', async () => {
  const ran: string[] = [];
  const e = engineWith(
    {
      slow(_ctx, _p, payload) {
        busy(8);
        ran.push(String(payload[0]));
        return payload;
      },
    },
    { AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '5' },
  );
  const calls = Array.from({ length: 4 }, (_, i) => e.rpc(1, 'slow', new Uint8Array([i])));
  for (let tick = 1; tick <= 4; tick++) {
    e.step();
    // An 8 ms handler overruns the 5 ms budget: one call a tick.
    expect(ran).toEqual(Array.from({ length: tick }, (_, i) => String(i)));
  }
  expect((await Promise.all(calls)).map((r) => r.ok)).toEqual([true, true, true, true]);
});

/**
 * ann (session 1) and bob (2) joined; `slow` takes 6 ms, over the 5 ms budget of a tick: one call
 * a tick. `ran` is what ran, as player and payload's first byte.
 */
function slowCallers() {
  const ran: string[] = [];
  const e = engineWith(
    {
      slow(_ctx, player, payload) {
        busy(6);
        ran.push(`${player.playerId}${payload[0]}`);
        return payload;
      },
    },
    { AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '5' },
  );
  expect(e.join(2, 'bob').ok).toBe(true);
  return { e, ran };
}

test("callers take turns: one player's queued slow calls hold another's back by one call, not all of them", async () => {
  const { e, ran } = slowCallers();
  expect(e.join(3, 'cat').ok).toBe(true);
  // ann queues 4 calls first, then bob and cat one each.
  const calls = Array.from({ length: 4 }, (_, i) => e.rpc(1, 'slow', new Uint8Array([i])));
  calls.push(e.rpc(2, 'slow', new Uint8Array([0])), e.rpc(3, 'slow', new Uint8Array([0])));
  expect(e.queuedRpcs).toBe(6);
  // A 6 ms handler spends the 5 ms budget: one call a tick, ann's, bob's and cat's in turn.
  for (let tick = 0; tick < 6; tick++) e.step();
  expect(ran).toEqual(['ann0', 'bob0', 'cat0', 'ann1', 'ann2', 'ann3']);
  expect((await Promise.all(calls)).every((r) => r.ok)).toBe(true);
  expect(e.queuedRpcs).toBe(0);
});

test('quick handlers: every call that came in runs at the one tick', async () => {
  let calls = 0;
  const e = engineWith({
    quick() {
      calls++;
      return new Uint8Array([1]);
    },
  });
  const pending = Array.from({ length: 50 }, () => e.rpc(1, 'quick', new Uint8Array(0)));
  e.step();
  expect(calls).toBe(50);
  expect((await Promise.all(pending)).every((r) => r.ok)).toBe(true);
});

test('a call that waited past rpc.timeout_ms is answered TIMEOUT without calling the game', async () => {
  let calls = 0;
  const e = engineWith(
    {
      slow() {
        calls++;
        busy(150);
        return new Uint8Array([1]);
      },
    },
    { AETHEX_GAMESERVER_RPC_TIMEOUT_MS: '100' },
  );
  const answers = collect([e.rpc(1, 'slow', new Uint8Array(0)), e.rpc(1, 'slow', new Uint8Array(0))]);
  e.step(); // the first runs 150 ms, past the second's 100 ms
  e.step();
  await settle();
  expect(answers).toEqual(['\u0001', 'TIMEOUT']);
  expect(calls).toBe(1);
});

test("a player's calls that waited past rpc.timeout_ms are all answered TIMEOUT at their turn, not one a turn", async () => {
  const ran: string[] = [];
  const e = engineWith(
    {
      slow(_ctx, player, payload) {
        busy(payload[0] as number);
        ran.push(player.playerId);
        return new Uint8Array([1]);
      },
    },
    { AETHEX_GAMESERVER_RPC_TIMEOUT_MS: '100', AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '5' },
  );
  expect(e.join(2, 'bob').ok).toBe(true);
  // ann's first call runs 150 ms, past the 100 ms of her 4 others; then bob's 6 ms calls, each spending a tick's budget.
  const anns = collect([150, 1, 1, 1, 1].map((ms) => e.rpc(1, 'slow', new Uint8Array([ms]))));
  e.step();
  const bobs = collect([6, 6].map((ms) => e.rpc(2, 'slow', new Uint8Array([ms]))));
  e.step(); // ann's turn: her 4 expired ones, then bob's first
  await settle();
  expect(anns).toEqual(['\u0001', 'TIMEOUT', 'TIMEOUT', 'TIMEOUT', 'TIMEOUT']);
  expect(ran).toEqual(['ann', 'bob']);
  expect(bobs).toEqual(['\u0001']);
  expect(e.queuedRpcs).toBe(1);
});

test('a session that ends with calls queued: they are answered NOT_JOINED at once and never run', async () => {
  let calls = 0;
  const e = engineWith({
    work() {
      calls++;
      return new Uint8Array([1]);
    },
  });
  const answers = collect([e.rpc(1, 'work', new Uint8Array(0)), e.rpc(1, 'work', new Uint8Array(0))]);
  e.leave(1);
  expect(e.queuedRpcs).toBe(0);
  await settle();
  expect(answers).toEqual(['NOT_JOINED', 'NOT_JOINED']);
  e.step();
  expect(calls).toBe(0);
  expect(e.queuedRpcs).toBe(0);
});

test('a player handed over with calls queued behind a busy tick: all are answered HANDED_OVER at the commit, none run', async () => {
  const { e, ran } = slowCallers();
  const cat = e.join(3, 'cat');
  if (!cat.ok) throw new Error(cat.message);
  // bob's slow calls spend each tick's budget; cat's queue behind them.
  const bobs = Array.from({ length: 4 }, (_, i) => e.rpc(2, 'slow', new Uint8Array([i])));
  const cats = collect(Array.from({ length: 3 }, (_, i) => e.rpc(3, 'slow', new Uint8Array([i]))));
  e.step();
  expect(ran).toEqual(['bob0']);
  e.offer(cat.entityId);
  e.commitOffer(cat.entityId);
  await settle();
  // Not one a turn over the next ticks: the client waits for these on its old connection.
  expect(cats).toEqual(['HANDED_OVER', 'HANDED_OVER', 'HANDED_OVER']);
  expect(e.queuedRpcs).toBe(3);
  for (let tick = 0; tick < 4; tick++) e.step();
  expect(ran).toEqual(['bob0', 'bob1', 'bob2', 'bob3']);
  expect(e.queuedRpcs).toBe(0);
  expect((await Promise.all(bobs)).every((r) => r.ok)).toBe(true);
});

test('unknown methods and unknown sessions are answered at once, without waiting for a tick', async () => {
  const e = engineWith({ work: () => new Uint8Array([1]) });
  const answers = collect([e.rpc(1, 'nope', new Uint8Array(0)), e.rpc(9, 'work', new Uint8Array(0))]);
  await settle();
  expect(answers).toEqual(['UNKNOWN_METHOD', 'NOT_JOINED']);
  expect(e.queuedRpcs).toBe(0);
});

test('rpc.max_ms_per_tick is at most engine.tick_rate_ms', () => {
  expect(() => config({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '10', AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '11' })).toThrow(
    'rpc.max_ms_per_tick: must be at most engine.tick_rate_ms (10): the handlers run inside the tick',
  );
  expect(config({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '10', AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '10' })['rpc.max_ms_per_tick']).toBe(
    10,
  );
});

test("a handler's result whose then() throws answers INTERNAL; the tick goes on", async () => {
  // A thenable of the game's whose then() is broken (defined, not literal: it is what a game might return).
  const odd = Object.defineProperty({}, 'then', {
    value: () => {
      throw new Error('a game bug in then()');
    },
  }) as unknown as Uint8Array;
  const e = engineWith({ odd: () => odd });
  const answers = collect([e.rpc(1, 'odd', new Uint8Array(0))]);
  const tick = e.tick;
  expect(() => e.step()).not.toThrow();
  expect(e.tick).toBe(tick + 1);
  await settle();
  expect(answers).toEqual(['INTERNAL']);
});

test("a session that ends while its handler's promise is pending: answered NOT_JOINED, its timeout timer cleared", async () => {
  const e = engineWith({ hang: () => new Promise<Uint8Array>(() => {}) });
  const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  const answers = collect([e.rpc(1, 'hang', new Uint8Array(0))]);
  const before = timers();
  e.step();
  expect(timers()).toBe(before + 1);
  e.leave(1);
  await settle();
  expect(answers).toEqual(['NOT_JOINED']);
  expect(timers()).toBe(before);
});

test('what a game throws may itself throw when read (a getter, a revoked Proxy): still counted, logged, answered; the tick goes on', async () => {
  // An error whose enumerable property throws (the logger reads it), and a revoked Proxy (reading its name throws).
  const booby = () =>
    Object.defineProperty(new Error('the game failed'), 'detail', {
      enumerable: true,
      get: () => {
        throw new Error('no reading me');
      },
    });
  const revoked = () => {
    const p = Proxy.revocable({}, {});
    p.revoke();
    return p.proxy;
  };
  let ticked = 0;
  const lines: string[] = [];
  const e = engineWith(
    {
      booby() {
        throw booby();
      },
      revoked() {
        throw revoked();
      },
      async late() {
        throw revoked();
      },
    },
    {},
    {
      onTick() {
        ticked++;
        throw booby();
      },
    },
    lines,
  );
  const answers = collect(['booby', 'revoked', 'late'].map((m) => e.rpc(1, m, new Uint8Array(0))));
  const tick = e.tick;
  expect(() => e.step()).not.toThrow();
  expect(() => e.step()).not.toThrow();
  expect(e.tick).toBe(tick + 2);
  expect(ticked).toBe(2);
  await settle();
  expect(answers).toEqual(['INTERNAL', 'INTERNAL', 'INTERNAL']);
  const failures = lines.map((l) => JSON.parse(l)).filter((l) => l.msg.startsWith('game hook failed'));
  // One line per hook (a second onTick failure within 1 s is only counted), in no particular order.
  expect(failures.map((l) => [l.hook, l.err]).sort()).toEqual([
    ['onTick', 'Error: the game failed (unreadable: Error: no reading me)'],
    ['rpc.booby', 'Error: the game failed (unreadable: Error: no reading me)'],
    ['rpc.late', "an unprintable object (unreadable: TypeError: Cannot perform 'get' on a proxy that has been revoked)"],
    ['rpc.revoked', "an unprintable object (unreadable: TypeError: Cannot perform 'get' on a proxy that has been revoked)"],
  ]);
});
