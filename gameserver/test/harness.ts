import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger, signJoinToken } from '@aethex/runtime';
import { RealtimeClient, type RealtimeOptions } from '@aethex/sdk';
import { WebSocket } from 'ws';
import { loadConfig } from '../src/config.js';
import { type RunningShard, startShard } from '../src/shard.js';

/** A real shard on loopback ports with a fresh signing key, and helpers to join it. */
export interface TestShard {
  shard: RunningShard;
  token(playerId: string, overrides?: { shard?: string; ttlSeconds?: number }): Promise<string>;
  /**
   * A client joined as `playerId` (closed by `stop`). `options` override the client's (another
   * `url`, `rejoin`, …); `beforeConnect` sees it before it connects (listeners for what the join
   * itself brings).
   */
  client(playerId: string, options?: Partial<RealtimeOptions>, beforeConnect?: (client: RealtimeClient) => void): Promise<RealtimeClient>;
  stop(): Promise<void>;
}

export async function startTestShard(
  env: Record<string, string> = {},
  keys = generateKeyPairSync('ed25519'),
  onTick?: (ms: number, cpuMs: number) => void,
): Promise<TestShard> {
  const settings = loadConfig({
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_OPS_BIND_ADDR: '127.0.0.1:0',
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_SHARD_WORLD: 'test',
    AETHEX_GAMESERVER_SHARD_NAME: 'test-0-0',
    AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
    AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: mkdtempSync(join(tmpdir(), 'aethex-gs-')),
    ...env,
  });
  const shard = await startShard(settings, { log: createLogger('gameserver-test', settings['log.level']), ...(onTick ? { onTick } : {}) });
  const token = (playerId: string, overrides: { shard?: string; ttlSeconds?: number } = {}) =>
    signJoinToken(
      keys.privateKey,
      { playerId, world: settings['shard.world'], instance: 0, shard: overrides.shard ?? settings['shard.name'] },
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
