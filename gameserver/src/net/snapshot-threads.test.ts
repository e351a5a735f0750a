import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aethex } from '@aethex/proto';
import { binaryFrame, directWriteFd, writeWhole } from '@aethex/runtime/ws-frames';
import { afterEach, expect, onTestFinished, test } from 'vitest';
import { loadConfig } from '../config.js';
import { type SessionOutput, ShardEngine } from '../engine.js';
import { createMetrics } from '../metrics.js';
import { decodeState, encodeState } from '../persist/state-codec.js';
import { createRng } from '../sim/step.js';
import { World } from '../sim/world.js';
import { CTL_WRITE_LOCK, type SnapshotThread, WRITE_LOCK_CLOSED, WRITE_LOCK_FREE, WRITE_LOCK_HELD } from './snapshot-threads.js';

const { ServerMessage } = aethex.v1;

/** An engine whose messages are kept per session and tick (sessions stay on the thread they joined). */
function engine(threads: number, options: ConstructorParameters<typeof ShardEngine>[2] = {}, env: Record<string, string> = {}) {
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,600,600',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '150',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '1000',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '200',
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: String(threads),
    ...env,
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
    { rebalance: false, ...options },
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
      // As a client does: the tick of the snapshot it applied, a uint32 on the wire.
      for (const e of targets) e.input(id, s, mx, my, lag < 0 ? 0 : Math.max(0, e.tick - lag) >>> 0);
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

test('capped areas of interest (engine.max_visible) are the same on snapshot threads, and counted in aether_aoi_capped_total', async () => {
  const counted = async (metrics: ReturnType<typeof createMetrics>, name: string) =>
    Number(/^\w+ (\S+)$/m.exec(await metrics.registry.getSingleMetricAsString(name))?.[1]);
  // ~60 entities in reach of a player (300 NPCs and up to 120 players over 600×600, radius 150): 16 is a crowd.
  const crowded = { AETHEX_GAMESERVER_ENGINE_MAX_VISIBLE: '16' };
  const oneMetrics = createMetrics();
  const threeMetrics = createMetrics();
  const roomyMetrics = createMetrics();
  const one = engine(1, { metrics: oneMetrics }, crowded);
  const three = engine(3, { metrics: threeMetrics }, crowded);
  const roomy = engine(1, { metrics: roomyMetrics });
  engines.push(one.e, three.e, roomy.e);
  await three.e.snapshotThreadsReady();
  drive([one.e, three.e, roomy.e], 200);
  for (const [id, list] of one.sent) {
    expect(Buffer.concat(three.sent.get(id) as Buffer[]).equals(Buffer.concat(list)), `session ${id}`).toBe(true);
  }
  const queries = await counted(oneMetrics, 'aether_aoi_queries_total');
  const capped = await counted(oneMetrics, 'aether_aoi_capped_total');
  expect(capped).toBeGreaterThan(queries / 2);
  expect(capped).toBeLessThanOrEqual(queries);
  // The threads' capped queries reach the tick thread's counter.
  expect(await counted(threeMetrics, 'aether_aoi_capped_total')).toBe(capped);
  expect(await counted(roomyMetrics, 'aether_aoi_queries_total')).toBe(queries);
  expect(await counted(roomyMetrics, 'aether_aoi_capped_total')).toBe(0);
}, 60_000);

// Ticks are uint32 in the protocol and in the state blob. Past 2^31 (1.7 years of a world at
// 40 Hz) shared int32 words once wrapped them negative and every step threw; past 2^32 (3.4 years
// at 40 Hz, 248 days at 200 Hz) the wire's ticks wrap, and clients acknowledge wrapped ticks.
test.each([2 ** 31, 2 ** 32])(
  'past tick %i snapshots go on, as deltas, on the tick thread and on snapshot threads',
  async (at) => {
    const restored = () => decodeState(encodeState(at - 50, new World(1000), new Map()), 1000);
    const one = engine(1, { restored: restored() });
    const three = engine(3, { restored: restored() });
    engines.push(one.e, three.e);
    await three.e.snapshotThreadsReady();
    const live = drive([one.e, three.e], 100);
    expect(one.e.tick).toBe(at + 50);
    for (const [id, list] of one.sent) {
      expect(Buffer.concat(three.sent.get(id) as Buffer[]).equals(Buffer.concat(list)), `session ${id}`).toBe(true);
    }
    // Every live session that acknowledges got a snapshot of the last tick (its low 32 bits on the
    // wire), most of them deltas on a base of the last 32 ticks.
    const last = live
      .filter((id) => id % 10 !== 0)
      .map((id) =>
        (three.sent.get(id) as Buffer[])
          .map((b) => ServerMessage.decode(b).snapshot)
          .filter((snap) => snap)
          .at(-1),
      );
    expect(last.length).toBeGreaterThan(10);
    const wire = (at + 50) % 2 ** 32;
    for (const snap of last) expect(snap?.tick).toBe(wire);
    const recentBase = (snap: (typeof last)[number]) => (snap?.baseTick ?? 0) !== 0 && (wire - (snap?.baseTick ?? 0)) >>> 0 < 32;
    expect(last.filter(recentBase).length).toBeGreaterThan(last.length / 2);
  },
  60_000,
);

test('a snapshot thread’s garbage-collection pauses reach the shard’s metrics', async () => {
  const metrics = createMetrics();
  const pauses: number[] = [];
  const { e } = engine(2, { metrics, onThreadGc: (ms) => pauses.push(ms) });
  engines.push(e);
  await e.snapshotThreadsReady();
  // The thread's cutting allocates a little every round: rounds until it has collected and
  // reported, letting this thread's event loop take its messages.
  const until = performance.now() + 20_000;
  let from = 1;
  while (pauses.length === 0 && performance.now() < until) {
    drive([e], 100, from);
    from += 1000;
    await new Promise((r) => setTimeout(r, 10));
  }
  expect(pauses.length).toBeGreaterThan(0);
  for (const ms of pauses) expect(ms).toBeGreaterThan(0);
  const text = await metrics.registry.getSingleMetricAsString('aether_snapshot_thread_gc_duration_seconds');
  const counted = [...text.matchAll(/^aether_snapshot_thread_gc_duration_seconds_count\{kind="(\w+)"\} (\d+)$/gm)];
  expect(counted.reduce((n, m) => n + Number(m[2]), 0)).toBe(pauses.length);
  expect(counted.map((m) => m[1])).toContain('minor');
  const sums = [...text.matchAll(/^aether_snapshot_thread_gc_duration_seconds_sum\{kind="\w+"\} (\S+)$/gm)];
  expect(sums.reduce((n, m) => n + Number(m[1]), 0)).toBeCloseTo(pauses.reduce((a, b) => a + b, 0) / 1000, 6);
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

/**
 * A reader process: accepts loopback connections (four, or its second argument) and copies each
 * to a file (conn-0.bin …); it stops reading on 'p' on its stdin and reads again on 'r', so the
 * kernel's buffers fill.
 */
const READER = `
const fs = require('node:fs');
const net = require('node:net');
const [dir, count] = process.argv.slice(1);
const sockets = [];
let open = Number(count ?? 4);
const server = net.createServer((socket) => {
  const out = fs.createWriteStream(dir + '/conn-' + sockets.length + '.bin');
  sockets.push(socket);
  socket.on('data', (chunk) => out.write(chunk));
  socket.on('end', () => out.end(() => { if (--open === 0) process.exit(0); }));
});
process.stdin.on('data', (d) => { for (const s of sockets) d.includes('p') ? s.pause() : s.resume(); });
server.listen(0, '127.0.0.1', () => console.log(server.address().port));`;

/** The frames of a byte stream of unmasked binary WebSocket frames; throws at the first that is not whole. */
function framesOf(bytes: Buffer): Buffer[] {
  const frames: Buffer[] = [];
  let p = 0;
  while (p < bytes.length) {
    if (bytes[p] !== 0x82) throw new Error(`byte ${p}: ${bytes[p]} does not start a binary frame`);
    let length = (bytes[p + 1] as number) & 0x7f;
    let header = 2;
    if (length === 126) {
      length = bytes.readUInt16BE(p + 2);
      header = 4;
    } else if (length === 127) {
      length = Number(bytes.readBigUInt64BE(p + 2));
      header = 10;
    }
    if (p + header + length > bytes.length) throw new Error(`frame at byte ${p} is cut short`);
    frames.push(bytes.subarray(p + header, p + header + length));
    p += header + length;
  }
  return frames;
}

/** A READER process with `count` loopback connections to it (copied to files in `dir`), and this side's ends. */
async function readerConnections(dir: string, count: number) {
  const reader = spawn(process.execPath, ['-e', READER, dir, String(count)], { stdio: ['pipe', 'pipe', 'inherit'] });
  onTestFinished(() => {
    reader.kill();
  });
  const exited = once(reader, 'exit');
  const [port] = (await once(reader.stdout, 'data')) as [Buffer];
  const sockets: Socket[] = [];
  for (let i = 0; i < count; i++) {
    const socket = connect(Number(port.toString()), '127.0.0.1');
    await once(socket, 'connect');
    sockets.push(socket);
  }
  return { reader, exited, sockets };
}

/**
 * An engine output over `sockets` (session n on `sockets[n - 1]`) as the gateway's: whole frames,
 * straight to the descriptor when nothing is queued; `handedBack(written)` sees each frame a
 * snapshot thread hands back (or the tick thread took from it).
 */
function socketOutput(sockets: Socket[], handedBack: (written: number) => void = () => undefined): SessionOutput {
  const socketOf = (id: number) => sockets[id - 1] as Socket;
  return {
    send: (id, bytes) => {
      writeWhole(socketOf(id), binaryFrame(bytes));
      return true;
    },
    kick: () => undefined,
    directFd: (id) => directWriteFd(socketOf(id)),
    sendFrame: (id, frame, written) => {
      handedBack(written);
      writeWhole(socketOf(id), frame.subarray(written), true);
      return true;
    },
  };
}

test('frames a snapshot thread writes itself arrive whole and in order through sockets that fill: partial writes are completed by the stream', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-frames-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  const { reader, exited, sockets } = await readerConnections(dir, 4);
  // Every entity in view of everyone, and clients that never acknowledge: every snapshot is full,
  // a frame of about 44 KB, larger than the kernel's segments.
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,300,300',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '500',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '4000',
    AETHEX_GAMESERVER_ENGINE_MAX_VISIBLE: '4096',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '10',
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: '2',
    AETHEX_GAMESERVER_GATEWAY_SLOW_SKIP_TICKS: '1000',
    AETHEX_GAMESERVER_GATEWAY_SLOW_DROP_TICKS: '2000',
  });
  const paths = { partial: 0, none: 0 };
  const e = new ShardEngine(
    settings,
    socketOutput(sockets, (written) => {
      if (written > 0) paths.partial++;
      else paths.none++;
    }),
    { rebalance: false },
  );
  engines.push(e);
  await e.snapshotThreadsReady();
  for (let id = 1; id <= 4; id++) expect(e.join(id, `player-${id}`).ok).toBe(true);
  // biome-ignore lint/suspicious/noExplicitAny: the test reads which sessions the worker cuts
  expect([...(e as any).sessions.values()].filter((s) => s.thread === 1).length).toBe(2);
  // Bursts of 150 ticks (6.6 MB a client, more than loopback buffers hold) while the reader does not
  // read, then time to catch up. A buffer fills in the middle of a frame (the kernel takes part of
  // it), and then frames find it full (it takes none) or something queued.
  const ticks = new Map<number, number[]>([1, 2, 3, 4].map((id) => [id, []]));
  const command = async (c: string) => {
    reader.stdin?.write(c);
    await new Promise((r) => setTimeout(r, 100));
  };
  // At least 6 bursts, and more (up to 30) until a fill has come in the middle of a frame twice and
  // on a frame boundary once: on a loaded machine the tick thread takes more of the thread's writes.
  let bursts = 0;
  for (; bursts < 6 || ((paths.partial < 2 || paths.none < 1) && bursts < 30); bursts++) {
    await command('p');
    for (let k = 0; k < 150; k++) {
      for (let id = 1; id <= 4; id++) e.input(id, e.tick + 1, 1, 1, 0);
      e.step();
      for (const list of ticks.values()) list.push(e.tick);
    }
    await command('r');
    await new Promise((r) => setTimeout(r, 500));
  }
  for (const socket of sockets) socket.end();
  expect(await exited).toEqual([0, null]);
  for (let id = 1; id <= 4; id++) {
    // (Corrections, from the tick thread, come between the snapshots.)
    const messages = framesOf(readFileSync(join(dir, `conn-${id - 1}.bin`))).map((f) => ServerMessage.decode(f));
    const got = messages.filter((m) => m.body === 'snapshot').map((m) => m.snapshot?.tick);
    expect(got, `session ${id}`).toEqual(ticks.get(id));
  }
  // Each way a frame can take happened: written whole by the thread (not handed back), in part,
  // not at all (the kernel's buffer full or something queued), and the tick thread's own sessions.
  const direct = 2 * 150 * bursts - paths.partial - paths.none;
  expect(direct, JSON.stringify(paths)).toBeGreaterThan(50);
  // (About half the fills happen in the middle of a frame: 6 and 9 of 12 in two runs.)
  expect(paths.partial, JSON.stringify(paths)).toBeGreaterThan(1);
  expect(paths.none, JSON.stringify(paths)).toBeGreaterThan(0);
}, 60_000);

