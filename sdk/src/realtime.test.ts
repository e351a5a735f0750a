import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { aethex, encodeSnapshotMessage, insideMax, quantumRange, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import $protobuf from 'protobufjs/minimal.js';
import { afterEach, expect, test, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { nodeSocket } from './node-socket.js';
import { RealtimeClient, redirectAddress } from './realtime.js';

const { ClientMessage, ServerMessage, Snapshot } = aethex.v1;

let server: WebSocketServer | undefined;
/** The HTTP server under `server` when a test answers upgrades itself, and the upgrades it holds. */
let httpServer: Server | undefined;
const heldUpgrades: Duplex[] = [];
let client: RealtimeClient | undefined;

afterEach(async () => {
  vi.useRealTimers();
  client?.close();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  for (const socket of heldUpgrades.splice(0)) socket.destroy();
  await new Promise((r) => httpServer?.close(r) ?? r(undefined));
  server = httpServer = client = undefined;
});

const createSocket = (u: string) => new WebSocket(u) as never;
const run = promisify(execFile);
/** The real setTimeout, also while a test fakes the client's timers (waits for sockets stay real). */
const realSetTimeout = globalThis.setTimeout;
const sleep = (ms: number) => new Promise((r) => realSetTimeout(r, ms));

/** Waits (in real time) until `check()` holds; throws naming `what` after `ms`. */
async function until(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** `promise`'s value, or 'timed out' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timed out'> {
  return Promise.race([promise, sleep(ms).then(() => 'timed out' as const)]);
}

/**
 * A `createSocket` that also keeps each socket it makes, in order, for the test to watch close or
 * to send a probe on behind what the client sent (`behindProbe`).
 */
function keptSockets(): { createSocket: (u: string) => never; made: WebSocket[] } {
  const made: WebSocket[] = [];
  const make = (u: string) => {
    const ws = new WebSocket(u);
    made.push(ws);
    return ws as never;
  };
  return { createSocket: make, made };
}

/** The probe `behindProbe` sends: an RPC that no scripted shard here answers. */
const isProbe = (m: aethex.v1.ClientMessage) => m.rpc?.method === 'probe';

/**
 * Sends a probe on the client's socket `socket` (from `keptSockets`) and waits until the shard has
 * it in `received()`: a socket delivers in order, so whatever the client sent on it before is in
 * `received()` by then — and whatever is not, the client did not send.
 */
async function behindProbe(socket: WebSocket | undefined, received: () => aethex.v1.ClientMessage[] | undefined): Promise<void> {
  const probes = () => received()?.filter(isProbe).length ?? 0;
  const sent = probes() + 1;
  socket?.send(ClientMessage.encode({ rpc: { callId: 0, method: 'probe' } }).finish());
  await until('the probe to reach the shard', () => probes() === sent, 3000);
}

/** A Welcome as a shard sends it (entity 7, 50 Hz, world units unscaled), with `more` fields set or overridden. */
function welcome(shardName: string, lastInputSeq = 0, more: aethex.v1.IWelcome = {}): Uint8Array {
  return ServerMessage.encode({
    welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 50, positionScale: 1, maxSpeed: 5, shardName, lastInputSeq, ...more },
  }).finish();
}

/** A HandoffRedirect to shard-b at `url`, resume token 'r', the old shard having applied inputs up to `lastInputSeq`. */
function redirectToB(url: string, lastInputSeq = 0): Uint8Array {
  return ServerMessage.encode({ handoffRedirect: { address: url, resumeToken: 'r', lastInputSeq, shardName: 'shard-b' } }).finish();
}

/**
 * A scripted shard: every connection's messages are recorded in `connections` (by order of
 * connection), and `onMessage` answers them.
 */
async function scriptedShard(
  onMessage: (socket: WebSocket, msg: aethex.v1.ClientMessage, connection: number) => void,
): Promise<{ url: string; sockets: WebSocket[]; connections: aethex.v1.ClientMessage[][] }> {
  const sockets: WebSocket[] = [];
  const connections: aethex.v1.ClientMessage[][] = [];
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (socket) => {
    const connection = sockets.push(socket) - 1;
    const received: aethex.v1.ClientMessage[] = [];
    connections.push(received);
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      received.push(msg);
      onMessage(socket, msg, connection);
    });
  });
  await new Promise((r) => server?.once('listening', r));
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets, connections };
}

/**
 * A render loop on the fake clock: `move(0.25, 0)` every 7 ms frame (144 Hz) for `frames` frames,
 * then `settleMs` more for the last input's interval to end. Returns the last input's sequence and
 * the fake time it all took.
 */
async function renderFrames(c: RealtimeClient, frames: number, settleMs: number): Promise<{ last: number; elapsed: number }> {
  const started = Date.now();
  let last = 0;
  for (let f = 0; f < frames; f++) {
    last = c.move(0.25, 0);
    await vi.advanceTimersByTimeAsync(7);
  }
  await vi.advanceTimersByTimeAsync(settleMs);
  return { last, elapsed: Date.now() - started };
}

/**
 * A client of `url` on a clock the test moves: `moves(n)` makes `n` moves of (1, 0), each a tick
 * (20 ms at the Welcome's 50 Hz) after the last, so each input goes out at once.
 */
function clockedClient(url: string, joinToken = 't'): { c: RealtimeClient; moves: (n: number) => void } {
  let skew = 0;
  const c = new RealtimeClient({ url, joinToken, createSocket, silenceTimeoutMs: 0, now: () => performance.now() + skew });
  client = c;
  const moves = (n: number) => {
    for (let i = 0; i < n; i++) {
      skew += 20;
      c.move(1, 0);
    }
  };
  return { c, moves };
}

/** Every session event the client emits, in order. */
function recordEvents(c: RealtimeClient): string[] {
  const events: string[] = [];
  c.on('disconnected', (code) => events.push(`disconnected ${code}`));
  c.on('rejoined', ({ attempts }) => events.push(`rejoined after ${attempts}`));
  c.on('snapshot', (tick) => events.push(`snapshot ${tick}`));
  c.on('kick', (reason) => events.push(`kick ${reason}`));
  c.on('handoff', ({ to }) => events.push(`handoff to ${to}`));
  c.on('handoffFailed', (reason) => events.push(`handoffFailed ${reason}`));
  c.on('close', (code, reason) => events.push(`close ${code} ${reason}`));
  return events;
}

/** A layout-1 body that `write` fills. */
function body(write: (w: SnapshotBodyWriter) => void): Uint8Array {
  const w = new SnapshotBodyWriter();
  write(w);
  return w.bytes().slice();
}

/** A snapshot as the shard writes it (the client reads it in place). */
function shardSnapshot(tick: number, baseTick: number, entities: Uint8Array, removed: number[] = []): Uint8Array {
  const ids = Uint32Array.from(removed);
  return encodeSnapshotMessage({
    tick,
    baseTick,
    lastInputSeq: 0,
    layout: SNAPSHOT_LAYOUT,
    entities,
    removed: ids,
    removedCount: ids.length,
  });
}

/** A snapshot with a field this client does not know (a newer shard's): only the generated decoder reads it. */
function newerSnapshot(tick: number, baseTick: number, entities: Uint8Array, removed: number[] = []): Uint8Array {
  const inner = Snapshot.encode({ tick, baseTick, layout: SNAPSHOT_LAYOUT, entities, removed }).finish();
  const unknownField = [(15 << 3) | 0, 42];
  return $protobuf.Writer.create()
    .uint32((2 << 3) | 2)
    .bytes(new Uint8Array([...inner, ...unknownField]))
    .finish();
}

test('snapshots read in place and snapshots left to the generated decoder build the same views', async () => {
  const messages = [
    shardSnapshot(
      1,
      0,
      body((w) => {
        w.full(7, 100, 200, 1, 0);
        w.full(8, -50, 60, 2, 3);
      }),
    ),
    shardSnapshot(
      2,
      1,
      body((w) => w.delta(7, 5, -5)),
      [8],
    ),
    newerSnapshot(
      3,
      1,
      body((w) => w.full(9, 1, 2, 4, 0)),
      [8],
    ),
    // Back on base 1 with nothing removed: entity 8 is in view again (ids left over from tick 2's
    // `removed` in the reused fields must not count).
    shardSnapshot(4, 1, new Uint8Array(0)),
  ];
  expect(ServerMessage.decode(messages[2] as Uint8Array).snapshot?.removed).toEqual([8]);

  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (socket) => {
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      if (msg.body !== 'join') return;
      socket.send(ServerMessage.encode({ welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 0.5 } }).finish());
      for (const m of messages) socket.send(m);
    });
  });
  await new Promise((r) => server?.once('listening', r));
  const { port } = server.address() as AddressInfo;
  client = new RealtimeClient({ url: `ws://127.0.0.1:${port}`, joinToken: 't', createSocket: (u) => new WebSocket(u) as never });
  const seen: string[] = [];
  client.on('enter', (id) => seen.push(`enter ${id}`));
  client.on('leave', (id) => seen.push(`leave ${id}`));
  const ticks: number[] = [];
  const done = new Promise<void>((resolve) =>
    client?.on('snapshot', (tick) => {
      ticks.push(tick);
      if (tick === 4) resolve();
    }),
  );
  await client.connect();
  await done;
  expect(ticks).toEqual([1, 2, 3, 4]);
  expect(seen).toEqual(['enter 7', 'enter 8', 'leave 8', 'enter 9', 'enter 8', 'leave 9']);
  expect(new Map(client.store.previous)).toEqual(
    new Map([
      [7, { qx: 100, qy: 200, kind: 1, flags: 0 }],
      [9, { qx: 1, qy: 2, kind: 4, flags: 0 }],
    ]),
  );
  expect(new Map(client.store.current)).toEqual(
    new Map([
      [7, { qx: 100, qy: 200, kind: 1, flags: 0 }],
      [8, { qx: -50, qy: 60, kind: 2, flags: 3 }],
    ]),
  );
  // Its own entity (7) is reconciled from the snapshots, in world units.
  expect(client.predicted).toEqual({ x: 50, y: 100 });
  expect(client.bytesReceived).toBeGreaterThan(messages.reduce((n, m) => n + m.length, 0));
});

test('a shard that goes silent without closing: dropped after silenceTimeoutMs (4000) and rejoined; without rejoin the session closes once', async () => {
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  const joins: string[] = [];
  const joinEntities: number[] = [];
  const closeCodes: number[] = [];
  /** When the shard last sent anything (the client hears it after). */
  let shardSentAt = 0;
  server.on('connection', (socket) => {
    socket.on('close', (code) => closeCodes.push(code));
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      if (msg.body !== 'join') return;
      joins.push(msg.join?.joinToken as string);
      joinEntities.push(msg.join?.entityId as number);
      socket.send(ServerMessage.encode({ welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1 } }).finish());
      // The first connection ticks for 600 ms (longer than the timeout: a live shard is not
      // dropped), then says nothing more and never closes: a half-open connection.
      let tick = 0;
      const ticking = setInterval(() => {
        tick++;
        if (socket.readyState !== WebSocket.OPEN || (joins.length === 1 && tick > 24)) clearInterval(ticking);
        else {
          shardSentAt = performance.now();
          socket.send(shardSnapshot(tick, tick - 1, new Uint8Array(0)));
        }
      }, 25);
    });
  });
  await new Promise((r) => server?.once('listening', r));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;

  client = new RealtimeClient({
    url,
    joinToken: 't1',
    createSocket,
    silenceTimeoutMs: 300,
    rejoin: { joinToken: async () => 't2', maxDelayMs: 100 },
  });
  const events: string[] = [];
  const disconnected = new Promise<{ code: number; reason: string; quietMs: number }>((resolve) =>
    client?.on('disconnected', (code, reason) => resolve({ code, reason, quietMs: performance.now() - shardSentAt })),
  );
  const rejoined = new Promise((resolve) => client?.on('rejoined', resolve));
  client.on('close', (code) => events.push(`close ${code}`));
  const started = performance.now();
  await client.connect();
  const drop = await disconnected;
  expect(performance.now() - started).toBeGreaterThan(600);
  expect(drop.code).toBe(4000);
  expect(drop.reason).toMatch(/^no message from the shard for \d+ ms$/);
  expect(drop.quietMs).toBeGreaterThanOrEqual(300);
  await rejoined;
  expect(joins).toEqual(['t1', 't2']);
  // The rejoin names the entity the session had (a restarted shard waits for it: Join.entity_id).
  expect(joinEntities).toEqual([0, 7]);
  // The shard heard the client give up on the first connection.
  await until('the shard to hear the first connection close', () => closeCodes.length > 0);
  expect(closeCodes).toEqual([4000]);
  expect(events).toEqual([]);

  // Without rejoin: the session ends, once. (The shard ticks this connection for 600 ms too.)
  client.close();
  await until('the shard to hear the rejoined connection close', () => closeCodes.length === 2);
  joins.length = 0;
  const soloSockets = keptSockets();
  const solo = new RealtimeClient({ url, joinToken: 't3', createSocket: soloSockets.createSocket, silenceTimeoutMs: 300 });
  client = solo;
  const closes: [number, string][] = [];
  let soloSnapshots = 0;
  solo.on('snapshot', () => soloSnapshots++);
  const soloClosed = new Promise<number>((resolve) =>
    solo.on('close', (code, reason) => {
      closes.push([code, reason]);
      resolve(performance.now());
    }),
  );
  const soloStarted = performance.now();
  await solo.connect();
  const soloClosedAt = await within(soloClosed, 5000);
  expect(soloClosedAt, "'close' within 5 s").not.toBe('timed out');
  // Not while the shard was live, and not before it had been silent for silenceTimeoutMs.
  expect((soloClosedAt as number) - soloStarted).toBeGreaterThan(600);
  expect(soloSnapshots).toBeGreaterThan(0);
  expect((soloClosedAt as number) - shardSentAt).toBeGreaterThanOrEqual(300);
  // Once: nothing more after the shard has heard the socket close (4000) too.
  await until('the shard to hear the session close', () => closeCodes.length === 3);
  expect(closeCodes).toEqual([4000, 1000, 4000]);
  // And after the client's own socket has closed: its close event, were it still heeded, would be a second 'close'.
  await until("the solo client's socket to close", () => soloSockets.made[0]?.readyState === WebSocket.CLOSED, 3000);
  // Nor from the silence check (every 75 ms here), were it left running: two of its periods. This is
  // a timer's, so a wait of time; a stall cannot fail it (it only makes the wait longer).
  await sleep(150);
  expect(closes).toEqual([[4000, expect.stringMatching(/^no message from the shard for \d+ ms$/)]]);

  expect(() => new RealtimeClient({ url, joinToken: 't', silenceTimeoutMs: -1 })).toThrow(
    /silenceTimeoutMs must be a positive number of milliseconds below 2\^31, or 0 \(never\) or Infinity \(never\), got -1/,
  );
});

