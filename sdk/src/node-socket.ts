import { connect, type NetConnectOpts, type Socket } from 'node:net';
import { binaryFrame, directWriteFd, type FrameReadMode, readFrames, writeWhole } from '@aethex/runtime/ws-frames';
import { WebSocket } from 'ws';
import type { WebSocketLike } from './realtime.js';

/** Largest message a {@link nodeSocket} accepts (`ws`'s own default): larger ones close it with 1009. */
export const NODE_SOCKET_MAX_PAYLOAD = 100 * 1024 * 1024;

/**
 * A {@link WebSocketLike} for Node processes that hold many realtime clients (the bot runner, load
 * tests, game-side services): a `ws` WebSocket whose binary messages, once it is open, are read
 * and written beside `ws` rather than through it, for ws:// addresses.
 *
 * - Reading: the TCP socket reads into the process's one shared buffer and final binary frames are
 *   taken off it (runtime's `readFrames`); each reaches `onmessage` as a view of that buffer,
 *   flagged `reused`, with no `Buffer`, stream event or copy per message. Every other frame (text,
 *   ping, fragments, close) still goes to `ws`, which handles it as it always does.
 * - Writing: `send` frames the message itself (masked, one buffer) and writes it straight to the
 *   descriptor when nothing is queued on the socket, else through the socket behind what is.
 *
 * Measured on the bot runner: docs/benchmarks.md. wss:// sockets are `ws`'s, unchanged.
 */
export function nodeSocket(url: string): NodeSocket {
  return new NodeSocket(url);
}

export class NodeSocket implements WebSocketLike {
  private readonly ws: WebSocket;
  private tcp: Socket | undefined;
  /**
   * How binary frames are read: 'pending' until the socket is open; then as `readFrames` says
   * ('shared-buffer', or 'data-events' on a Node without that read path, or 'ws': all through `ws`,
   * as for every wss:// socket). `send` writes frames itself unless it is 'ws'.
   */
  readMode: FrameReadMode | 'pending' = 'pending';
  /** Messages `send` framed and wrote itself (in whole or in part straight to the descriptor). */
  sentDirect = 0;
  private handler: WebSocketLike['onmessage'] = null;

  constructor(url: string) {
    const plain = url.startsWith('ws://');
    // As ws's own connector: the request's `path` is the URL's, not a socket's.
    const createConnection = (o: NetConnectOpts & { socketPath?: string }) => {
      this.tcp = connect({ ...o, path: o.socketPath } as NetConnectOpts);
      return this.tcp;
    };
    this.ws = new WebSocket(url, {
      maxPayload: NODE_SOCKET_MAX_PAYLOAD,
      perMessageDeflate: false,
      ...(plain ? { createConnection: createConnection as never } : {}),
    });
    this.ws.binaryType = 'nodebuffer';
    // Messages `ws` reads (before the switch, and every frame but a final binary one after it).
    this.ws.on('message', (data: Buffer, isBinary: boolean) => this.handler?.({ data: isBinary ? data : data.toString() }));
    // Registered first: the switch happens before anyone's `onopen` sends a message.
    this.ws.once('open', () => {
      this.readMode = this.tcp
        ? readFrames(this.tcp, 'server', NODE_SOCKET_MAX_PAYLOAD, (payload) => this.handler?.({ data: payload, reused: true }))
        : 'ws';
    });
  }

  get binaryType(): string {
    return 'nodebuffer';
  }

  set binaryType(_type: string) {
    // Messages are Buffers (or views of the shared read buffer): the client reads them as they are.
  }

  get readyState(): number {
    return this.ws.readyState;
  }

  send(data: Uint8Array): void {
    const tcp = this.tcp;
    if (this.readMode !== 'ws' && tcp && this.ws.readyState === WebSocket.OPEN && directWriteFd(tcp) >= 0) {
      writeWhole(tcp, binaryFrame(data, true));
      this.sentDirect++;
      return;
    }
    // Not open (`ws` reports it), closing, or something queued: `ws` writes it behind the rest.
    this.ws.send(data);
  }

  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }

  get onmessage(): WebSocketLike['onmessage'] {
    return this.handler;
  }

  set onmessage(handler: WebSocketLike['onmessage']) {
    this.handler = handler;
  }

  get onopen(): WebSocketLike['onopen'] {
    return this.ws.onopen as WebSocketLike['onopen'];
  }

  set onopen(handler: WebSocketLike['onopen']) {
    this.ws.onopen = handler as WebSocket['onopen'];
  }

  get onclose(): WebSocketLike['onclose'] {
    return this.ws.onclose as WebSocketLike['onclose'];
  }

  set onclose(handler: WebSocketLike['onclose']) {
    this.ws.onclose = handler as WebSocket['onclose'];
  }

  get onerror(): WebSocketLike['onerror'] {
    return this.ws.onerror as WebSocketLike['onerror'];
  }

  set onerror(handler: WebSocketLike['onerror']) {
    this.ws.onerror = handler as WebSocket['onerror'];
  }
}