test('the tick thread writes a thread’s last jobs while the thread writes its first: every frame once, whole and in order', async () => {
  const clients = 64;
  const dir = mkdtempSync(join(tmpdir(), 'aethex-steal-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  const { exited, sockets } = await readerConnections(dir, clients);
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,600,600',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '150',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '300',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: String(clients),
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: '2',
  });
  const metrics = createMetrics();
  const e = new ShardEngine(settings, socketOutput(sockets), { rebalance: false, metrics });
  engines.push(e);
  await e.snapshotThreadsReady();
  for (let id = 1; id <= clients; id++) expect(e.join(id, `player-${id}`).ok).toBe(true);
  // Every session on the snapshot thread: the tick thread has none of its own, and goes straight
  // to the thread's jobs each tick, writing from the last while the thread writes from the first.
  // biome-ignore lint/suspicious/noExplicitAny: the test moves sessions between threads
  const internals = e as any;
  internals.moveSessions(0, clients);
  expect([...internals.sessions.values()].every((x) => x.thread === 1)).toBe(true);
  const ticks: number[] = [];
  for (let k = 0; k < 60; k++) {
    for (let id = 1; id <= clients; id++) e.input(id, e.tick + 1, 1, -1, e.tick);
    e.step();
    ticks.push(e.tick);
    // Time for the reader to keep up: no socket fills, every frame goes out whole.
    await new Promise((r) => setTimeout(r, 5));
  }
  for (const socket of sockets) socket.end();
  expect(await exited).toEqual([0, null]);
  for (let id = 1; id <= clients; id++) {
    const messages = framesOf(readFileSync(join(dir, `conn-${id - 1}.bin`))).map((f) => ServerMessage.decode(f));
    const got = messages.filter((m) => m.body === 'snapshot').map((m) => m.snapshot?.tick);
    expect(got, `session ${id}`).toEqual(ticks);
  }
  const stolen = Number((await metrics.registry.getSingleMetricAsString('aether_snapshot_writes_stolen_total')).match(/ (\d+)$/m)?.[1]);
  expect(stolen).toBeGreaterThan(0);
  expect(stolen).toBeLessThan(60 * clients);
}, 60_000);

