// Shard links against strangers and misbehaving neighbours, on real shards in this process with
// real sockets: a stranger on /shard-link (the public players' port), a process at a neighbour's
// address relaying challenges, a neighbour's ghost naming an id of the receiver's own range, and
// a player crossing between two neighbours of a third shard at a corner of the regions.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { aethex } from '@aethex/proto';
import { freePortBlock } from '@aethex/runtime';
import type { RealtimeClient } from '@aethex/sdk';
import { afterEach, expect, test, vi } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import { idRange, type Neighbour } from '../src/sharding/map.js';
import { MODE_GHOST } from '../src/sim/world.js';
import { duoWorld, linksUp, neighbour, startTestShard, type TestShard, until } from './harness.js';

const { ShardMessage } = aethex.v1;

let shards: TestShard[] = [];
let clients: RealtimeClient[] = [];
const cleanups: (() => void)[] = [];
afterEach(async () => {
  vi.restoreAllMocks();
  for (const c of cleanups.splice(0)) c();
  for (const c of clients) c.close();
  await Promise.all(shards.map((s) => s.stop()));
  shards = [];
  clients = [];
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A world of `k` shards, every one a neighbour of every other: `regions[i]` is shard i's region,
 * on free loopback ports with one signing key and one link secret. `start(i)` starts shard i.
 */
async function meshWorld(regions: { minX: number; minY: number; maxX: number; maxY: number }[], env: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-mesh-'));
  const base = await freePortBlock(regions.length);
  const names = regions.map((_, i) => `mesh-0-${i}`);
  const bounds = {
    minX: Math.min(...regions.map((r) => r.minX)),
    minY: Math.min(...regions.map((r) => r.minY)),
    maxX: Math.max(...regions.map((r) => r.maxX)),
    maxY: Math.max(...regions.map((r) => r.maxY)),
  };
  const shardsOfMap = regions.map((region, i) => ({
    shard: i,
    name: names[i],
    region,
    neighbours: regions.map((_, j) => j).filter((j) => j !== i),
    address: `127.0.0.1:${base + i}`,
  }));
  const mapFile = join(dir, 'shard-map.json');
  writeFileSync(mapFile, JSON.stringify({ world: 'mesh', bounds, instances: [{ instance: 0, shards: shardsOfMap }] }));
  const keys = generateKeyPairSync('ed25519');
  const secret = randomBytes(32).toString('hex');
  return {
    names,
    port: (i: number) => base + i,
    start: (i: number) =>
      startTestShard(
        {
          AETHEX_GAMESERVER_SHARD_WORLD: 'mesh',
          AETHEX_GAMESERVER_SHARD_NAME: names[i] as string,
          AETHEX_GAMESERVER_SHARD_MAP_FILE: mapFile,
          AETHEX_GAMESERVER_LINKS_SECRET: secret,
          AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: `127.0.0.1:${base + i}`,
          AETHEX_GAMESERVER_LOG_LEVEL: 'error',
          ...env,
        },
        keys,
      ),
  };
}

/** Shard `t`'s link gauge for `name` in `direction` (1 while up). */
const linkGauge = async (t: TestShard, name: string, direction: 'in' | 'out') =>
  Number(
    (await t.shard.metrics.registry.getSingleMetricAsString('aether_shard_links_up'))
      .split('\n')
      .find((l) => l.includes(`neighbour="${name}"`) && l.includes(`direction="${direction}"`))
      ?.split(' ')
      .at(-1) ?? Number.NaN,
  );

/** From now on, the size of every shard-link message decoded in this process (the spy goes in afterEach). */
function decodedSizes(): number[] {
  const decoded: number[] = [];
  const decode = ShardMessage.decode.bind(ShardMessage);
  vi.spyOn(ShardMessage, 'decode').mockImplementation((data, length) => {
    decoded.push((data as Uint8Array).length);
    return decode(data, length);
  });
  return decoded;
}

test('a stranger’s large message before any hello is refused at its frame header, before its bytes arrive; the neighbours’ links stay up', async () => {
  const { start } = await duoWorld({ AETHEX_GAMESERVER_LOG_LEVEL: 'error' });
  shards = [await start(0), await start(1)];
  const [a, b] = shards as [TestShard, TestShard];
  await linksUp(a, b);
  // Every message the shard decodes, by size: a stranger's must not be among them.
  const decoded = decodedSizes();
  // A binary frame announcing 4 MiB (as a GhostUpdate of a crowded border would be), and only
  // its first 16 bytes: refused on its header, nothing of it held for the rest to come.
  const header = Buffer.alloc(14);
  header[0] = 0x82;
  header[1] = 0x80 | 127;
  header.writeBigUInt64BE(4n << 20n, 2);
  const stranger = new WebSocket(`${a.shard.gatewayUrl.replace(/\/$/, '')}/shard-link`);
  stranger.on('error', () => undefined);
  stranger.once('message', () =>
    (stranger as unknown as { _socket: { write(b: Buffer): void } })._socket.write(Buffer.concat([header, randomBytes(16)])),
  );
  const [code] = await new Promise<[number, string]>((resolve) => stranger.on('close', (c, r) => resolve([c, r.toString()])));
  expect(code).toBe(1009);
  expect(decoded.filter((n) => n > 1024)).toEqual([]);
  expect(a.shard.links?.isUp(neighbour(a))).toBe(true);
});

test('a stranger’s sockets on /shard-link count against its address until it proves the secret; a neighbour’s link stops counting once it has', async () => {
  const { start } = await duoWorld({
    AETHEX_GAMESERVER_LOG_LEVEL: 'error',
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: '4',
    AETHEX_GAMESERVER_GATEWAY_CONNECTIONS_PER_ADDRESS_PER_SECOND: '1000',
  });
  shards = [await start(0), await start(1)];
  const [a, b] = shards as [TestShard, TestShard];
  await linksUp(a, b);
  // Eight sockets that never say hello (each could be made to hold a 16 MiB message): only the
  // address's four get a WebSocket; the neighbour's link, proven, is not one of the four.
  const url = `${a.shard.gatewayUrl.replace(/\/$/, '')}/shard-link`;
  const outcomes = await Promise.all(
    Array.from({ length: 8 }, () => {
      const ws = new WebSocket(url);
      cleanups.push(() => ws.terminate());
      ws.on('error', () => undefined);
      return new Promise<'open' | 'refused'>((resolve) => {
        ws.once('open', () => resolve('open'));
        ws.once('close', () => resolve('refused'));
      });
    }),
  );
  expect(outcomes.filter((o) => o === 'open').length).toBe(4);
  expect(a.shard.links?.isUp(neighbour(a))).toBe(true);
  expect(b.shard.links?.isUp(neighbour(b))).toBe(true);
});

test('a stranger refused on /shard-link is told 1008 and dropped at once: nothing more it sends is decoded', async () => {
  const { start } = await duoWorld({ AETHEX_GAMESERVER_LOG_LEVEL: 'error' });
  shards = [await start(0), await start(1)];
  const [a, b] = shards as [TestShard, TestShard];
  await linksUp(a, b);
  const decoded = decodedSizes();
  // Over plain TCP, as an attacker would: the upgrade, a first message that is no hello, then
  // 1,000-byte frames as fast as it can, never answering the shard's close frame.
  const url = new URL(a.shard.gatewayUrl);
  const socket = connect({ host: url.hostname, port: Number(url.port) });
  cleanups.push(() => socket.destroy());
  socket.on('error', () => undefined);
  const opened = performance.now();
  let received = Buffer.alloc(0);
  let flood: ReturnType<typeof setInterval> | undefined;
  cleanups.push(() => clearInterval(flood));
  socket.on('data', (d: Buffer) => {
    received = Buffer.concat([received, d]);
    if (flood === undefined && received.includes('\r\n\r\n')) {
      socket.write(maskedFrame(ShardMessage.encode({ linkWelcome: { shardName: 'nobody' } }).finish()));
      const junk = maskedFrame(ShardMessage.encode({ linkChallenge: { nonce: randomBytes(990) } }).finish());
      flood = setInterval(() => {
        for (let i = 0; i < 50; i++) socket.write(junk);
      }, 5);
    }
  });
  socket.write(
    `GET /shard-link HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  const ms = await new Promise<number>((resolve) => socket.on('close', () => resolve(performance.now() - opened)));
  clearInterval(flood);
  // The close frame (0x88) with 1008 came, then the socket went; ws would have waited 30 s for
  // the answering close, decoding whatever came meanwhile.
  expect(closeCode(received.subarray(received.indexOf('\r\n\r\n') + 4))).toBe(1008);
  expect(ms).toBeLessThan(1500);
  expect(decoded.filter((n) => n > 900)).toEqual([]);
  expect(a.shard.links?.isUp(neighbour(a))).toBe(true);
});

/**
 * The code of the close frame among the frames a server sent (`frames`: unmasked, as servers
 * send them), read frame by frame: a 0x88 byte inside another frame's payload (the challenge's
 * random nonce) is not one. Undefined when there is none.
 */
function closeCode(frames: Buffer): number | undefined {
  for (let at = 0; at + 2 <= frames.length; ) {
    const opcode = (frames[at] as number) & 0x0f;
    let length = (frames[at + 1] as number) & 0x7f;
    let head = 2;
    if (length === 126) {
      length = frames.readUInt16BE(at + 2);
      head = 4;
    } else if (length === 127) {
      length = Number(frames.readBigUInt64BE(at + 2));
      head = 10;
    }
    if (opcode === 0x8) return length >= 2 ? frames.readUInt16BE(at + head) : undefined;
    at += head + length;
  }
  return undefined;
}

/** `payload` as one binary frame a client sends (masked, with a zero mask: the bytes as they are). */
function maskedFrame(payload: Uint8Array): Buffer {
  const head =
    payload.length < 126
      ? Buffer.from([0x82, 0x80 | payload.length])
      : Buffer.from([0x82, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
}

/** Shards 0 and 1 of a three-shard world, and a stranger at shard 2's address (shard 2 is not running). */
async function strangerAtNeighbour() {
  const world = await meshWorld([
    { minX: 0, minY: 0, maxX: 400, maxY: 400 },
    { minX: 400, minY: 0, maxX: 800, maxY: 400 },
    { minX: 800, minY: 0, maxX: 1200, maxY: 400 },
  ]);
  const [n0, n1, n2] = world.names as [string, string, string];
  // The stranger listens at shard 2's address (shard 2 is not running); it knows the map, not the secret.
  let relayNonce: Uint8Array | undefined;
  let nextHello: ((h: aethex.v1.ILinkHello) => void) | undefined;
  const fromShard0: string[] = [];
  const fake = new WebSocketServer({ host: '127.0.0.1', port: world.port(2) });
  cleanups.push(() => fake.close());
  fake.on('connection', (ws) => {
    ws.on('error', () => undefined);
    ws.on('message', (data: Buffer) => {
      const msg = ShardMessage.decode(data);
      fromShard0.push(msg.body ?? 'none');
      if (msg.body !== 'linkHello') return;
      if (nextHello) nextHello(msg.linkHello as aethex.v1.ILinkHello);
      // As shard 2 would answer, save for the proof it cannot make.
      else
        ws.send(
          ShardMessage.encode({
            linkWelcome: { shardName: n2, protocolVersion: 1, epoch: 7, lateChanges: true, auth: randomBytes(32) },
          }).finish(),
        );
    });
    ws.send(ShardMessage.encode({ linkChallenge: { nonce: relayNonce ?? randomBytes(32) } }).finish());
  });
  shards = [await world.start(0), await world.start(1)];
  const [s0, s1] = shards as [TestShard, TestShard];
  const to = (t: TestShard, name: string) => t.shard.placement?.neighbours.find((n) => n.name === name) as Neighbour;
  await until('the links between shards 0 and 1', () => !!(s0.shard.links?.isUp(to(s0, n1)) && s1.shard.links?.isUp(to(s1, n0))), 10_000);

  return {
    world,
    n0,
    n1,
    n2,
    s0,
    s1,
    to,
    fake,
    fromShard0,
    relay: (nonce: Uint8Array) => {
      relayNonce = nonce;
      return new Promise<aethex.v1.ILinkHello>((r) => {
        nextHello = r;
        for (const c of fake.clients) c.terminate();
      });
    },
  };
}

test('a process at a neighbour’s address that answers a dial with a large frame is refused at its header, before its bytes arrive', async () => {
  const world = await meshWorld([
    { minX: 0, minY: 0, maxX: 400, maxY: 400 },
    { minX: 400, minY: 0, maxX: 800, maxY: 400 },
  ]);
  // At shard 1's address (shard 1 is not running): a frame announcing 4 MiB, and only 16 bytes of it.
  const closes: number[] = [];
  const fake = new WebSocketServer({ host: '127.0.0.1', port: world.port(1) });
  cleanups.push(() => fake.close());
  fake.on('connection', (ws) => {
    ws.on('error', () => undefined);
    ws.on('close', (code) => closes.push(code));
    const header = Buffer.alloc(10);
    header[0] = 0x82;
    header[1] = 127;
    header.writeBigUInt64BE(4n << 20n, 2);
    (ws as unknown as { _socket: { write(b: Buffer): void } })._socket.write(Buffer.concat([header, randomBytes(16)]));
  });
  shards = [await world.start(0)];
  await until('the dialling shard to refuse the frame', () => closes.length > 0, 5000);
  expect(closes[0]).toBe(1009);
});

test('a dialling shard does not take a process at a neighbour’s address for that neighbour without its proof, and sends it nothing', async () => {
  const { n2, s0, fromShard0 } = await strangerAtNeighbour();
  // Mutual: shard 0 does not take the stranger (no proof of the secret) for shard 2, and sends it nothing but its hello.
  await sleep(800);
  expect(await linkGauge(s0, n2, 'out')).toBe(0);
  expect(new Set(fromShard0)).toEqual(new Set(['linkHello']));
});

test('a process at a neighbour’s address that sends anything but its challenge and welcome is dropped, not kept as a live link', async () => {
  const world = await meshWorld([
    { minX: 0, minY: 0, maxX: 400, maxY: 400 },
    { minX: 400, minY: 0, maxX: 800, maxY: 400 },
  ]);
  // At shard 1's address (not running): a challenge, then a ghost update every 20 ms, never a welcome.
  const connections: { opened: number; closed?: number }[] = [];
  const fake = new WebSocketServer({ host: '127.0.0.1', port: world.port(1) });
  cleanups.push(() => fake.close());
  fake.on('connection', (ws) => {
    const c: { opened: number; closed?: number } = { opened: performance.now() };
    connections.push(c);
    ws.on('error', () => undefined);
    ws.on('close', () => (c.closed = performance.now()));
    ws.send(ShardMessage.encode({ linkChallenge: { nonce: randomBytes(32) } }).finish());
    const chatter = setInterval(() => ws.send(ShardMessage.encode({ ghostUpdate: {} }).finish()), 20);
    ws.on('close', () => clearInterval(chatter));
  });
  shards = [await world.start(0)];
  await until('the dialling shard to drop the chatter', () => connections[0]?.closed !== undefined, 5000);
  const first = connections[0] as { opened: number; closed: number };
  // Dropped at the first message that is neither (well before the link timeout), and dialled again later.
  expect(first.closed - first.opened).toBeLessThan(500);
});

test('a process at a neighbour’s address cannot relay another shard’s challenge to log in as the shard that dialled it', async () => {
  const { world, n0, s1, to, relay } = await strangerAtNeighbour();
  // The relay: the stranger dials shard 1 as shard 0 and hands shard 1's challenge to shard 0's next dial of "shard 2".
  const attacker = new WebSocket(`ws://127.0.0.1:${world.port(1)}/shard-link`);
  attacker.on('error', () => undefined);
  const outcome = await new Promise<string>((resolve) => {
    attacker.on('close', (code) => resolve(`closed ${code}`));
    attacker.on('message', async (data: Buffer) => {
      const msg = ShardMessage.decode(data);
      if (msg.body === 'linkChallenge') {
        attacker.send(ShardMessage.encode({ linkHello: await relay(msg.linkChallenge?.nonce as Uint8Array) }).finish());
      } else if (msg.body === 'linkWelcome') {
        // Logged in as shard 0 (until the real shard 0 takes its link back).
        resolve(`welcomed as ${n0}`);
      }
    });
  });
  attacker.terminate();
  expect(outcome).toBe('closed 1008');
  // Shard 0's real link to shard 1 was not replaced by the stranger's.
  expect(s1.shard.links?.isUp(to(s1, n0))).toBe(true);
});

test('a ghost or an offer naming an id of the receiver’s own range far past any it handed out is refused, joins go on; one an earlier run may have handed out moves the counter past it', async () => {
  const { start } = await duoWorld({ AETHEX_GAMESERVER_LOG_LEVEL: 'error' });
  shards = [await start(0), await start(1)];
  const [a, b] = shards as [TestShard, TestShard];
  await linksUp(a, b);
  const w = a.shard.engine.world;
  const before = w.nextEntityId;
  const { limit } = idRange(0);
  // As if shard b had sent them on its link.
  const fromB = (msg: aethex.v1.IShardMessage) =>
    a.shard.sharding?.onMessage(neighbour(a), ShardMessage.decode(ShardMessage.encode(msg).finish()));
  fromB({ ghostUpdate: { tick: 1, upserts: [{ entityId: limit - 1, position: { x: 401, y: 10 }, velocity: { x: 0, y: 0 } }] } });
  fromB({ ghostUpdate: { tick: 2, removed: [limit - 1] } });
  expect(w.indexOf(limit - 1)).toBe(-1);
  expect(w.nextEntityId).toBe(before);
  // A "handoff" of such an id is refused too: b's side of the link shows the reject.
  const rejects: string[] = [];
  const onB = b.shard.sharding as NonNullable<typeof b.shard.sharding>;
  const orig = onB.onMessage.bind(onB);
  onB.onMessage = (from, msg) => {
    if (msg.body === 'handoffReject') rejects.push(msg.handoffReject?.message ?? '');
    orig(from, msg);
  };
  fromB({
    handoffOffer: { offerId: 1, entityId: limit - 2, playerId: 'p', position: { x: 390, y: 10 }, velocity: { x: 0, y: 0 }, kind: 1 },
  });
  await until('the reject', () => rejects.length > 0);
  expect(rejects[0]).toMatch(/far past any it handed out/);
  // An id a run of this shard before a restart may have handed out (a crash before its first
  // snapshot loses the counter): the ghost is shown, and the counter moves past it.
  fromB({ ghostUpdate: { tick: 3, upserts: [{ entityId: before + 10, position: { x: 401, y: 10 }, velocity: { x: 0, y: 0 } }] } });
  expect(w.indexOf(before + 10)).toBeGreaterThanOrEqual(0);
  expect(w.nextEntityId).toBe(before + 11);
  const c = await a.client('after');
  clients.push(c);
  expect(c.welcome?.entityId).toBe(before + 11);
});

/**
 * Four shards of 400 × 400 meeting at (400, 400), every one linked to every other, and a walker
 * joined on shard 1 (x 400..800, y 0..400) who rejoins wherever its entity goes. `prepare` runs
 * once the links are up, before the walker joins. `walkTo` moves it there at full speed;
 * `ghostOn0` is shard 0's ghost of it (its slot), or undefined.
 */
async function corner(prepare: (s: TestShard[]) => void = () => undefined) {
  const world = await meshWorld(
    [0, 1, 2, 3].map((k) => ({
      minX: 400 * (k % 2),
      minY: 400 * Math.floor(k / 2),
      maxX: 400 * (k % 2) + 400,
      maxY: 400 * Math.floor(k / 2) + 400,
    })),
    { AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '100' },
  );
  for (const k of [0, 1, 2, 3]) shards.push(await world.start(k));
  const [s0, s1, , s3] = shards as [TestShard, TestShard, TestShard, TestShard];
  await until('every link', () => shards.every((s) => s.shard.placement?.neighbours.every((n) => s.shard.links?.isUp(n))), 15_000);
  prepare(shards);
  const c = await s1.client('walker', { rejoin: { joinToken: (sh) => s1.token('walker', { shard: sh.name }) } });
  clients.push(c);
  const id = c.welcome?.entityId as number;
  const walkTo = async (x: number, y: number) => {
    for (let i = 0; i < 400; i++) {
      const d = Math.hypot(x - c.predicted.x, y - c.predicted.y);
      if (d < 0.5) return;
      const s = Math.min(4, d);
      c.move(((x - c.predicted.x) / d) * s, ((y - c.predicted.y) / d) * s);
      await sleep(25);
    }
  };
  const ghostOn0 = () => {
    const w = s0.shard.engine.world;
    const i = w.indexOf(id);
    return i >= 0 && w.mode[i] === MODE_GHOST ? i : undefined;
  };
  return { s0, s1, s3, c, id, walkTo, ghostOn0 };
}

test('at a corner, a player who stops right after crossing between two neighbours stays visible to the third', async () => {
  const { s1, s3, c, id, walkTo, ghostOn0 } = await corner();
  await walkTo(450, 380);
  await until('the walker as a ghost on shard 0', () => ghostOn0() !== undefined);
  // Back and forth over the border of shards 1 and 3, 50 units from shard 0, standing after each crossing.
  const missing: number[] = [];
  for (let k = 0; k < 4; k++) {
    await walkTo(450, k % 2 === 0 ? 404.6 : 395.4);
    await until('the handoff', () => [...(k % 2 === 0 ? s3 : s1).shard.engine.ownedPlayers()].some((p) => p.entityId === id), 5000);
    await until('every input acknowledged', () => c.unacknowledged === 0, 5000);
    await sleep(400);
    if (ghostOn0() === undefined) missing.push(k + 1);
  }
  expect(missing).toEqual([]);
});

test('at a corner, the old owner’s updates arriving late over a slow link do not take the ghost from the new owner', async () => {
  // Everything shard 1 sends shard 0 arrives 300 ms late, in order: its last updates of the walker
  // before a handoff to shard 3 come after shard 3's first.
  const { s0, s1, s3, c, id, walkTo, ghostOn0 } = await corner(([s0]) => {
    const sharding0 = (s0 as TestShard).shard.sharding as NonNullable<TestShard['shard']['sharding']>;
    const deliver = sharding0.onMessage.bind(sharding0);
    vi.spyOn(sharding0, 'onMessage').mockImplementation((from, msg) => {
      if (from.shard === 1) setTimeout(() => deliver(from, msg), 300);
      else deliver(from, msg);
    });
  });
  const ghostYOn0 = () => {
    const i = ghostOn0();
    return i === undefined ? undefined : (s0.shard.engine.world.y[i] as number);
  };
  await walkTo(450, 380);
  await until('the walker as a ghost on shard 0', () => ghostYOn0() !== undefined);
  // Back and forth over the border of shards 1 and 3, standing after each crossing: shard 0 must
  // show it where its owner has it, once the slow link's messages are all in.
  const wrong: string[] = [];
  for (let k = 0; k < 4; k++) {
    await walkTo(450, k % 2 === 0 ? 404.6 : 395.4);
    const owner = k % 2 === 0 ? s3 : s1;
    await until('the handoff', () => [...owner.shard.engine.ownedPlayers()].some((p) => p.entityId === id), 5000);
    await until('every input acknowledged', () => c.unacknowledged === 0, 5000);
    await sleep(700);
    const w = owner.shard.engine.world;
    const y = w.y[w.indexOf(id)] as number;
    const seen = ghostYOn0();
    if (seen === undefined || Math.abs(seen - y) > 0.2) wrong.push(`crossing ${k + 1}: owner has y ${y}, shard 0 ${seen}`);
  }
  expect(wrong).toEqual([]);
});
