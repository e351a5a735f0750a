import { connect, createServer, type Server, type Socket } from 'node:net';
import { aethex } from '@aethex/proto';
import { FrameReader } from '@aethex/runtime/ws-frames';

/**
 * A TCP proxy on a loopback port in front of one server (a shard's players' port, PostgreSQL,
 * Redis) that the soak and the handoff tests drive to make network faults: `cut` destroys both ends
 * of connections, `refuse` closes new ones as they arrive for a while, `pause` holds every byte of
 * connections (both ways, in order) for a while and then lets them through, `stall` drops what the
 * server sends to connections open now. Connections can be told apart by a label (`labelOf`, read
 * from the client's first bytes): for shard links, the name of the shard that dialled; for the
 * soak's players, the player's id (`soakPlayer`).
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
   * and, with no `which`, new ones too; with `which` and `arriving`, also the new ones whose label
   * it selects, from their first bytes (a player whose network is out cannot reconnect either) —
   * then passes what was held, in order. Returns how many were open.
   */
  pause(ms: number, which?: (label: string | undefined) => boolean, arriving?: boolean): number;
  /**
   * From now on, drops every byte the server sends to the connections `which` selects (default: all
   * open now; later ones pass) — a network blip on the way back: the server writes, nothing arrives,
   * and what the client sends still gets through. Returns how many.
   */
  stall(which?: (label: string | undefined) => boolean): number;
  /** The open connections: each one's label (once read) and whether it is stalled. */
  open(): { label: string | undefined; stalled: boolean }[];
  /** Calls `listener` with each connection's label as it is read. Returns a function that stops it. */
  onLabel(listener: (label: string) => void): () => void;
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
  /** Pauses (`pause` with `arriving`) that also hold new connections with a label they select. */
  let arrivingHolds: { which: (label: string | undefined) => boolean; until: number }[] = [];
  const labelListeners = new Set<(label: string) => void>();

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
          if (label !== null) {
            p.label = label;
            const now = Date.now();
            arrivingHolds = arrivingHolds.filter((h) => h.until > now);
            for (const h of arrivingHolds) if (h.which(label)) hold(p, h.until);
            for (const l of [...labelListeners]) l(label);
          }
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
    pause(ms, which, arriving = false) {
      const until = Date.now() + ms;
      if (!which) pauseAllUntil = until;
      else if (arriving) arrivingHolds.push({ which, until });
      return each(which ?? all, (p) => hold(p, until));
    },
    stall(which = all) {
      return each(which, (p) => {
        p.stalled = true;
        p.toClient = [];
      });
    },
    open() {
      return [...open].map((p) => ({ label: p.label, stalled: p.stalled }));
    },
    onLabel(listener) {
      labelListeners.add(listener);
      return () => labelListeners.delete(listener);
    },
    heal() {
      refuseUntil = 0;
      pauseAllUntil = 0;
      arrivingHolds = [];
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

/** The query parameter the soak's clients name their player with in every URL they dial (the shard ignores it). */
export const SOAK_PLAYER_PARAM = 'soak-player';

/**
 * A `labelOf` for a shard's players' port in the soak: labels a player's connection with the
 * player's id, from the `soak-player` parameter of its upgrade request's URL (the soak's clients
 * add it to every address they dial: joins, resumes after a redirect, rejoins), and gives up on any
 * other connection. A resume carries no player id of its own (its token is the shard's random one).
 */
export function soakPlayer(): (bytes: Buffer) => string | null | undefined {
  let head = '';
  return (bytes) => {
    head += bytes.toString('latin1');
    const line = head.indexOf('\r\n');
    if (line < 0) return head.length > 8192 ? null : undefined;
    const m = new RegExp(`^GET [^ ]*[?&]${SOAK_PLAYER_PARAM}=([^& ]+)`).exec(head.slice(0, line));
    return m ? decodeURIComponent(m[1] as string) : null;
  };
}