test('a rejoin whose attempts hang — a join token that never comes, an upgrade never answered — gives up at giveUpAfterMs with close, each attempt cut at connectTimeoutMs', async () => {
  const http = createServer();
  httpServer = http;
  server = new WebSocketServer({ noServer: true });
  let shardSocket: WebSocket | undefined;
  const held = heldUpgrades;
  let heldClosed = 0;
  http.on('upgrade', (req, socket, head) => {
    if (shardSocket) {
      // After the drop the shard's address takes the TCP connection but never answers the
      // upgrade, as behind a stalled proxy: the attempt's socket neither opens nor closes.
      held.push(socket);
      socket.resume();
      // The client hung up (the server side is half-open: HTTP servers allow it).
      socket.on('end', () => {
        heldClosed++;
        socket.end();
      });
      return;
    }
    server?.handleUpgrade(req, socket, head, (ws) => {
      shardSocket = ws;
      ws.on('message', (data) => {
        if (ClientMessage.decode(data as Buffer).body === 'join') ws.send(welcome('shard-a'));
      });
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const url = `ws://127.0.0.1:${(http.address() as AddressInfo).port}`;
  // From the drop on, the client's timers and its clock (`now`, on Date) are the test's fake ones:
  // attempts, their deadlines and the give-up keep their schedule however late the process runs.
  // Sockets stay real: the test lets each attempt's upgrade reach the shard before moving on.
  let droppedAt: number | undefined;
  const sinceDrop = () => Date.now() - (droppedAt as number);
  /** Milliseconds after the drop at which each attempt asked for a token, opened its socket, had it closed. */
  const tokensAt: number[] = [];
  const openedAt: number[] = [];
  const cutAt: number[] = [];
  const attemptSocket = (u: string) => {
    const ws = new WebSocket(u);
    if (droppedAt === undefined) return ws as never;
    openedAt.push(sinceDrop());
    const close = ws.close.bind(ws);
    ws.close = (code?: number, reason?: string) => {
      cutAt.push(sinceDrop());
      close(code, reason);
    };
    return ws as never;
  };
  let tokenCalls = 0;
  client = new RealtimeClient({
    url,
    joinToken: 't1',
    createSocket: attemptSocket,
    now: () => Date.now(),
    silenceTimeoutMs: 0,
    connectTimeoutMs: 150,
    rejoin: {
      // The control plane does not answer the first call; later ones it does.
      joinToken: () => {
        tokensAt.push(sinceDrop());
        return ++tokenCalls === 1 ? new Promise<string>(() => {}) : Promise.resolve('t2');
      },
      maxDelayMs: 50,
      giveUpAfterMs: 700,
    },
  });
  const c = client;
  const events = recordEvents(c);
  let closedAt: number | undefined;
  c.on('close', () => {
    closedAt = sinceDrop();
  });
  await c.connect();
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const dropped = new Promise<void>((resolve) =>
    c.on('disconnected', () => {
      droppedAt = Date.now();
      resolve();
    }),
  );
  shardSocket?.terminate();
  expect(await within(dropped, 5000), "'disconnected' within 5 s of the drop").not.toBe('timed out');
  // The client's time runs a millisecond at a time, each attempt's upgrade heard before it goes on.
  while (closedAt === undefined && sinceDrop() < 5000) {
    await vi.advanceTimersByTimeAsync(1);
    await until('the attempt’s upgrade to reach the shard', () => held.length === openedAt.length);
  }
  expect(events).toEqual(['disconnected 1006', 'close 1006 could not rejoin shard-a within 700 ms']);
  // First attempt 100 ms after the drop, then 50 ms (maxDelayMs) after each failed one; each cut at
  // connectTimeoutMs (150): the hung token call (100–250) counted as a failed attempt, and so did
  // each unanswered upgrade (300–450, 500–650). At 700 ms (giveUpAfterMs) the client gives up.
  expect(tokensAt).toEqual([100, 300, 500]);
  expect(openedAt).toEqual([300, 500]);
  expect(cutAt).toEqual([450, 650]);
  expect(closedAt).toBe(700);
  expect(held).toHaveLength(2);
  // No attempt's socket outlives the rejoin, and nothing follows 'close'.
  await vi.advanceTimersByTimeAsync(1000);
  await until('the shard to see every attempt hang up', () => heldClosed === held.length);
  expect(events).toHaveLength(2);
  expect(tokensAt).toHaveLength(3);
});

test('a rejoin after a silent drop re-sends only the newest 128 unacknowledged inputs, behind the Join: well within the shard’s default burst of 240', async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    // Welcomed, then silent (no snapshot acknowledges an input): the client drops the connection.
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  // A clock the test moves on a tick (20 ms at 50 Hz) per move: one input each.
  let skew = 0;
  const now = () => performance.now() + skew;
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, now, silenceTimeoutMs: 300, rejoin: { joinToken: async () => 't2' } });
  const events = recordEvents(client);
  const disconnected = new Promise((resolve) => client?.on('disconnected', resolve));
  const rejoined = new Promise((resolve) => client?.on('rejoined', resolve));
  await client.connect();
  // Five seconds of input at 50 Hz into the silence: sent, never acknowledged.
  for (let i = 0; i < 250; i++) {
    skew += 20;
    client.move(1, 0);
  }
  await disconnected;
  skew += 20;
  client.move(1, 0);
  skew += 20;
  client.move(1, 0);
  expect(client.unacknowledged).toBe(128);
  await rejoined;
  // The newest input (252) is the last one re-sent: once it is in, so is whatever was re-sent before it.
  const resent = connections[1] ?? [];
  await until('input 252 to be re-sent', () => resent.some((m) => m.input?.seq === 252), 3000);

  expect(events).toEqual(['disconnected 4000', 'rejoined after 1']);
  expect(connections[0]?.filter((m) => m.body === 'input')).toHaveLength(250);
  expect(resent.map((m) => m.body)).toEqual(['join', ...Array(128).fill('input')]);
  expect(resent.slice(1).map((m) => m.input?.seq)).toEqual(Array.from({ length: 128 }, (_, i) => 125 + i));
});

test('a client that came in over wss:// follows a redirect to a ws:// address on wss://, never in the clear', async () => {
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  // A TLS-terminating proxy in front of the shards: the client dials wss://, the shard sees ws://.
  const dialled: string[] = [];
  const throughTls = (u: string) => {
    dialled.push(u);
    return createSocket(u.replace(/^wss:/, 'ws:'));
  };
  const secure = url.replace(/^ws:/, 'wss:');
  client = new RealtimeClient({ url: secure, joinToken: 't1', createSocket: throughTls, silenceTimeoutMs: 0 });
  await client.connect();
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => client?.shardName === 'shard-b', 3000);
  expect(connections[1]?.[0]?.body).toBe('resume');
  expect(dialled).toEqual([secure, secure]);
  expect(redirectAddress('WSS://a:1', 'ws://b:2')).toBe('wss://b:2');
  expect(redirectAddress('ws://a:1', 'ws://b:2')).toBe('ws://b:2');
  expect(redirectAddress('ws://a:1', 'wss://b:2')).toBe('wss://b:2');
});

test('an RPC the old shard answers after the client moved on (HANDED_OVER) settles at once; an unanswered one rejects DISCONNECTED', async () => {
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, silenceTimeoutMs: 0 });
  await client.connect();
  const answered = client.rpc('earn', new Uint8Array(0), 8000).catch((e: { code: string }) => e.code);
  const unanswered = client.rpc('slow', new Uint8Array(0), 8000).catch((e: { code: string }) => e.code);
  await until('the Join and both RPCs to reach the shard', () => (connections[0]?.length ?? 0) >= 3, 3000);
  const [earn, slow] = (connections[0] ?? []).slice(1).map((m) => m.rpc?.callId as number);
  // Redirected (the calls still queued on the old shard), and welcomed by the new shard.
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => client?.shardName === 'shard-b', 3000);
  // The old shard's next tick answers the first, not run.
  const began = Date.now();
  sockets[0]?.send(ServerMessage.encode({ rpcResult: { callId: earn, ok: false, errorCode: 'HANDED_OVER' } }).finish());
  expect(await within(answered, 3000)).toBe('HANDED_OVER');
  const oldClosed = new Promise<number>((resolve) => sockets[0]?.on('close', resolve));
  // The second never: rejected once the old socket has waited long enough for it (2 s), and then
  // closed — well before the call's own timeout (8 s, TIMEOUT), with room for a stalled machine.
  expect(await within(unanswered, 6000)).toBe('DISCONNECTED');
  expect(Date.now() - began).toBeLessThan(6000);
  expect(await within(oldClosed, 3000)).toBe(1000);
  expect(slow).toBeGreaterThan(earn as number);
});

test('a handoff re-sends only the newest 128 of the inputs the old shard did not apply', async () => {
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b', 10));
  });
  const { c, moves } = clockedClient(url, 't1');
  const events = recordEvents(c);
  await c.connect();
  moves(300);
  await until('all 300 inputs to reach the old shard', () => connections[0]?.filter((m) => m.body === 'input').length === 300, 3000);
  // The old shard applied 20 of them; the new one (its Welcome says) 10.
  sockets[0]?.send(redirectToB(url, 20));
  const oldClosed = new Promise<number>((resolve) => sockets[0]?.on('close', resolve));
  expect(await within(oldClosed, 3000)).toBe(1000);
  // The newest input (300) is the last one re-sent: once it is in, so is whatever was re-sent before it.
  await until('input 300 to be re-sent', () => connections[1]?.some((m) => m.input?.seq === 300) ?? false, 3000);

  expect(events).toEqual([]);
  expect(c.shardName).toBe('shard-b');
  const resent = connections[1] ?? [];
  expect(resent.map((m) => m.body)).toEqual(['resume', ...Array(128).fill('input')]);
  expect(resent.slice(1).map((m) => m.input?.seq)).toEqual(Array.from({ length: 128 }, (_, i) => 173 + i));
});

