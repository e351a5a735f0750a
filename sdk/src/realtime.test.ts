import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { aethex, encodeSnapshotMessage, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import $protobuf from 'protobufjs/minimal.js';
import { afterEach, expect, test } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { RealtimeClient } from './realtime.js';

const { ClientMessage, ServerMessage, Snapshot } = aethex.v1;

let server: WebSocketServer | undefined;
/** The HTTP server under `server` when a test answers upgrades itself, and the upgrades it holds. */
let httpServer: Server | undefined;
const heldUpgrades: Duplex[] = [];
let client: RealtimeClient | undefined;

afterEach(async () => {
  client?.close();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  for (const socket of heldUpgrades.splice(0)) socket.destroy();
  await new Promise((r) => httpServer?.close(r) ?? r(undefined));
  server = httpServer = client = undefined;
});

const createSocket = (u: string) => new WebSocket(u) as never;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `promise`'s value, or 'timed out' after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timed out'> {
  return Promise.race([promise, sleep(ms).then(() => 'timed out' as const)]);
}

/** A Welcome as a shard sends it (entity 7, 50 Hz, world units unscaled). */
function welcome(shardName: string, lastInputSeq = 0): Uint8Array {
  return ServerMessage.encode({
    welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 50, positionScale: 1, maxSpeed: 5, shardName, lastInputSeq },
  }).finish();
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
  const closeCodes: number[] = [];
  server.on('connection', (socket) => {
    socket.on('close', (code) => closeCodes.push(code));
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      if (msg.body !== 'join') return;
      joins.push(msg.join?.joinToken as string);
      socket.send(ServerMessage.encode({ welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1 } }).finish());
      // The first connection ticks for 600 ms (longer than the timeout: a live shard is not
      // dropped), then says nothing more and never closes: a half-open connection.
      let tick = 0;
      const ticking = setInterval(() => {
        tick++;
        if (socket.readyState !== WebSocket.OPEN || (joins.length === 1 && tick > 24)) clearInterval(ticking);
        else socket.send(shardSnapshot(tick, tick - 1, new Uint8Array(0)));
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
  let lastSnapshotAt = 0;
  client.on('snapshot', () => {
    lastSnapshotAt = performance.now();
  });
  const disconnected = new Promise<{ code: number; reason: string; quietMs: number }>((resolve) =>
    client?.on('disconnected', (code, reason) => resolve({ code, reason, quietMs: performance.now() - lastSnapshotAt })),
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
  // The shard heard the client give up on the first connection.
  await new Promise((r) => setTimeout(r, 50));
  expect(closeCodes).toEqual([4000]);
  expect(events).toEqual([]);

  // Without rejoin: the session ends, once.
  client.close();
  joins.length = 0;
  const solo = new RealtimeClient({ url, joinToken: 't3', createSocket, silenceTimeoutMs: 300 });
  client = solo;
  const closes: [number, string][] = [];
  solo.on('close', (code, reason) => closes.push([code, reason]));
  await solo.connect();
  await new Promise((r) => setTimeout(r, 1500));
  expect(closes).toHaveLength(1);
  expect(closes[0]?.[0]).toBe(4000);

  expect(() => new RealtimeClient({ url, joinToken: 't', silenceTimeoutMs: -1 })).toThrow(/silenceTimeoutMs must be 0 \(never\)/);
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
  let tokenCalls = 0;
  client = new RealtimeClient({
    url,
    joinToken: 't1',
    createSocket,
    silenceTimeoutMs: 0,
    connectTimeoutMs: 150,
    rejoin: {
      // The control plane does not answer the first call; later ones it does.
      joinToken: () => (++tokenCalls === 1 ? new Promise<string>(() => {}) : Promise.resolve('t2')),
      maxDelayMs: 50,
      giveUpAfterMs: 700,
    },
  });
  const events = recordEvents(client);
  let droppedAt = 0;
  client.on('disconnected', () => {
    droppedAt = performance.now();
  });
  const closed = new Promise<number>((resolve) => client?.on('close', () => resolve(performance.now())));
  await client.connect();
  shardSocket?.terminate();

  const closedAt = await within(closed, 3000);
  expect(closedAt, "'close' within 3 s of the drop").not.toBe('timed out');
  expect(events).toEqual(['disconnected 1006', 'close 1006 could not rejoin shard-a within 700 ms']);
  const downMs = (closedAt as number) - droppedAt;
  expect(downMs).toBeGreaterThan(650);
  expect(downMs).toBeLessThan(1000);
  // The hung token call counted as a failed attempt, and so did each unanswered upgrade.
  expect(tokenCalls).toBeGreaterThanOrEqual(3);
  expect(held.length).toBeGreaterThanOrEqual(2);
  // No attempt's socket outlives the rejoin, and nothing follows 'close'.
  await sleep(300);
  expect(heldClosed).toBe(held.length);
  expect(events).toHaveLength(2);
});

test('a rejoin after a silent drop re-sends only the newest 128 unacknowledged inputs, behind the Join: well within the shard’s default burst of 240', async () => {
  const { url, connections } = await scriptedShard((socket, msg) => {
    // Welcomed, then silent (no snapshot acknowledges an input): the client drops the connection.
    if (msg.body === 'join') socket.send(welcome('shard-a'));
  });
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, silenceTimeoutMs: 300, rejoin: { joinToken: async () => 't2' } });
  const events = recordEvents(client);
  const disconnected = new Promise((resolve) => client?.on('disconnected', resolve));
  const rejoined = new Promise((resolve) => client?.on('rejoined', resolve));
  await client.connect();
  // Five seconds of input at 50 Hz into the silence: sent, never acknowledged.
  for (let i = 0; i < 250; i++) client.move(1, 0);
  await disconnected;
  client.move(1, 0);
  client.move(1, 0);
  expect(client.unacknowledged).toBe(128);
  await rejoined;
  await sleep(100);

  expect(events).toEqual(['disconnected 4000', 'rejoined after 1']);
  expect(connections[0]?.filter((m) => m.body === 'input')).toHaveLength(250);
  const resent = connections[1] ?? [];
  expect(resent.map((m) => m.body)).toEqual(['join', ...Array(128).fill('input')]);
  expect(resent.slice(1).map((m) => m.input?.seq)).toEqual(Array.from({ length: 128 }, (_, i) => 125 + i));
});

test('a handoff re-sends only the newest 128 of the inputs the old shard did not apply', async () => {
  const { url, sockets, connections } = await scriptedShard((socket, msg) => {
    if (msg.body === 'join') socket.send(welcome('shard-a'));
    if (msg.body === 'resume') socket.send(welcome('shard-b', 10));
  });
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, silenceTimeoutMs: 0 });
  const events = recordEvents(client);
  await client.connect();
  for (let i = 0; i < 300; i++) client.move(1, 0);
  await sleep(50);
  // The old shard applied 20 of them; the new one (its Welcome says) 10.
  sockets[0]?.send(
    ServerMessage.encode({ handoffRedirect: { address: url, resumeToken: 'r', lastInputSeq: 20, shardName: 'shard-b' } }).finish(),
  );
  const oldClosed = new Promise<number>((resolve) => sockets[0]?.on('close', resolve));
  expect(await within(oldClosed, 2000)).toBe(1000);
  await sleep(100);

  expect(events).toEqual([]);
  expect(client.shardName).toBe('shard-b');
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
  client = new RealtimeClient({ url, joinToken: 't1', createSocket, silenceTimeoutMs: 0, rejoin: { joinToken: async () => 't2' } });
  let events = recordEvents(client);
  await client.connect();
  sockets[0]?.terminate();
  // The attempt's socket is open and has sent its Join.
  for (let i = 0; i < 100 && connections[1]?.[0]?.body !== 'join'; i++) await sleep(10);
  expect(connections[1]?.map((m) => m.body)).toEqual(['join']);
  const attemptClosed = new Promise<number>((resolve) => sockets[1]?.on('close', resolve));
  client.close();
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);
  // The shard hears the player leave (1000) at once rather than keeping them until its idle timeout.
  expect(await within(attemptClosed, 1000)).toBe(1000);
  // Were it still open, the Welcome and a snapshot would arrive now.
  if (sockets[1]?.readyState === WebSocket.OPEN) {
    sockets[1].send(welcome('shard-a'));
    sockets[1].send(shardSnapshot(1, 0, new Uint8Array(0)));
  }
  await sleep(100);
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);

  // close() while the attempt waits for its join token: no socket is opened once the token comes.
  holdWelcome = false;
  let giveToken: (token: string) => void = () => {};
  const tokenAsked = new Promise<void>((asked) => {
    client = new RealtimeClient({
      url,
      joinToken: 't3',
      createSocket,
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
  expect(await within(tokenAsked, 1000)).not.toBe('timed out');
  second.close();
  giveToken('t4');
  await sleep(200);
  expect(sockets).toHaveLength(3);
  expect(events).toEqual(['disconnected 1006', 'close 1000 client closed']);
});
