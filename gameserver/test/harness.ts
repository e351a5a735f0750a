import { generateKeyPairSync, type KeyPairKeyObjectResult, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, freePortBlock, signJoinToken } from '@aethex/runtime';
import { RealtimeClient, type RealtimeOptions } from '@aethex/sdk';
import { WebSocket } from 'ws';
import { type GameserverSettings, loadConfig } from '../src/config.js';
import { type RunningShard, startShard } from '../src/shard.js';
import type { Neighbour } from '../src/sharding/map.js';

/** A real shard on loopback ports with a fresh signing key, and helpers to join it. */
export interface TestShard {
  shard: RunningShard;
  token(playerId: string, overrides?: { shard?: string; namespace?: string; ttlSeconds?: number }): Promise<string>;
  /**
   * A client joined as `playerId` (closed by `stop`). `options` override the client's (another
   * `url`, `rejoin`, …); `beforeConnect` sees it before it connects (listeners for what the join
   * itself brings).
   */
  client(playerId: string, options?: Partial<RealtimeOptions>, beforeConnect?: (client: RealtimeClient) => void): Promise<RealtimeClient>;
  stop(): Promise<void>;
}

/** A test shard's settings: loopback ports, world `test`, shard `test-0-0`, `keys`' public key, snapshots in a new directory; `env` over them. */
export function testShardSettings(env: Record<string, string>, keys: KeyPairKeyObjectResult): GameserverSettings {
  return loadConfig({
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_SHARD_WORLD: 'test',
    AETHEX_GAMESERVER_SHARD_NAME: 'test-0-0',
    AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-gs-')),
    ...env,
  });
}

export async function startTestShard(
  env: Record<string, string> = {},
  keys = generateKeyPairSync('ed25519'),
  onTick?: (ms: number, cpuMs: number) => void,
  onTickStart?: () => void,
): Promise<TestShard> {
  const settings = testShardSettings(env, keys);
  const shard = await startShard(settings, {
    log: createLogger('gameserver-test', settings['log.level']),
    ...(onTick ? { onTick } : {}),
    ...(onTickStart ? { onTickStart } : {}),
  });
  const token = (playerId: string, overrides: { shard?: string; namespace?: string; ttlSeconds?: number } = {}) =>
    signJoinToken(
      keys.privateKey,
      {
        playerId,
        namespace: overrides.namespace ?? settings['shard.namespace'],
        world: settings['shard.world'],
        instance: 0,
        shard: overrides.shard ?? settings['shard.name'],
      },
      { issuer: settings['auth.issuer'], audience: settings['auth.audience'], alg: 'EdDSA', ttlSeconds: overrides.ttlSeconds ?? 60 },
    );
  const clients: RealtimeClient[] = [];
  return {
    shard,
    token,
    async client(playerId, options = {}, beforeConnect) {
      const c = new RealtimeClient({
        url: shard.gatewayUrl,
        joinToken: await token(playerId),
        createSocket: (url) => new WebSocket(url) as never,
        ...options,
      });
      clients.push(c);
      beforeConnect?.(c);
      await c.connect();
      return c;
    },
    async stop() {
      for (const c of clients) c.close();
      await shard.drain();
    },
  };
}

/** Polls until `check` returns true or fails after `timeoutMs`, naming `what`. */
export async function until(what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A game module (`game.module`) with `source`, in a fresh directory. */
export function moduleFile(source: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'aethex-hooks-')), 'game.mjs');
  writeFileSync(file, source);
  return file;
}

/**
 * The shard map of two shards side by side — `duo-0-0` owns x 0..400, `duo-0-1` x 400..800, both
 * y 0..400 — on free loopback ports with one link secret, written to a file: `envOf(k)` is shard
 * k's part of the settings (world, name, map, secret, players' address).
 */
export async function duoMap(): Promise<{ envOf(k: number): Record<string, string> }> {
  const dir = mkdtempSync(join(tmpdir(), 'aethex-duo-'));
  const base = await freePortBlock(2);
  const map = {
    world: 'duo',
    bounds: { minX: 0, minY: 0, maxX: 800, maxY: 400 },
    columns: 2,
    rows: 1,
    instances: [
      {
        instance: 0,
        shards: [0, 1].map((k) => ({
          shard: k,
          name: `duo-0-${k}`,
          region: { minX: 400 * k, minY: 0, maxX: 400 * (k + 1), maxY: 400 },
          neighbours: [1 - k],
          address: `127.0.0.1:${base + k}`,
        })),
      },
    ],
  };
  const mapFile = join(dir, 'shard-map.json');
  writeFileSync(mapFile, JSON.stringify(map));
  const secret = randomBytes(32).toString('hex');
  return {
    envOf: (k) => ({
      AETHEX_GAMESERVER_SHARD_WORLD: 'duo',
      AETHEX_GAMESERVER_SHARD_NAME: `duo-0-${k}`,
      AETHEX_GAMESERVER_SHARD_MAP_FILE: mapFile,
      AETHEX_GAMESERVER_LINKS_SECRET: secret,
      AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: `127.0.0.1:${base + k}`,
    }),
  };
}

/**
 * A world of two shards (`duoMap`) with one signing key. `start(k)` starts shard k with `env`
 * (again, for a new process run: a new link epoch); the caller stops it.
 */
export async function duoWorld(env: Record<string, string> = {}): Promise<{ start(k: number): Promise<TestShard> }> {
  const { envOf } = await duoMap();
  const keys = generateKeyPairSync('ed25519');
  return { start: (k) => startTestShard({ ...envOf(k), ...env }, keys) };
}

/**
 * A `duoWorld` with both shards started and their links up: `a` (x 0..400) and `b` (x 400..800).
 * `start(k)` starts shard k again (a new process run: a new link epoch). `started` is told of every
 * shard started, for the caller to stop.
 */
export async function linkedDuo(
  env: Record<string, string>,
  started: (s: TestShard) => void,
): Promise<{ a: TestShard; b: TestShard; start(k: number): Promise<TestShard> }> {
  const duo = await duoWorld(env);
  const start = async (k: number) => {
    const s = await duo.start(k);
    started(s);
    return s;
  };
  const a = await start(0);
  const b = await start(1);
  await linksUp(a, b);
  return { a, b, start };
}

/** A shard's one neighbour (in a `duoWorld`). */
export const neighbour = (t: TestShard) => t.shard.placement?.neighbours[0] as Neighbour;

/** Waits for the links between two neighbouring shards to be up both ways. */
export function linksUp(a: TestShard, b: TestShard): Promise<void> {
  return until(
    'the shard links to come up',
    () => (a.shard.links?.isUp(neighbour(a)) ?? false) && (b.shard.links?.isUp(neighbour(b)) ?? false),
    10_000,
  );
}

/** Headless Chromium at `executablePath` (the test environment's, `testEnv().chromium`), as the browser tests run it. */
export async function launchChromium(executablePath: string): Promise<import('playwright-core').Browser> {
  const { chromium } = await import('playwright-core');
  return chromium.launch({
    executablePath,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