test('close() during a rejoin closes the attempt’s socket with 1000 or cancels the attempt to come, and nothing follows its close', async () => {
  let holdWelcome = true;
  const { url, sockets, connections } = await scriptedShard((socket, msg, connection) => {
    // The first connection is welcomed; an attempt's Join waits for the test.
    if (msg.body === 'join' && (connection === 0 || !holdWelcome)) socket.send(welcome('shard-a'));
  });
  const kept = keptSockets();
  client = new RealtimeClient({
    url,
    joinToken: 't1',
    createSocket: kept.createSocket,
    silenceTimeoutMs: 0,
    rejoin: { joinToken: async () => 't2' },
  });
  let events = recordEvents(client);
  await client.connect();
  sockets[0]?.terminate();
  // The attempt's socket is open and has sent its Join.
  await until("the attempt's Join to reach the shard", () => connections[1]?.[0]?.body === 'join', 3000);
  expect(connections[1]?.map((m) => m.body)).toEqual(['join']);
  const attemptClosed = new Promise<number>((resolve) => sockets[1]?.on('close', resolve));
  client.close();
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);
  // The shard hears the player leave (1000) at once rather than keeping them until its idle timeout.
  expect(await within(attemptClosed, 3000)).toBe(1000);
  // Were it still open, the Welcome and a snapshot would arrive now.
  if (sockets[1]?.readyState === WebSocket.OPEN) {
    sockets[1].send(welcome('shard-a'));
    sockets[1].send(shardSnapshot(1, 0, new Uint8Array(0)));
  }
  // Until the client's end of it has closed too: whatever it would still handle has come by then.
  await until("the attempt's socket to close at the client", () => kept.made[1]?.readyState === WebSocket.CLOSED, 3000);
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);

  // close() while the attempt waits for its join token: no socket is opened once the token comes.
  holdWelcome = false;
  let giveToken: (token: string) => void = () => {};
  const tokenAsked = new Promise<void>((asked) => {
    client = new RealtimeClient({
      url,
      joinToken: 't3',
      createSocket: kept.createSocket,
      silenceTimeoutMs: 0,
      rejoin: {
        joinToken: () => {
          asked();
          return new Promise<string>((resolve) => {
            giveToken = resolve;
          });
        },
      },
    });
  });
  const second = client as RealtimeClient;
  events = recordEvents(second);
  await second.connect();
  sockets[2]?.terminate();
  expect(await within(tokenAsked, 3000)).not.toBe('timed out');
  second.close();
  giveToken('t4');
  // The attempt would make its socket as the token's promise settles: before the next turn of the loop.
  await new Promise((r) => setImmediate(r));
  expect(kept.made).toHaveLength(3);
  expect(sockets).toHaveLength(3);
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);
});

/** The messages a shard that cannot be read sends after its Welcome, by what is wrong with them. */
const UNREADABLE: Record<string, Uint8Array> = {
  undecodable: new Uint8Array([0x0a, 0xff, 0xff, 0xff]),
  'unknown layout': encodeSnapshotMessage({
    tick: 1,
    baseTick: 0,
    lastInputSeq: 0,
    layout: 2,
    entities: new Uint8Array([1, 2, 3]),
    removed: new Uint32Array(0),
    removedCount: 0,
  }),
};
const UNREADABLE_REASONS: Record<string, RegExp> = {
  undecodable: /^the shard sent a message this SDK cannot decode \(.+\); update the SDK$/,
  'unknown layout': new RegExp(`^the shard speaks snapshot layout 2, this SDK reads layout ${SNAPSHOT_LAYOUT}; update the SDK$`),
};

test('a shard this SDK cannot read, on the WebSocket browsers and Node 22 have: the socket closes with 4901 and close says why', async () => {
  const shardCloses: number[] = [];
  let mode = 'undecodable';
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (socket) => {
    socket.on('close', (code) => shardCloses.push(code));
    socket.on('message', (data) => {
      if (ClientMessage.decode(data as Buffer).body !== 'join') return;
      socket.send(welcome('shard-a'));
      socket.send(UNREADABLE[mode] as Uint8Array);
    });
  });
  await new Promise((r) => server?.once('listening', r));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // Node 20's global WebSocket (behind a flag; Node 22's by default) is undici's, which refuses
  // close codes a browser refuses: all but 1000 and 3000–4999.
  const script = `
    const { RealtimeClient } = await import(${JSON.stringify(new URL('./realtime.ts', import.meta.url).href)});
    const events = [];
    const c = new RealtimeClient({ url: process.argv[1], joinToken: 't', silenceTimeoutMs: 0 });
    const closed = new Promise((resolve) => c.on('close', (code, reason) => { events.push(['close', code, reason]); resolve(); }));
    await c.connect().catch((e) => events.push(['rejected', e.message]));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))]);
    console.log(JSON.stringify(events));`;
  for (const m of Object.keys(UNREADABLE)) {
    mode = m;
    shardCloses.length = 0;
    const { stdout } = await run(
      process.execPath,
      [
        '--experimental-websocket',
        '--no-warnings',
        '--conditions=aethex-source',
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
        url,
      ],
      { timeout: 10_000 },
    );
    const events = JSON.parse(stdout) as [string, number, string][];
    expect(events, m).toHaveLength(1);
    expect(events[0]?.slice(0, 2), m).toEqual(['close', 4901]);
    expect(events[0]?.[2], m).toMatch(UNREADABLE_REASONS[m] as RegExp);
    await until(`the shard to hear the socket close (${m})`, () => shardCloses.length > 0, 3000);
    expect(shardCloses, m).toEqual([4901]);
  }
}, 30_000);

test('a shard this SDK cannot read ends the session even with rejoin: no rejoin loop, no join token asked', async () => {
  let mode = 'undecodable';
  let joins = 0;
  const { url } = await scriptedShard((socket, msg) => {
    if (msg.body !== 'join') return;
    joins++;
    socket.send(welcome('shard-a'));
    socket.send(UNREADABLE[mode] as Uint8Array);
  });
  for (const m of Object.keys(UNREADABLE)) {
    mode = m;
    joins = 0;
    let tokens = 0;
    client = new RealtimeClient({
      url,
      joinToken: 't1',
      createSocket,
      rejoin: {
        joinToken: async () => {
          tokens++;
          return 't2';
        },
        maxDelayMs: 50,
      },
    });
    const events = recordEvents(client);
    await client.connect();
    // The first event says it: a rejoin would have begun with 'disconnected', at the drop.
    await until(`the first session event (${m})`, () => events.length > 0, 3000);
    expect(events, m).toHaveLength(1);
    expect(events[0], m).toMatch(/^close 4901 /);
    expect(events[0]?.slice('close 4901 '.length), m).toMatch(UNREADABLE_REASONS[m] as RegExp);
    // A rejoin's first attempt would ask for its token 100 ms after the drop: a timer's, so a wait
    // of time, past it; a stall cannot fail this (it only makes the wait longer).
    await sleep(300);
    expect(events, m).toHaveLength(1);
    expect([joins, tokens], m).toEqual([1, 0]);
    expect(client.ended).toBe(true);
  }
});

test('a snapshot the client cannot apply: rejoined with 4902 for a full snapshot, or closed with 4902 without rejoin; other clients in the process carry on', async () => {
  const w = new SnapshotBodyWriter();
  const snap = (tick: number, base: number, write: (w: SnapshotBodyWriter) => void) => {
    w.reset();
    write(w);
    return shardSnapshot(tick, base, w.bytes().slice());
  };
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body !== 'join') return;
    socket.send(welcome('shard-a'));
    socket.send(snap(1, 0, (w) => w.full(7, 10, 10, 1, 0)));
    // The first connection of each client then sends a delta on a base the client never had.
    if (msg.join?.joinToken !== 'again') socket.send(snap(2, 99, (w) => w.delta(7, 1, 0)));
  });
  client = new RealtimeClient({ url, joinToken: 't1', createSocket: nodeSocket, rejoin: { joinToken: async () => 'again' } });
  const events = recordEvents(client);
  const disconnected = new Promise<[number, string]>((resolve) => client?.on('disconnected', (code, reason) => resolve([code, reason])));
  const rejoined = new Promise((resolve) => client?.on('rejoined', resolve));
  await client.connect();
  expect(await disconnected).toEqual([
    4902,
    'snapshot 2 could not be applied: snapshot 2 is relative to tick 99, which this client does not have',
  ]);
  await rejoined;
  // The rejoined connection's snapshot 1 is the last thing the shard sends.
  await until("the rejoined connection's snapshot", () => events.length >= 4, 3000);
  expect(events).toEqual(['snapshot 1', 'disconnected 4902', 'rejoined after 1', 'snapshot 1']);
  expect(client.entities().get(7)).toMatchObject({ x: 10, y: 10 });
  const shardHeard = new Promise<number>((resolve) =>
    sockets[0]?.readyState !== WebSocket.OPEN ? resolve(-1) : sockets[0]?.on('close', resolve),
  );
  expect([4902, -1]).toContain(await within(shardHeard, 3000));
  client.close();

  const solo = new RealtimeClient({ url, joinToken: 't3', createSocket: nodeSocket });
  client = solo;
  const soloEvents = recordEvents(solo);
  await solo.connect();
  // Nothing follows 'close'.
  await until("the solo client's 'close'", () => soloEvents.some((e) => e.startsWith('close')), 3000);
  expect(soloEvents).toEqual([
    'snapshot 1',
    'close 4902 snapshot 2 could not be applied: snapshot 2 is relative to tick 99, which this client does not have',
  ]);
});

test('move() refuses what is not two finite numbers, naming them; nothing is sent or predicted', async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  await client.connect();
  const len = Math.hypot(0, 0);
  expect(() => client?.move(0 / len, 0 / len)).toThrow(new RangeError('move needs finite numbers, got (NaN, NaN)'));
  expect(() => client?.move(Number.POSITIVE_INFINITY, 0)).toThrow(new RangeError('move needs finite numbers, got (Infinity, 0)'));
  expect(() => client?.move(1, Number.NEGATIVE_INFINITY)).toThrow(RangeError);
  expect(client.predicted).toEqual({ x: 0, y: 0 });
  expect(client.unacknowledged).toBe(0);
  expect(client.move(3, 4)).toBe(1);
  // The refused moves came before this one on the same socket: once it is in, any of them sent would be too.
  const received = connections[0] ?? [];
  await until('the move (3, 4) to reach the shard', () => received.some((m) => m.input?.move?.x === 3), 3000);
  expect(received.map((m) => m.body)).toEqual(['join', 'input']);
});

test('inputs made before the Welcome are held and sent after it, cut to its max speed and numbered after its last input', async () => {
  let beforeWelcome: string[] = [];
  let sendWelcome: (() => void) | undefined;
  const { url, connections } = await scriptedShard((socket, msg, connection) => {
    if (msg.body !== 'join') return;
    // A shard slow to verify the join token (its key set fetched first), holding this player's
    // entity from an earlier session whose last input was 500: it welcomes when the test says.
    sendWelcome = () => {
      beforeWelcome = (connections[connection] ?? []).filter((m) => !isProbe(m)).map((m) => m.body as string);
      socket.send(welcome('shard-a', 500));
    };
  });
  // The game's clock: each move below is a tick (25 ms at 40 Hz, the rate before a Welcome) after
  // the one before, so that each is an input of its own.
  let clock = 1000;
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0, now: () => clock });
  const c = client;
  const frame = () => {
    clock += 25;
    c.move(10, 0);
  };
  // The game's input loop starts with connect(), not after the Welcome: moves before the socket
  // opens, and while the shard has the Join.
  const connecting = c.connect();
  for (let i = 0; i < 3; i++) frame();
  await until('the Join to reach the shard', () => sendWelcome !== undefined);
  for (let i = 0; i < 3; i++) frame();
  await behindProbe(kept.made[0], () => connections[0]);
  (sendWelcome as () => void)();
  await connecting;
  // And after it.
  for (let i = 0; i < 2; i++) frame();
  const received = connections[0] ?? [];
  const inputs = () => received.filter((m) => m.body === 'input');
  await until('8 inputs to reach the shard', () => inputs().length >= 8);
  await behindProbe(kept.made[0], () => connections[0]);
  // Nothing but the Join before the Welcome: inputs then are counted against the player.
  expect(beforeWelcome).toEqual(['join']);
  expect(inputs()).toHaveLength(8);
  expect(inputs().map((m) => m.input?.seq)).toEqual(Array.from({ length: 8 }, (_, i) => 501 + i));
  expect(new Set(inputs().map((m) => m.input?.move?.x))).toEqual(new Set([5]));
  // Predicted by the Welcome's rules, from where the session started.
  expect(client.unacknowledged).toBe(8);
  expect(client.predicted.x).toBe(5 * 8);
});

test('held inputs renumbered after the Welcome keep their own send times, also where old and new numbers overlap', async () => {
  let clock = 1000;
  const { url } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') setTimeout(() => socket.send(welcome('shard-a', 2)), 50);
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, now: () => clock });
  const c = client;
  const connecting = c.connect();
  // Five inputs, 1–5, made a tick (25 ms) apart before the Welcome; it says the shard applied up to 2.
  for (let k = 0; k < 5; k++) {
    c.move(1, 0);
    clock += 25;
  }
  await connecting;
  const sentAt = (c as unknown as { sentAt: Map<number, number> }).sentAt;
  expect([...sentAt.entries()].sort((a, b) => a[0] - b[0])).toEqual([
    [3, 1000],
    [4, 1025],
    [5, 1050],
    [6, 1075],
    [7, 1100],
  ]);
});

/**
 * A shard that moves entity 7 by each input as the real one does (float32 positions, the world's
 * bounds) and answers it with a snapshot (quantized by `scale`), and with a Correction first when
 * it clamped the move at the world's edge.
 */
