import type { AddressInfo } from 'node:net';
import { aethex, encodeSnapshotMessage, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import $protobuf from 'protobufjs/minimal.js';
import { afterEach, expect, test } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { RealtimeClient } from './realtime.js';

const { ClientMessage, ServerMessage, Snapshot } = aethex.v1;

let server: WebSocketServer | undefined;
let client: RealtimeClient | undefined;

afterEach(async () => {
  client?.close();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = client = undefined;
});

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
  const createSocket = (u: string) => new WebSocket(u) as never;

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
