import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { cpSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aethex } from '@aethex/proto';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { loadHooks } from '../src/hooks.js';
import { duoMap, duoWorld, linksUp, moduleFile, startTestShard, type TestShard, until } from './harness.js';

const TAG = join(import.meta.dirname, '../../examples/game/tag.mjs');
let t: TestShard | undefined;
let others: TestShard[] = [];
afterEach(async () => {
  await Promise.all([t, ...others].map((s) => s?.stop()));
  t = undefined;
  others = [];
});

test('the tag example: the first player is "it", it shows in snapshots, rpc answers, tagging passes it on', async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: TAG, AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50' });
  const a = await t.client('alice');
  const b = await t.client('bob');
  const aliceId = a.welcome?.entityId as number;
  const bobId = b.welcome?.entityId as number;
  await until('alice flagged "it" in bob’s view', () => b.entities().get(aliceId)?.flags === 1);
  expect(JSON.parse(new TextDecoder().decode(await b.rpc('whoIsIt')))).toEqual({ entityId: aliceId, playerId: 'alice' });

  const heard: string[] = [];
  b.on('message', (topic, payload) => heard.push(`${topic} ${new TextDecoder().decode(payload)}`));
  // Put bob next to alice: the next tick passes "it" to bob.
  const { world } = t.shard.engine;
  const sa = world.indexOf(aliceId);
  const sb = world.indexOf(bobId);
  world.x[sb] = (world.x[sa] as number) + 1;
  world.y[sb] = world.y[sa] as number;
  await until('bob flagged "it" in alice’s view', () => a.entities().get(bobId)?.flags === 1 && a.entities().get(aliceId)?.flags === 0);
  expect(JSON.parse(new TextDecoder().decode(await a.rpc('whoIsIt')))).toMatchObject({ playerId: 'bob' });
  await until('bob hears the tag', () => heard.length > 0);
  expect(heard).toEqual(['tagged {"from":"alice","to":"bob"}']);
  // Alice's tag is counted in her entity's game state.
  const score = async (c: typeof a) => JSON.parse(new TextDecoder().decode(await c.rpc('score')));
  expect([await score(a), await score(b)]).toEqual([{ tags: 1 }, { tags: 0 }]);
});

test('a game module imports RpcError from @aethex/gameserver; the client gets its code', async () => {
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: join(import.meta.dirname, 'fixtures/rpc-error-game.mjs') });
  const c = await t.client('dana');
  await expect(c.rpc('buy')).rejects.toMatchObject({ code: 'NOT_ENOUGH_GOLD' });
});

