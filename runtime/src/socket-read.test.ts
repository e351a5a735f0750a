import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, Socket } from 'node:net';
import { afterEach, expect, test } from 'vitest';
import { readIntoSharedBuffer } from './socket-read.js';

let server: Server | undefined;
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

/** A server whose accepted sockets are switched (or not) by `onSocket`; its address. */
async function listen(onSocket: (socket: Socket) => void): Promise<number> {
  server = createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test('accepted sockets read into one buffer: every byte to its own socket, in order, with no data events', async () => {
  const got: string[][] = [[], []];
  const dataEvents: number[] = [0, 0];
  const buffers = new Set<ArrayBufferLike>();
  const ended: number[] = [];
  let accepted = 0;
  const port = await listen((socket) => {
    const i = accepted++;
    socket.on('data', () => {
      dataEvents[i] = (dataEvents[i] as number) + 1;
    });
    socket.on('end', () => {
      ended.push(i);
      socket.end();
    });
    expect(
      readIntoSharedBuffer(socket, (bytes) => {
        buffers.add(bytes.buffer);
        got[i]?.push(bytes.toString());
      }),
    ).toBe(true);
  });
  const clients = [connect(port, '127.0.0.1'), connect(port, '127.0.0.1')];
  for (const c of clients) await once(c, 'connect');
  for (let k = 0; k < 20; k++) {
    for (const [i, c] of clients.entries()) c.write(`${i}:${k};`);
    await tick();
  }
  for (const c of clients) c.end();
  for (let k = 0; ended.length < 2 && k < 200; k++) await tick();
  expect(ended.sort()).toEqual([0, 1]);
  for (const i of [0, 1]) {
    expect(got[i]?.join('')).toBe(Array.from({ length: 20 }, (_, k) => `${i}:${k};`).join(''));
  }
  expect(dataEvents).toEqual([0, 0]);
  // One buffer for both sockets and every read.
  expect(buffers.size).toBe(1);
});

test('pause stops the reads and resume starts them again; writes work as before', async () => {
  const got: string[] = [];
  let accepted: Socket | undefined;
  const port = await listen((socket) => {
    accepted = socket;
    readIntoSharedBuffer(socket, (bytes) => {
      got.push(bytes.toString());
      socket.write(bytes.toString().toUpperCase());
    });
  });
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  client.write('a');
  const [echo] = (await once(client, 'data')) as [Buffer];
  expect(echo.toString()).toBe('A');
  accepted?.pause();
  client.write('b');
  await new Promise((r) => setTimeout(r, 100));
  expect(got).toEqual(['a']);
  accepted?.resume();
  for (let k = 0; got.length < 2 && k < 100; k++) await tick();
  expect(got).toEqual(['a', 'b']);
  client.destroy();
});

test('refuses what it cannot switch, changing nothing', async () => {
  // A socket without a handle (not connected), and a switched socket asked again.
  expect(readIntoSharedBuffer(new Socket(), () => undefined)).toBe(false);
  let again: boolean | undefined;
  const port = await listen((socket) => {
    readIntoSharedBuffer(socket, () => undefined);
    again = readIntoSharedBuffer(socket, () => undefined);
  });
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  for (let k = 0; again === undefined && k < 100; k++) await tick();
  expect(again).toBe(false);
  client.destroy();
});
