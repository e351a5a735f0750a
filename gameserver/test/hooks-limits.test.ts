// The limits a shard puts on a game's hooks and RPC handlers (docs/gameserver.md "Game logic:
// hooks"): error codes a client may get, time, calls in flight, call rate, result size, async hooks.
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import type { RpcOutcome } from '../src/engine.js';
import { moduleFile, startTestShard, type TestShard, until } from './harness.js';

let t: TestShard | undefined;
afterEach(async () => {
  await t?.stop();
  t = undefined;
});

const errors = () => (t as TestShard).shard.metrics.registry.getSingleMetricAsString('aether_hook_errors_total');
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test("the package's RpcError: a code that is not 1–64 of A–Z 0–9 _, or is the shard's own, answers INTERNAL and is logged", async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: join(import.meta.dirname, 'fixtures/rpc-error-codes-game.mjs') });
  const c = await t.client('dana');
  for (const method of ['secret', 'huge', 'empty', 'reserved', 'changed']) {
    await expect(c.rpc(method), method).rejects.toMatchObject({ code: 'INTERNAL' });
  }
  await expect(c.rpc('fine')).rejects.toMatchObject({ code: 'OUT_OF_STOCK' });
  for (const method of ['secret', 'huge', 'empty', 'reserved', 'changed'])
    expect(await errors()).toMatch(new RegExp(`hook="rpc\\.${method}"\\} 1`));
  expect(await errors()).not.toMatch(/rpc\.fine/);
});

