import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { aethex, PROTOCOL_VERSION } from '@aethex/proto';
import { createLogger } from '@aethex/runtime';
import { afterEach, expect, test, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { LINK_PATH, type LinkEvents, linkProof, ShardLinks } from './links.js';
import type { Neighbour } from './map.js';

const log = createLogger('links-test', 'silent');
const region = { minX: 0, minY: 0, maxX: 1, maxY: 1 };
const open: { links: ShardLinks; server: Server }[] = [];
afterEach(async () => {
  for (const o of open.splice(0)) {
    await o.links.close();
    o.server.close();
  }
});

/** A shard's link endpoint on a real port: an HTTP server that hands upgrades to ShardLinks. */
async function endpoint(): Promise<{ server: Server; port: number }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

function recorder() {
  const seen: string[] = [];
  const events: LinkEvents = {
    onMessage: (from, msg) => seen.push(`message ${msg.body} from ${from.name}`),
    onInboundUp: (from) => seen.push(`in up ${from.name}`),
    onInboundDown: (from) => seen.push(`in down ${from.name}`),
    onOutboundUp: (to) => seen.push(`out up ${to.name}`),
  };
  return { seen, events };
}

async function pair(secretA: string, secretB: string) {
  const [ea, eb] = [await endpoint(), await endpoint()];
  const na: Neighbour = { shard: 0, name: 'w-0-0', region, address: `127.0.0.1:${ea.port}` };
  const nb: Neighbour = { shard: 1, name: 'w-0-1', region, address: `127.0.0.1:${eb.port}` };
  const [ra, rb] = [recorder(), recorder()];
  const common = { world: 'w', instance: 0, heartbeatMs: 50, timeoutMs: 300, log };
  const a = new ShardLinks({ ...common, name: 'w-0-0', secret: secretA, neighbours: [nb] }, ra.events);
  const b = new ShardLinks({ ...common, name: 'w-0-1', secret: secretB, neighbours: [na] }, rb.events);
  for (const [links, e] of [
    [a, ea],
    [b, eb],
  ] as const) {
    e.server.on('upgrade', (req, socket, head) => {
      if (req.url === LINK_PATH) links.handleUpgrade(req, socket, head);
      else socket.destroy();
    });
    open.push({ links, server: e.server });
  }
  a.start();
  b.start();
  return { a, b, na, nb, ra, rb };
}

const until = async (what: string, check: () => boolean, ms = 5000) => {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('neighbours with the same secret link up both ways and exchange messages', async () => {
  const { a, b, na, nb, rb } = await pair('s'.repeat(32), 's'.repeat(32));
  await until('links up', () => a.isUp(nb) && b.isUp(na));
  // Each welcome says the shard applies the changes a handoff commit carries.
  expect([a.takesLateChanges(nb), b.takesLateChanges(na)]).toEqual([true, true]);
  expect(a.send(nb, { ghostUpdate: { tick: 7, full: true } })).toBeGreaterThan(0);
  await until('the message', () => rb.seen.includes('message ghostUpdate from w-0-0'));
});

test('a neighbour with another secret is refused; the link never comes up', async () => {
  const { a, b, na, nb, ra, rb } = await pair('s'.repeat(32), 't'.repeat(32));
  await new Promise((r) => setTimeout(r, 600));
  expect(a.isUp(nb) || b.isUp(na)).toBe(false);
  expect(ra.seen.filter((e) => e.startsWith('in up'))).toEqual([]);
  expect(rb.seen.filter((e) => e.startsWith('in up'))).toEqual([]);
  expect(a.send(nb, { ghostUpdate: { tick: 1 } })).toBe(0);
});

test('a cut link is noticed by both sides and comes back by itself', async () => {
  const { a, b, na, nb, ra } = await pair('s'.repeat(32), 's'.repeat(32));
  await until('links up', () => a.isUp(nb) && b.isUp(na));
  b.disconnect(na);
  await until('the cut noticed', () => ra.seen.includes('in down w-0-1'));
  await until('links back', () => a.isUp(nb) && b.isUp(na));
  expect(ra.seen.filter((e) => e === 'in up w-0-1')).toHaveLength(2);
});

test('a neighbour whose welcome leaves late changes out: the link is up, and takes none', async () => {
  // The neighbour's side: challenge, then a welcome that proves the secret but says nothing of late_changes.
  const e = await endpoint();
  const wss = new WebSocketServer({ noServer: true });
  e.server.on('upgrade', (req, socket, head) =>
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data: Buffer) => {
        const hello = aethex.v1.ShardMessage.decode(data).linkHello as aethex.v1.LinkHello;
        const auth = linkProof('s'.repeat(32), 'welcome', hello.nonce, 'w', 0, 'w-0-1', 'w-0-0', 1);
        ws.send(
          aethex.v1.ShardMessage.encode({
            linkWelcome: { shardName: 'w-0-1', protocolVersion: PROTOCOL_VERSION, epoch: 1, auth },
          }).finish(),
        );
      });
      ws.send(aethex.v1.ShardMessage.encode({ linkChallenge: { nonce: new Uint8Array(32) } }).finish());
    }),
  );
  const nb: Neighbour = { shard: 1, name: 'w-0-1', region, address: `127.0.0.1:${e.port}` };
  const r = recorder();
  const a = new ShardLinks(
    { world: 'w', instance: 0, heartbeatMs: 50, timeoutMs: 300, log, name: 'w-0-0', secret: 's'.repeat(32), neighbours: [nb] },
    r.events,
  );
  open.push({ links: a, server: e.server });
  a.start();
  await until('out up', () => r.seen.includes('out up w-0-1'));
  expect(a.takesLateChanges(nb)).toBe(false);
  wss.close();
});

