import { randomFillSync } from 'node:crypto';
import { writeSync } from 'node:fs';
import type { Duplex, Writable } from 'node:stream';
import { readIntoSharedBuffer } from './socket-read.js';

// WebSocket frames (RFC 6455 §5.2) read off and written onto a socket directly, beside the `ws`
// WebSocket on it, for the one kind of frame a game sends many of: final binary frames, no
// extension negotiated (`perMessageDeflate: false`), so the reserved bits stay clear.

/** Who wrote the frames a reader reads: a client's are masked, a server's never are. */
export type FrameSource = 'client' | 'server';

/**
 * Reads the frames one side sends and takes the common one itself: a final binary frame within
 * `maxPayload` bytes, masked if from a client (unmasked in place) and not if from a server, handed
 * over whole. Every other frame (text, ping, pong, close, fragments, reserved bits or opcodes,
 * masked the wrong way, over the limit) goes, byte for byte and in order, to `passOn`: `ws`'s own
 * receiver, which handles or refuses it as it always has (1002, 1009 before buffering, the close
 * handshake). `maxPayload` must be the `ws` WebSocket's own (a frame over it is one `ws` refuses).
 *
 * Why: with one input per client per tick, `ws`'s receiver — a Writable stream per socket, with
 * its buffering, state machine and two events per message — was most of the shard's per-message
 * cost and about a third of its short-lived garbage; a bot process reading snapshots spent a
 * tenth of its time there (docs/benchmarks.md).
 *
 * A frame this reader takes never reaches `ws`, so `ws`'s receiver always sees whole frames, or
 * the bytes of one frame it is reading, in order: it is never left mid-frame by a frame taken
 * here. While a fragmented message is open at `ws` (a data frame without FIN went to it), and from
 * a close frame or a frame it will refuse on, everything goes to `ws`, as it would without this.
 */
export class FrameReader {
  /**
   * Chunks holding a frame begun earlier, kept as they came until the frame is whole (then joined
   * once: a frame trickled in small reads costs one copy, not one per read).
   */
  private pending: Buffer[] = [];
  private pendingLength = 0;
  /** Bytes the pending frame needs in all; 0 while its header is not whole (a few bytes). */
  private needed = 0;
  /** Bytes of the current frame still to go to `passOn`. */
  private passing = 0;
  /** A data frame without FIN went to `ws`: its message continues there. */
  private fragmented = false;
  /** A close frame, or a frame `ws` will refuse, went to `ws`: everything after goes there too. */
  private handedOver = false;
  /** `onContinuation` said no: nothing more is read. */
  private discarding = false;

  /** Whether the frames taken here are masked (they come from a client). */
  private readonly masked: boolean;

  /**
   * `onContinuation`, when given, is called for each continuation frame (a fragment of a message
   * after its first) before it goes to `ws`: `ws` emits a fragmented message once, so this is how
   * its every frame is seen (the gateway charges each to the message rate). When it returns false
   * that frame and every byte after it are dropped (the connection is being closed).
   */
  constructor(
    from: FrameSource,
    private readonly maxPayload: number,
    private readonly onBinary: (payload: Buffer) => void,
    private readonly passOn: (bytes: Buffer) => void,
    private readonly onContinuation?: () => boolean,
  ) {
    this.masked = from === 'client';
  }