async function movingShard(start: { x: number; y: number }, scale: number, maxX: number) {
  const at = { x: Math.fround(start.x), y: Math.fround(start.y) };
  const hiX = insideMax(maxX);
  let tick = 0;
  const sent = { snapshots: 0, corrections: 0 };
  const w = new SnapshotBodyWriter();
  const snapshot = (socket: WebSocket, seq: number) => {
    tick++;
    w.reset();
    // As a shard quantizes: held to the quanta that read inside the bounds.
    const q = quantumRange(-maxX, maxX, scale);
    const quantum = (v: number) => Math.min(q.hi, Math.max(q.lo, Math.round(v * (1 / scale))));
    w.full(7, quantum(at.x), quantum(at.y), 1, 0);
    socket.send(
      encodeSnapshotMessage({
        tick,
        baseTick: 0,
        lastInputSeq: seq,
        layout: SNAPSHOT_LAYOUT,
        entities: w.bytes(),
        removed: new Uint32Array(0),
        removedCount: 0,
      }),
    );
    sent.snapshots++;
  };
  const correct = (socket: WebSocket, seq: number) => {
    socket.send(ServerMessage.encode({ correction: { tick, lastInputSeq: seq, position: { x: at.x, y: at.y } } }).finish());
    sent.corrections++;
  };
  const shard = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') {
      socket.send(
        ServerMessage.encode({
          welcome: {
            protocolVersion: 1,
            entityId: 7,
            tickRateHz: 40,
            positionScale: scale,
            maxSpeed: 5,
            shardName: 'shard-a',
            worldBounds: { minX: -maxX, minY: -maxX, maxX, maxY: maxX },
          },
        }).finish(),
      );
      snapshot(socket, 0);
    } else if (msg.body === 'input') {
      const input = msg.input as aethex.v1.Input;
      const nx = at.x + Math.fround(input.move?.x ?? 0);
      at.x = Math.fround(Math.min(nx, hiX));
      at.y = Math.fround(at.y + Math.fround(input.move?.y ?? 0));
      if (nx > hiX) correct(socket, input.seq);
      snapshot(socket, input.seq);
    }
  });
  return { ...shard, at, sent, correct, snapshot };
}

test('own-entity prediction does not jitter with snapshot quantization, and corrections it already agreed with are not emitted', async () => {
  const scale = 0.125;
  const shard = await movingShard({ x: 1.25, y: -2 }, scale, 10);
  client = new RealtimeClient({ url: shard.url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  const c = client;
  const corrections: string[] = [];
  c.on('correction', (p, seq) => corrections.push(`${p.x},${p.y} at ${seq}`));
  let snapshots = 0;
  const nextSnapshot = () => new Promise<void>((resolve) => c.on('snapshot', () => resolve()));
  c.on('snapshot', () => snapshots++);
  const first = nextSnapshot();
  await c.connect();
  await first;
  expect(c.predicted).toEqual({ x: 1.25, y: -2 });

  // Walk east (into the wall at x = 10) and a little south, a move off the quanta, one input per
  // snapshot; each snapshot must leave the prediction where the move put it.
  const moved: number[] = [];
  for (let i = 0; i < 40; i++) {
    const done = nextSnapshot();
    c.move(0.37, -0.023);
    const predicted = { ...c.predicted };
    await done;
    moved.push(Math.max(Math.abs(c.predicted.x - predicted.x), Math.abs(c.predicted.y - predicted.y)));
  }
  expect(shard.sent.corrections).toBeGreaterThan(10);
  expect(moved).toEqual(Array(40).fill(0));
  expect(c.predicted).toEqual(shard.at);
  expect(corrections).toEqual([]);

  // The shard moving the entity differently is a correction, told once: by the snapshot (as the
  // shard sends them: first), not again by the Correction after it.
  shard.at.x = Math.fround(shard.at.x - 3);
  const socket = shard.sockets[0] as WebSocket;
  shard.snapshot(socket, c.lastAckedSeq);
  shard.correct(socket, c.lastAckedSeq);
  // A message after them on the same socket: once it is in, both have been handled.
  let after = false;
  c.on('message', () => {
    after = true;
  });
  socket.send(ServerMessage.encode({ gameMessage: { topic: 'after', payload: new Uint8Array(0), tick: 0 } }).finish());
  await until('the message after the Correction', () => after, 3000);
  const quantized = (v: number) => Math.round(v / scale) * scale;
  expect(corrections).toEqual([`${quantized(shard.at.x)},${quantized(shard.at.y)} at 40`]);
  expect(c.predicted).toEqual(shard.at);
});

test('a prediction that starts off the shard’s position by rounding only ever moves closer to it', async () => {
  const scale = 0.125;
  // The shard's entity is between quanta: the first snapshot says 1.25, -2.0.
  const shard = await movingShard({ x: 1.2813, y: -2.0507 }, scale, 1000);
  client = new RealtimeClient({ url: shard.url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  const c = client;
  const nextSnapshot = () => new Promise<void>((resolve) => c.on('snapshot', () => resolve()));
  const first = nextSnapshot();
  await c.connect();
  await first;
  const error = () => Math.max(Math.abs(c.predicted.x - shard.at.x), Math.abs(c.predicted.y - shard.at.y));
  const errors = [error()];
  let jumps = 0;
  for (let i = 0; i < 60; i++) {
    const done = nextSnapshot();
    c.move(0.0391, -0.0173);
    const predicted = { ...c.predicted };
    await done;
    if (c.predicted.x !== predicted.x || c.predicted.y !== predicted.y) jumps++;
    errors.push(error());
  }
  for (let i = 1; i < errors.length; i++) expect(errors[i]).toBeLessThanOrEqual((errors[i - 1] as number) + 1e-6);
  expect(errors[errors.length - 1]).toBeLessThan(scale / 2);
  // Only when a snapshot's quantum disagreed with the prediction's, not on every snapshot.
  expect(jumps).toBeLessThan(10);
});

test('latencies kept for takeLatencies() are bounded; after the session ends move() does nothing and nothing is kept', async () => {
  let shardSocket: WebSocket | undefined;
  const { url } = await scriptedShard((socket, msg) => {
    shardSocket = socket;
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  const { c, moves } = clockedClient(url);
  await c.connect();
  moves(3000);
  const acked = new Promise((resolve) => c.on('snapshot', resolve));
  (shardSocket as WebSocket).send(
    encodeSnapshotMessage({
      tick: 1,
      baseTick: 0,
      lastInputSeq: 3000,
      layout: SNAPSHOT_LAYOUT,
      entities: new Uint8Array(0),
      removed: new Uint32Array(0),
      removedCount: 0,
    }),
  );
  await acked;
  expect(c.unacknowledged).toBe(0);
  expect(c.takeLatencies()).toHaveLength(1024);
  expect(c.takeLatencies()).toEqual([]);

  for (let i = 0; i < 10; i++) c.move(1, 0);
  const closed = new Promise((resolve) => c.on('close', resolve));
  shardSocket?.close(1000, 'bye');
  await closed;
  expect(c.ended).toBe(true);
  expect(c.unacknowledged).toBe(0);
  expect(c.move(1, 0)).toBe(0);
  expect(c.unacknowledged).toBe(0);
});

test('RPCs: refused at once before the Welcome, during a rejoin and after close; those in flight reject when the connection drops or the session ends', async () => {
  let holdAttempt = false;
  const { url, sockets } = await scriptedShard((socket, msg, connection) => {
    if (msg.body === 'join' && !(holdAttempt && connection > 0)) socket.send(welcome('shard-a'));
    // RPCs are never answered.
  });
  const rejected = (p: Promise<unknown>) =>
    within(
      p.then(
        () => 'resolved',
        (e: Error & { code: string }) => `${e.code}: ${e.message}`,
      ),
      500,
    );
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, rejoin: { joinToken: async () => 't2' } });
  const c = client;
  const connected = c.connect();
  expect(await rejected(c.rpc('buy'))).toBe('NOT_JOINED: rpc buy: not joined yet (wait for connect())');
  await connected;

  holdAttempt = true;
  const inFlight = rejected(c.rpc('buy', new Uint8Array([1]), 60_000));
  const dropped = new Promise((resolve) => c.on('disconnected', resolve));
  sockets[0]?.close(4999, 'gone');
  await dropped;
  expect(await inFlight).toBe('DISCONNECTED: rpc buy lost: the connection dropped (4999 gone) before its result came; it may have run');
  expect(await rejected(c.rpc('sell'))).toBe('DISCONNECTED: rpc sell: the connection dropped and the client is rejoining');

  holdAttempt = false;
  c.close();
  expect(await rejected(c.rpc('sell'))).toBe('CLOSED: rpc sell: the session closed (1000 client closed)');

  const d = new RealtimeClient({ url, joinToken: 't3', createSocket, silenceTimeoutMs: 0 });
  client = d;
  await d.connect();
  const atClose = rejected(d.rpc('buy', new Uint8Array(0), 60_000));
  d.close();
  expect(await atClose).toMatch(/^CLOSED: rpc buy lost: the session closed \(\d+ .*\) before its result came$/);
});

test('off() removes a listener, also from inside an emit, without skipping the others; on() and off() chain', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  const c = client;
  const heard: string[] = [];
  const once = (tick: number) => {
    heard.push(`once ${tick}`);
    c.off('snapshot', once);
  };
  const panel = (tick: number) => heard.push(`panel ${tick}`);
  const always = (tick: number) => heard.push(`always ${tick}`);
  expect(c.on('snapshot', once).on('snapshot', panel).on('snapshot', always)).toBe(c);
  await c.connect();
  const snapshot = (tick: number) => {
    const seen = new Promise((resolve) => c.on('snapshot', resolve));
    sockets[0]?.send(shardSnapshot(tick, 0, new Uint8Array(0)));
    return seen;
  };
  await snapshot(1);
  expect(c.off('snapshot', panel).off('snapshot', panel)).toBe(c);
  await snapshot(2);
  expect(heard).toEqual(['once 1', 'panel 1', 'always 1', 'always 2']);
});

test('connect() to an address the socket refuses rejects (and close is emitted) rather than throwing', async () => {
  client = new RealtimeClient({ url: 'ws://bad host:1', joinToken: 't', createSocket });
  const events = recordEvents(client);
  let connecting: Promise<unknown> | undefined;
  expect(() => {
    connecting = client?.connect();
  }).not.toThrow();
  await expect(connecting).rejects.toThrow(/^cannot connect to ws:\/\/bad host:1: /);
  expect(events).toEqual([expect.stringMatching(/^close 1006 cannot connect to ws:\/\/bad host:1: /)]);
});

test('move() every render frame sends at most one input per tick: moves within a tick are summed, cut to max speed, and predicted as sent', async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  // After the Welcome the client's timers and clock (`now`, on Date) are the test's fake ones, so
  // that ticks and frames keep their rate however late the process runs; the socket stays real.
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0, now: () => Date.now() });
  const c = client;
  await c.connect();
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const sent = () => (connections[0] ?? []).filter((m) => m.body === 'input').map((m) => m.input as aethex.v1.Input);
  /** Waits (in real time) until the shard has every input up to `seq`. */
  const arrived = (seq: number) => until(`input ${seq} to reach the shard`, () => sent().length >= seq);
  // A burst within one tick (50 Hz: 20 ms): the first goes at once, the rest make one more input,
  // cut to max speed (5), sent when the tick is over.
  expect(c.move(4, 0)).toBe(1);
  expect(c.move(4, 0)).toBe(2);
  expect(c.move(4, 0)).toBe(2);
  expect(c.move(0, 3)).toBe(2);
  expect(sent()).toHaveLength(0); // not arrived yet; nothing more is sent synchronously
  await arrived(1);
  await behindProbe(kept.made[0], () => connections[0]);
  expect(sent()).toHaveLength(1); // the second waits for the tick
  await vi.advanceTimersByTimeAsync(60);
  await arrived(2);
  // (4, 0) + (4, 0) + (0, 3) = (8, 3), cut to length 5.
  const k = 5 / Math.hypot(8, 3);
  expect(sent().map((i) => [i.seq, i.move?.x, i.move?.y])).toEqual([
    [1, 4, 0],
    [2, Math.fround(8 * k), Math.fround(3 * k)],
  ]);
  const afterBurst = { x: Math.fround(4 + Math.fround(8 * k)), y: Math.fround(3 * k) };
  expect(c.predicted).toEqual(afterBurst);

  // A 144 Hz render loop (7 ms frames) for 602 ms: one input per tick at most, every frame's move
  // in them.
  const before = sent().length;
  const frames = 86;
  const { last, elapsed } = await renderFrames(c, frames, 60);
  await arrived(last);
  await behindProbe(kept.made[0], () => connections[0]);
  const inputs = sent().slice(before);
  expect(inputs.length).toBeLessThanOrEqual(Math.ceil(elapsed / 20) + 1);
  expect(inputs.length).toBeGreaterThanOrEqual(Math.floor((frames * 7) / 20));
  expect(frames).toBeGreaterThan(inputs.length * 1.5);
  // Sequence numbers one apart; the moves add up to every frame's.
  expect(inputs.map((i) => i.seq)).toEqual(inputs.map((_, k) => 3 + k));
  const total = inputs.reduce((s, i) => s + (i.move?.x ?? 0), 0);
  expect(total).toBeCloseTo(frames * 0.25, 4);
  // Predicted exactly as the shard would move the entity by what was sent (float32 steps).
  let x = afterBurst.x;
  for (const i of inputs) x = Math.fround(x + Math.fround(i.move?.x ?? 0));
  expect(c.predicted.x).toBe(x);
});

