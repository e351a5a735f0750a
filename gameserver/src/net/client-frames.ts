import type { Duplex } from 'node:stream';
import { readIntoSharedBuffer } from '@aethex/runtime';

/**
 * Reads the frames a client sends (RFC 6455 §5.2) and takes the common one itself: a final,
 * masked binary frame within `maxPayload` bytes, unmasked in place and handed over whole. Every
 * other frame (text, ping, pong, close, fragments, reserved bits or opcodes, unmasked, over the
 * limit) goes, byte for byte and in order, to `passOn`: `ws`'s own receiver, which handles or
 * refuses it as it always has (1002, 1009 before buffering, the close handshake).
 *
 * Why: with one input per client per tick, `ws`'s receiver — a Writable stream per socket, with
 * its buffering, state machine and two events per message — was most of the shard's per-message
 * cost and about a third of its short-lived garbage (docs/benchmarks.md).
 *
 * A frame this reader takes never reaches `ws`, so `ws`'s receiver always sees whole frames, or
 * the bytes of one frame it is reading, in order: it is never left mid-frame by a frame taken
 * here. While a fragmented message is open at `ws` (a data frame without FIN went to it), and from
 * a close frame or a frame it will refuse on, everything goes to `ws`, as it would without this.
 */
export class ClientFrameReader {
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

  constructor(
    private readonly maxPayload: number,
    private readonly onBinary: (payload: Buffer) => void,
    private readonly passOn: (bytes: Buffer) => void,
  ) {}

  /**
   * Reads one chunk from the socket. `reused`: the chunk is a view of a buffer the socket reads
   * into again once this returns, so bytes kept past it (a frame begun, bytes for `ws`) are copied;
   * otherwise the chunk is this reader's. Either way a payload given to `onBinary` is valid only
   * during that call.
   */
  push(data: Buffer, reused = false): void {
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
      if (b0 !== 0x82 || !masked || length > this.maxPayload || this.fragmented) {
        this.handOver(b0, masked, length);
        // The whole frame goes to `ws`, header and payload, as it arrives.
        this.passing = header + (masked ? 4 : 0) + length;
        continue;
      }
      const start = at + header + 4;
      const end = start + length;
      if (end > chunk.length) {
        this.needed = end - at;
        break;
      }
      const m0 = chunk[start - 4] as number;
      const m1 = chunk[start - 3] as number;
      const m2 = chunk[start - 2] as number;
      const m3 = chunk[start - 1] as number;
      // The chunk is this reader's (a fresh buffer per socket read, the shared read buffer, or the
      // copy above): unmasked in place.
      let i = start;
      for (; i + 4 <= end; i += 4) {
        chunk[i] = (chunk[i] as number) ^ m0;
        chunk[i + 1] = (chunk[i + 1] as number) ^ m1;
        chunk[i + 2] = (chunk[i + 2] as number) ^ m2;
        chunk[i + 3] = (chunk[i + 3] as number) ^ m3;
      }
      if (i < end) chunk[i] = (chunk[i] as number) ^ m0;
      if (i + 1 < end) chunk[i + 1] = (chunk[i + 1] as number) ^ m1;
      if (i + 2 < end) chunk[i + 2] = (chunk[i + 2] as number) ^ m2;
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
      !masked ||
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

/** How `readClientFrames` reads a socket (the fastest first). */
export type ClientReadMode = 'shared-buffer' | 'data-events' | 'ws';

/**
 * Puts a {@link ClientFrameReader} between an upgraded socket and the `ws` WebSocket on it: `ws`
 * reads a socket through one `data` listener that writes each chunk to its receiver; it is
 * replaced by the reader, which passes on to it what it does not take. The socket's reads then
 * go into one buffer shared by every socket ({@link readIntoSharedBuffer}). Says how the socket is
 * read: 'ws' (nothing changed) when it does not have exactly that one listener (a `ws` that
 * reads another way); 'data-events' when Node's read path could not be switched.
 */
export function readClientFrames(socket: Duplex, maxPayload: number, onBinary: (payload: Buffer) => void): ClientReadMode {
  const listeners = socket.listeners('data');
  if (listeners.length !== 1) return 'ws';
  const wsListener = listeners[0] as (chunk: Buffer) => void;
  socket.removeListener('data', wsListener);
  const reader = new ClientFrameReader(maxPayload, onBinary, (bytes) => wsListener.call(socket, bytes));
  // Bytes that came with the upgrade, or are already read, still arrive as data events (first).
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  return readIntoSharedBuffer(socket, (bytes) => reader.push(bytes, true)) ? 'shared-buffer' : 'data-events';
}