test('a game error named RpcError (its own class) with a code of the shard’s answers INTERNAL', async () => {
  const file = moduleFile(`
    class RpcError extends Error { constructor(code) { super(code); this.name = 'RpcError'; this.code = code; } }
    export default { rpc: { moved() { throw new RpcError('HANDED_OVER'); }, busy() { throw new RpcError('BUSY'); } } };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
  const c = await t.client('erin');
  await expect(c.rpc('moved')).rejects.toMatchObject({ code: 'INTERNAL' });
  await expect(c.rpc('busy')).rejects.toMatchObject({ code: 'INTERNAL' });
  expect(await errors()).toMatch(/hook="rpc\.moved"\} 1/);
});

/** A shard whose game's `hang` never settles (its resolvers kept in `heldResolvers`), `quick` answers [1]. */
async function hangingGame(env: Record<string, string> = {}): Promise<TestShard> {
  const file = moduleFile(`
    const held = (globalThis.heldResolvers = []);
    export default { rpc: {
      hang() { return new Promise((resolve) => held.push(resolve)); },
      quick() { return new Uint8Array([1]); },
    } };`);
  return startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file, ...env });
}
const held = () => (globalThis as { heldResolvers?: unknown[] }).heldResolvers?.length ?? 0;

test('a handler that never settles is answered TIMEOUT after rpc.timeout_ms, counted as its failure', async () => {
  t = await hangingGame({ AETHEX_GAMESERVER_RPC_TIMEOUT_MS: '400' });
  const c = await t.client('fay');
  const began = Date.now();
  await expect(c.rpc('hang')).rejects.toMatchObject({ code: 'TIMEOUT' });
  expect(Date.now() - began).toBeGreaterThanOrEqual(350);
  expect(Date.now() - began).toBeLessThan(3000);
  expect(await errors()).toMatch(/hook="rpc\.hang"\} 1/);
});

test('rpc.max_in_flight: a call while that many wait is answered BUSY without calling the game', async () => {
  t = await hangingGame({ AETHEX_GAMESERVER_RPC_TIMEOUT_MS: '600', AETHEX_GAMESERVER_RPC_MAX_IN_FLIGHT: '3' });
  const c = await t.client('fay');
  const hanging = [c.rpc('hang'), c.rpc('hang'), c.rpc('hang')].map((p) => p.catch((e: { code: string }) => e.code));
  await expect(c.rpc('quick', new Uint8Array(0), 2000)).rejects.toMatchObject({ code: 'BUSY' });
  expect(await t.shard.metrics.registry.getSingleMetricAsString('aether_rpcs_refused_total')).toMatch(/reason="busy"\} 1/);
  // Once they are answered (timed out), calls go through again.
  expect(await Promise.all(hanging)).toEqual(['TIMEOUT', 'TIMEOUT', 'TIMEOUT']);
  expect([...(await c.rpc('quick'))]).toEqual([1]);
  expect(held()).toBe(3);
});

test('a client that leaves with calls waiting: they are let go at once, not held until the handler settles', async () => {
  t = await hangingGame();
  const { engine } = t.shard;
  const answers: RpcOutcome[] = [];
  const rpc = engine.rpc.bind(engine);
  engine.rpc = (...args) =>
    rpc(...args).then((r) => {
      answers.push(r);
      return r;
    });
  const d = await t.client('gus');
  for (let i = 0; i < 3; i++) d.rpc('hang').catch(() => {});
  await until('the calls to reach the game', () => held() === 3);
  d.close();
  // Answered (NOT_JOINED, to no one): nothing of the caller stays with the game's promises.
  await until('the departed caller’s calls to be let go', () => answers.length === 3, 1000);
  expect(answers).toEqual(Array(3).fill({ ok: false, errorCode: 'NOT_JOINED' }));
});

test('rpc.max_per_second: calls beyond the rate are answered RATE_LIMITED, the connection stays', async () => {
  const file = moduleFile(`
    let calls = 0;
    export default { rpc: { work() { calls++; return new TextEncoder().encode(String(calls)); } } };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file, AETHEX_GAMESERVER_RPC_MAX_PER_SECOND: '5' });
  const c = await t.client('hal');
  const results = await Promise.all(Array.from({ length: 12 }, () => c.rpc('work').then(text, (e: { code: string }) => e.code)));
  expect(results.filter((r) => r === 'RATE_LIMITED')).toHaveLength(7);
  expect(results.filter((r) => r !== 'RATE_LIMITED').sort()).toEqual(['1', '2', '3', '4', '5']);
  const refused = await t.shard.metrics.registry.getSingleMetricAsString('aether_rpcs_refused_total');
  expect(refused).toMatch(/reason="rate_limited"\} 7/);
  // The bucket refills: the same connection calls again.
  await new Promise((r) => setTimeout(r, 450));
  expect(text(await c.rpc('work'))).toBe('6');
});

test('slow handlers spread over ticks (rpc.max_ms_per_tick): a burst of 20 calls to an 8 ms handler runs one a tick', async () => {
  const file = moduleFile(`
    export default { rpc: { slow(ctx) {
      const until = performance.now() + 8;
      while (performance.now() < until) {}
      return new TextEncoder().encode(String(ctx.tick));
    } } };`);
  t = await startTestShard({
    AETHEX_GAMESERVER_GAME_MODULE: file,
    // rpc.max_in_flight at its default: a burst within the rate waits for its ticks, none refused BUSY.
    AETHEX_GAMESERVER_RPC_MAX_MS_PER_TICK: '5',
  });
  const c = await t.client('joy');
  const ticks = (await Promise.all(Array.from({ length: 20 }, () => c.rpc('slow')))).map((b) => Number(text(b)));
  // Arrival order, each at a tick of its own: the tick thread never ran two 8 ms handlers back to back.
  expect(new Set(ticks).size).toBe(20);
  expect(ticks).toEqual([...ticks].sort((a, b) => a - b));
});