test("inputs are paced by the Welcome's exact tickIntervalUs, not its rounded tickRateHz: a 16 ms shard (63 Hz) gets one input per 16 ms at most", async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') {
      socket.send(welcome('s', 0, { tickRateHz: 63, tickIntervalUs: 16_000 }));
    }
  });
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0, now: () => Date.now() });
  const c = client;
  await c.connect();
  expect(c.tickIntervalMs).toBe(16);
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const sent = () => (connections[0] ?? []).filter((m) => m.body === 'input');
  // A 144 Hz render loop for 16 s of the fake clock: 1,000 ticks of the shard. Paced by 63 Hz
  // (15.87 ms) the client would send about 1,008 inputs, 8 more than the shard applies: a queue,
  // and lag, growing by half an input a second for as long as the player moves.
  // (The last input goes when its interval is over: 40 ms more.)
  const { last, elapsed } = await renderFrames(c, 2304, 40);
  await until(`input ${last} to reach the shard`, () => sent().length >= last);
  await behindProbe(kept.made[0], () => connections[0]);
  expect(sent().length).toBeLessThanOrEqual(Math.floor(elapsed / 16) + 1);
  expect(sent().length).toBeGreaterThanOrEqual(Math.floor(elapsed / 16) - 2);
});

test("an RPC larger than the Welcome's maxMessageSize is refused at once (MESSAGE_TOO_LARGE, naming the limit) and not sent; the session carries on", async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') {
      socket.send(welcome('s', 0, { maxMessageSize: 1024 }));
    } else if (msg.rpc && msg.rpc.method !== 'probe') {
      socket.send(
        ServerMessage.encode({
          rpcResult: { callId: msg.rpc.callId, ok: true, payload: new Uint8Array([(msg.rpc.payload?.length ?? 0) & 0xff]) },
        }).finish(),
      );
    }
  });
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0 });
  const c = client;
  await c.connect();
  const outcome = (p: Promise<Uint8Array>) =>
    p.then(
      (r) => `ok ${r[0]}`,
      (e: Error & { code: string }) => `${e.code}: ${e.message}`,
    );
  // Method 'big' and 1,100 bytes: 1,113 bytes encoded, over 1,024.
  expect(await outcome(c.rpc('big', new Uint8Array(1100)))).toBe(
    "MESSAGE_TOO_LARGE: rpc big: its message is 1113 bytes, over the shard's limit of 1024 bytes (gateway.max_message_size); not sent",
  );
  // Exactly at the limit it goes, and the session is the same one.
  expect(await outcome(c.rpc('big', new Uint8Array(1011)))).toBe(`ok ${1011 & 0xff}`);
  await behindProbe(kept.made[0], () => connections[0]);
  const rpcs = (connections[0] ?? []).filter((m) => m.rpc && m.rpc.method !== 'probe').map((m) => m.rpc?.payload?.length);
  expect(rpcs).toEqual([1011]);
  expect(c.ended).toBe(false);
  expect(kept.made).toHaveLength(1);
});

test('interpolation runs over the real interval between snapshots: a client sent every 4th snapshot sees even motion, not freeze and rush', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  let clock = 0;
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, now: () => clock });
  const c = client;
  await c.connect();
  const snapshotAt = async (tick: number, x: number) => {
    const seen = new Promise((resolve) => c.on('snapshot', resolve));
    sockets[0]?.send(
      shardSnapshot(
        tick,
        0,
        body((w) => w.full(9, x, 0, 1, 0)),
      ),
    );
    await seen;
  };
  // Entity 9 moves 4 units a tick; the client gets ticks 4, 8, 12 (every 80 ms at 50 Hz).
  clock = 1000;
  await snapshotAt(4, 16);
  clock = 1080;
  await snapshotAt(8, 32);
  const xs = [0, 20, 40, 60, 79].map((dt) => c.interpolatedEntities(1080 + dt).get(9)?.x);
  expect(xs).toEqual([16, 20, 24, 28, 16 + (16 * 79) / 80]);
  // Teleported (further than max speed 5 × 4 ticks): drawn where it is, not sliding there.
  clock = 1160;
  await snapshotAt(12, 500);
  expect(c.interpolatedEntities(1161).get(9)?.x).toBe(500);
});

/** Resolves with the tick of the next snapshot `c` applies. */
function applied(c: RealtimeClient): Promise<number> {
  return new Promise((resolve) => {
    const listener = (tick: number) => {
      c.off('snapshot', listener);
      resolve(tick);
    };
    c.on('snapshot', listener);
  });
}

/**
 * A client of a scripted shard that answers a Join as shard-a (a later one, a rejoin's, as
 * shard-b) and a Resume as shard-b: connected, its first snapshot (tick 10, entity 9) applied, and
 * a redirect to shard-b followed up to shard-b's Welcome — its first snapshot, and with it the
 * `handoff` event, still to come. `options` go to the client.
 */
async function resumedOnB(options: Partial<ConstructorParameters<typeof RealtimeClient>[0]> = {}) {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome(sockets.length === 1 ? 'shard-a' : 'shard-b'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  const c = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, ...options });
  client = c;
  const events = recordEvents(c);
  await c.connect();
  sockets[0]?.send(entity9At(10, 40));
  await until('the first snapshot', () => events.includes('snapshot 10'), 3000);
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => c.shardName === 'shard-b', 3000);
  return { c, events, sockets, url };
}

/** A full snapshot of tick `tick` with entity 9 at (x, 0). */
const entity9At = (tick: number, x: number) =>
  shardSnapshot(
    tick,
    0,
    body((w) => w.full(9, x, 0, 1, 0)),
  );

test('with renderDelayMs 100, snapshots arriving late and one lost leave a steadily moving entity moving evenly; drawn one interval behind, the same arrivals freeze it, then it jumps', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  let clock = 0;
  const buffered = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, now: () => clock, renderDelayMs: 100 });
  client = buffered;
  await buffered.connect();
  const plain = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, now: () => clock });
  try {
    await plain.connect();
    // 50 Hz: tick t is due at 1005 + 20 t, entity 9 at x = 4 t. Tick 15 leaves 60 ms late and 16–18
    // come with it, at 1365 (one socket: nothing overtakes); tick 30 leaves 50 ms late, 31 and 32
    // (the last 10 ms late) with it, at 1655; tick 24 never comes.
    const due = (tick: number) => 1005 + 20 * tick;
    const arrivals: { tick: number; at: number }[] = [];
    for (let tick = 1, at = 0; tick <= 40; tick++) {
      at = Math.max(at, due(tick) + (tick === 15 ? 60 : tick === 30 ? 50 : 0));
      if (tick !== 24) arrivals.push({ tick, at });
    }
    const times: number[] = [];
    for (let now = 1130; now <= 1800; now += 5) times.push(now);
    const drawnBuffered: number[] = [];
    const drawnPlain: number[] = [];
    let next = 0;
    for (const now of times) {
      for (; next < arrivals.length && (arrivals[next]?.at as number) <= now; next++) {
        const { tick, at } = arrivals[next] as { tick: number; at: number };
        clock = at;
        const both = Promise.all([applied(buffered), applied(plain)]);
        for (const s of sockets) s.send(entity9At(tick, 4 * tick));
        await both;
      }
      clock = now;
      drawnBuffered.push(buffered.interpolatedEntities().get(9)?.x as number);
      drawnPlain.push(plain.interpolatedEntities().get(9)?.x as number);
    }
    // Buffered: 1 unit every 5 ms, whatever came late — never frozen, never rushed (steps to 1/1000)...
    const stepsOf = (xs: number[]) => xs.slice(1).map((x, k) => Math.round((x - (xs[k] as number)) * 1000) / 1000);
    expect(stepsOf(drawnBuffered)).toEqual(times.slice(1).map(() => 1));
    // ... exactly 100 ms behind the on-time timeline.
    for (const [k, now] of times.entries()) expect(drawnBuffered[k], `buffered at ${now}`).toBeCloseTo((now - 1105) / 5, 6);
    // One interval behind: frozen at tick 14 (x 56) from 1305 until the late snapshots come at
    // 1365, then at tick 17 (x 68) at once: 12 units in 5 ms. At the lost one, frozen, then rushed.
    const at = (now: number) => drawnPlain[times.indexOf(now)];
    expect([1300, 1305, 1335, 1360, 1365].map(at)).toEqual([55, 56, 56, 56, 68]);
    const steps = stepsOf(drawnPlain);
    expect(steps.filter((s) => s === 0).length).toBeGreaterThan(20);
    expect(Math.max(...steps)).toBeGreaterThanOrEqual(12);
  } finally {
    plain.close();
  }
});

test('with renderDelayMs the buffer starts over at a handoff and at a rejoin: never drawn between ticks of two shards, held at the first new snapshot for the delay', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  let clock = 0;
  client = new RealtimeClient({
    url,
    joinToken: 't',
    createSocket,
    silenceTimeoutMs: 0,
    now: () => clock,
    renderDelayMs: 100,
    rejoin: { joinToken: async () => 't2' },
  });
  const c = client;
  const events = recordEvents(c);
  await c.connect();
  const send = async (socket: WebSocket | undefined, tick: number, x: number, at: number) => {
    clock = at;
    const seen = applied(c);
    socket?.send(entity9At(tick, x));
    await seen;
  };
  // shard-a: ticks 500–520 (entity 9 at 4 × tick), every 20 ms from 10 000.
  for (let tick = 500; tick <= 520; tick++) await send(sockets[0], tick, 4 * tick, 10_000 + 20 * (tick - 500));
  // Render tick at 10 400 − 100 ms = 515.
  expect(c.interpolatedEntities(10_400).get(9)?.x).toBeCloseTo(2060, 6);

  // Handed off to shard-b, whose ticks are low (tick 3 there is not "older" than 520).
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => c.shardName === 'shard-b', 3000);
  await send(sockets[1], 3, 2100, 10_450);
  for (const now of [10_450, 10_500, 10_549]) expect(c.interpolatedEntities(now).get(9)?.x).toBe(2100);
  for (let tick = 4; tick <= 10; tick++) await send(sockets[1], tick, 2100 + 4 * (tick - 3), 10_450 + 20 * (tick - 3));
  // 100 ms behind shard-b's own timeline: its tick 3.5, 4 and 6.
  expect([10_560, 10_570, 10_610].map((now) => c.interpolatedEntities(now).get(9)?.x)).toEqual([2102, 2104, 2112]);

  // shard-b goes away and the client rejoins it: its ticks start over (a restart).
  const rejoined = new Promise((resolve) => c.on('rejoined', resolve));
  sockets[1]?.terminate();
  await rejoined;
  await send(sockets[2], 2, 2300, 11_000);
  for (const now of [11_000, 11_099]) expect(c.interpolatedEntities(now).get(9)?.x).toBe(2300);
  await send(sockets[2], 3, 2304, 11_020);
  // Its tick 2.5, then past its newest (3): held there.
  expect([11_110, 11_130].map((now) => c.interpolatedEntities(now).get(9)?.x)).toEqual([2302, 2304]);
  expect(events).toEqual([
    ...Array.from({ length: 21 }, (_, k) => `snapshot ${500 + k}`),
    'snapshot 3',
    'handoff to shard-b',
    ...Array.from({ length: 7 }, (_, k) => `snapshot ${4 + k}`),
    'disconnected 1006',
    'rejoined after 1',
    'snapshot 2',
    'snapshot 3',
  ]);
});

test('a handoff whose new shard drops before its first snapshot is told before the rejoin, not after it as if the client came from the old shard again', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome(sockets.length === 1 ? 'shard-a' : 'shard-b'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, rejoin: { joinToken: async () => 't2' } });
  const c = client;
  const events = recordEvents(c);
  await c.connect();
  sockets[0]?.send(entity9At(10, 40));
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => c.shardName === 'shard-b', 3000);
  // shard-b dies before its first snapshot; the client rejoins it.
  const rejoined = new Promise((resolve) => c.on('rejoined', resolve));
  sockets[1]?.terminate();
  await rejoined;
  const seen = applied(c);
  sockets[2]?.send(entity9At(2, 50));
  await seen;
  expect(events).toEqual(['snapshot 10', 'disconnected 1006', 'handoff to shard-b', 'rejoined after 1', 'snapshot 2']);
});

