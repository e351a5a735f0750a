import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { aethex, PROTOCOL_VERSION } from '@aethex/proto';
import type { Logger } from '@aethex/runtime';
import { WebSocket, WebSocketServer } from 'ws';
import type { ShardMetrics } from '../metrics.js';
import { LogBudget, REFUSED_LINES } from '../net/rate-limit.js';
import type { Neighbour } from './map.js';

const { ShardMessage } = aethex.v1;

/** The path on a shard's players' port where neighbours connect their links. */
export const LINK_PATH = '/shard-link';
/** Largest link message (a full ghost update of a crowded border). */
const MAX_LINK_MESSAGE = 16 << 20;
/**
 * Largest message before the other end has proved the secret: a challenge, hello or welcome is a
 * few names, two 32-byte values and some numbers. ws's limit on an accepted link is this until
 * the hello is proven, MAX_LINK_MESSAGE after (`allowLinkMessages`): a frame over it is refused at
 * its header (close 1009), so a stranger on the players' port costs 1 KiB of buffer, not 16 MiB,
 * and never a decode on the tick thread.
 */
const MAX_HANDSHAKE_MESSAGE = 1024;

/**
 * Raises what ws accepts on `ws` to MAX_LINK_MESSAGE, once its peer has proved the secret. ws sets
 * its limit per server (`maxPayload`) and reads it per frame from its receiver; it has no call to
 * change it for one connection, so the receiver's field is set, and checked to be there.
 */
function allowLinkMessages(ws: WebSocket): void {
  const receiver = (ws as unknown as { _receiver?: { _maxPayload?: unknown } })._receiver;
  if (typeof receiver?._maxPayload !== 'number') throw new Error("ws's receiver has no _maxPayload: this ws cannot have its limit raised");
  receiver._maxPayload = MAX_LINK_MESSAGE;
}
/** Bytes of each end's challenge. */
const NONCE_BYTES = 32;
/** A dialled link must be welcomed, and an accepted one must say hello, within this. */
const HANDSHAKE_TIMEOUT_MS = 3000;
/** A refused link's close frame gets this long to go out before its socket is dropped. */
const REFUSED_LINGER_MS = 100;

export interface LinkOptions {
  world: string;
  instance: number;
  /** This shard's name. */
  name: string;
  secret: string;
  neighbours: Neighbour[];
  heartbeatMs: number;
  timeoutMs: number;
  log: Logger;
  metrics?: ShardMetrics;
}

export interface LinkEvents {
  /** A message from a neighbour (on the link it dialled to us). */
  onMessage(from: Neighbour, msg: aethex.v1.ShardMessage): void;
  /** The neighbour's link to us is up; `epoch` identifies its process run. */
  onInboundUp(from: Neighbour, epoch: number): void;
  /** The neighbour's link to us is gone (closed, or silent past the timeout). */
  onInboundDown(from: Neighbour): void;
  /** Our link to the neighbour is up: messages sent now arrive; `epoch` is its process run (its welcome's). */
  onOutboundUp(to: Neighbour, epoch: number): void;
}

/**
 * HMAC-SHA256 by which one end of a link proves the secret to the other (see LinkChallenge in
 * shard.proto): over what it answers (the dialler's `hello` or the accepting shard's `welcome`),
 * the other end's challenge, the world, both ends' names — the prover's first — and the prover's
 * epoch. Naming the other end is what keeps a proof a shard gave whoever answered at a neighbour's
 * address from logging that one in anywhere else.
 */
export function linkProof(
  secret: string,
  answer: 'hello' | 'welcome',
  nonce: Uint8Array,
  world: string,
  instance: number,
  prover: string,
  verifier: string,
  epoch: number,
): Buffer {
  return createHmac('sha256', secret)
    .update(`aethex-link-${answer}\0`)
    .update(nonce)
    .update(`\0${world}\0${instance}\0${prover}\0${verifier}\0${epoch}`)
    .digest();
}

