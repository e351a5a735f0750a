import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { WebSocket } from 'ws';
import { moduleFile, startTestShard, type TestShard, until } from './harness.js';

// The ops port (/healthz, /readyz, /metrics, the viewer) on a real shard: what it holds open, for
// how long, what its probes say of a slow or draining shard, and the socket gauges.

const shards: TestShard[] = [];
afterEach(async () => {
  delete (globalThis as { aethexSlowTicks?: unknown }).aethexSlowTicks;
  for (const t of shards.splice(0)) await t.stop();
});

async function start(env: Record<string, string> = {}): Promise<TestShard> {
  const t = await startTestShard(env);
  shards.push(t);
  return t;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Tcp {
  socket: Socket;
  /** Everything read so far. */
  read(): string;
  /** Set once the socket closed: Date.now() then. */
  closedAt: number | undefined;
}

/** A raw TCP connection to `url`'s port, reading everything (so the server's FIN is seen). */
function tcp(url: string): Promise<Tcp> {
  const socket = connect({ port: Number(new URL(url).port), host: '127.0.0.1' });
  const conn: Tcp = { socket, read: () => text, closedAt: undefined };
  let text = '';
  socket.on('error', () => undefined);
  socket.on('data', (d: Buffer) => {
    text += d.toString();
  });
  socket.once('close', () => {
    conn.closedAt = Date.now();
  });
  return new Promise((resolve) => {
    socket.once('connect', () => resolve(conn));
    socket.once('close', () => resolve(conn));
  });
}

/** The value of a sample in Prometheus text: `name` with its labels as written, or undefined. */
function sample(metrics: string, name: string): number | undefined {
  const line = metrics.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

test('the ops port holds at most ops.max_connections sockets: more are closed as they arrive, counted, and the gauge shows the open ones', async () => {
  const t = await start();
  const sockets = await Promise.all(Array.from({ length: 100 }, () => tcp(t.shard.opsUrl)));
  const closed = () => sockets.filter((s) => s.closedAt !== undefined).length;
  // The default, 64: Prometheus, a few viewers and the probes.
  await until('the sockets beyond ops.max_connections to be closed', () => closed() >= 36, 3000);
  await sleep(300);
  expect(closed()).toBe(36);
  for (const s of sockets.filter((s) => s.closedAt === undefined).slice(0, 10)) s.socket.destroy();
  // Once the shard has seen the 10 close (its count read here: a scrape's socket, over the cap
  // until then, would be refused).
  const opsSockets = async () => (await t.shard.metrics.registry.getSingleMetric('aether_ops_open_sockets')?.get())?.values[0]?.value;
  const deadline = Date.now() + 5000;
  let open = await opsSockets();
  while (open !== 54 && Date.now() < deadline) {
    await sleep(20);
    open = await opsSockets();
  }
  expect(open).toBe(54);
  const metrics = await (await fetch(`${t.shard.opsUrl}/metrics`)).text();
  // The 54 left and the scrape's own.
  expect(sample(metrics, 'aether_ops_open_sockets')).toBe(55);
  expect(sample(metrics, 'aether_ops_connections_refused_total')).toBe(36);
  for (const s of sockets) s.socket.destroy();
});

test('a silent socket and one trickling its headers are closed within seconds; a kept-alive connection idle between scrapes is reused', async () => {
  const t = await start();
  const opened = Date.now();
  const [silent, trickle, kept] = await Promise.all([tcp(t.shard.opsUrl), tcp(t.shard.opsUrl), tcp(t.shard.opsUrl)]);
  trickle.socket.write('GET /metrics HTTP/1.1\r\nhost: x\r\n');
  const drip = setInterval(() => trickle.socket.write('x-slow: 1\r\n'), 500);
  try {
    kept.socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
    await until('the first answer on the kept-alive connection', () => kept.read().includes('ok\n'));
    // The headers bound (5 s) and its check (every second).
    await until(
      'the silent and the trickling socket to be closed',
      () => silent.closedAt !== undefined && trickle.closedAt !== undefined,
      8000,
    );
    expect((silent.closedAt as number) - opened).toBeLessThan(7000);
    expect((trickle.closedAt as number) - opened).toBeLessThan(7000);
  } finally {
    clearInterval(drip);
  }
  // Prometheus scrapes every 15 to 60 s over one kept-alive connection: 8 s idle is nothing.
  await sleep(Math.max(0, opened + 9000 - Date.now()));
  expect(kept.closedAt).toBeUndefined();
  kept.socket.write('GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n');
  await until('the second answer on the kept-alive connection', () => kept.read().split('HTTP/1.1 200').length === 3);
  kept.socket.destroy();
}, 30_000);

test('ops.idle_timeout_ms closes a kept-alive connection idle that long, and one whose reader stopped reading', async () => {
  const t = await start({
    AETHEX_GAMESERVER_OPS_IDLE_TIMEOUT_MS: '1500',
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: '20000',
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: '30000',
  });
  const kept = await tcp(t.shard.opsUrl);
  kept.socket.write('GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n');
  await until('the answer', () => kept.read().includes('ok\n'));
  const answered = Date.now();
  await until('the idle connection to be closed', () => kept.closedAt !== undefined, 5000);
  // Node closes a kept-alive socket a second after the timeout it announces.
  expect((kept.closedAt as number) - answered).toBeGreaterThanOrEqual(1400);
  expect((kept.closedAt as number) - answered).toBeLessThan(3500);
  // A viewer state (about 440 KB) to a client that stopped reading: it would hold its socket, and
  // one of the viewer's concurrent responses, for ever.
  const stalled = await tcp(t.shard.opsUrl);
  stalled.socket.pause();
  stalled.socket.write('GET /viewer/state HTTP/1.1\r\nhost: x\r\n\r\n');
  // The paused client cannot see its socket close: the shard's count of open sockets says it.
  await sleep(4000);
  const metrics = await (await fetch(`${t.shard.opsUrl}/metrics`)).text();
  expect(sample(metrics, 'aether_ops_open_sockets')).toBe(1);
  stalled.socket.destroy();
});

/** A game module whose ticks each take `globalThis.aethexSlowTicks.ms` while `.left` ticks are left. */
const SLOW_TICKS = `export default { onTick() {
  const slow = globalThis.aethexSlowTicks;
  if (!slow || slow.left <= 0) return;
  slow.left--;
  const until = performance.now() + slow.ms;
  while (performance.now() < until) {}
} };`;

function slowTicks(ms: number, ticks: number): void {
  (globalThis as { aethexSlowTicks?: unknown }).aethexSlowTicks = { ms, left: ticks };
}

const status = async (url: string) => (await fetch(url, { signal: AbortSignal.timeout(5000) })).status;

/**
 * Probes `url` from another process for `ms`, as kubelet would: one request at a time, the next
 * `everyMs` after the last answer. `answers`: each answer's status and when it came (ms from the
 * probe's start), as they come; `done`: all of them, once the probe ended.
 */
function probe(
  url: string,
  ms: number,
  everyMs: number,
): { answers: { at: number; status: number }[]; done: Promise<{ at: number; status: number }[]> } {
  const script = `const [url, ms, every] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
    const t0 = Date.now();
    (async () => {
      while (Date.now() - t0 < ms) {
        const status = await fetch(url, { signal: AbortSignal.timeout(5000) }).then((r) => r.status, () => 0);
        process.stdout.write(JSON.stringify({ at: Date.now() - t0, status }) + '\\n');
        await new Promise((r) => setTimeout(r, every));
      }
    })();`;
  const answers: { at: number; status: number }[] = [];
  const child = spawn(process.execPath, ['-e', script, url, String(ms), String(everyMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop() as string;
    for (const l of lines) if (l) answers.push(JSON.parse(l));
  });
  const done = new Promise<{ at: number; status: number }[]>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(answers) : reject(new Error(`the probe exited with ${code}`))));
  });
  return { answers, done };
}

