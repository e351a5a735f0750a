import { once } from 'node:events';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { type AddressInfo, connect, createServer as createTcpServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { binaryFrame, socketFd, writeWhole } from './ws-frames.js';

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

test('a masked binary frame is what a ws server receives from a client, with a fresh key per frame', async () => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false, maxPayload: 0 });
  await once(server, 'listening');
  const got: { data: Buffer; isBinary: boolean }[] = [];
  server.on('connection', (ws) => ws.on('message', (data: Buffer, isBinary) => got.push({ data, isBinary })));
  const raw = connect((server.address() as AddressInfo).port, '127.0.0.1');
  try {
    await once(raw, 'connect');
    raw.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
    );
    const [reply] = (await once(raw, 'data')) as [Buffer];
    expect(reply.toString()).toMatch(/^HTTP\/1.1 101/);
    const lengths = [0, 1, 3, 125, 126, 65_535, 65_536, 70_000];
    const keys = new Set<string>();
    for (const length of lengths) {
      const payload = Buffer.alloc(length, (length % 251) + 1);
      const frame = binaryFrame(payload, true);
      const header = length < 126 ? 2 : length < 65_536 ? 4 : 10;
      expect(frame.length).toBe(header + 4 + length);
      expect((frame[1] as number) & 0x80).toBe(0x80);
      keys.add(frame.subarray(header, header + 4).toString('hex'));
      // Masked: the payload's bytes do not go out as they are (a key of four zero bytes, 2^-32).
      if (length > 0) expect(frame.subarray(header + 4).equals(payload)).toBe(false);
      raw.write(frame);
    }
    for (let i = 0; got.length < lengths.length && i < 200; i++) await new Promise((r) => setTimeout(r, 5));
    expect(got.map((m) => [m.isBinary, m.data.length])).toEqual(lengths.map((n) => [true, n]));
    for (const [i, m] of got.entries())
      expect(m.data.equals(Buffer.alloc(lengths[i] as number, ((lengths[i] as number) % 251) + 1))).toBe(true);
    expect(keys.size).toBe(lengths.length);
  } finally {
    raw.destroy();
    await new Promise((r) => server.close(r));
  }
});

/** A connected pair of loopback TCP sockets: [the server's end, the client's end]. */
async function tcpPair(): Promise<[Socket, Socket]> {
  const server = createTcpServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const client = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const [serverEnd] = (await accepted) as [Socket];
  server.close();
  return [serverEnd, client];
}

test('writeWhole: through a reader that stops, frames arrive whole and in order, direct and queued writes mixed, reused buffers copied', async () => {
  const [out, reader] = await tcpPair();
  reader.pause();
  const expected: Buffer[] = [];
  const scratch = Buffer.alloc(1000);
  let direct = 0;
  let queued = 0;
  let viaStream = 0;
  // 32 MB: more than the kernel buffers for a reader that stopped reading (its receive buffer does
  // not grow while nothing is read), so the kernel refuses some writes.
  for (let i = 0; i < 32_000; i++) {
    const frame = Buffer.alloc(1000, i % 251);
    frame.writeUInt32BE(i, 0);
    expected.push(frame);
    if (i % 7 === 3) {
      // Someone else's write on the same socket (as ws's pongs are): the order must still hold.
      out.write(frame);
      viaStream++;
      continue;
    }
    // Through one scratch buffer, written over after each call: what the stream queues is a copy.
    scratch.set(frame);
    if (writeWhole(out, scratch, true) === frame.length) direct++;
    else queued++;
    scratch.fill(0xee);
  }
  expect(direct).toBeGreaterThan(0);
  expect(queued).toBeGreaterThan(0);
  expect(viaStream).toBeGreaterThan(0);
  const want = Buffer.concat(expected);
  const chunks: Buffer[] = [];
  let got = 0;
  const all = new Promise<void>((resolve) =>
    reader.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= want.length) resolve();
    }),
  );
  reader.resume();
  await all;
  const received = Buffer.concat(chunks);
  expect(received.length).toBe(want.length);
  for (let i = 0; i < expected.length; i++) {
    const at = i * 1000;
    expect(received.readUInt32BE(at), `frame at byte ${at}`).toBe(i);
  }
  expect(received.equals(want)).toBe(true);
  out.destroy();
  reader.destroy();
});

test('writeWhole: a destroyed socket is never written through its old descriptor, even once the number is reused', async () => {
  const [out, reader] = await tcpPair();
  const fd = socketFd(out);
  expect(fd).toBeGreaterThanOrEqual(0);
  out.on('error', () => undefined);
  out.destroy();
  // Descriptor numbers are reused lowest first: open files until one gets the socket's old number.
  const dir = mkdtempSync(join(tmpdir(), 'aethex-ws-frame-'));
  const files: number[] = [];
  try {
    for (let k = 0; k < 256 && files.at(-1) !== fd; k++) files.push(openSync(join(dir, `f${k}`), 'w+'));
    expect(files).toContain(fd);
    expect(writeWhole(out, Buffer.from('late'))).toBe(0);
    for (const f of files) expect(fstatSync(f).size).toBe(0);
  } finally {
    for (const f of files) closeSync(f);
    rmSync(dir, { recursive: true });
    reader.destroy();
  }
});