  /**
   * Reads one chunk from the socket. `reused`: the chunk is a view of a buffer the socket reads
   * into again once this returns, so bytes kept past it (a frame begun, bytes for `ws`) are copied;
   * otherwise the chunk is this reader's. Either way a payload given to `onBinary` is valid only
   * during that call.
   */
  push(data: Buffer, reused = false): void {
    if (this.discarding) return;
    let chunk = data;
    if (this.pendingLength > 0) {
      this.pending.push(reused ? Buffer.from(data) : data);
      this.pendingLength += data.length;
      if (this.pendingLength < this.needed) return;
      chunk = Buffer.concat(this.pending, this.pendingLength);
      this.pending = [];
      this.pendingLength = 0;
      this.needed = 0;
    }
    let at = 0;
    while (at < chunk.length) {
      if (this.passing > 0) {
        const n = Math.min(this.passing, chunk.length - at);
        const bytes = at === 0 && n === chunk.length ? chunk : chunk.subarray(at, at + n);
        // `ws` keeps what it cannot parse yet.
        this.passOn(reused && chunk === data ? Buffer.from(bytes) : bytes);
        this.passing -= n;
        at += n;
        continue;
      }
      if (this.handedOver) {
        const bytes = at === 0 ? chunk : chunk.subarray(at);
        this.passOn(reused && chunk === data ? Buffer.from(bytes) : bytes);
        return;
      }
      const left = chunk.length - at;
      if (left < 2) break;
      const b0 = chunk[at] as number;
      const b1 = chunk[at + 1] as number;
      let length = b1 & 0x7f;
      let header = 2;
      if (length === 126) {
        if (left < 4) break;
        length = chunk.readUInt16BE(at + 2);
        header = 4;
      } else if (length === 127) {
        if (left < 10) break;
        // Beyond 4 GiB is far past any limit: `ws` refuses it.
        length = chunk.readUInt32BE(at + 2) === 0 ? chunk.readUInt32BE(at + 6) : Number.MAX_SAFE_INTEGER;
        header = 10;
      }
      const masked = (b1 & 0x80) !== 0;
      if (b0 !== 0x82 || masked !== this.masked || length > this.maxPayload || this.fragmented) {
        if ((b0 & 0x0f) === 0 && this.onContinuation && !this.onContinuation()) {
          this.discarding = true;
          this.pending = [];
          this.pendingLength = 0;
          return;
        }
        this.handOver(b0, masked, length);
        // The whole frame goes to `ws`, header and payload, as it arrives.
        this.passing = header + (masked ? 4 : 0) + length;
        continue;
      }
      const start = at + header + (masked ? 4 : 0);
      const end = start + length;
      if (end > chunk.length) {
        this.needed = end - at;
        break;
      }
      // The chunk is this reader's (a fresh buffer per socket read, the shared read buffer, or the
      // copy above): unmasked in place.
      if (masked) applyMask(chunk, start, end);
      at = end;
      this.onBinary(chunk.subarray(start, end));
    }
    // A frame whose header or payload has not all arrived (at most a frame within the limit): kept
    // where it is when the chunk is this reader's.
    if (at < chunk.length) {
      const rest = chunk.subarray(at);
      this.pending.push(reused && chunk === data ? Buffer.from(rest) : rest);
      this.pendingLength = chunk.length - at;
    }
  }

  /** Tracks, for a frame going to `ws`, what `ws` will make of it. */
  private handOver(b0: number, masked: boolean, length: number): void {
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    const control = opcode >= 8;
    const refused =
      (b0 & 0x70) !== 0 ||
      masked !== this.masked ||
      length > this.maxPayload ||
      (opcode > 2 && opcode < 8) ||
      opcode > 10 ||
      (control && (!fin || length > 125)) ||
      (opcode === 0 && !this.fragmented) ||
      (opcode !== 0 && !control && this.fragmented);
    if (opcode === 8 || refused) {
      // Close, or a frame `ws` answers by closing: nothing after it is read here.
      this.handedOver = true;
    } else if (!control) {
      // Data frames: a message without FIN continues at `ws` until a continuation with FIN.
      this.fragmented = !fin;
    }
  }
}

/** XORs `buf[start, end)` with the 4-byte mask just before `start`: masks, or unmasks, in place. */
function applyMask(buf: Buffer, start: number, end: number): void {
  const m0 = buf[start - 4] as number;
  const m1 = buf[start - 3] as number;
  const m2 = buf[start - 2] as number;
  const m3 = buf[start - 1] as number;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    buf[i] = (buf[i] as number) ^ m0;
    buf[i + 1] = (buf[i + 1] as number) ^ m1;
    buf[i + 2] = (buf[i + 2] as number) ^ m2;
    buf[i + 3] = (buf[i + 3] as number) ^ m3;
  }
  if (i < end) buf[i] = (buf[i] as number) ^ m0;
  if (i + 1 < end) buf[i + 1] = (buf[i + 1] as number) ^ m1;
  if (i + 2 < end) buf[i + 2] = (buf[i + 2] as number) ^ m2;
}

/** How `readFrames` reads a socket (the fastest first). */
export type FrameReadMode = 'shared-buffer' | 'data-events' | 'ws';