/** Whether `got` is the proof `want` (in constant time). */
function proves(got: Uint8Array | null | undefined, want: Buffer): boolean {
  const bytes = Buffer.from(got ?? []);
  return bytes.length === want.length && timingSafeEqual(bytes, want);
}

interface Outbound {
  ws: WebSocket | undefined;
  ready: boolean;
  /** The neighbour applies the changes a HandoffCommit carries (its welcome said so). */
  lateChanges: boolean;
  /** The neighbour stores what it adopts from us and says so, and takes it back after a crash (its welcome said so). */
  custody: boolean;
  /** The neighbour takes back ids of its range that left for good here (IdsReleased; its welcome said so). */
  idsReleased: boolean;
  /** The neighbour reads OwnershipClaim.played_earlier (its welcome said so). */
  playedEarlier: boolean;
  attempt: number;
  timer: NodeJS.Timeout | undefined;
  lastHeard: number;
}

interface Inbound {
  ws: WebSocket;
  lastHeard: number;
}

/**
 * The shard's links to its neighbours. Each shard dials every neighbour (at `ws://address/shard-link`)
 * and sends its own messages on that link; it receives the neighbour's messages on the link the
 * neighbour dialled. A link is authenticated both ways, by a challenge from each end and an HMAC
 * over the shared secret naming both ends; a dialled link reconnects with capped exponential
 * backoff; both sides ping and close a link that is silent past `timeoutMs`, so a neighbour that
 * dies without closing its sockets is noticed.
 */
