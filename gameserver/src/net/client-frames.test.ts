import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as ws from 'ws';
import { WebSocket, WebSocketServer } from 'ws';
import { ClientFrameReader, readClientFrames } from './client-frames.js';

interface FrameOptions {
  fin: boolean;
  opcode: number;
  mask: boolean;
  readOnly: boolean;
  rsv1: boolean;
}
/** `ws`'s own framing code, the frames a `ws` client writes (exported by ws, not typed by @types/ws). */
const { Sender } = ws as unknown as { Sender: { frame(data: Buffer, options: FrameOptions): Buffer[] } };

const MAX = 300;

/** One frame as a client writes it (masked unless `unmasked`), by `ws`'s own framing code. */
function frame(opcode: number, payload: Buffer, fin = true, unmasked = false, rsv1 = false): Buffer {
  const parts = Sender.frame(payload, { fin, opcode, mask: !unmasked, readOnly: true, rsv1 });
  return Buffer.concat(parts);
}

type Event = ['binary', string] | ['ws', string];

/** Reads `chunks` and lists what the reader did, bytes passed on to `ws` merged into runs. */
function read(chunks: Buffer[]): Event[] {
  const events: Event[] = [];
  const reader = new ClientFrameReader(
    MAX,
    (payload) => events.push(['binary', payload.toString('hex')]),
    (bytes) => {
      const last = events.at(-1);
      if (last?.[0] === 'ws') last[1] += bytes.toString('hex');
      else events.push(['ws', bytes.toString('hex')]);
    },
  );
  for (const c of chunks) reader.push(Buffer.from(c));
  return events;
}

/** The expected events: taken frames' payloads, and every other frame's bytes (merged) for `ws`. */
function model(frames: { bytes: Buffer; taken?: Buffer }[]): Event[] {
  const events: Event[] = [];
  for (const f of frames) {
    if (f.taken) events.push(['binary', f.taken.toString('hex')]);
    else {
      const last = events.at(-1);
      if (last?.[0] === 'ws') last[1] += f.bytes.toString('hex');
      else events.push(['ws', f.bytes.toString('hex')]);
    }
  }
  return events;
}

/** Splits `bytes` at the given points (sorted, deduplicated, within it). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let at = 0;
  for (const p of points) {
    if (p > at) out.push(bytes.subarray(at, p));
    at = Math.max(at, p);
  }
  if (at < bytes.length) out.push(bytes.subarray(at));
  return out;
}

const payload = (max: number) => fc.uint8Array({ maxLength: max }).map((a) => Buffer.from(a));

/** A unit of what a well-behaved client sends: a whole message or a control frame. */
const unit = fc.oneof(
  { weight: 6, arbitrary: payload(MAX).map((p) => [{ bytes: frame(2, p), taken: p }]) },
  // Lengths in the 16-bit form (126..MAX) are taken too.
  {
    weight: 1,
    arbitrary: fc.uint8Array({ minLength: 126, maxLength: MAX }).map((a) => [{ bytes: frame(2, Buffer.from(a)), taken: Buffer.from(a) }]),
  },
  { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(1, p) }]) },
  { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(9, p) }]) },
  { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(10, p) }]) },
  {
    // A fragmented message, a control frame between its fragments: all of it goes to ws.
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(1, 2), payload(30), payload(30), payload(10), fc.boolean())
      .map(([opcode, a, b, ping, withPing]) => [
        { bytes: frame(opcode, a, false) },
        ...(withPing ? [{ bytes: frame(9, ping) }] : []),
        { bytes: frame(0, b, true) },
      ]),
  },
);

/** What ends the reader's own reading: everything from it on goes to ws. */
const ending = fc.oneof(
  payload(20).map((p) => frame(8, p)),
  fc.uint8Array({ minLength: MAX + 1, maxLength: MAX + 200 }).map((a) => frame(2, Buffer.from(a))),
  payload(20).map((p) => frame(2, p, true, true)),
  payload(20).map((p) => frame(2, p, true, false, true)),
  payload(20).map((p) => frame(0, p)),
  payload(20).map((p) => frame(3, p)),
  // A whole binary frame inside a fragmented message.
  fc.tuple(payload(10), payload(10)).map(([a, b]) => Buffer.concat([frame(2, a, false), frame(2, b)])),
  // A control frame over 125 bytes.
  fc.uint8Array({ minLength: 126, maxLength: 130 }).map((a) => frame(9, Buffer.from(a))),
);