/**
 * Puts a {@link FrameReader} between a socket and the `ws` WebSocket on it (after the upgrade, on
 * either side): `ws` reads a socket through one `data` listener that writes each chunk to its
 * receiver; it is replaced by the reader, which passes on to it what it does not take. The
 * socket's reads then go into one buffer shared by every socket ({@link readIntoSharedBuffer}).
 * `from` is who writes to the socket: 'client' for a server's socket, 'server' for a client's.
 * Says how the socket is read: 'ws' (nothing changed) when it does not have exactly that one
 * listener (a `ws` that reads another way); 'data-events' when Node's read path could not be
 * switched. A payload given to `onBinary` is valid only during that call; `onContinuation`: see
 * {@link FrameReader}'s constructor.
 */
export function readFrames(
  socket: Duplex,
  from: FrameSource,
  maxPayload: number,
  onBinary: (payload: Buffer) => void,
  onContinuation?: () => boolean,
): FrameReadMode {
  const listeners = socket.listeners('data');
  if (listeners.length !== 1) return 'ws';
  const wsListener = listeners[0] as (chunk: Buffer) => void;
  socket.removeListener('data', wsListener);
  const reader = new FrameReader(from, maxPayload, onBinary, (bytes) => wsListener.call(socket, bytes), onContinuation);
  // Bytes that came with the upgrade, or are already read, still arrive as data events (first).
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  return readIntoSharedBuffer(socket, (bytes) => reader.push(bytes, true)) ? 'shared-buffer' : 'data-events';
}

/**
 * One final WebSocket binary frame holding `payload`, in one buffer: unmasked (a server's), or
 * `masked` with a fresh random key (a client's).
 *
 * The gateway writes each snapshot to the client's socket as one of these: one `write` of one
 * buffer, where `ws`'s `send` allocates a separate header, corks the socket and writes twice (a
 * `writev`). Measured with 1,000 loopback sockets at 40 Hz: about 10 % less CPU per message and a
 * third of the scavenges.
 */
export function binaryFrame(payload: Uint8Array, masked = false): Buffer {
  const length = payload.length;
  const header = frameHeaderLength(length) + (masked ? 4 : 0);
  // From Node's buffer pool for small frames: no allocation of its own.
  const frame = Buffer.allocUnsafe(header + length);
  writeFrameHeader(frame, 0, length);
  frame.set(payload, header);
  if (masked) {
    frame[1] = (frame[1] as number) | 0x80;
    nextMask(frame, header - 4);
    applyMask(frame, header, header + length);
  }
  return frame;
}

/** Random bytes for masking keys, refilled from the system's CSPRNG a pool at a time (as `ws` does). */
const MASK_POOL_BYTES = 8 * 1024;
let maskPool: Buffer | undefined;
let maskAt = MASK_POOL_BYTES;

/** Writes a fresh 4-byte masking key at `at` (RFC 6455 §5.3: unpredictable, one per frame). */
function nextMask(buf: Buffer, at: number): void {
  if (maskAt === MASK_POOL_BYTES) {
    maskPool = randomFillSync(maskPool ?? Buffer.allocUnsafeSlow(MASK_POOL_BYTES));
    maskAt = 0;
  }
  const pool = maskPool as Buffer;
  buf[at] = pool[maskAt] as number;
  buf[at + 1] = pool[maskAt + 1] as number;
  buf[at + 2] = pool[maskAt + 2] as number;
  buf[at + 3] = pool[maskAt + 3] as number;
  maskAt += 4;
}

/** Bytes of the header of an unmasked binary frame holding `length` bytes (a masked one has 4 more). */
export function frameHeaderLength(length: number): number {
  return length < 126 ? 2 : length < 65_536 ? 4 : 10;
}

/** Writes at `at` the header (`frameHeaderLength(length)` bytes) of an unmasked binary frame holding `length` bytes. */
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
 * while anything is queued, goes through the stream behind what is already there — a copy of it
 * when `reused` (`frame` is a view of memory that is written again later) — and so do failures,
 * which the stream then reports as it always does. Returns the bytes written directly.
 */
export function writeWhole(socket: Writable, frame: Uint8Array, reused = false): number {
  const fd = directWriteFd(socket);
  let written = 0;
  if (fd >= 0) {
    try {
      written = writeSync(fd, frame);
    } catch {
      written = 0;
    }
  }
  if (written < frame.length) {
    const rest = written === 0 ? frame : frame.subarray(written);
    socket.write(reused ? Buffer.from(rest) : rest);
  }
  return written;
}