export class ShardLinks {
  /** Random per process start: tells neighbours that this shard restarted. */
  readonly epoch = randomBytes(6).readUIntBE(0, 6);
  private readonly server = new WebSocketServer({ noServer: true, maxPayload: MAX_HANDSHAKE_MESSAGE, perMessageDeflate: false });
  /** Lines about links from strangers (no hello in time, a refused hello, a bad frame), across them all. */
  private readonly strangerLines = new LogBudget(REFUSED_LINES.perSecond, REFUSED_LINES.burst, performance.now());
  private readonly out = new Map<number, Outbound>();
  private readonly inbound = new Map<number, Inbound>();
  private readonly byName = new Map<string, Neighbour>();
  private heartbeat: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly o: LinkOptions,
    private readonly events: LinkEvents,
  ) {
    for (const n of o.neighbours) this.byName.set(n.name, n);
  }

  /** Dials every neighbour and starts the heartbeat. */
  start(): void {
    for (const n of this.o.neighbours) {
      this.out.set(n.shard, {
        ws: undefined,
        ready: false,
        lateChanges: false,
        custody: false,
        idsReleased: false,
        playedEarlier: false,
        attempt: 0,
        timer: undefined,
        lastHeard: 0,
      });
      this.setGauge(n, 'out', false);
      this.setGauge(n, 'in', false);
      this.dial(n);
    }
    this.heartbeat = setInterval(() => this.beat(), this.o.heartbeatMs);
    this.heartbeat.unref();
  }

  /** Whether messages to `n` go out now and its messages reach us. */
  isUp(n: Neighbour): boolean {
    return (this.out.get(n.shard)?.ready ?? false) && this.inbound.has(n.shard);
  }

  /** Whether the neighbour applies the state and flags a HandoffCommit carries (builds before them do not). */
  takesLateChanges(n: Neighbour): boolean {
    return this.out.get(n.shard)?.lateChanges ?? false;
  }

  /**
   * Whether the neighbour says when it has stored what it adopted from us (HandoffStored) and
   * takes it back after a crash before then (HandoffCustody); builds before them do neither.
   */
  takesCustody(n: Neighbour): boolean {
    return this.out.get(n.shard)?.custody ?? false;
  }

  /** Whether the neighbour takes back ids of its range that left for good here (IdsReleased); builds before it do not. */
  takesIdsReleased(n: Neighbour): boolean {
    return this.out.get(n.shard)?.idsReleased ?? false;
  }

  /** Whether the neighbour reads OwnershipClaim.played_earlier; builds before it drop any dormant copy of such an id. */
  takesPlayedEarlier(n: Neighbour): boolean {
    return this.out.get(n.shard)?.playedEarlier ?? false;
  }

  /** Sends one message to a neighbour; false when our link to it is down (nothing is queued). */
  send(n: Neighbour, msg: aethex.v1.IShardMessage): number {
    const link = this.out.get(n.shard);
    if (!link?.ready || link.ws?.readyState !== WebSocket.OPEN) return 0;
    const bytes = ShardMessage.encode(msg).finish();
    link.ws.send(bytes, { binary: true });
    return bytes.length;
  }

  /** Cuts both links with a neighbour now; they reconnect as usual (operations, fault tests). */
  disconnect(n: Neighbour): void {
    this.out.get(n.shard)?.ws?.terminate();
    this.inbound.get(n.shard)?.ws.terminate();
  }

  /** The gateway hands over upgrades on LINK_PATH; `proven` is called once the peer proved the secret. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, proven?: () => void): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.server.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req.socket.remoteAddress ?? 'unknown', proven));
  }

  /**
   * Closes every link. Ours to the neighbours first get up to `graceMs` to close cleanly: what we
   * sent last (a drain's final HandoffStored) is delivered before the close, where cutting the
   * socket with the neighbour's heartbeats unread would reset it and could drop it.
   */
  async close(graceMs = 0): Promise<void> {
    this.closed = true;
    clearInterval(this.heartbeat);
    const closing: Promise<void>[] = [];
    for (const link of this.out.values()) {
      clearTimeout(link.timer);
      const ws = link.ws;
      if (!ws) continue;
      if (graceMs > 0 && ws.readyState === WebSocket.OPEN) {
        closing.push(
          new Promise<void>((resolve) => {
            const cut = setTimeout(() => {
              ws.terminate();
              resolve();
            }, graceMs);
            ws.once('close', () => {
              clearTimeout(cut);
              resolve();
            });
            ws.close(1001, 'shard shutting down');
          }),
        );
      } else ws.terminate();
    }
    await Promise.all(closing);
    // Every client of the server, those still in their hello phase included: closing the server
    // waits for them all, and a stranger's socket would hold it until its hello deadline.
    for (const ws of this.server.clients) ws.terminate();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private setGauge(n: Neighbour, direction: 'in' | 'out', up: boolean): void {
    this.o.metrics?.linksUp.set({ neighbour: n.name, direction }, up ? 1 : 0);
  }

  // --- accepted links (the neighbour's messages to us) -----------------------------------------

  private accept(ws: WebSocket, address: string, proven?: () => void): void {
    const nonce = randomBytes(32);
    let who: Neighbour | undefined;
    // Before the hello is proven it is anyone's: its lines are few (`strangerLines`).
    const stranger = (fields: Record<string, unknown>, msg: string) => {
      const line = this.strangerLines.take(performance.now(), { addr: address, ...fields });
      if (line) this.o.log.warn(line, msg);
    };
    const deadline = setTimeout(() => {
      stranger({}, 'shard link: no valid hello in time; closed');
      ws.terminate();
    }, HANDSHAKE_TIMEOUT_MS);
    ws.on('error', (err: Error & { code?: string }) => {
      // ws refused a frame (one over MAX_HANDSHAKE_MESSAGE before the hello: 1009) and closes.
      if (!who) stranger({ err: err.message }, 'shard link: bad frame before the hello; closed');
    });
    // Refused: nothing more it sends is read (not even its close frame), and it goes shortly.
    let refused = false;
    ws.on('message', (data: Buffer) => {
      if (refused) return;
      let msg: aethex.v1.ShardMessage;
      try {
        msg = ShardMessage.decode(data);
      } catch {
        if (who) this.o.log.warn({ addr: address, from: who.name }, 'shard link: undecodable message; closed');
        else stranger({}, 'shard link: undecodable message before the hello; closed');
        ws.terminate();
        return;
      }
      if (who) {
        const link = this.inbound.get(who.shard);
        if (link?.ws !== ws) return;
        link.lastHeard = performance.now();
        this.events.onMessage(who, msg);
        return;
      }
      const hello = msg.body === 'linkHello' ? (msg.linkHello as aethex.v1.LinkHello) : undefined;
      const refuse = (why: string) => {
        stranger({ why }, 'shard link refused');
        clearTimeout(deadline);
        // The close code tells a misconfigured neighbour why; the socket then stops being read and
        // is dropped without waiting for the answering close (ws would wait 30 s, reading on).
        refused = true;
        ws.close(1008, 'link refused');
        ws.pause();
        setTimeout(() => ws.terminate(), REFUSED_LINGER_MS).unref();
      };
      if (!hello) return refuse('first message is not a hello');
      const from = this.byName.get(hello.shardName);
      if (!from) return refuse(`${hello.shardName} is not a neighbour`);
      if (hello.world !== this.o.world || hello.instance !== this.o.instance) return refuse('other world or instance');
      if (hello.protocolVersion !== PROTOCOL_VERSION) return refuse(`protocol version ${hello.protocolVersion}`);
      if (hello.nonce.length !== NONCE_BYTES)
        return refuse(
          `${hello.shardName}'s hello has no ${NONCE_BYTES}-byte challenge for us (a build before links were authenticated both ways?)`,
        );
      const epoch = Number(hello.epoch);
      const want = linkProof(this.o.secret, 'hello', nonce, this.o.world, this.o.instance, hello.shardName, this.o.name, epoch);
      if (!proves(hello.auth, want)) return refuse(`bad proof from ${hello.shardName}`);
      clearTimeout(deadline);
      who = from;
      allowLinkMessages(ws);
      proven?.();
      const previous = this.inbound.get(from.shard);
      this.inbound.set(from.shard, { ws, lastHeard: performance.now() });
      previous?.ws.terminate();
      ws.on('ping', () => {
        const link = this.inbound.get(from.shard);
        if (link?.ws === ws) link.lastHeard = performance.now();
      });
      const auth = linkProof(this.o.secret, 'welcome', hello.nonce, this.o.world, this.o.instance, this.o.name, from.name, this.epoch);
      ws.send(
        ShardMessage.encode({
          linkWelcome: {
            shardName: this.o.name,
            protocolVersion: PROTOCOL_VERSION,
            epoch: this.epoch,
            lateChanges: true,
            custody: true,
            idsReleased: true,
            playedEarlier: true,
            auth,
          },
        }).finish(),
      );
      this.setGauge(from, 'in', true);
      this.o.log.info({ from: from.name, epoch }, 'shard link from neighbour up');
      this.events.onInboundUp(from, epoch);
    });
    ws.on('close', () => {
      clearTimeout(deadline);
      if (who && this.inbound.get(who.shard)?.ws === ws) {
        this.inbound.delete(who.shard);
        this.setGauge(who, 'in', false);
        this.o.log.info({ from: who.name }, 'shard link from neighbour down');
        this.events.onInboundDown(who);
      }
    });
    ws.send(ShardMessage.encode({ linkChallenge: { nonce } }).finish());
  }

  // --- dialled links (our messages to the neighbour) ------------------------------------------

  private dial(n: Neighbour): void {
    const link = this.out.get(n.shard);
    if (!link || this.closed) return;
    // Whoever answers at the address is a stranger until its welcome proves the secret: 1 KiB a
    // frame until then, as on the accepting side (`allowLinkMessages`).
    const ws = new WebSocket(`ws://${n.address}${LINK_PATH}`, {
      maxPayload: MAX_HANDSHAKE_MESSAGE,
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    link.ws = ws;
    link.ready = false;
    link.lastHeard = performance.now();
    // Our challenge to whoever answers at the neighbour's address: its welcome must prove the secret over it.
    const nonce = randomBytes(NONCE_BYTES);
    let answered = false;
    ws.on('error', (err: Error & { code?: string }) => {
      // ws refused a frame (over MAX_HANDSHAKE_MESSAGE before the welcome: 1009) and closes; the
      // dial is tried again with its backoff, so these lines are few.
      if (!link.ready && err.code?.startsWith('WS_ERR_'))
        this.o.log.warn({ to: n.name, err: err.message }, 'shard link: bad frame before the welcome; closing');
    });
    ws.on('pong', () => {
      link.lastHeard = performance.now();
    });
    ws.on('message', (data: Buffer) => {
      let msg: aethex.v1.ShardMessage;
      try {
        msg = ShardMessage.decode(data);
      } catch {
        ws.terminate();
        return;
      }
      // Before its welcome, whoever answers may send its one challenge and then the welcome:
      // anything else is not a neighbour's, and would otherwise keep the link looking alive.
      const expected = link.ready || (msg.body === 'linkChallenge' && !answered) || msg.body === 'linkWelcome';
      if (!expected) {
        this.o.log.warn({ to: n.name, message: msg.body ?? 'none' }, 'shard link: unexpected message before the welcome; closing');
        ws.terminate();
        return;
      }
      link.lastHeard = performance.now();
      if (msg.body === 'linkChallenge' && !answered) {
        // One answer per connection: whoever is at the address gets no proofs to collect.
        answered = true;
        const auth = linkProof(
          this.o.secret,
          'hello',
          msg.linkChallenge?.nonce ?? new Uint8Array(),
          this.o.world,
          this.o.instance,
          this.o.name,
          n.name,
          this.epoch,
        );
        ws.send(
          ShardMessage.encode({
            linkHello: {
              world: this.o.world,
              instance: this.o.instance,
              shardName: this.o.name,
              protocolVersion: PROTOCOL_VERSION,
              auth,
              epoch: this.epoch,
              nonce,
            },
          }).finish(),
        );
      } else if (msg.body === 'linkWelcome' && !link.ready) {
        const welcome = msg.linkWelcome as aethex.v1.LinkWelcome;
        if (welcome.shardName !== n.name) {
          this.o.log.warn({ to: n.name, answered: welcome.shardName }, 'shard link: another shard answered; closing');
          ws.terminate();
          return;
        }
        const want = linkProof(this.o.secret, 'welcome', nonce, this.o.world, this.o.instance, n.name, this.o.name, Number(welcome.epoch));
        if (!proves(welcome.auth, want)) {
          this.o.log.warn(
            { to: n.name },
            'shard link: the welcome does not prove the secret (not our neighbour, or another secret); closing',
          );
          ws.terminate();
          return;
        }
        link.ready = true;
        allowLinkMessages(ws);
        link.lateChanges = welcome.lateChanges === true;
        link.custody = welcome.custody === true;
        link.idsReleased = welcome.idsReleased === true;
        link.playedEarlier = welcome.playedEarlier === true;
        link.attempt = 0;
        this.setGauge(n, 'out', true);
        this.o.log.info({ to: n.name }, 'shard link to neighbour up');
        this.events.onOutboundUp(n, Number(welcome.epoch));
      }
    });
    ws.on('close', () => {
      if (link.ws !== ws) return;
      const wasReady = link.ready;
      link.ready = false;
      link.ws = undefined;
      if (wasReady) {
        this.setGauge(n, 'out', false);
        this.o.log.info({ to: n.name }, 'shard link to neighbour down');
      }
      if (this.closed) return;
      // Capped exponential backoff with jitter: 50 ms, 100 ms, … 2 s.
      const delay = Math.min(2000, 50 * 2 ** link.attempt) * (0.5 + Math.random() / 2);
      link.attempt = Math.min(link.attempt + 1, 10);
      link.timer = setTimeout(() => this.dial(n), delay);
      link.timer.unref();
    });
  }

  private beat(): void {
    const now = performance.now();
    for (const link of this.out.values()) {
      if (!link.ws || link.ws.readyState !== WebSocket.OPEN) continue;
      if (now - link.lastHeard > this.o.timeoutMs) link.ws.terminate();
      else if (link.ready) link.ws.ping();
    }
    for (const link of this.inbound.values()) {
      if (now - link.lastHeard > this.o.timeoutMs) link.ws.terminate();
    }
  }
}
