import type { AddressInfo } from 'node:net';
import { aethex, encodeSnapshotMessage, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import { afterEach, expect, test } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import { type NodeSocket, nodeSocket } from './node-socket.js';
import { RealtimeClient } from './realtime.js';

const { ClientMessage, ServerMessage } = aethex.v1;

let server: WebSocketServer | undefined;
let client: RealtimeClient | undefined;

afterEach(async () => {
  client?.close();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = client = undefined;
});

/** A full snapshot of tick `tick` holding entities `[id, x, y]` (kind 1). */
function fullSnapshot(tick: number, entities: [number, number, number][]): Uint8Array {
  const w = new SnapshotBodyWriter();
  for (const [id, x, y] of entities) w.full(id, x, y, 1, 0);
  const removed = new Uint32Array(0);
  return encodeSnapshotMessage({
    tick,
    baseTick: 0,
    lastInputSeq: 0,
    layout: SNAPSHOT_LAYOUT,
    entities: w.bytes(),
    removed,
    removedCount: 0,
  });
}

/** A full snapshot of tick `tick` showing entity 7 at (tick, -tick). */
const snapshot = (tick: number) => fullSnapshot(tick, [[7, tick, -tick]]);

/** A shard stand-in: welcomes a join, then `onJoined` drives it; every client message is recorded. */
async function shard(onJoined: (socket: WebSocket) => void): Promise<{ url: string; received: aethex.v1.ClientMessage[] }> {
  const received: aethex.v1.ClientMessage[] = [];
  server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  server.on('connection', (socket) => {
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      received.push(msg);
      if (msg.body !== 'join') return;
      socket.send(
        ServerMessage.encode({ welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1, maxSpeed: 5 } }).finish(),
      );
      onJoined(socket);
    });
  });
  await new Promise((r) => server?.once('listening', r));
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, received };
}

test('a realtime client on nodeSocket: snapshots applied, inputs arrive whole and in order, an RPC result outlives the reads after it', async () => {
  let shardSocket: WebSocket | undefined;
  const { url, received } = await shard((socket) => {
    shardSocket = socket;
  });
  let made: NodeSocket | undefined;
  // A clock the test moves on a tick (25 ms) per move: one input each.
  let skew = 0;
  client = new RealtimeClient({
    url,
    joinToken: 't',
    now: () => performance.now() + skew,
    createSocket: (u) => {
      made = nodeSocket(u);
      return made;
    },
  });
  await client.connect();
  expect(made?.readMode).toBe('shared-buffer');
  const socket = shardSocket as WebSocket;
  const ticks: number[] = [];
  client.on('snapshot', (tick) => ticks.push(tick));

  // Snapshots (read off the socket beside ws) and a text frame and a ping (left to ws), mixed.
  for (let tick = 1; tick <= 50; tick++) {
    socket.send(snapshot(tick));
    if (tick === 20) socket.ping();
  }
  for (let i = 0; ticks.length < 50 && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
  expect(ticks).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
  expect(client.entities().get(7)).toEqual({ x: 50, y: -50, kind: 1, flags: 0 });

  // Inputs: framed and masked by the client, written straight to the descriptor.
  const seqs: number[] = [];
  const directBefore = made?.sentDirect ?? 0;
  for (let i = 0; i < 100; i++) {
    skew += 25;
    seqs.push(client.move(1, 0.5));
  }
  expect((made?.sentDirect ?? 0) - directBefore).toBe(100);
  for (let i = 0; received.filter((m) => m.body === 'input').length < 100 && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
  const inputs = received.filter((m) => m.body === 'input').map((m) => m.input as aethex.v1.Input);
  expect(inputs.map((m) => m.seq)).toEqual(seqs);
  expect(inputs.every((m) => m.move?.x === 1 && m.move?.y === 0.5 && m.ackTick === 50)).toBe(true);

  // An RPC result, then reads that reuse the buffer it was read into: its payload must not change.
  socket.on('message', (data) => {
    const msg = ClientMessage.decode(data as Buffer);
    if (msg.body !== 'rpc') return;
    const call = msg.rpc as aethex.v1.Rpc;
    socket.send(ServerMessage.encode({ rpcResult: { callId: call.callId, ok: true, payload: Buffer.from('the answer, kept') } }).finish());
    for (let tick = 51; tick <= 80; tick++) socket.send(snapshot(tick));
  });
  const answer = await client.rpc('ask', Buffer.from('?'));
  for (let i = 0; ticks.length < 80 && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
  expect(ticks.at(-1)).toBe(80);
  expect(Buffer.from(answer).toString()).toBe('the answer, kept');

  // The server's close handshake still runs through ws.
  const closed = new Promise<[number, string]>((resolve) => client?.on('close', (code, reason) => resolve([code, reason])));
  socket.close(4000, 'bye');
  expect(await closed).toEqual([4000, 'bye']);
});

test('after a rejoin, the restarted shard’s first snapshot is compared with the view before the drop: only real changes enter and leave', async () => {
  let connections = 0;
  /** A snapshot of tick `tick` holding the given entity ids (a full one: a shard starts over). */
  const view = (tick: number, ids: number[]) =>
    fullSnapshot(
      tick,
      ids.map((id): [number, number, number] => [id, id, id]),
    );
  const { url } = await shard((socket) => {
    connections++;
    if (connections === 1) {
      socket.send(view(5, [7, 8]));
      // The shard dies: the connection drops without a close frame.
      setTimeout(() => socket.terminate(), 50);
    } else socket.send(view(1, [7, 9]));
  });
  client = new RealtimeClient({ url, joinToken: 't', createSocket: nodeSocket, rejoin: { joinToken: async () => 't' } });
  const events: string[] = [];
  client.on('enter', (id) => events.push(`enter ${id}`));
  client.on('leave', (id) => events.push(`leave ${id}`));
  const rejoined = new Promise((resolve) => client?.on('rejoined', resolve));
  const ticks: number[] = [];
  client.on('snapshot', (tick) => ticks.push(tick));
  await client.connect();
  await rejoined;
  for (let i = 0; ticks.length < 2 && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
  expect(ticks).toEqual([5, 1]);
  expect(events).toEqual(['enter 7', 'enter 8', 'enter 9', 'leave 8']);
  expect([...client.store.current.keys()].sort()).toEqual([7, 9]);
});