test.each([
  ['resumes there', 'welcome', ['snapshot 10', 'disconnected 1006', 'snapshot 2', 'handoff to shard-b', 'rejoined after 1', 'snapshot 3']],
  [
    'fails to resume, then rejoins it',
    'refuse',
    [
      'snapshot 10',
      'disconnected 1006',
      'handoffFailed closed before Welcome: 1011 no',
      'disconnected 1011',
      'rejoined after 1',
      'snapshot 3',
    ],
  ],
] as const)('a rejoin answered with a redirect that %s: one rejoined ends the drop, after the handoff', async (_what, resume, expected) => {
  // Connection 0: shard-a. 1: the rejoin, answered with a redirect. 2: the resume on shard-b.
  // 3 (only after a failed resume): the rejoin of shard-b, which owns the entity.
  const { url, sockets } = await scriptedShard((socket, msg, connection) => {
    if (msg.body === 'join' && connection === 0) socket.send(welcome('shard-a'));
    else if (msg.body === 'join' && connection === 1) socket.send(redirectToB(url));
    else if (msg.body === 'resume' && resume === 'refuse' && connection === 2) socket.close(1011, 'no');
    // Never heard from (a close, not a kick), shard-b is tried with the resume token again.
    else if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, rejoin: { joinToken: async () => 't2' } });
  const c = client;
  const events = recordEvents(c);
  await c.connect();
  sockets[0]?.send(entity9At(10, 40));
  await until('the first snapshot', () => events.length === 1);
  sockets[0]?.terminate();
  const on = resume === 'welcome' ? 2 : 3;
  await until('the client on shard-b', () => c.shardName === 'shard-b' && sockets.length === on + 1, 5000);
  if (resume === 'welcome') {
    const seen = applied(c);
    sockets[2]?.send(entity9At(2, 50));
    await seen;
  }
  const seen = applied(c);
  sockets[on]?.send(entity9At(3, 50));
  await seen;
  expect(events).toEqual(expected);
  expect(sockets.length).toBe(on + 1);
});

test('renderDelayMs is checked when the client is made: 0 (no buffer) or above 0 up to 500 ms, else a RangeError naming it', () => {
  const make = (renderDelayMs: unknown) => () =>
    new RealtimeClient({ url: 'ws://127.0.0.1:1', joinToken: 't', createSocket, renderDelayMs: renderDelayMs as number });
  for (const ok of [undefined, 0, 0.5, 100, 500]) expect(make(ok), String(ok)).not.toThrow();
  for (const bad of [Number.NaN, -1, 500.5, Number.POSITIVE_INFINITY, '100']) {
    expect(make(bad), String(bad)).toThrow(
      new RangeError(
        `renderDelayMs must be a positive number of milliseconds up to 500, or 0 (no render-delay buffer), got ${String(bad)}`,
      ),
    );
  }
});

test('timeouts and rejoin options are checked when the client is made: Infinity means none where that is documented, NaN and 2^31 ms or more are RangeErrors naming the option', async () => {
  const make = (o: object) => () => new RealtimeClient({ url: 'ws://127.0.0.1:1', joinToken: 't', createSocket, ...o });
  const joinToken = async () => 't';
  expect(make({ connectTimeoutMs: Number.POSITIVE_INFINITY, silenceTimeoutMs: Number.POSITIVE_INFINITY })).not.toThrow();
  expect(make({ rejoin: { joinToken, giveUpAfterMs: Number.POSITIVE_INFINITY, maxDelayMs: 2 ** 31 - 1 } })).not.toThrow();
  const bad: [object, string][] = [
    [
      { connectTimeoutMs: Number.NaN },
      'connectTimeoutMs must be a positive number of milliseconds below 2^31, or Infinity (no timeout), got NaN',
    ],
    [
      { connectTimeoutMs: 2 ** 31 },
      'connectTimeoutMs must be a positive number of milliseconds below 2^31, or Infinity (no timeout), got 2147483648',
    ],
    [{ connectTimeoutMs: 0 }, 'connectTimeoutMs must be a positive number of milliseconds below 2^31, or Infinity (no timeout), got 0'],
    [
      { silenceTimeoutMs: Number.NaN },
      'silenceTimeoutMs must be a positive number of milliseconds below 2^31, or 0 (never) or Infinity (never), got NaN',
    ],
    [
      { rejoin: { joinToken, giveUpAfterMs: Number.NaN } },
      'rejoin.giveUpAfterMs must be a positive number of milliseconds below 2^31, or Infinity (never give up), got NaN',
    ],
    [
      { rejoin: { joinToken, giveUpAfterMs: -1 } },
      'rejoin.giveUpAfterMs must be a positive number of milliseconds below 2^31, or Infinity (never give up), got -1',
    ],
    [{ rejoin: { joinToken, maxDelayMs: Number.NaN } }, 'rejoin.maxDelayMs must be a positive number of milliseconds below 2^31, got NaN'],
    [
      { rejoin: { joinToken, maxDelayMs: Number.POSITIVE_INFINITY } },
      'rejoin.maxDelayMs must be a positive number of milliseconds below 2^31, got Infinity',
    ],
    [{ rejoin: { joinToken, maxDelayMs: 0 } }, 'rejoin.maxDelayMs must be a positive number of milliseconds below 2^31, got 0'],
  ];
  for (const [o, message] of bad) expect(make(o), JSON.stringify(o)).toThrow(new RangeError(message));
  expect(make({ rejoin: {} })).toThrow(new TypeError('rejoin.joinToken must be a function that returns a join token'));
});

test('connectTimeoutMs and an rpc timeoutMs of Infinity wait, rather than failing at once', async () => {
  const { url } = await scriptedShard((socket, msg) => {
    // A slow shard: the Welcome after 100 ms; RPCs never answered.
    if (msg.body === 'join') setTimeout(() => socket.send(welcome('shard-a')), 100);
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, connectTimeoutMs: Number.POSITIVE_INFINITY });
  const c = client;
  expect((await within(c.connect(), 3000)) === 'timed out').toBe(false);
  const settled = c.rpc('slow', new Uint8Array(0), Number.POSITIVE_INFINITY).then(
    () => 'resolved',
    (e: Error & { code: string }) => e.code,
  );
  expect(await within(settled, 300)).toBe('timed out');
  expect(() => c.rpc('x', new Uint8Array(0), 2 ** 31)).toThrow(
    new RangeError('timeoutMs must be a positive number of milliseconds below 2^31, or Infinity (no timeout), got 2147483648'),
  );
  expect(() => c.rpc('x', new Uint8Array(0), Number.NaN)).toThrow(RangeError);
  c.close();
  expect(await settled).toBe('CLOSED');
});

test('rejoin.giveUpAfterMs NaN is refused up front, not a loop of join token calls', async () => {
  let calls = 0;
  const make = () =>
    new RealtimeClient({
      url: 'ws://127.0.0.1:1',
      joinToken: 't',
      createSocket,
      rejoin: {
        joinToken: async () => {
          calls++;
          return 't';
        },
        giveUpAfterMs: Number(undefined),
      },
    });
  expect(make).toThrow(/^rejoin\.giveUpAfterMs must be/);
  expect(calls).toBe(0);
});

test('connect() failures say what failed: code, closeCode, and the socket’s own error as cause', async () => {
  // Nothing listening.
  const probe = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => probe.once('listening', r));
  const closedPort = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r));
  const refused = new RealtimeClient({ url: `ws://127.0.0.1:${closedPort}`, joinToken: 't', createSocket });
  const events = recordEvents(refused);
  const e1 = (await refused.connect().catch((e) => e)) as Error & { code: string; closeCode: number; cause: Error };
  expect(e1.code).toBe('CONNECT_FAILED');
  expect(e1.closeCode).toBe(1006);
  expect(e1.cause?.message).toMatch(/ECONNREFUSED/);
  expect(e1.message).toMatch(new RegExp(`^cannot connect to ws://127.0.0.1:${closedPort}: .*ECONNREFUSED`));
  expect(events).toEqual([expect.stringMatching(/^close 1006 .*ECONNREFUSED/)]);

  // An HTTP answer instead of the upgrade (a draining shard answers 503).
  httpServer = createServer((_req, res) => res.writeHead(503).end());
  httpServer.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n'));
  await new Promise<void>((r) => httpServer?.listen(0, '127.0.0.1', r));
  const draining = new RealtimeClient({
    url: `ws://127.0.0.1:${(httpServer.address() as AddressInfo).port}`,
    joinToken: 't',
    createSocket,
  });
  const e2 = (await draining.connect().catch((e) => e)) as Error & { code: string; closeCode: number; cause: Error };
  expect([e2.code, e2.closeCode, e2.cause?.message]).toEqual(['CONNECT_FAILED', 1006, 'Unexpected server response: 503']);

  // A kick: its reason is the code, the socket's close code comes with it.
  const { url } = await scriptedShard((socket, msg) => {
    if (msg.body !== 'join') return;
    socket.send(ServerMessage.encode({ kick: { reason: aethex.v1.ReasonCode.REASON_CODE_SHARD_FULL, message: 'shard is full' } }).finish());
    socket.close(1013, 'shard full');
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket });
  const e3 = (await client.connect().catch((e) => e)) as Error & { code: string; closeCode: number };
  expect([e3.message, e3.code, e3.closeCode]).toEqual(['kicked: SHARD_FULL: shard is full', 'SHARD_FULL', 1013]);

  // Closed after opening without a word; and no Welcome in time.
  const quiet = await scriptedShard((socket, msg) => {
    if (msg.body === 'join' && (socket as unknown as { n?: number }).n === undefined) socket.close(1011, 'oops');
  });
  const shut = new RealtimeClient({ url: quiet.url, joinToken: 't', createSocket });
  const e4 = (await shut.connect().catch((e) => e)) as Error & { code: string; closeCode: number };
  expect([e4.code, e4.closeCode, e4.message]).toEqual(['CLOSED', 1011, 'closed before joining: 1011 oops']);
});

test('a redirect read after close() is not followed: the session ends where it was, nothing resumes on the new shard', async () => {
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, silenceTimeoutMs: 0 });
  const events = recordEvents(client);
  await client.connect();
  // The shard commits a handoff and redirects; the player quits before the client reads the redirect.
  sockets[0]?.send(redirectToB(url));
  client.close();
  // The redirect came before the shard's answer to the close: by the close, it was read.
  await until('the session to close', () => events.some((e) => e.startsWith('close')), 3000);
  expect(events).toEqual(['close 1000 client closed']);
  expect(client.shardName).toBe('shard-a');
  expect(connections[1]).toBeUndefined();
});

test('clientVersion goes in every Join (default aethex-sdk); one over 64 bytes is refused before anything is sent', async () => {
  const shard = await scriptedShard((socket, msg) => {
    if (msg.join) socket.send(welcome('s'));
  });
  const c = new RealtimeClient({
    url: shard.url,
    joinToken: 't',
    createSocket: (u) => new WebSocket(u) as never,
    clientVersion: 'my-game/1.4.2 (web)',
  });
  await c.connect();
  const plain = new RealtimeClient({ url: shard.url, joinToken: 't', createSocket: (u) => new WebSocket(u) as never });
  await plain.connect();
  expect(shard.connections.map((m) => m[0]?.join?.clientVersion)).toEqual(['my-game/1.4.2 (web)', 'aethex-sdk']);
  c.close();
  plain.close();
  // 64 bytes is the limit in UTF-8 bytes, not characters: 22 three-byte characters are 66.
  const options = { url: shard.url, joinToken: 't' };
  expect(() => new RealtimeClient({ ...options, clientVersion: 'x'.repeat(64) })).not.toThrow();
  expect(() => new RealtimeClient({ ...options, clientVersion: '€'.repeat(22) })).toThrow(
    'clientVersion must be a string of at most 64 bytes, got 66 bytes',
  );
  expect(() => new RealtimeClient({ ...options, clientVersion: 7 as never })).toThrow(
    'clientVersion must be a string of at most 64 bytes, got number',
  );
  expect(shard.connections).toHaveLength(2);
});

test('after close(), what the shard sent before it read the close emits nothing: no handoff for a resume already welcomed, no snapshot, no kick', async () => {
  // A handoff: the new shard's Welcome has come, its first snapshot (the `handoff` event) not yet.
  const { c, events, sockets } = await resumedOnB();
  // The player quits; shard-b sends its first snapshot and a kick before it reads the close.
  c.close();
  sockets[1]?.send(entity9At(3, 41));
  sockets[1]?.send(ServerMessage.encode({ kick: { reason: aethex.v1.ReasonCode.REASON_CODE_TOO_SLOW, message: 'slow' } }).finish());
  await until('the session to close', () => events.some((e) => e.startsWith('close')), 3000);
  expect(events).toEqual(['snapshot 10', 'close 1000 client closed']);
});