test('once the tick thread stops a snapshot thread’s writes, not one more byte is written, and every frame begun is reported', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-lock-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  // A file stands in for the sockets: the kernel always takes all of a write, and its size counts.
  const fd = openSync(join(dir, 'out.bin'), 'w');
  onTestFinished(() => closeSync(fd));
  const settings = loadConfig({
    AETHEX_GAMESERVER_AUTH_JWKS_URL: 'http://unused.invalid/jwks',
    AETHEX_GAMESERVER_ENGINE_WORLD_BOUNDS: '0,0,300,300',
    AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '500',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '2000',
    AETHEX_GAMESERVER_ENGINE_MAX_VISIBLE: '4096',
    AETHEX_GAMESERVER_ENGINE_MAX_PLAYERS: '100',
    AETHEX_GAMESERVER_ENGINE_SNAPSHOT_THREADS: '2',
  });
  const e = new ShardEngine(
    settings,
    { send: () => true, kick: () => undefined, directFd: () => fd, sendFrame: () => true },
    { rebalance: false },
  );
  engines.push(e);
  await e.snapshotThreadsReady();
  for (let id = 1; id <= 60; id++) expect(e.join(id, `player-${id}`).ok).toBe(true);
  e.step();
  // biome-ignore lint/suspicious/noExplicitAny: the test replays the last round of the engine's thread by hand
  const internals = e as any;
  const thread = internals.threads[0] as SnapshotThread;
  const jobs = (internals.threadJobs[0] as unknown[]).length;
  expect(jobs).toBe(30);
  const rng = createRng(11);
  let stoppedMidRound = 0;
  for (let round = 0; round < 40; round++) {
    const before = fstatSync(fd).size;
    thread.begin(e.tick, internals.world.count, false);
    thread.cut(internals.grid.order().length, jobs);
    // Stop at some moment of the round: while the thread cuts, while it writes, or after.
    const until = performance.now() + rng() * 3;
    while (performance.now() < until);
    thread.stopWrites();
    const reported = thread.progress();
    const atStop = fstatSync(fd).size;
    expect(thread.finish(5_000)).toBe(true);
    expect(fstatSync(fd).size, `round ${round}`).toBe(atStop);
    let written = 0;
    for (let j = 0; j < reported; j++) written += thread.written(j);
    expect(atStop - before, `round ${round}`).toBe(written);
    if (reported < jobs) stoppedMidRound++;
    // Open the lock again for the next round (the engine never does: it gives the thread up).
    Atomics.store(internals.threads[0].ctl, CTL_WRITE_LOCK, WRITE_LOCK_FREE);
  }
  expect(stoppedMidRound).toBeGreaterThan(5);
});

test('a thread that never lets go of the write lock (it died inside a write) holds the tick thread no longer than the bound', async () => {
  const { e } = engine(2);
  engines.push(e);
  await e.snapshotThreadsReady();
  // biome-ignore lint/suspicious/noExplicitAny: the test plays a thread that died holding the lock
  const thread = (e as any).threads[0];
  Atomics.store(thread.ctl, CTL_WRITE_LOCK, WRITE_LOCK_HELD);
  const started = performance.now();
  expect(thread.stopWrites(200)).toBe(false);
  const waited = performance.now() - started;
  expect(waited).toBeGreaterThanOrEqual(200);
  expect(waited).toBeLessThan(2_000);
  // Closed for good: the thread can take it no more, and a second stop does not wait.
  expect(Atomics.load(thread.ctl, CTL_WRITE_LOCK)).toBe(WRITE_LOCK_CLOSED);
  expect(thread.stopWrites(200)).toBe(true);
});
