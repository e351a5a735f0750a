import { aethex } from '@aethex/proto';
import { SnapshotStore } from '@aethex/sdk';
import { afterEach, expect, test } from 'vitest';
import { loadConfig } from '../src/config.js';
import { ShardEngine } from '../src/engine.js';
import { createRng } from '../src/sim/step.js';

const { ServerMessage } = aethex.v1;

let engine: ShardEngine | undefined;
afterEach(async () => {
  await engine?.close();
});

test('sessions move off the tick thread when its sends cost more, and every client’s view stays exact', async () => {
  const radius = 150;
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,600,600',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: String(radius),
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '1000',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '200',
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: '2',
  });
  const stores = new Map<number, SnapshotStore>();
  const lastTick = new Map<number, number>();
  const views = new Map<number, ReadonlyMap<number, unknown>>();
  const fullAfterFirst = new Set<number>();
  let failures = 0;
  const e = new ShardEngine(settings, {
    send: (id, bytes) => {
      // A socket write costs the tick thread far more than cutting does (as over real sockets).
      const until = performance.now() + 0.05;
      while (performance.now() < until);
      const m = ServerMessage.decode(bytes).snapshot;
      if (!m) return true;
      const store = stores.get(id) as SnapshotStore;
      const tick = m.tick as number;
      const baseTick = m.baseTick ?? 0;
      if (baseTick === 0 && lastTick.has(id)) fullAfterFirst.add(id);
      try {
        views.set(id, store.apply(tick, baseTick, m.entities as Uint8Array, m.removed ?? []).frame);
        lastTick.set(id, tick);
      } catch {
        failures++;
      }
      return true;
    },
    kick: () => undefined,
  });
  engine = e;
  await e.snapshotThreadsReady();
  const players = 80;
  for (let id = 1; id <= players; id++) {
    stores.set(id, new SnapshotStore());
    expect(e.join(id, `player-${id}`).ok).toBe(true);
  }
  // biome-ignore lint/suspicious/noExplicitAny: the test reads the engine's per-thread session counts
  const load = (e as any).threadLoad as number[];
  expect(load).toEqual([40, 40]);
  const rng = createRng(3);
  // 401 steps: the last rebalancing (every 20) is followed by a step that sends what it moved.
  for (let t = 0; t < 401; t++) {
    for (let id = 1; id <= players; id++) e.input(id, t + 1, (rng() - 0.5) * 8, (rng() - 0.5) * 8, lastTick.get(id) ?? 0);
    e.step();
  }
  expect(failures).toBe(0);
  // Sessions went to the snapshot thread (joins alternate: odd ids started on the tick thread), and
  // each that moved restarted from a full snapshot.
  expect(load[1]).toBeGreaterThan(60);
  expect((load[0] as number) + (load[1] as number)).toBe(players);
  // biome-ignore lint/suspicious/noExplicitAny: the engine's sessions
  const sessions = [...(e as any).sessions.values()] as { id: number; entityId: number; thread: number }[];
  const moved = sessions.filter((x) => x.thread === 1 && x.id % 2 === 1).map((x) => x.id);
  expect(moved.length).toBeGreaterThan(20);
  expect(moved.filter((id) => !fullAfterFirst.has(id))).toEqual([]);
  // Every client sees exactly what is within its radius at the last tick.
  const out = new Int32Array(1000);
  for (let id = 1; id <= players; id++) {
    expect(lastTick.get(id)).toBe(e.tick);
    const slot = e.world.indexOf((sessions.find((x) => x.id === id) as { entityId: number }).entityId);
    const n = e.grid.queryRadius(e.world.x[slot] as number, e.world.y[slot] as number, radius, out, -1);
    const truth = [...out.subarray(0, n)].map((s) => e.world.id[s] as number).sort((a, b) => a - b);
    expect(
      [...(views.get(id)?.keys() ?? [])].sort((a, b) => a - b),
      `player ${id}`,
    ).toEqual(truth);
  }
}, 60_000);