test('rpc errors: unknown method, a game error code, a failing handler (INTERNAL, counted); a throwing hook never stops the tick', async () => {
  const file = moduleFile(`
    class RpcError extends Error { constructor(code) { super(code); this.name = 'RpcError'; this.code = code; } }
    export const hooks = {
      onTick(ctx) { if (ctx.tick % 2 === 0) throw new Error('boom'); },
      rpc: {
        echo(ctx, player, payload) { return payload; },
        refuse() { throw new RpcError('NOT_ALLOWED'); },
        broken() { throw new Error('secret detail'); },
        async later(ctx, player) { await new Promise((r) => setTimeout(r, 20)); return new TextEncoder().encode(player.playerId); },
      },
    };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
  const c = await t.client('carol');
  expect(new TextDecoder().decode(await c.rpc('echo', new TextEncoder().encode('hi')))).toBe('hi');
  expect(new TextDecoder().decode(await c.rpc('later'))).toBe('carol');
  await expect(c.rpc('nope')).rejects.toMatchObject({ code: 'UNKNOWN_METHOD' });
  await expect(c.rpc('toString')).rejects.toMatchObject({ code: 'UNKNOWN_METHOD' });
  await expect(c.rpc('broken')).rejects.toMatchObject({ code: 'INTERNAL' });
  // A game's own error class named RpcError with a code answers with that code.
  await expect(c.rpc('refuse')).rejects.toMatchObject({ code: 'NOT_ALLOWED' });
  const errors = () => (t as TestShard).shard.metrics.registry.getSingleMetricAsString('aether_hook_errors_total');
  expect(await errors()).toMatch(/hook="rpc\.broken"\} 1/);
  const deadline = Date.now() + 5000;
  while (!/hook="onTick"\} [1-9]/.test(await errors())) {
    if (Date.now() > deadline) throw new Error('onTick failures were not counted');
    await new Promise((r) => setTimeout(r, 25));
  }
  const before = t.shard.engine.tick;
  await until('ticks to go on', () => (t as TestShard).shard.engine.tick > before + 4);
});

test('a game module with a wrong shape is refused at load with a message naming the problem', async () => {
  await expect(loadHooks(moduleFile('export default { onJion() {} };'))).rejects.toThrow(/unknown hook 'onJion'/);
  await expect(loadHooks(moduleFile('export default { onTick: 3 };'))).rejects.toThrow(/onTick must be a function/);
  await expect(loadHooks(moduleFile('export default { rpc: { a: 1 } };'))).rejects.toThrow(/rpc\.a must be a function/);
  await expect(loadHooks(moduleFile('export const x = 1;'))).rejects.toThrow(/export the hooks object/);
  await expect(loadHooks('/nonexistent/game.mjs')).rejects.toThrow(/game\.module \/nonexistent\/game\.mjs: cannot load it/);
});

test('a game module whose loading never finishes is refused after the limit; a syntax error names its place', async () => {
  const hung = moduleFile('await new Promise(() => {});\nexport default {};');
  await expect(loadHooks(hung, 300)).rejects.toThrow(`game.module ${hung}: its loading did not finish within 300 ms`);
  const ticking = moduleFile('setInterval(() => {}, 1000);\nawait new Promise(() => {});\nexport default {};');
  await expect(loadHooks(ticking, 300)).rejects.toThrow(/its loading did not finish within 300 ms/);
  const bad = moduleFile('export default {\n  onTick(ctx) { ctx.x( }\n};\n');
  await expect(loadHooks(bad)).rejects.toThrow(`game.module ${bad}: cannot load it: Unexpected token '}' (at ${bad}:2:24)`);
});

test('hooks send messages of the game’s own: to one player, to all; bad topics and oversized payloads are refused by name', async () => {
  const file = moduleFile(`
    const text = (s) => new TextEncoder().encode(s);
    export default {
      onJoin(ctx, p) { ctx.send(p.playerId, 'greeting', text('hello ' + p.playerId)); },
      rpc: {
        shout(ctx, p, payload) { return text(String(ctx.broadcast('chat:shout', payload))); },
        absent(ctx) { return text(String(ctx.send('nobody', 'x', new Uint8Array(0)))); },
        badTopic(ctx, p) { ctx.send(p.playerId, 'no spaces', new Uint8Array(1)); return new Uint8Array(0); },
        tooBig(ctx, p) { ctx.send(p.playerId, 'big', new Uint8Array(16 * 1024 + 1)); return new Uint8Array(0); },
        justRight(ctx, p) { return text(String(ctx.send(p.playerId, 'big', new Uint8Array(16 * 1024).fill(7)))); },
      },
    };`);
  t = await startTestShard({ AETHEX_GAMESERVER_GAME_MODULE: file });
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  const received = new Map<string, string[]>();
  let welcomedFirst = true;
  const ticks: number[] = [];
  // Listening before connecting: the greeting comes right after the Welcome.
  const join = (name: string) =>
    (t as TestShard).client(name, {}, (c) =>
      c.on('message', (topic, payload, tick) => {
        welcomedFirst &&= c.welcome !== undefined;
        ticks.push(tick);
        received.set(name, [...(received.get(name) ?? []), `${topic} ${topic === 'big' ? payload.length : text(payload)}`]);
      }),
    );
  const a = await join('alice');
  await join('bob');
  expect(text(await a.rpc('shout', new TextEncoder().encode('hi all')))).toBe('2');
  await until('both hear the shout', () => ['alice', 'bob'].every((n) => received.get(n)?.includes('chat:shout hi all')));
  expect(text(await a.rpc('absent'))).toBe('false');
  await expect(a.rpc('badTopic')).rejects.toMatchObject({ code: 'INTERNAL' });
  await expect(a.rpc('tooBig')).rejects.toMatchObject({ code: 'INTERNAL' });
  expect(text(await a.rpc('justRight'))).toBe('true');
  await until('the 16 KiB message', () => received.get('alice')?.includes('big 16384') === true);
  expect(received.get('alice')).toEqual(['greeting hello alice', 'chat:shout hi all', 'big 16384']);
  expect(received.get('bob')).toEqual(['greeting hello bob', 'chat:shout hi all']);
  expect(welcomedFirst).toBe(true);
  expect(ticks.every((k) => k <= (t as TestShard).shard.engine.tick)).toBe(true);
  expect([...ticks].sort((x, y) => x - y)).toEqual(ticks);
  const errors = await t.shard.metrics.registry.getSingleMetricAsString('aether_hook_errors_total');
  expect(errors).toMatch(/hook="rpc\.badTopic"\} 1/);
  expect(errors).toMatch(/hook="rpc\.tooBig"\} 1/);
});

test('after a handoff the old shard calls no hook for the player: an RPC on the old connection is answered HANDED_OVER', async () => {
  const file = moduleFile(`
    const events = (globalThis.handedOverEvents = []);
    export default {
      onJoin(ctx, p) { events.push('onJoin ' + p.playerId); },
      onLeave(ctx, p, { dropped, handedOver }) { events.push('onLeave ' + p.playerId + ' dropped=' + dropped + ' handedOver=' + handedOver); },
      rpc: { buy(ctx, p) { events.push('rpc.buy ' + p.playerId); return new Uint8Array([1]); } },
    };`);
  // Two neighbouring shards of one world, a = x 0..400 and b = x 400..800, running the game.
  const { start } = await duoWorld({ AETHEX_GAMESERVER_GAME_MODULE: file });
  t = await start(0);
  const b = await start(1);
  others = [b];
  const a = t;
  await linksUp(a, b);

  // A client of its own, which does not follow the redirect: it stays on the old connection.
  const { ClientMessage, ServerMessage } = aethex.v1;
  const ws = new WebSocket(a.shard.gatewayUrl);
  const messages: aethex.v1.ServerMessage[] = [];
  ws.on('message', (data) => messages.push(ServerMessage.decode(data as Buffer)));
  await once(ws, 'open');
  const rpcResult = async (callId: number) => {
    ws.send(ClientMessage.encode({ rpc: { callId, method: 'buy' } }).finish());
    await until(`the result of call ${callId}`, () => messages.some((m) => m.rpcResult?.callId === callId));
    return messages.find((m) => m.rpcResult?.callId === callId)?.rpcResult;
  };
  ws.send(ClientMessage.encode({ join: { joinToken: await a.token('ann'), protocolVersion: 1 } }).finish());
  await until('welcome', () => messages.some((m) => m.body === 'welcome'));
  expect(await rpcResult(1)).toMatchObject({ ok: true });

  // Ann is moved past the border: a hands her over to b and redirects her client.
  const id = messages.find((m) => m.body === 'welcome')?.welcome?.entityId as number;
  const world = a.shard.engine.world;
  world.x[world.indexOf(id)] = 450;
  world.y[world.indexOf(id)] = 200;
  await until('the redirect', () => messages.some((m) => m.body === 'handoffRedirect'), 10_000);
  const events = (globalThis as { handedOverEvents?: string[] }).handedOverEvents as string[];
  expect(events).toEqual(['onJoin ann', 'rpc.buy ann', 'onLeave ann dropped=false handedOver=true']);

  // The SDK sends RPCs to the old shard until the new one welcomes it: refused, the game not called.
  expect(await rpcResult(2)).toMatchObject({ ok: false, errorCode: 'HANDED_OVER' });
  expect(events).toEqual(['onJoin ann', 'rpc.buy ann', 'onLeave ann dropped=false handedOver=true']);
  ws.close(1000);
  await once(ws, 'close');
  expect(events).toEqual(['onJoin ann', 'rpc.buy ann', 'onLeave ann dropped=false handedOver=true']);
});

test("a player's game state crosses the border with them: the new shard's hooks read what the old one's wrote", async () => {
  // Gold kept in the entity's game state; 'earn' adds one, 'gold' reads it, on whichever shard.
  const file = moduleFile(`
    const gold = (ctx, p) => ctx.state(p.entityId)?.[0];
    export default {
      onJoin(ctx, p, { handedOver }) {
        (globalThis.goldOnJoin ??= []).push(\`\${gold(ctx, p) ?? 'none'} handedOver=\${handedOver}\`);
        if (gold(ctx, p) === undefined) ctx.setState(p.entityId, new Uint8Array([0]));
        ctx.send(p.playerId, 'welcome', new TextEncoder().encode('handedOver=' + handedOver));
      },
      rpc: {
        earn(ctx, p) {
          if (!ctx.setState(p.entityId, new Uint8Array([gold(ctx, p) + 1]))) throw new Error('state not set');
          return new Uint8Array([gold(ctx, p)]);
        },
        gold(ctx, p) { return new Uint8Array([gold(ctx, p) ?? 255]); },
      },
    };`);
  const { start } = await duoWorld({ AETHEX_GAMESERVER_GAME_MODULE: file });
  t = await start(0);
  const b = await start(1);
  others = [b];
  await linksUp(t, b);
  // What onJoin sends reaches the client right after the Welcome, on the neighbour too.
  const greetings: string[] = [];
  const c = await t.client('gil', {}, (cl) =>
    cl.on('message', (topic, payload) => greetings.push(`${topic} ${new TextDecoder().decode(payload)}`)),
  );
  for (let i = 1; i <= 3; i++) expect([...(await c.rpc('earn'))]).toEqual([i]);
  const handedOver: string[] = [];
  c.on('handoff', (h) => handedOver.push(h.to));
  const walk = setInterval(() => c.move(4, 0), 25);
  try {
    await until('the handoff', () => handedOver.length > 0, 30_000);
  } finally {
    clearInterval(walk);
  }
  expect(handedOver).toEqual(['duo-0-1']);
  // b's onJoin saw the gold a earned, and b's handlers go on from it; a keeps none of it.
  expect((globalThis as { goldOnJoin?: unknown[] }).goldOnJoin).toEqual(['none handedOver=false', '3 handedOver=true']);
  expect([...(await c.rpc('gold'))]).toEqual([3]);
  expect([...(await c.rpc('earn'))]).toEqual([4]);
  const id = c.welcome?.entityId as number;
  expect(t.shard.engine.context.state(id)).toBeUndefined();
  expect(b.shard.engine.context.state(id)).toEqual(new Uint8Array([4]));
  expect(greetings).toEqual(['welcome handedOver=false', 'welcome handedOver=true']);
});

/** Who is "it" among `ids` on a shard: the entities it owns (not ghosts) flagged 1. */
const flaggedIt = (s: TestShard, ids: number[]) => {
  const w = s.shard.engine.world;
  return ids.filter((id) => w.indexOf(id) >= 0 && w.mode[w.indexOf(id)] !== 1 && w.flags[w.indexOf(id)] === 1);
};
const whoIsIt = async (c: { rpc(m: string): Promise<Uint8Array> }) => JSON.parse(new TextDecoder().decode(await c.rpc('whoIsIt')));

test('the tag example across a shard border: "it" walks over with its flag, each shard keeps one "it" and knows who', async () => {
  // Each shard its own copy of the module, as each would be its own process.
  const { envOf } = await duoMap();
  const keys = generateKeyPairSync('ed25519');
  const start = (k: number) => startTestShard({ ...envOf(k), AETHEX_GAMESERVER_GAME_MODULE: moduleFile(readFileSync(TAG, 'utf8')) }, keys);
  const a = await start(0);
  t = a;
  const b = await start(1);
  others = [b];
  await linksUp(a, b);
  const alice = await a.client('alice'); // the first on shard 0: "it" there
  const bob = await a.client('bob');
  const carol = await b.client('carol'); // the first on shard 1: "it" there
  const ids = [alice, bob, carol].map((c) => c.welcome?.entityId as number);
  const [aliceId, bobId, carolId] = ids as [number, number, number];
  const place = (s: TestShard, id: number, x: number, y: number) => {
    const w = s.shard.engine.world;
    w.x[w.indexOf(id)] = x;
    w.y[w.indexOf(id)] = y;
  };
  place(a, aliceId, 390, 20);
  place(a, bobId, 50, 380);
  place(b, carolId, 750, 380);
  expect([flaggedIt(a, ids), flaggedIt(b, ids)]).toEqual([[aliceId], [carolId]]);
  let handedOver = false;
  alice.on('handoff', () => {
    handedOver = true;
  });
  const walk = setInterval(() => alice.move(4, 0), 25);
  try {
    await until('alice handed over', () => handedOver, 30_000);
  } finally {
    clearInterval(walk);
  }
  await until('alice on shard 1', () => b.shard.engine.playerCount === 2);
  // Shard 0 passed "it" on to bob; shard 1 kept carol, and alice arrived "it" no longer.
  await until('one "it" a shard', () => flaggedIt(a, ids).length === 1 && flaggedIt(b, ids).length === 1);
  expect([flaggedIt(a, ids), flaggedIt(b, ids)]).toEqual([[bobId], [carolId]]);
  expect(await whoIsIt(bob)).toEqual({ entityId: bobId, playerId: 'bob' });
  expect(await whoIsIt(carol)).toEqual({ entityId: carolId, playerId: 'carol' });
  expect(await whoIsIt(alice)).toEqual({ entityId: carolId, playerId: 'carol' });
});

test('the tag example after a crash: "it" is found again from the flags the snapshot kept, never two', async () => {
  const keys = generateKeyPairSync('ed25519');
  const dir = mkdtempSync(join(tmpdir(), 'aethex-tag-'));
  const env = {
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-50,-50,50,50',
    AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: '100',
  };
  t = await startTestShard(
    { ...env, AETHEX_GAMESERVER_GAME_MODULE: moduleFile(readFileSync(TAG, 'utf8')), AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: dir },
    keys,
  );
  const alice = await t.client('alice');
  const bob = await t.client('bob');
  const [aliceId, bobId] = [alice, bob].map((c) => c.welcome?.entityId as number) as [number, number];
  const w = t.shard.engine.world;
  w.x[w.indexOf(aliceId)] = -40;
  w.x[w.indexOf(bobId)] = 40;
  expect(flaggedIt(t, [aliceId, bobId])).toEqual([aliceId]);
  // A crash: what the shard left is its last periodic snapshot (alice "it"), not the drain's: one
  // captured after the placing above.
  const placedAt = t.shard.engine.tick;
  await until('a periodic snapshot after both joined', () => (t as TestShard).shard.persistence.lastSavedTick > placedAt);
  const crashed = mkdtempSync(join(tmpdir(), 'aethex-tag-'));
  cpSync(dir, crashed, { recursive: true });
  await t.stop();
  // The new process loads the module afresh: its variables know nobody.
  t = await startTestShard(
    { ...env, AETHEX_GAMESERVER_GAME_MODULE: moduleFile(readFileSync(TAG, 'utf8')), AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: crashed },
    keys,
  );
  const bob2 = await t.client('bob'); // back first
  const alice2 = await t.client('alice');
  expect([bob2.welcome?.entityId, alice2.welcome?.entityId]).toEqual([bobId, aliceId]);
  const it = flaggedIt(t, [aliceId, bobId]);
  expect(it).toHaveLength(1);
  expect((await whoIsIt(alice2)).entityId).toBe(it[0]);
});
