import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/** Size of the one buffer sockets switched to {@link readIntoSharedBuffer} read into. */
const SHARED_READ_BYTES = 64 * 1024;
let sharedReadBuffer: Buffer | undefined;

/** The `onread` option's fields of a net.Socket, by their symbols' names (null: this Node has none). */
let symbols: { kBuffer: symbol; kBufferCb: symbol; kBufferGen: symbol } | null | undefined;

function onreadSymbols(socket: Socket): typeof symbols {
  const all = Object.getOwnPropertySymbols(socket);
  const named = (name: string) => all.find((k) => k.description === name);
  const kBuffer = named('kBuffer');
  const kBufferCb = named('kBufferCb');
  const kBufferGen = named('kBufferGen');
  return kBuffer && kBufferCb && kBufferGen ? { kBuffer, kBufferCb, kBufferGen } : null;
}

/**
 * Switches a connected TCP socket to Node's zero-copy read path — the one `new net.Socket({ onread })`
 * documents: libuv reads into a buffer given once and a callback gets the byte count, with no
 * `Buffer`, `ArrayBuffer` or stream event per read. Node offers the option only when it creates a
 * socket, so a socket accepted by a server (or one that first carried an HTTP upgrade) cannot
 * have it; this sets the same three fields the option sets (found by their symbols' names) and
 * hands the buffer to the socket's handle, as the constructor does. Pause, resume, end, errors and
 * writes work as for any socket; bytes the socket had already read still come as `data` events,
 * before any read into the buffer.
 *
 * One buffer serves every socket switched in this thread: reads run one at a time, and `onRead`
 * must consume or copy the bytes before it returns. Returns false, changing nothing, for anything
 * but a plain `net.Socket` on a handle, or on a Node without those fields.
 *
 * Why: a shard reads one input per client per tick; a Buffer and an ArrayBuffer per read were
 * the stream machinery's ~40 % of reading an input, and sweeping the dead ArrayBuffers took up
 * to 5 ms of a young-generation pause (docs/benchmarks.md, session 12).
 */
export function readIntoSharedBuffer(socket: Duplex, onRead: (bytes: Buffer) => void): boolean {
  if (!(socket instanceof Socket) || socket.constructor !== Socket) return false;
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: (buf: Uint8Array) => void } })._handle;
  const fields = socket as unknown as Record<symbol, unknown>;
  // Node's net module makes these symbols once: found on the first socket, they are every socket's.
  symbols ??= onreadSymbols(socket);
  if (!symbols) return false;
  const { kBuffer, kBufferCb, kBufferGen } = symbols;
  if (!handle || typeof handle.useUserBuffer !== 'function' || !(kBuffer in fields) || fields[kBuffer]) return false;
  sharedReadBuffer ??= Buffer.allocUnsafeSlow(SHARED_READ_BYTES);
  const buffer = sharedReadBuffer;
  fields[kBufferGen] = null;
  fields[kBufferCb] = (nread: number) => {
    onRead(buffer.subarray(0, nread));
  };
  fields[kBuffer] = buffer;
  handle.useUserBuffer(buffer);
  return true;
}