/** A full snapshot of tick `tick` with this client's entity (7) at (x, 0), the shard having applied inputs up to `lastInputSeq`. */
const ownEntityAt = (tick: number, lastInputSeq: number, x: number) =>
  encodeSnapshotMessage({
    tick,
    baseTick: 0,
    lastInputSeq,
    layout: SNAPSHOT_LAYOUT,
    entities: body((w) => w.full(7, x, 0, 1, 0)),
    removed: new Uint32Array(0),
    removedCount: 0,
  });

test('after close(), a snapshot, a correction and a kick the shard sent before it read the close change nothing: view, tick, prediction and acknowledgements stay', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  const c = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  client = c;
  const events = recordEvents(c);
  c.on('correction', (p, seq) => events.push(`correction ${p.x},${p.y} at ${seq}`));
  c.on('enter', (id) => events.push(`enter ${id}`));
  await c.connect();
  const shard = sockets[0] as WebSocket;
  const seen = applied(c);
  shard.send(ownEntityAt(1, 0, 4));
  await seen;
  c.move(1, 0);
  const state = () => ({
    tick: c.lastTick,
    latest: c.store.latestTick,
    entities: [...c.store.current.keys()],
    predicted: { ...c.predicted },
    acked: c.lastAckedSeq,
  });
  const before = state();
  expect(before).toEqual({ tick: 1, latest: 1, entities: [7], predicted: { x: 5, y: 0 }, acked: 0 });
  // The player quits; the shard sends a snapshot (acknowledging input 1, with another entity), a
  // correction and a kick before it reads the close.
  c.close();
  shard.send(
    encodeSnapshotMessage({
      tick: 2,
      baseTick: 0,
      lastInputSeq: 1,
      layout: SNAPSHOT_LAYOUT,
      entities: body((w) => {
        w.full(7, 30, 0, 1, 0);
        w.full(9, 40, 0, 1, 0);
      }),
      removed: new Uint32Array(0),
      removedCount: 0,
    }),
  );
  shard.send(ServerMessage.encode({ correction: { tick: 2, lastInputSeq: 1, position: { x: -50, y: 7 } } }).finish());
  shard.send(ServerMessage.encode({ kick: { reason: aethex.v1.ReasonCode.REASON_CODE_TOO_SLOW, message: 'slow' } }).finish());
  await until('the session to close', () => events.some((e) => e.startsWith('close')), 3000);
  expect(state()).toEqual(before);
  expect(events).toEqual(['enter 7', 'snapshot 1', 'close 1000 client closed']);
});

test('an acknowledgement of inputs the client never sent counts only up to the newest it sent: the shard’s later acknowledgements still count', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  const { c, moves } = clockedClient(url);
  await c.connect();
  const shard = sockets[0] as WebSocket;
  moves(3);
  // A broken shard's Correction says it applied input 1,000,000.
  shard.send(ServerMessage.encode({ correction: { tick: 1, lastInputSeq: 1_000_000, position: { x: 3, y: 0 } } }).finish());
  await until('the Correction to be read', () => c.lastAckedSeq > 0, 3000);
  expect([c.lastAckedSeq, c.unacknowledged]).toEqual([3, 0]);

  moves(3);
  let seen = applied(c);
  shard.send(ownEntityAt(2, 5, 5));
  await seen;
  expect([c.lastAckedSeq, c.unacknowledged]).toEqual([5, 1]);
  // And a snapshot saying so.
  seen = applied(c);
  shard.send(ownEntityAt(3, 2_000_000, 6));
  await seen;
  expect([c.lastAckedSeq, c.unacknowledged]).toEqual([6, 0]);

  moves(2);
  seen = applied(c);
  shard.send(ownEntityAt(4, 8, 8));
  await seen;
  expect([c.lastAckedSeq, c.unacknowledged, c.predicted.x]).toEqual([8, 0, 8]);
});

test('a shard that never acknowledges: the client keeps the newest 4,096 inputs and replays only those', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  const { c, moves } = clockedClient(url);
  await c.connect();
  moves(5000);
  expect(c.unacknowledged).toBe(4096);
  // The shard places the entity where it started: the prediction replays the 4,096 kept on it.
  let seen = applied(c);
  sockets[0]?.send(ownEntityAt(1, 0, 0));
  await seen;
  expect(c.predicted).toEqual({ x: 4096, y: 0 });
  // They are acknowledged as any others.
  seen = applied(c);
  sockets[0]?.send(ownEntityAt(2, 5000, 5000));
  await seen;
  expect([c.unacknowledged, c.lastAckedSeq, c.predicted.x]).toEqual([0, 5000, 5000]);
});

test.each([
  ['tickIntervalUs 1', { tickIntervalUs: 1 }, 'tickIntervalUs 1, outside 5000–1000000 (a tick of 5–1000 ms)'],
  ['tickIntervalUs 2000000', { tickIntervalUs: 2_000_000 }, 'tickIntervalUs 2000000, outside 5000–1000000 (a tick of 5–1000 ms)'],
  ['tickIntervalUs 4999', { tickIntervalUs: 4999 }, 'tickIntervalUs 4999, outside 5000–1000000 (a tick of 5–1000 ms)'],
  [
    'no tickIntervalUs and tickRateHz 1000000',
    { tickRateHz: 1_000_000 },
    'tickRateHz 1000000 and no tickIntervalUs, outside 1–200 (a tick of 5–1000 ms)',
  ],
  ['no tick at all', { tickRateHz: 0 }, 'tickRateHz 0 and no tickIntervalUs, outside 1–200 (a tick of 5–1000 ms)'],
  ['positionScale NaN', { positionScale: Number.NaN }, 'positionScale NaN, not a finite number above 0'],
  ['positionScale 0', { positionScale: 0 }, 'positionScale 0, not a finite number above 0'],
  ['maxSpeed -5', { maxSpeed: -5 }, 'maxSpeed -5, not a finite number of 0 or more'],
  ['maxSpeed Infinity', { maxSpeed: Number.POSITIVE_INFINITY }, 'maxSpeed Infinity, not a finite number of 0 or more'],
  [
    'inverted worldBounds',
    { worldBounds: { minX: 10, minY: -10, maxX: -10, maxY: 10 } },
    'worldBounds minX 10 minY -10 maxX -10 maxY 10, not finite numbers with minX < maxX and minY < maxY',
  ],
  [
    'worldBounds minX equal to maxX',
    { worldBounds: { minX: 10, minY: -10, maxX: 10, maxY: 10 } },
    'worldBounds minX 10 minY -10 maxX 10 maxY 10, not finite numbers with minX < maxX and minY < maxY',
  ],
  [
    'worldBounds NaN',
    { worldBounds: { minX: -10, minY: Number.NaN, maxX: 10, maxY: 10 } },
    'worldBounds minX -10 minY NaN maxX 10 maxY 10, not finite numbers with minX < maxX and minY < maxY',
  ],
] as const)(
  'a Welcome with %s is from a shard this SDK cannot read: connect() rejects CANNOT_READ naming it, 4901, not rejoined',
  async (_what, more, problem) => {
    let joins = 0;
    let tokens = 0;
    const { url, sockets } = await scriptedShard((socket, msg) => {
      if (msg.body !== 'join') return;
      joins++;
      socket.send(welcome('shard-a', 0, more));
    });
    client = new RealtimeClient({
      url,
      joinToken: 't',
      createSocket,
      renderDelayMs: 100,
      rejoin: {
        joinToken: async () => {
          tokens++;
          return 't2';
        },
        maxDelayMs: 50,
      },
    });
    const events = recordEvents(client);
    const shardHeard = new Promise<number>((resolve) => server?.once('connection', (s) => s.on('close', resolve)));
    const outcome = await client.connect().then(
      () => 'joined',
      (e: Error & { code: string; closeCode: number }) => [e.code, e.closeCode, e.message],
    );
    const reason = `the shard's Welcome has ${problem}: a shard this SDK cannot read`;
    expect(outcome).toEqual(['CANNOT_READ', 4901, `closed before joining: 4901 ${reason}`]);
    expect(events).toEqual([`close 4901 ${reason}`]);
    expect(client.welcome).toBeUndefined();
    expect(await within(shardHeard, 3000)).toBe(4901);
    // A rejoin's first attempt would ask for its token 100 ms after the drop.
    await sleep(300);
    expect([joins, tokens, sockets.length]).toEqual([1, 0, 1]);
  },
);

test('a Welcome this SDK cannot read ends the session also when it answers a handoff’s resume or a rejoin: 4901, nothing resumed or retried', async () => {
  // Resumes, and joins with the rejoin's token, are answered with a Welcome whose positionScale is NaN.
  const broken = { positionScale: Number.NaN };
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a', 0, msg.join?.joinToken === 'again' ? broken : {}));
    if (msg.body === 'resume') socket.send(welcome('shard-b', 0, broken));
  });
  const reason = "the shard's Welcome has positionScale NaN, not a finite number above 0: a shard this SDK cannot read";
  let tokens = 0;
  const options = {
    url,
    joinToken: 't',
    createSocket,
    silenceTimeoutMs: 0,
    rejoin: {
      joinToken: async () => {
        tokens++;
        return 'again';
      },
      maxDelayMs: 50,
    },
  };
  client = new RealtimeClient(options);
  const c = client;
  let events = recordEvents(c);
  await c.connect();
  sockets[0]?.send(redirectToB(url));
  await until('the resume’s Welcome to be read', () => connections[1]?.length === 1 && (c.ended || c.shardName === 'shard-b'), 3000);
  expect(events).toEqual([`handoffFailed ${reason}`, `close 4901 ${reason}`]);
  expect(c.shardName).toBe('shard-a');

  const d = new RealtimeClient(options);
  client = d;
  events = recordEvents(d);
  await d.connect();
  sockets[2]?.terminate();
  await until(
    'the rejoin’s Welcome to be read',
    () => connections[3]?.length === 1 && (d.ended || events.includes('rejoined after 1')),
    3000,
  );
  expect(events).toEqual(['disconnected 1006', `close 4901 ${reason}`]);
  await sleep(300);
  expect([tokens, sockets.length]).toEqual([1, 4]);
});

