import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { startTestShard, type TestShard, until } from './harness.js';

// The viewer's endpoints on a real shard: what they show, their bound, and turning them off.

const shards: TestShard[] = [];
afterEach(async () => {
  for (const t of shards.splice(0)) await t.stop();
});

async function start(env: Record<string, string>): Promise<TestShard> {
  const t = await startTestShard(env);
  shards.push(t);
  return t;
}

interface State {
  entities: number[];
  entityCount: number;
  focus?: { id: number; visible: number[] };
}

test('a player’s area of interest in the viewer is what that player is sent: engine.max_visible of them, dormant players left out', async () => {
  // About 30 NPCs in the grid's first cell (x and y -200..-100: the AOI radius, 200, by the cell
  // factor, 0.5), about 100 within the radius of its corner.
  const t = await start({
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '500',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '-200,-200,200,200',
    AETHEX_GAMESERVER_ENGINE_MAX_VISIBLE: '64',
  });
  const watcher = await t.client('watcher');
  let socket: WebSocket | undefined;
  const dropper = await t.client('dropper', {
    createSocket: (url) => {
      socket = new WebSocket(url);
      return socket as never;
    },
  });
  const dropped = dropper.welcome?.entityId as number;
  const me = watcher.welcome?.entityId as number;
  // Both in the first cell, which a query there scans first: left in, the dropped player would be
  // among the 64.
  const w = t.shard.engine.world;
  for (const id of [me, dropped]) {
    w.x[w.indexOf(id)] = -199;
    w.y[w.indexOf(id)] = -199;
  }
  await until('the watcher in the corner', () => Math.abs((watcher.entities().get(me)?.x ?? 0) + 199) < 0.2);
  // Cut without a close frame: the entity stays, dormant, for the rejoin window.
  (socket as unknown as { _socket: { destroy(): void } })._socket.destroy();
  await until('the dropped player to be dormant', () => w.mode[w.indexOf(dropped)] === 3, 10_000);
  await new Promise((r) => setTimeout(r, 200));
  const state = (await (await fetch(`${t.shard.opsUrl}/viewer/state?focus=${me}`)).json()) as State;
  const visible = state.focus?.visible ?? [];
  expect(visible.length).toBe(64);
  expect(visible).toContain(me);
  // Cells are scanned in order: one of the 64 beyond the first cell (positions as the state lists
  // them, to 0.1) means all of it was scanned, the dropped player's place with it.
  const at = new Map<number, [number, number]>();
  for (let k = 0; k < state.entities.length; k += 5)
    at.set(state.entities[k + 3] as number, [state.entities[k] as number, state.entities[k + 1] as number]);
  expect(at.get(dropped)).toEqual([-199, -199]);
  expect(visible.some((id) => (at.get(id) as [number, number]).some((v) => v >= -99.9))).toBe(true);
  expect(visible).not.toContain(dropped);
  expect(watcher.entities().size).toBe(64);
  expect(watcher.entities().has(dropped)).toBe(false);
});

test('the viewer state lists at most ops.viewer_max_entities entities, and says how many there are', async () => {
  const t = await start({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300', AETHEX_GAMESERVER_OPS_VIEWER_MAX_ENTITIES: '100' });
  const state = (await (await fetch(`${t.shard.opsUrl}/viewer/state`)).json()) as State;
  expect(state.entities.length).toBe(100 * 5);
  expect(state.entityCount).toBe(300);
});

test('with ops.viewer false the viewer is not served; health, readiness and metrics are', async () => {
  const t = await start({ AETHEX_GAMESERVER_OPS_VIEWER: 'false' });
  expect((await fetch(`${t.shard.opsUrl}/viewer`)).status).toBe(404);
  expect((await fetch(`${t.shard.opsUrl}/viewer/state`)).status).toBe(404);
  expect((await fetch(`${t.shard.opsUrl}/readyz`)).status).toBe(200);
  expect((await fetch(`${t.shard.opsUrl}/metrics`)).status).toBe(200);
});

test('32 viewers polling with a focus cost the tick thread a bounded number of state builds; one viewer still sees every poll fresh', async () => {
  const t = await start({ AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '2000' });
  const player = (await t.client('watched')).welcome?.entityId as number;
  const url = `${t.shard.opsUrl}/viewer/state?focus=${player}`;
  // As the page polls: one request, then the next 100 ms after its answer.
  const poll = async (until: number, seen: { tick: number; status: number; focus?: number }[]) => {
    while (Date.now() < until) {
      const res = await fetch(url);
      if (res.ok) {
        const s = (await res.json()) as { tick: number; focus?: { id: number } };
        seen.push({ tick: s.tick, status: res.status, ...(s.focus ? { focus: s.focus.id } : {}) });
      } else seen.push({ tick: -1, status: res.status });
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const seconds = 3;
  const crowd: { tick: number; status: number; focus?: number }[] = [];
  const end = Date.now() + seconds * 1000;
  await Promise.all(Array.from({ length: 32 }, () => poll(end, crowd)));
  expect(crowd.length).toBeGreaterThan(32 * 10);
  // Answered, and with the player's area of interest.
  expect(crowd.filter((s) => s.status !== 200)).toEqual([]);
  expect(crowd.every((s) => s.focus === player)).toBe(true);
  // A state is built only when a poll finds a new tick, and at most VIEWER_MAX_BUILDS_PER_SECOND
  // (10) a second after a burst of 2: the ticks the crowd saw are the states built.
  const built = new Set(crowd.map((s) => s.tick)).size;
  expect(built).toBeLessThanOrEqual(10 * seconds + 2 + 1);
  // One viewer alone polls within the budget: every answer is a newer state than the last.
  const alone: { tick: number; status: number }[] = [];
  await new Promise((r) => setTimeout(r, 500));
  await poll(Date.now() + 2000, alone);
  const fresh = alone.filter((s, k) => k > 0 && s.tick > (alone[k - 1] as { tick: number }).tick).length;
  expect(fresh).toBeGreaterThanOrEqual(alone.length - 2);
});