describe('ClientFrameReader', () => {
  test('takes final masked binary frames within the limit and passes every other byte on to ws, in order, however the stream is cut', () => {
    fc.assert(
      fc.property(
        fc.array(unit, { maxLength: 12 }),
        fc.option(fc.tuple(ending, fc.array(unit, { maxLength: 3 }))),
        fc.array(fc.nat(4000), { maxLength: 30 }),
        (units, end, cuts) => {
          const frames = units.flat();
          if (end) {
            // After the ending frame nothing is taken here: the rest is ws's, byte for byte.
            const [last, after] = end;
            frames.push({ bytes: Buffer.concat([last, ...after.flat().map((f) => f.bytes)]) });
          }
          const stream = Buffer.concat(frames.map((f) => f.bytes));
          expect(read(split(stream, cuts))).toEqual(model(frames));
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('one byte at a time, and frames of every length form at the limit', () => {
    const frames = [0, 1, 125, 126, 127, MAX, MAX + 1, 65_536].map((n) => {
      const p = Buffer.alloc(n, 7);
      return { bytes: frame(2, p), taken: n <= MAX ? p : undefined };
    });
    // The first frame over the limit hands everything after it to ws.
    const over = frames.findIndex((f) => !f.taken);
    const expected = model([...frames.slice(0, over), { bytes: Buffer.concat(frames.slice(over).map((f) => f.bytes)) }]);
    const stream = Buffer.concat(frames.map((f) => f.bytes));
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    expect(read(bytes)).toEqual(expected);
    expect(read([stream])).toEqual(expected);
  });

  test('a frame at a 1 MiB limit trickled in a byte per read is joined once, not copied per read', () => {
    const limit = 1 << 20;
    const payload = Buffer.alloc(limit, 5);
    const bytes = frame(2, payload);
    const taken: Buffer[] = [];
    const reader = new ClientFrameReader(
      limit,
      (p) => taken.push(Buffer.from(p)),
      () => undefined,
    );
    // Copying what came so far on every read would move ~550 GB here; joining once moves 1 MiB.
    for (let i = 0; i < bytes.length; i++) reader.push(bytes.subarray(i, i + 1));
    expect(taken).toHaveLength(1);
    expect((taken[0] as Buffer).equals(payload)).toBe(true);
  });

  test('a 64-bit length beyond 4 GiB goes to ws with what follows', () => {
    const header = Buffer.from([0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
    const input = frame(2, Buffer.from([1, 2, 3]));
    expect(read([header, input])).toEqual([['ws', Buffer.concat([header, input]).toString('hex')]]);
  });

  test('readClientFrames takes over from the installed ws: binary messages come to it, the rest still to ws', async () => {
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX, perMessageDeflate: false });
    const http = createServer();
    const taken: string[] = [];
    const emitted: string[] = [];
    let installed: string | undefined;
    http.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        installed = readClientFrames(socket, MAX, (payload) => taken.push(payload.toString()));
        ws.on('message', (data, isBinary) => emitted.push(`${isBinary ? 'binary' : 'text'}:${String(data)}`));
      }),
    );
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const client = new WebSocket(`ws://127.0.0.1:${(http.address() as AddressInfo).port}`);
    await once(client, 'open');
    try {
      client.send(Buffer.from('one'));
      client.send('two');
      client.send(Buffer.from('thr'), { fin: false });
      client.send(Buffer.from('ee'), { fin: true });
      client.send(Buffer.from('four'));
      const pong = once(client, 'pong');
      client.ping();
      await pong;
      for (let i = 0; taken.length < 2 && i < 100; i++) await new Promise((r) => setTimeout(r, 10));
      expect(installed).toBe('shared-buffer');
      expect(taken).toEqual(['one', 'four']);
      expect(emitted).toEqual(['text:two', 'binary:three']);
      client.close(1000);
      expect((await once(client, 'close'))[0]).toBe(1000);
    } finally {
      client.terminate();
      await new Promise((r) => http.close(r));
    }
  });

  test('sockets reading into the one shared buffer keep each other’s partial frames and bytes for ws apart', async () => {
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX, perMessageDeflate: false });
    const http = createServer();
    const taken: string[][] = [[], []];
    const emitted: string[][] = [[], []];
    const modes: string[] = [];
    http.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        const i = Number(req.url?.slice(1));
        modes.push(readClientFrames(socket, MAX, (payload) => taken[i]?.push(payload.toString())));
        ws.on('message', (data) => emitted[i]?.push(String(data)));
      }),
    );
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const port = (http.address() as AddressInfo).port;
    const sockets: Socket[] = [];
    try {
      for (const i of [0, 1]) {
        const s = connect(port, '127.0.0.1');
        s.setNoDelay(true);
        sockets.push(s);
        await once(s, 'connect');
        s.write(
          `GET /${i} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
        const [reply] = (await once(s, 'data')) as [Buffer];
        expect(reply.toString()).toMatch(/^HTTP\/1.1 101/);
      }
      expect(modes).toEqual(['shared-buffer', 'shared-buffer']);
      // Each socket: binary frames the reader takes (one of 200 bytes, in the 16-bit length form)
      // and text frames for ws, written a byte at a time, the two sockets' bytes alternating, so
      // that every read leaves a frame half done while the other socket's reads reuse the buffer.
      const streams = [0, 1].map((i) => {
        const long = `${i}`.repeat(200);
        return Buffer.concat([
          frame(2, Buffer.from(`alpha-${i}`)),
          frame(1, Buffer.from(`text-${i}`)),
          frame(2, Buffer.from(long)),
          frame(1, Buffer.from(`more-${i}`)),
          frame(2, Buffer.from(`omega-${i}`)),
        ]);
      });
      const length = Math.max(...streams.map((b) => b.length));
      for (let at = 0; at < length; at++) {
        for (const i of [0, 1]) {
          const bytes = streams[i] as Buffer;
          if (at < bytes.length) (sockets[i] as Socket).write(bytes.subarray(at, at + 1));
        }
        // A turn of the event loop between writes: the server reads them one by one.
        await new Promise((r) => setTimeout(r, 0));
      }
      for (let i = 0; taken.flat().length < 6 && i < 200; i++) await new Promise((r) => setTimeout(r, 10));
      for (const i of [0, 1]) {
        expect(taken[i]).toEqual([`alpha-${i}`, `${i}`.repeat(200), `omega-${i}`]);
        expect(emitted[i]).toEqual([`text-${i}`, `more-${i}`]);
      }
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => http.close(r));
    }
  });
});
