import { once } from 'node:events';
import { createServer } from 'node:http';
import { type AddressInfo, connect, type Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import * as ws from 'ws';
import { WebSocket, WebSocketServer } from 'ws';
import { FrameReader, type FrameSource, readFrames } from './ws-frames.js';

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

/** One frame as `from` writes it (masked if a client's; the other way if `wrongMask`), by `ws`'s own framing code. */
function frame(from: FrameSource, opcode: number, payload: Buffer, fin = true, wrongMask = false, rsv1 = false): Buffer {
  const parts = Sender.frame(payload, { fin, opcode, mask: (from === 'client') !== wrongMask, readOnly: true, rsv1 });
  return Buffer.concat(parts);
}

type Event = ['binary', string] | ['ws', string];

/** Reads `chunks` of what `from` wrote and lists what the reader did, bytes passed on to `ws` merged into runs. */
function read(from: FrameSource, chunks: Buffer[]): Event[] {
  const events: Event[] = [];
  const reader = new FrameReader(
    from,
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

/** A unit of what a well-behaved `from` sends: a whole message or a control frame. */
const unit = (from: FrameSource) =>
  fc.oneof(
    { weight: 6, arbitrary: payload(MAX).map((p) => [{ bytes: frame(from, 2, p), taken: p }]) },
    // Lengths in the 16-bit form (126..MAX) are taken too.
    {
      weight: 1,
      arbitrary: fc
        .uint8Array({ minLength: 126, maxLength: MAX })
        .map((a) => [{ bytes: frame(from, 2, Buffer.from(a)), taken: Buffer.from(a) }]),
    },
    { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(from, 1, p) }]) },
    { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(from, 9, p) }]) },
    { weight: 1, arbitrary: payload(40).map((p) => [{ bytes: frame(from, 10, p) }]) },
    {
      // A fragmented message, a control frame between its fragments: all of it goes to ws.
      weight: 2,
      arbitrary: fc
        .tuple(fc.constantFrom(1, 2), payload(30), payload(30), payload(10), fc.boolean())
        .map(([opcode, a, b, ping, withPing]) => [
          { bytes: frame(from, opcode, a, false) },
          ...(withPing ? [{ bytes: frame(from, 9, ping) }] : []),
          { bytes: frame(from, 0, b, true) },
        ]),
    },
  );

/** What ends the reader's own reading: everything from it on goes to ws. */
const ending = (from: FrameSource) =>
  fc.oneof(
    payload(20).map((p) => frame(from, 8, p)),
    fc.uint8Array({ minLength: MAX + 1, maxLength: MAX + 200 }).map((a) => frame(from, 2, Buffer.from(a))),
    // Masked the wrong way for its sender: ws refuses it.
    payload(20).map((p) => frame(from, 2, p, true, true)),
    payload(20).map((p) => frame(from, 2, p, true, false, true)),
    payload(20).map((p) => frame(from, 0, p)),
    payload(20).map((p) => frame(from, 3, p)),
    // A whole binary frame inside a fragmented message.
    fc.tuple(payload(10), payload(10)).map(([a, b]) => Buffer.concat([frame(from, 2, a, false), frame(from, 2, b)])),
    // A control frame over 125 bytes.
    fc.uint8Array({ minLength: 126, maxLength: 130 }).map((a) => frame(from, 9, Buffer.from(a))),
  );

