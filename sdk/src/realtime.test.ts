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