test('/healthz: a shard whose every tick takes longer than the stall bound is unhealthy; one long tick is not', async () => {
  const t = await start({ AETHEX_GAMESERVER_GAME_MODULE: moduleFile(SLOW_TICKS) });
  const healthz = `${t.shard.opsUrl}/healthz`;
  await until('the loop to tick', () => t.shard.engine.tick > 5);
  // One tick of 1.5 s (the stall bound: 40 ticks, 1 s): a probe waits for it, and the shard is
  // healthy after it, as it is through the ticks that catch up.
  const stall = probe(healthz, 4000, 100);
  // The slow tick comes once the probe is answering (its process may take a while to start).
  await until('the probe’s first answer', () => stall.answers.length > 0, 10_000);
  slowTicks(1500, 1);
  const stalled = await stall.done;
  expect(stalled.filter((p) => p.status !== 200)).toEqual([]);
  expect(stalled.some((p, k) => k > 0 && p.at - (stalled[k - 1] as { at: number }).at > 1000)).toBe(true);
  // Every tick 1.2 s (under 1 Hz): not a live shard, though a tick ends every 1.2 s.
  slowTicks(1200, 1000);
  const slow = await probe(healthz, 9000, 200).done;
  const first = slow.findIndex((p) => p.status === 503);
  // Unhealthy from the third slow tick on (about 3.6 s), and steadily so.
  expect(first).toBeGreaterThanOrEqual(0);
  expect((slow[first] as { at: number }).at).toBeLessThan(6000);
  expect(slow.slice(first).map((p) => p.status)).not.toContain(200);
  expect(slow.at(-1)?.status).toBe(503);
  // Back to speed: healthy again.
  slowTicks(0, 0);
  let after = 0;
  for (let i = 0; i < 30 && after !== 200; i++) {
    await sleep(100);
    after = await status(healthz);
  }
  expect(after).toBe(200);
}, 40_000);

