import { connect, createServer, type Server, type Socket } from 'node:net';
import { aethex } from '@aethex/proto';
import { FrameReader } from '@aethex/runtime/ws-frames';

/**
 * A TCP proxy on a loopback port in front of one server (a shard's players' port, PostgreSQL,
 * Redis) that the soak and the handoff tests drive to make network faults: `cut` destroys both ends
 * of connections, `refuse` closes new ones as they arrive for a while, `pause` holds every byte of
 * connections (both ways, in order) for a while and then lets them through, `stall` drops what the
 * server sends to connections open now. Connections can be told apart by a label (`labelOf`, read
 * from the client's first bytes): for shard links, the name of the shard that dialled.
 */
export interface FaultProxy {
  /** host:port to give clients instead of the server's. */
  readonly address: string;
  /** Connections made through it so far. */
  readonly connections: number;
  /** Destroys both ends of every open connection `which` selects (default: all). Returns how many. */
  cut(which?: (label: string | undefined) => boolean): number;
  /** Closes every connection arriving in the next `ms` milliseconds as it arrives (and cuts the open ones). */
  refuse(ms: number): void;
  /**
   * Holds the bytes of every connection `which` selects for `ms` milliseconds, both ways — open ones
   * and, with no `which`, new ones too — then passes what was held, in order. Returns how many were open.
   */
  pause(ms: number, which?: (label: string | undefined) => boolean): number;
  /**
   * From now on, drops every byte the server sends to the connections `which` selects (default: all
   * open now; later ones pass) — a network blip on the way back: the server writes, nothing arrives,
   * and what the client sends still gets through. Returns how many.
   */
  stall(which?: (label: string | undefined) => boolean): number;
  /** Ends every pause and refusal now (stalled connections stay stalled). */
  heal(): void;
  close(): Promise<void>;
}

interface Pipe {
  client: Socket;
  server: Socket;
  label: string | undefined;
  /** Held until this time (Date.now()); bytes held meanwhile, per direction. */
  heldUntil: number;
  /** The server's bytes are dropped (`stall`). */
  stalled: boolean;
  toServer: Buffer[];
  toClient: Buffer[];
  timer: NodeJS.Timeout | undefined;
}

/**
 * Starts a proxy to `target()` (read per connection: the server may move, e.g. a restarted shard on
 * the same port). `labelOf` sees the client's bytes as they come until it returns a label (or gives
 * up by returning null).
 */
export async function startFaultProxy(
  target: () => { host: string; port: number },
  labelOf?: () => (bytes: Buffer) => string | null | undefined,
): Promise<FaultProxy> {
  const open = new Set<Pipe>();
  let connections = 0;
  let refuseUntil = 0;
  let pauseAllUntil = 0;

  const flush = (p: Pipe) => {
    clearTimeout(p.timer);
    p.timer = undefined;
    p.heldUntil = 0;
    for (const b of p.toServer.splice(0)) p.server.write(b);
    for (const b of p.toClient.splice(0)) p.client.write(b);
  };
  const hold = (p: Pipe, until: number) => {
    if (until <= p.heldUntil) return;
    p.heldUntil = until;
    clearTimeout(p.timer);
    p.timer = setTimeout(() => flush(p), until - Date.now());
  };
  const destroy = (p: Pipe) => {
    clearTimeout(p.timer);
    open.delete(p);
    p.client.destroy();
    p.server.destroy();
  };

  const server: Server = createServer((client) => {
    connections++;
    client.on('error', () => undefined);
    if (Date.now() < refuseUntil) {
      client.destroy();
      return;
    }
    const { host, port } = target();
    const upstream = connect(port, host);
    upstream.on('error', () => undefined);
    const p: Pipe = {
      client,
      server: upstream,
      label: undefined,
      heldUntil: 0,
      stalled: false,
      toServer: [],
      toClient: [],
      timer: undefined,
    };
    open.add(p);
    if (pauseAllUntil > Date.now()) hold(p, pauseAllUntil);
    let sniff = labelOf?.();
    client.on('data', (d: Buffer) => {
      if (sniff) {
        const label = sniff(d);
        if (label !== undefined) {
          sniff = undefined;
          if (label !== null) p.label = label;
        }
      }
      if (p.heldUntil > Date.now()) p.toServer.push(d);
      else upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (p.stalled) return;
      if (p.heldUntil > Date.now()) p.toClient.push(d);
      else client.write(d);
    });
    client.on('close', () => destroy(p));
    upstream.on('close', () => destroy(p));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = `127.0.0.1:${(server.address() as { port: number }).port}`;
  const all = () => true;
  const each = (which: (label: string | undefined) => boolean, act: (p: Pipe) => void) => {
    let n = 0;
    for (const p of [...open]) {
      if (!which(p.label)) continue;
      act(p);
      n++;
    }
    return n;
  };
  const cut = (which: (label: string | undefined) => boolean = all) => each(which, destroy);
  return {
    address,
    get connections() {
      return connections;
    },
    cut,
    refuse(ms) {
      refuseUntil = Date.now() + ms;
      cut();
    },
    pause(ms, which) {
      const until = Date.now() + ms;
      if (!which) pauseAllUntil = until;
      return each(which ?? all, (p) => hold(p, until));
    },
    stall(which = all) {
      return each(which, (p) => {
        p.stalled = true;
        p.toClient = [];
      });
    },
    heal() {
      refuseUntil = 0;
      pauseAllUntil = 0;
      for (const p of open) if (p.heldUntil > 0) flush(p);
    },
    async close() {
      for (const p of [...open]) destroy(p);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A `labelOf` for a shard's players' port: labels a connection on the shard-link path with the
 * name of the shard that dialled it — from the `LinkHello` its first WebSocket frame carries — and
 * gives up on any other connection (a player's).
 */
export function shardLinkDialler(): (bytes: Buffer) => string | null | undefined {
  let head = Buffer.alloc(0);
  let upgraded = false;
  let found: string | null | undefined;
  const reader = new FrameReader(
    'client',
    1024,
    (payload) => {
      try {
        const msg = aethex.v1.ShardMessage.decode(payload);
        found = msg.body === 'linkHello' ? (msg.linkHello?.shardName ?? null) : null;
      } catch {
        found = null;
      }
    },
    () => {
      found ??= null;
    },
  );
  return (bytes) => {
    if (!upgraded) {
      head = Buffer.concat([head, bytes]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return head.length > 8192 ? null : undefined;
      if (!/^GET \/shard-link[ ?]/.test(head.subarray(0, 64).toString('latin1'))) return null;
      upgraded = true;
      // The reader unmasks in place: a copy, the proxy forwards the bytes as they came.
      const rest = Buffer.from(head.subarray(end + 4));
      head = Buffer.alloc(0);
      if (rest.length > 0) reader.push(rest);
      return found;
    }
    reader.push(Buffer.from(bytes));
    return found;
  };
}
