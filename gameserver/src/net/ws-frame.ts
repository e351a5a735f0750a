import { writeSync } from 'node:fs';
import type { Writable } from 'node:stream';

/**
 * One unmasked, final WebSocket binary frame (RFC 6455 §5.2) holding `payload`, in one buffer.
 *
 * The gateway writes each snapshot to the client's socket as one of these: one `write` of one
 * buffer, where `ws`'s `send` allocates a separate header, corks the socket and writes twice (a
 * `writev`). Measured with 1,000 loopback sockets at 40 Hz: about 10 % less CPU per message and a
 * third of the scavenges. Frames from a server are never masked; no extension is negotiated
 * (`perMessageDeflate: false`), so the reserved bits stay clear.
 */
export function binaryFrame(payload: Uint8Array): Buffer {
  const header = frameHeaderLength(payload.length);
  // From Node's buffer pool for small frames: no allocation of its own.
  const frame = Buffer.allocUnsafe(header + payload.length);
  writeFrameHeader(frame, 0, payload.length);
  frame.set(payload, header);
  return frame;
}

/** Bytes of the header of a binary frame holding `length` bytes. */
export function frameHeaderLength(length: number): number {
  return length < 126 ? 2 : length < 65_536 ? 4 : 10;
}

/** Writes at `at` the header (`frameHeaderLength(length)` bytes) of a binary frame holding `length` bytes. */
export function writeFrameHeader(buf: Uint8Array, at: number, length: number): void {
  buf[at] = 0x82; // FIN + opcode 2 (binary)
  if (length < 126) {
    buf[at + 1] = length;
  } else if (length < 65_536) {
    buf[at + 1] = 126;
    buf[at + 2] = length >>> 8;
    buf[at + 3] = length & 0xff;
  } else {
    buf[at + 1] = 127;
    // Lengths here are far below 2^32: the high four bytes are zero.
    buf.fill(0, at + 2, at + 6);
    buf[at + 6] = length >>> 24;
    buf[at + 7] = (length >>> 16) & 0xff;
    buf[at + 8] = (length >>> 8) & 0xff;
    buf[at + 9] = length & 0xff;
  }
}

/** The descriptor of a socket still open here, or -1 (not a TCP socket, destroyed, or not on this platform). */
export function socketFd(socket: Writable): number {
  // Node keeps a socket's libuv handle in `_handle` (not a public API) and nulls it when it closes
  // the descriptor, synchronously, on this thread: a descriptor read from a live handle is this
  // socket's, never one the number was reused for.
  const fd = (socket as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : -1;
}

/**
 * The descriptor a frame may be written to directly, ahead of the stream: the socket is open, not
 * ended, and nothing is queued on it (else the bytes would overtake what is queued); -1 otherwise.
 */
export function directWriteFd(socket: Writable): number {
  return socket.writableLength === 0 && !socket.destroyed && !socket.writableEnded ? socketFd(socket) : -1;
}

/**
 * Writes `frame` to `socket` whole and in order. When nothing is queued on the socket (and it is
 * open and not ended), it is written straight to the descriptor (`writeSync`): the one system call
 * the stream would make, without the stream's per-write request object and callback. Measured on
 * a shard serving 1,000 bots: 7–14 % fewer scavenges, a lower tick p50 (docs/benchmarks.md).
 * Whatever the kernel does not take (its buffer full: EAGAIN or a short write), and every write
 * while anything is queued, goes through the stream behind what is already there; so do failures,
 * which the stream then reports as it always does. Returns the bytes written directly.
 */
export function writeWhole(socket: Writable, frame: Buffer): number {
  const fd = directWriteFd(socket);
  let written = 0;
  if (fd >= 0) {
    try {
      written = writeSync(fd, frame);
    } catch {
      written = 0;
    }
  }
  if (written < frame.length) socket.write(written === 0 ? frame : frame.subarray(written));
  return written;
}