test('during a drain /healthz stays 200 while /readyz is 503, until the ops port closes; the players’ port is closed at once', async () => {
  // The stall bound is 40 ticks: 400 ms at 10 ms a tick, while the drain below takes over a second.
  const stallBoundMs = 400;
  const t = await start({ AETHEX_GAMESERVER_ENGINE_TICK_RATE_MS: '10' });
  // A player whose client stops reading never answers the close handshake: the drain waits 1 s for it.
  let ws: WebSocket | undefined;
  await t.client('frozen', {
    createSocket: (url) => {
      ws = new WebSocket(url);
      return ws as never;
    },
  });
  (ws as unknown as { _socket: Socket })._socket.pause();
  const ops = t.shard.opsUrl;
  const started = Date.now();
  const drained = t.shard.drain();
  // The players' port stops listening within milliseconds (docs/gameserver.md, "Limits on clients").
  const players = sleep(100).then(
    () =>
      new Promise<string>((resolve) => {
        const s = connect({ port: Number(new URL(t.shard.gatewayUrl).port), host: '127.0.0.1' });
        s.once('connect', () => {
          s.destroy();
          resolve('connected');
        });
        s.once('error', (err: Error & { code?: string }) => resolve(err.code ?? err.message));
      }),
  );
  // `sentAt`: when the probes were sent, in ms from the drain's start (when the loop stopped).
  const samples: { sentAt: number; healthz: number; readyz: number }[] = [];
  let refusedAt: number | undefined;
  for (;;) {
    const sentAt = Date.now() - started;
    try {
      const [healthz, readyz] = await Promise.all([status(`${ops}/healthz`), status(`${ops}/readyz`)]);
      samples.push({ sentAt, healthz, readyz });
    } catch {
      refusedAt = Date.now() - started;
      break;
    }
    await sleep(50);
  }
  await drained;
  expect(await players).toBe('ECONNREFUSED');
  expect(refusedAt).toBeGreaterThan(900);
  // Probes sent past the stall bound, when only the drain keeps /healthz at 200 (the loop stopped
  // with it): how many depends on how often the machine ran this test; each is checked below.
  expect(samples.filter((s) => s.sentAt > stallBoundMs).length).toBeGreaterThan(0);
  expect(samples.filter((s) => s.healthz !== 200)).toEqual([]);
  expect(samples.every((s) => s.readyz === 503)).toBe(true);
});

test('aether_open_sockets counts the players’ port’s TCP sockets, upgraded or not, against gateway.max_connections', async () => {
  const t = await start({ AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS: '3' });
  await t.client('ann');
  const raw = [await tcp(t.shard.gatewayUrl), await tcp(t.shard.gatewayUrl)];
  // A fourth is one over gateway.max_connections: closed as it arrives.
  const over = await tcp(t.shard.gatewayUrl);
  await until('the socket over the cap to be closed', () => over.closedAt !== undefined);
  const metrics = await (await fetch(`${t.shard.opsUrl}/metrics`)).text();
  expect(sample(metrics, 'aether_open_sockets')).toBe(3);
  expect(sample(metrics, 'aether_kicks_total{reason="too_many_connections"}')).toBe(1);
  // Its help says what it counts: a connection closed as it arrived is no session.
  expect(metrics).toMatch(/# HELP aether_kicks_total .*too_many_connections \(closed as they arrived, before any HTTP/);
  for (const s of raw) s.socket.destroy();
  // Once the shard has seen them close.
  const deadline = Date.now() + 5000;
  let open = sample(await (await fetch(`${t.shard.opsUrl}/metrics`)).text(), 'aether_open_sockets');
  while (open !== 1 && Date.now() < deadline) {
    await sleep(20);
    open = sample(await (await fetch(`${t.shard.opsUrl}/metrics`)).text(), 'aether_open_sockets');
  }
  expect(open).toBe(1);
});