/**
 * Shard w-0-1 (neighbour: w-0-0) on a real port, and a client that answers its challenge with a
 * hello proven with the shared secret, `hello` overriding its fields: what the client receives and
 * the close code, and what the shard recorded.
 */
async function helloTo(hello: Partial<aethex.v1.ILinkHello>) {
  const e = await endpoint();
  const na: Neighbour = { shard: 0, name: 'w-0-0', region, address: '127.0.0.1:1' };
  const r = recorder();
  const secret = 's'.repeat(32);
  const b = new ShardLinks(
    { world: 'w', instance: 0, heartbeatMs: 50, timeoutMs: 300, log, name: 'w-0-1', secret, neighbours: [na] },
    r.events,
  );
  e.server.on('upgrade', (req, socket, head) => b.handleUpgrade(req, socket, head));
  open.push({ links: b, server: e.server });
  const ws = new WebSocket(`ws://127.0.0.1:${e.port}${LINK_PATH}`);
  const received: string[] = [];
  ws.on('message', (data: Buffer) => {
    const msg = aethex.v1.ShardMessage.decode(data);
    received.push(msg.body as string);
    if (msg.body === 'linkWelcome') ws.close();
    if (msg.body !== 'linkChallenge') return;
    const shardName = hello.shardName ?? 'w-0-0';
    const auth = linkProof(secret, 'hello', msg.linkChallenge?.nonce ?? new Uint8Array(), 'w', 0, shardName, 'w-0-1', 1);
    const body = {
      shardName,
      world: 'w',
      instance: 0,
      protocolVersion: PROTOCOL_VERSION,
      nonce: new Uint8Array(32),
      epoch: 1,
      auth,
      ...hello,
    };
    ws.send(aethex.v1.ShardMessage.encode({ linkHello: body }).finish());
  });
  const [code] = (await once(ws, 'close')) as [number];
  return { code, received, seen: r.seen };
}

test('a hello from a shard that is not a neighbour is refused, though it proves the secret', async () => {
  const { code, received, seen } = await helloTo({ shardName: 'w-0-7' });
  expect(code).toBe(1008);
  expect(received).toEqual(['linkChallenge']);
  expect(seen).toEqual([]);
});

test('a hello of another protocol version is refused', async () => {
  const { code, received, seen } = await helloTo({ protocolVersion: PROTOCOL_VERSION + 1 });
  expect(code).toBe(1008);
  expect(received).toEqual(['linkChallenge']);
  expect(seen).toEqual([]);
});

test('a dial that keeps failing is tried again after 50 ms, doubling each time, and never waits more than the 2 s cap', async () => {
  // At the neighbour's address, something that drops every connection at its upgrade: each dial fails.
  const e = await endpoint();
  const dials: number[] = [];
  e.server.on('upgrade', (_req, socket) => {
    dials.push(performance.now());
    socket.destroy();
  });
  const nb: Neighbour = { shard: 1, name: 'w-0-1', region, address: `127.0.0.1:${e.port}` };
  const a = new ShardLinks(
    { world: 'w', instance: 0, heartbeatMs: 50, timeoutMs: 300, log, name: 'w-0-0', secret: 's'.repeat(32), neighbours: [nb] },
    recorder().events,
  );
  open.push({ links: a, server: e.server });
  // The jitter at its top (a factor just under 1): each wait is the whole backoff, 50 ms · 2^attempt, capped.
  vi.spyOn(Math, 'random').mockReturnValue(1 - 2 ** -24);
  try {
    a.start();
    await until('nine dials', () => dials.length >= 9, 15_000);
  } finally {
    vi.restoreAllMocks();
  }
  const backoff = [50, 100, 200, 400, 800, 1600, 2000, 2000];
  const waits = dials.slice(1, 9).map((at, i) => at - (dials[i] as number));
  for (const [i, wait] of waits.entries()) {
    const want = backoff[i] as number;
    // A timer may fire a millisecond early; the dial itself and a busy machine add a little.
    expect(wait, `wait ${i + 1} (backoff ${want} ms)`).toBeGreaterThanOrEqual(want - 5);
    expect(wait, `wait ${i + 1} (backoff ${want} ms)`).toBeLessThan(want + 150);
  }
}, 20_000);