describe.each(['client', 'server'] as const)('FrameReader, frames from a %s', (from) => {
  test('takes final binary frames within the limit and passes every other byte on to ws, in order, however the stream is cut', () => {
    fc.assert(
      fc.property(
        fc.array(unit(from), { maxLength: 12 }),
        fc.option(fc.tuple(ending(from), fc.array(unit(from), { maxLength: 3 }))),
        fc.array(fc.nat(4000), { maxLength: 30 }),
        (units, end, cuts) => {
          const frames = units.flat();
          if (end) {
            // After the ending frame nothing is taken here: the rest is ws's, byte for byte.
            const [last, after] = end;
            frames.push({ bytes: Buffer.concat([last, ...after.flat().map((f) => f.bytes)]) });
          }
          const stream = Buffer.concat(frames.map((f) => f.bytes));
          expect(read(from, split(stream, cuts))).toEqual(model(frames));
        },
      ),
      { numRuns: 3000 },
    );
  });

  test('one byte at a time, and frames of every length form at the limit', () => {
    const frames = [0, 1, 125, 126, 127, MAX, MAX + 1, 65_536].map((n) => {
      const p = Buffer.alloc(n, 7);
      return { bytes: frame(from, 2, p), taken: n <= MAX ? p : undefined };
    });
    // The first frame over the limit hands everything after it to ws.
    const over = frames.findIndex((f) => !f.taken);
    const expected = model([...frames.slice(0, over), { bytes: Buffer.concat(frames.slice(over).map((f) => f.bytes)) }]);
    const stream = Buffer.concat(frames.map((f) => f.bytes));
    const bytes = Array.from({ length: stream.length }, (_, i) => stream.subarray(i, i + 1));
    expect(read(from, bytes)).toEqual(expected);
    expect(read(from, [stream])).toEqual(expected);
  });
});

describe('FrameReader', () => {
  test('a frame at a 1 MiB limit trickled in a byte per read is joined once, not copied per read', () => {
    const limit = 1 << 20;
    const payload = Buffer.alloc(limit, 5);
    const bytes = frame('client', 2, payload);
    const taken: Buffer[] = [];
    const reader = new FrameReader(
      'client',
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
    const input = frame('client', 2, Buffer.from([1, 2, 3]));
    expect(read('client', [header, input])).toEqual([['ws', Buffer.concat([header, input]).toString('hex')]]);
  });

  test('readFrames takes over from the installed ws: binary messages come to it, the rest still to ws', async () => {
    const wss = new WebSocketServer({ noServer: true, maxPayload: MAX, perMessageDeflate: false });
    const http = createServer();
    const taken: string[] = [];
    const emitted: string[] = [];
    let installed: string | undefined;
    http.on('upgrade', (req, socket, head) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        installed = readFrames(socket, 'client', MAX, (payload) => taken.push(payload.toString()));
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

  test('readFrames on a client: the server’s binary messages come to it, the rest still to ws, and the close handshake completes', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
    await once(wss, 'listening');
    const serverSide = once(wss, 'connection') as Promise<[WebSocket]>;
    let tcp: Socket | undefined;
    const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`, {
      maxPayload: MAX,
      perMessageDeflate: false,
      createConnection: (o: { port?: number; host?: string }) => {
        tcp = connect(Number(o.port), String(o.host));
        return tcp;
      },
    } as never);
    const taken: string[] = [];
    const emitted: string[] = [];
    client.on('message', (data, isBinary) => emitted.push(`${isBinary ? 'binary' : 'text'}:${String(data)}`));
    await once(client, 'open');
    const [server] = await serverSide;
    try {
      const mode = readFrames(tcp as Socket, 'server', MAX, (payload) => taken.push(payload.toString()));
      expect(mode).toBe('shared-buffer');
      server.send(Buffer.from('one'));
      server.send('two');
      server.send(Buffer.from('thr'), { fin: false });
      server.send(Buffer.from('ee'), { fin: true });
      const pong = once(server, 'pong');
      server.ping();
      await pong;
      server.send(Buffer.from('four'));
      const closed = once(client, 'close');
      server.close(4000, 'bye');
      const [code, reason] = (await closed) as [number, Buffer];
      expect([code, String(reason)]).toEqual([4000, 'bye']);
      expect(taken).toEqual(['one', 'four']);
      expect(emitted).toEqual(['text:two', 'binary:three']);
    } finally {
      client.terminate();
      await new Promise((r) => wss.close(r));
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
        modes.push(readFrames(socket, 'client', MAX, (payload) => taken[i]?.push(payload.toString())));
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
          frame('client', 2, Buffer.from(`alpha-${i}`)),
          frame('client', 1, Buffer.from(`text-${i}`)),
          frame('client', 2, Buffer.from(long)),
          frame('client', 1, Buffer.from(`more-${i}`)),
          frame('client', 2, Buffer.from(`omega-${i}`)),
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