test('an RPC made while a rejoin answered with a redirect resumes on the new shard is refused at once (DISCONNECTED), not sent', async () => {
  // Connection 0: shard-a. 1: the rejoin, answered with a redirect. 2: the resume on shard-b,
  // welcomed when the test says.
  let welcomeResume = () => {};
  const { url, sockets, connections } = await scriptedShard((socket, msg, connection) => {
    if (msg.body === 'join' && connection === 0) socket.send(welcome('shard-a'));
    else if (msg.body === 'join') socket.send(redirectToB(url));
    else if (msg.body === 'resume') welcomeResume = () => socket.send(welcome('shard-b'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0, rejoin: { joinToken: async () => 't2' } });
  const c = client;
  const events = recordEvents(c);
  await c.connect();
  sockets[0]?.terminate();
  await until('the resume to reach shard-b', () => connections[2]?.[0]?.body === 'resume', 5000);
  const call = c.rpc('buy', new Uint8Array([1]), 60_000).then(
    () => 'resolved',
    (e: Error & { code: string }) => `${e.code}: ${e.message}`,
  );
  expect(await within(call, 1000)).toBe('DISCONNECTED: rpc buy: the connection dropped and the client is rejoining');
  const rejoined = new Promise((resolve) => c.on('rejoined', resolve));
  welcomeResume();
  sockets[2]?.send(entity9At(2, 50));
  await rejoined;
  expect(events).toEqual(['disconnected 1006', 'snapshot 2', 'handoff to shard-b', 'rejoined after 1']);
  expect(connections.flat().filter((m) => m.rpc)).toEqual([]);
});

test('a rejoin answered with a redirect that has nothing to resume (an empty token) joins the shard named, with a token for it', async () => {
  // Connection 0: shard-a. 1: the rejoin, answered with a redirect to shard-b whose entity waits
  // there for a join. 2: the join on shard-b.
  const { url, sockets, connections } = await scriptedShard((socket, msg, connection) => {
    if (msg.body === 'join' && connection === 0) socket.send(welcome('shard-a'));
    else if (msg.body === 'join' && connection === 1)
      socket.send(
        ServerMessage.encode({ handoffRedirect: { address: url, resumeToken: '', lastInputSeq: 0, shardName: 'shard-b' } }).finish(),
      );
    else if (msg.body === 'join') socket.send(welcome('shard-b'));
  });
  const asked: string[] = [];
  client = new RealtimeClient({
    url,
    joinToken: 't',
    createSocket,
    silenceTimeoutMs: 0,
    rejoin: {
      joinToken: async (shard) => {
        asked.push(shard.name);
        return `token-${shard.name}`;
      },
    },
  });
  const c = client;
  const kicks: string[] = [];
  c.on('kick', (reason) => kicks.push(reason));
  await c.connect();
  const rejoined = new Promise((resolve) => c.on('rejoined', resolve));
  sockets[0]?.terminate();
  await within(rejoined, 5000);
  expect(connections.map((msgs) => msgs[0]?.body)).toEqual(['join', 'join', 'join']);
  expect(connections[2]?.[0]?.join?.joinToken).toBe('token-shard-b');
  expect(asked).toEqual(['shard-a', 'shard-b']);
  expect(c.shardName).toBe('shard-b');
  expect(kicks).toEqual([]);
});

test('close() from an enter listener at a new shard’s first snapshot: only close follows, not that snapshot’s snapshot and handoff', async () => {
  const { c, events, sockets } = await resumedOnB();
  c.on('enter', (id) => {
    events.push(`enter ${id}`);
    c.close();
  });
  sockets[1]?.send(
    shardSnapshot(
      3,
      0,
      body((w) => {
        w.full(9, 41, 0, 1, 0);
        w.full(8, 0, 0, 1, 0);
      }),
    ),
  );
  await until('the session to close', () => c.ended, 3000);
  expect(events).toEqual(['snapshot 10', 'enter 8', 'close 1000 client closed']);
});

test('close() from a handoff listener as the client rejoins a new shard that dropped before its first snapshot: only close follows, not rejoined', async () => {
  const { c: d, events, sockets } = await resumedOnB({ rejoin: { joinToken: async () => 't2' } });
  d.on('handoff', () => d.close());
  sockets[1]?.terminate();
  await until('the session to close', () => d.ended, 5000);
  expect(events).toEqual(['snapshot 10', 'disconnected 1006', 'handoff to shard-b', 'close 1000 client closed']);
});

test('a connect() that timed out takes no Welcome that was on its way: the session ends there (close 1006), no rejoin, no second socket', async () => {
  const { url, sockets, connections } = await scriptedShard(() => {
    // Joins are answered by the test.
  });
  const kept = keptSockets();
  // The client's timers are the test's: its connect timeout fires just after the Welcome is sent.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  let tokens = 0;
  client = new RealtimeClient({
    url,
    joinToken: 't',
    createSocket: kept.createSocket,
    silenceTimeoutMs: 0,
    connectTimeoutMs: 100,
    rejoin: {
      joinToken: async () => {
        tokens++;
        return 't2';
      },
    },
  });
  const c = client;
  const events = recordEvents(c);
  const result = c.connect().then(
    () => 'resolved',
    (e: Error & { code: string }) => `${e.code}: ${e.message}`,
  );
  await until('the Join to reach the shard', () => connections[0]?.[0]?.body === 'join', 3000);
  // Sent before the timeout, read after it.
  sockets[0]?.send(welcome('shard-a'));
  vi.advanceTimersByTime(100);
  expect(await result).toBe(`TIMEOUT: no Welcome from ${url} within 100 ms`);
  const shardHeard = new Promise<number>((resolve) =>
    sockets[0]?.readyState === WebSocket.CLOSED ? resolve(-1) : sockets[0]?.on('close', resolve),
  );
  await until('the socket to close at the client', () => kept.made[0]?.readyState === WebSocket.CLOSED, 3000);
  // A rejoin's first attempt would come 100 ms after the drop.
  await vi.advanceTimersByTimeAsync(1000);
  await sleep(100);
  expect(events).toEqual([`close 1006 no Welcome from ${url} within 100 ms`]);
  expect([c.ended, c.welcome, tokens, sockets.length]).toEqual([true, undefined, 0, 1]);
  // The shard hears the player leave.
  expect(await within(shardHeard, 3000)).toBe(1000);
});

test('close() after a handoff also closes the socket the old shard kept open for an unanswered RPC, and leaves no timer running', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b'));
  });
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0 });
  const c = client;
  await c.connect();
  // From here the client's timers are the test's: the old socket's wait for the answer (2 s) never
  // ends by itself, as if the process wanted to exit during it.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const call = c.rpc('slow', new Uint8Array(0), 60_000).catch((e: { code: string }) => e.code);
  sockets[0]?.send(redirectToB(url));
  await until('the client to resume on shard-b', () => c.shardName === 'shard-b', 3000);
  const oldClosed = new Promise<number>((resolve) => sockets[0]?.on('close', resolve));
  c.close();
  expect(await within(call, 3000)).toBe('CLOSED');
  expect(await within(oldClosed, 3000)).toBe(1000);
  await until(
    'every socket to close at both ends',
    () => [...kept.made, ...sockets].every((ws) => ws.readyState === WebSocket.CLOSED),
    3000,
  );
  expect(vi.getTimerCount()).toBe(0);
});

test('with rejoin, a kick for REPLACED or AUTH_FAILED ends the session: close, no join token asked, no new socket; a kick for TOO_SLOW is rejoined', async () => {
  let reason = aethex.v1.ReasonCode.REASON_CODE_REPLACED;
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body !== 'join' || msg.join?.joinToken !== 't') return;
    socket.send(welcome('shard-a'));
    socket.send(ServerMessage.encode({ kick: { reason, message: 'bye' } }).finish());
    socket.close(1008, 'kicked');
  });
  // The client's timers are the test's: a rejoin's first attempt would come 100 ms after the drop.
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  const cases = [
    [aethex.v1.ReasonCode.REASON_CODE_REPLACED, 'REPLACED', true],
    [aethex.v1.ReasonCode.REASON_CODE_AUTH_FAILED, 'AUTH_FAILED', true],
    [aethex.v1.ReasonCode.REASON_CODE_TOO_SLOW, 'TOO_SLOW', false],
  ] as const;
  for (const [code, name, final] of cases) {
    reason = code;
    const before = sockets.length;
    let tokens = 0;
    const c = new RealtimeClient({
      url,
      joinToken: 't',
      createSocket,
      silenceTimeoutMs: 0,
      rejoin: {
        joinToken: async () => {
          tokens++;
          return 't2';
        },
        maxDelayMs: 50,
      },
    });
    client = c;
    const events = recordEvents(c);
    await c.connect();
    await until(`the kick's close to reach the client (${name})`, () => events.length >= 2, 3000);
    await vi.advanceTimersByTimeAsync(1000);
    await sleep(100);
    if (final) {
      expect(events, name).toEqual([`kick ${name}`, 'close 1008 kicked']);
      expect([c.ended, tokens, sockets.length - before], name).toEqual([true, 0, 1]);
    } else {
      expect(events.slice(0, 2), name).toEqual([`kick ${name}`, 'disconnected 1008']);
      expect([c.ended, tokens, sockets.length - before], name).toEqual([false, 1, 2]);
    }
    c.close();
  }
});

test('a Correction about inputs a snapshot already acknowledged is out of date: no correction emitted, the prediction stays', async () => {
  const { url, sockets } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  const { c, moves } = clockedClient(url);
  const corrections: string[] = [];
  c.on('correction', (p, seq) => corrections.push(`${p.x},${p.y} at ${seq}`));
  await c.connect();
  const shard = sockets[0] as WebSocket;
  moves(5);
  const seen = applied(c);
  shard.send(ownEntityAt(1, 4, 4));
  await seen;
  expect([c.lastAckedSeq, c.predicted]).toEqual([4, { x: 5, y: 0 }]);
  // Sent before that snapshot by the shard's clock, read after it: about input 2, since overtaken.
  let after = 0;
  c.on('message', () => {
    after++;
  });
  const endOfBatch = ServerMessage.encode({ gameMessage: { topic: 'after', payload: new Uint8Array(0), tick: 0 } }).finish();
  shard.send(ServerMessage.encode({ correction: { tick: 1, lastInputSeq: 2, position: { x: -50, y: 7 } } }).finish());
  shard.send(endOfBatch);
  await until('the message after the Correction', () => after === 1, 3000);
  expect(corrections).toEqual([]);
  expect([c.lastAckedSeq, c.predicted]).toEqual([4, { x: 5, y: 0 }]);
  // One about the newest acknowledged input is taken.
  shard.send(ServerMessage.encode({ correction: { tick: 2, lastInputSeq: 4, position: { x: -50, y: 7 } } }).finish());
  shard.send(endOfBatch);
  await until('the message after the second Correction', () => after === 2, 3000);
  expect(corrections).toHaveLength(1);
  expect(c.predicted).toEqual({ x: -49, y: 7 });
});

test('an RPC the shard never answers rejects TIMEOUT after its timeoutMs, naming the method and the wait; the session carries on', async () => {
  const { url } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket, silenceTimeoutMs: 0 });
  const c = client;
  await c.connect();
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
  let outcome: unknown;
  const call = c.rpc('never', new Uint8Array(0), 50).then(
    () => {
      outcome = 'resolved';
    },
    (e: Error & { code: string }) => {
      outcome = [e.code, e.message];
    },
  );
  await vi.advanceTimersByTimeAsync(49);
  expect(outcome).toBeUndefined();
  await vi.advanceTimersByTimeAsync(1);
  await call;
  expect(outcome).toEqual(['TIMEOUT', 'rpc never timed out after 50 ms']);
  expect(c.ended).toBe(false);
});

test('inputs 1–3 made before a Welcome whose lastInputSeq is 1 are renumbered 2–4 and all sent', async () => {
  let sendWelcome: (() => void) | undefined;
  const { url, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') sendWelcome = () => socket.send(welcome('shard-a', 1));
  });
  let clock = 1000;
  const kept = keptSockets();
  client = new RealtimeClient({ url, joinToken: 't', createSocket: kept.createSocket, silenceTimeoutMs: 0, now: () => clock });
  const c = client;
  const connecting = c.connect();
  // A tick (25 ms at 40 Hz, the rate before a Welcome) apart: an input each, numbered 1–3.
  const seqs: number[] = [];
  for (let i = 0; i < 3; i++) {
    clock += 25;
    seqs.push(c.move(1, 0));
  }
  expect(seqs).toEqual([1, 2, 3]);
  await until('the Join to reach the shard', () => sendWelcome !== undefined);
  (sendWelcome as () => void)();
  await connecting;
  await behindProbe(kept.made[0], () => connections[0]);
  const inputs = (connections[0] ?? []).filter((m) => m.body === 'input');
  expect(inputs.map((m) => m.input?.seq)).toEqual([2, 3, 4]);
  expect(c.unacknowledged).toBe(3);
});

/**
 * Connection 0: the join on shard-a, answered with a redirect to shard-b that has nothing to resume
 * (the entity waits there for a join); later joins are welcomed as shard-b's, and a resume is
 * refused as a shard refuses an unknown token.
 */
function emptyTokenRedirectShard() {
  const shard = scriptedShard((socket, msg, connection) => {
    if (msg.body === 'join' && connection === 0)
      void shard.then(({ url }) =>
        socket.send(
          ServerMessage.encode({ handoffRedirect: { address: url, resumeToken: '', lastInputSeq: 0, shardName: 'shard-b' } }).finish(),
        ),
      );
    else if (msg.body === 'join') socket.send(welcome('shard-b'));
    else if (msg.body === 'resume')
      socket.send(
        ServerMessage.encode({
          kick: { reason: aethex.v1.ReasonCode.REASON_CODE_AUTH_FAILED, message: 'unknown or expired resume token' },
        }).finish(),
        () => socket.close(1000, 'refused'),
      );
  });
  return shard;
}

test('connect() answered with a redirect that has nothing to resume (an empty token) joins that shard with a token for it', async () => {
  const { url, connections } = await emptyTokenRedirectShard();
  client = new RealtimeClient({
    url,
    joinToken: 't',
    createSocket,
    silenceTimeoutMs: 0,
    rejoin: { joinToken: async (shard) => `token-${shard.name}` },
  });
  const c = client;
  const result = await within(
    c.connect().then(
      () => 'connected',
      (err: Error) => `rejected: ${err.message}`,
    ),
    3000,
  );
  await sleep(100);
  expect({ result, sent: connections.map((msgs) => msgs[0]) }).toEqual({
    result: 'connected',
    sent: [expect.objectContaining({ body: 'join' }), expect.objectContaining({ body: 'join' })],
  });
}, 10_000);

test('close() while connect() fetches a join token for an empty-token redirect ends the session; no join follows', async () => {
  const { url, connections } = await emptyTokenRedirectShard();
  let giveToken: (t: string) => void = () => {};
  let asked = false;
  const closes: string[] = [];
  client = new RealtimeClient({
    url,
    joinToken: 't',
    createSocket,
    silenceTimeoutMs: 0,
    rejoin: {
      joinToken: () => {
        asked = true;
        return new Promise<string>((r) => (giveToken = r));
      },
    },
  });
  const c = client;
  c.on('close', (code, reason) => closes.push(`${code} ${reason}`));
  const connecting = c.connect().then(
    () => 'connected',
    (err: Error & { code?: string }) => `rejected ${err.code}`,
  );
  await until('the join token to be asked for', () => asked, 3000);
  c.close();
  giveToken('token-b');
  const result = await within(connecting, 1000);
  await sleep(200);
  expect({ result, ended: c.ended, closes, joinsSent: connections.length }).toEqual({
    result: 'rejected CLOSED',
    ended: true,
    closes: ['1000 client closed'],
    joinsSent: 1,
  });
}, 10_000);
