import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { binaryFrame } from './ws-frame.js';

// A real upgraded socket on the server side (frames written to it raw) and a real `ws` client.
const http = createServer();
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
let serverSocket: Duplex;
let client: WebSocket;
const received: { data: Buffer; isBinary: boolean }[] = [];

beforeAll(async () => {
  const upgraded = new Promise<void>((resolve) => {
    http.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, () => {
        serverSocket = socket;
        resolve();
      }),
    );
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  client = new WebSocket(`ws://127.0.0.1:${(http.address() as AddressInfo).port}`, { perMessageDeflate: false, maxPayload: 0 });
  client.on('message', (data: Buffer, isBinary) => received.push({ data, isBinary }));
  await Promise.all([upgraded, once(client, 'open')]);
});

afterAll(() => {
  client.terminate();
  http.close();
});

async function roundTrip(payload: Uint8Array): Promise<{ data: Buffer; isBinary: boolean }> {
  const before = received.length;
  serverSocket.write(binaryFrame(payload));
  while (received.length === before) await new Promise((r) => setTimeout(r, 1));
  return received[before] as { data: Buffer; isBinary: boolean };
}

test('a binary frame is what a ws client receives, at every length boundary', async () => {
  for (const length of [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]) {
    const payload = Buffer.alloc(length, length % 251);
    const frame = binaryFrame(payload);
    expect(frame.length).toBe(length + (length < 126 ? 2 : length < 65_536 ? 4 : 10));
    const got = await roundTrip(payload);
    expect(got.isBinary).toBe(true);
    expect(got.data.equals(payload)).toBe(true);
  }
});

test('property: any payload arrives whole and in order', async () => {
  await fc.assert(
    fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (payload) => {
      const got = await roundTrip(payload);
      expect(new Uint8Array(got.data)).toEqual(payload);
    }),
  );
  expect(client.readyState).toBe(WebSocket.OPEN);
});
