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
  const t = await start({
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '1000',
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
  // Cut without a close frame: the entity stays, dormant, for the rejoin window.
  (socket as unknown as { _socket: { destroy(): void } })._socket.destroy();
  const me = watcher.welcome?.entityId as number;
  await until('the dropped player to be dormant', () => t.shard.engine.world.mode[t.shard.engine.world.indexOf(dropped)] === 3, 10_000);
  await new Promise((r) => setTimeout(r, 200));
  const state = (await (await fetch(`${t.shard.opsUrl}/viewer/state?focus=${me}`)).json()) as State;
  const visible = state.focus?.visible ?? [];
  expect(visible.length).toBe(64);
  expect(visible).toContain(me);
  expect(visible).not.toContain(dropped);
  expect(watcher.entities().size).toBe(64);
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
