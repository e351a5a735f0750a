import { aethex } from '@aethex/proto';
import { afterEach, expect, test } from 'vitest';
import { loadConfig } from '../config.js';
import { ShardEngine } from '../engine.js';
import { createRng } from '../sim/step.js';

const { ServerMessage } = aethex.v1;

/** An engine whose messages are kept per session and tick (sessions stay on the thread they joined). */
function engine(threads: number) {
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: 'unused: sessions join through the engine directly',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,600,600',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '150',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '1000',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '200',
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: String(threads),
  });
  const sent = new Map<number, Buffer[]>();
  const e = new ShardEngine(
    settings,
    {
      send: (id, bytes) => {
        const list = sent.get(id) ?? [];
        list.push(Buffer.from(bytes));
        sent.set(id, list);
        return true;
      },
      kick: () => undefined,
    },
    { rebalance: false },
  );
  return { e, sent };
}

const engines: ShardEngine[] = [];
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()));
});

/**
 * Drives engines with the same joins, inputs, acknowledgements (some late, some never) and leaves;
 * the NPCs wander from the same seed, so the worlds stay identical tick by tick.
 */
function drive(targets: ShardEngine[], ticks: number, from = 1) {
  const rng = createRng(7);
  let nextSession = from;
  const live: number[] = [];
  const seq = new Map<number, number>();
  for (let t = 0; t < ticks; t++) {
    if (live.length < 120 && rng() < 0.5) {
      const id = nextSession++;
      for (const e of targets) expect(e.join(id, `player-${id}`).ok).toBe(true);
      live.push(id);
      seq.set(id, 0);
    }
    if (live.length > 20 && rng() < 0.15) {
      const [id] = live.splice(Math.floor(rng() * live.length), 1);
      for (const e of targets) e.leave(id as number);
    }
    for (const id of live) {
      const s = (seq.get(id) as number) + 1;
      seq.set(id, s);
      const mx = (rng() - 0.5) * 8;
      const my = (rng() - 0.5) * 8;
      // Most acknowledge the last tick, some lag a few ticks, every tenth never acknowledges.
      const lag = id % 10 === 0 ? -1 : id % 3 === 0 ? Math.floor(rng() * 6) : 0;
      for (const e of targets) e.input(id, s, mx, my, lag < 0 ? 0 : Math.max(0, e.tick - lag));
    }
    for (const e of targets) e.step();
  }
  return live;
}

test('snapshot threads send exactly the bytes the tick thread alone sends, through joins, leaves, lag and despawns', async () => {
  const one = engine(1);
  const three = engine(3);
  engines.push(one.e, three.e);
  await three.e.snapshotThreadsReady();
  drive([one.e, three.e], 300);
  expect(one.sent.size).toBeGreaterThan(100);
  expect([...three.sent.keys()]).toEqual([...one.sent.keys()]);
  for (const [id, list] of one.sent) {
    const theirs = three.sent.get(id) as Buffer[];
    expect(theirs.length, `session ${id}`).toBe(list.length);
    expect(Buffer.concat(theirs).equals(Buffer.concat(list)), `session ${id}`).toBe(true);
  }
  // The threads did take part: their sessions' histories gave deltas, not only full snapshots.
  let deltas = 0;
  for (const list of three.sent.values()) {
    for (const b of list) if ((ServerMessage.decode(b).snapshot?.baseTick ?? 0) > 0) deltas++;
  }
  expect(deltas).toBeGreaterThan(10_000);
}, 60_000);

test('a snapshot thread that dies hands its clients back to the tick thread, which sends them full snapshots', async () => {
  const two = engine(2);
  engines.push(two.e);
  await two.e.snapshotThreadsReady();
  const live = drive([two.e], 40);
  // biome-ignore lint/suspicious/noExplicitAny: the test reaches into the engine to kill its thread
  const internals = two.e as any;
  const thread = internals.threads[0];
  const onThread = [...internals.sessions.values()].filter((x) => x.thread === 1).map((x) => x.id as number);
  await thread.worker.terminate();
  await new Promise((r) => setTimeout(r, 50));
  for (const list of two.sent.values()) list.length = 0;
  two.e.step();
  two.e.step();
  // (Every tenth session never acknowledges and was kicked for it.)
  const playing = live.filter((id) => id % 10 !== 0);
  for (const id of playing) {
    const list = two.sent.get(id) ?? [];
    expect(list.length, `session ${id}`).toBe(2);
  }
  // Sessions that were on the dead thread start over from full snapshots.
  const moved = playing.filter((id) => onThread.includes(id));
  expect(moved.length).toBeGreaterThan(4);
  for (const id of moved) {
    expect(ServerMessage.decode((two.sent.get(id) as Buffer[])[0] as Buffer).snapshot?.baseTick, `session ${id}`).toBe(0);
  }
});