test('an RPC result is at most 16 KiB: a larger one answers INTERNAL, logged with its size', async () => {
  const file = moduleFile(`
    export default { rpc: {
      big() { return new Uint8Array(16 * 1024 + 1); },
      justRight() { return new Uint8Array(16 * 1024).fill(7); },
      async bigLater() { return new Uint8Array(5 * 1024 * 1024); },
    } };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
  const c = await t.client('ivy');
  await expect(c.rpc('big')).rejects.toMatchObject({ code: 'INTERNAL' });
  await expect(c.rpc('bigLater')).rejects.toMatchObject({ code: 'INTERNAL' });
  expect((await c.rpc('justRight')).length).toBe(16 * 1024);
  expect(await errors()).toMatch(/hook="rpc\.big"\} 1/);
  expect(await errors()).toMatch(/hook="rpc\.bigLater"\} 1/);
});

test('an async hook that rejects is counted and logged as a throwing one; the tick goes on', async () => {
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);
  process.on('unhandledRejection', onRejection);
  try {
    const file = moduleFile(`
      export default {
        async onTick(ctx) { if (ctx.tick % 2 === 0) throw new Error('async boom'); },
        async onJoin() { await null; throw new Error('async join boom'); },
      };`);
    t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
    await t.client('jan');
    const deadline = Date.now() + 5000;
    while (!/hook="onTick"\} [1-9]/.test(await errors()) || !/hook="onJoin"\} 1/.test(await errors())) {
      if (Date.now() > deadline) throw new Error(`async hook failures were not counted: ${await errors()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    const before = t.shard.engine.tick;
    await until('ticks to go on', () => (t as TestShard).shard.engine.tick > before + 4);
    expect(rejections).toEqual([]);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
});

test('ctx.despawn removes game entities only: an NPC or a player’s entity is a RangeError naming the rule; a leaving player’s id is freed', async () => {
  const file = moduleFile(`
    export default {
      onLeave(ctx, p) { try { ctx.despawn(p.entityId); } catch (err) { (globalThis.despawnOnLeave ??= []).push(err.name + ': ' + err.message); } },
      rpc: {
        despawn(ctx, p, payload) {
          try { return new TextEncoder().encode(String(ctx.despawn(new DataView(payload.buffer, payload.byteOffset).getUint32(0)))); }
          catch (err) { return new TextEncoder().encode(err.name + ': ' + err.message); }
        },
        spawn(ctx) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, ctx.spawn(0, 0, 7)); return b; },
      },
    };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file, AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '3' });
  const { world } = t.shard.engine;
  const c = await t.client('kim');
  const kimId = c.welcome?.entityId as number;
  const u32 = (n: number) => {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, n);
    return b;
  };
  let npc = -1;
  for (let i = 0; i < world.count; i++) if (world.kind[i] === 0) npc = world.id[i] as number;
  expect(text(await c.rpc('despawn', u32(npc)))).toBe(
    `RangeError: despawn removes game entities (kind ≥ 2) only; entity ${npc} is an NPC (kind 0)`,
  );
  expect(world.indexOf(npc)).toBeGreaterThanOrEqual(0);
  expect(text(await c.rpc('despawn', u32(kimId)))).toMatch(
    /^RangeError: despawn removes game entities \(kind ≥ 2\) only; entity \d+ is a player's \(kind 1\)$/,
  );
  const spawned = await c.rpc('spawn');
  const own = new DataView(spawned.buffer, spawned.byteOffset).getUint32(0);
  expect(text(await c.rpc('despawn', u32(own)))).toBe('true');
  expect(text(await c.rpc('despawn', u32(own)))).toBe('false');

  // A player who leaves: the game cannot take their entity from the engine, which frees its id.
  const d = await t.client('lou');
  const louId = d.welcome?.entityId as number;
  d.close();
  await until('lou to leave', () => world.indexOf(louId) < 0);
  expect((globalThis as { despawnOnLeave?: string[] }).despawnOnLeave).toEqual([
    `RangeError: despawn removes game entities (kind ≥ 2) only; entity ${louId} is a player's (kind 1)`,
  ]);
  expect((world as unknown as { freed: number[] }).freed.filter((_, i) => i % 2 === 0)).toContain(louId);
});
