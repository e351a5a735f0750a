import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePortBlock, LOOPBACK_SHARD_ENV, type Rect, regions } from '@aethex/runtime';

const MAIN = join(dirname(fileURLToPath(import.meta.url)), '..', 'main.ts');

/** The last `bytes` bytes of a file, as text. */
function fileTail(file: string, bytes: number): string {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(bytes, size));
    readSync(fd, buf, 0, buf.length, size - buf.length);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export interface LocalWorldOptions {
  /** World name (a DNS label); shards are `<name>-0-<index>`. */
  name?: string;
  columns: number;
  rows: number;
  bounds?: Rect;
  /** Where the shard map and each shard's snapshots go. */
  directory: string;
  /** PEM (SPKI) key that verifies join tokens. */
  publicKeyPem: string;
  /** First port: shard k listens on base+2k (players and links) and base+2k+1 (ops). 0: a free block. */
  basePort?: number;
  /** Extra AETHEX_GAMESERVER_* settings for every shard. */
  env?: Record<string, string>;
  /**
   * Where each shard's output goes (default: inherited). With 'ignore', the end of its stderr still
   * goes into the error if it exits while starting. With `{ logDirectory }`, each run of a shard
   * appends its stdout and stderr to `<logDirectory>/<shard name>.log` (whose end goes into that error).
   */
  stdio?: 'inherit' | 'ignore' | { logDirectory: string };
  /**
   * The address the shard map gives shard `index` — where its neighbours dial their links to it and,
   * without `handoff.redirect_url`, where players are redirected to it — from its players'
   * address (the default: that address). Something the caller runs between the shards (a proxy
   * that cuts links) goes here.
   */
  mapAddress?: (index: number, address: string) => string;
}

export interface LocalShard {
  index: number;
  name: string;
  region: Rect;
  /** host:port of the players' endpoint (also where links connect, unless `mapAddress` said otherwise). */
  address: string;
  url: string;
  opsUrl: string;
  process: ChildProcess | undefined;
  /**
   * Date.now() when the last `start()` first got an answer from the ops endpoint (the shard has
   * restored and listens; it may not be ready yet), to the 100 ms it polls at.
   */
  startedAt: number | undefined;
  /** Starts the shard process (again, after a kill); resolves when it is ready. */
  start(): Promise<void>;
  /** Sends a signal; resolves when the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface LocalWorld {
  name: string;
  bounds: Rect;
  shards: LocalShard[];
  mapFile: string;
  stop(): Promise<void>;
}

/**
 * Starts every shard of one world as its own process on loopback, with a shard map in the same
 * format the operator writes and a fresh link secret: what `npm run world` runs, and what the
 * sharding tests and the handoff benchmark stand on.
 */
export async function startLocalWorld(o: LocalWorldOptions): Promise<LocalWorld> {
  const name = o.name ?? 'world';
  if (!Number.isInteger(o.columns) || !Number.isInteger(o.rows) || o.columns < 1 || o.rows < 1 || o.columns * o.rows > 256) {
    throw new RangeError('columns and rows must be positive integers with columns × rows ≤ 256');
  }
  const bounds = o.bounds ?? { minX: 0, minY: 0, maxX: 500 * o.columns, maxY: 500 * o.rows };
  const grid = regions(bounds, o.columns, o.rows);
  const base = o.basePort || (await freePortBlock(grid.length * 2));
  const ports = Array.from({ length: grid.length * 2 }, (_, k) => base + k);
  mkdirSync(o.directory, { recursive: true });
  const mapFile = join(o.directory, 'shard-map.json');
  const shardName = (k: number) => `${name}-0-${k}`;
  const map = {
    world: name,
    bounds,
    columns: o.columns,
    rows: o.rows,
    instances: [
      {
        instance: 0,
        shards: grid.map((g, k) => ({
          shard: k,
          name: shardName(k),
          region: g.bounds,
          neighbours: g.neighbours,
          address: o.mapAddress ? o.mapAddress(k, `127.0.0.1:${ports[2 * k]}`) : `127.0.0.1:${ports[2 * k]}`,
        })),
      },
    ],
  };
  writeFileSync(mapFile, JSON.stringify(map, null, 2));
  const secret = randomBytes(32).toString('base64url');

  const shards: LocalShard[] = grid.map((g, k) => {
    const address = `127.0.0.1:${ports[2 * k]}`;
    const opsUrl = `http://127.0.0.1:${ports[2 * k + 1]}`;
    let exited: Promise<void> = Promise.resolve();
    const shard: LocalShard = {
      index: k,
      name: shardName(k),
      region: g.bounds,
      address,
      url: `ws://${address}`,
      opsUrl,
      process: undefined,
      startedAt: undefined,
      async start() {
        shard.startedAt = undefined;
        const env = {
          ...LOOPBACK_SHARD_ENV,
          ...process.env,
          AETHEX_GAMESERVER_SHARD_WORLD: name,
          AETHEX_GAMESERVER_SHARD_INSTANCE: '0',
          AETHEX_GAMESERVER_SHARD_NAME: shard.name,
          AETHEX_GAMESERVER_SHARD_MAP_FILE: mapFile,
          AETHEX_GAMESERVER_LINKS_SECRET: secret,
          AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: o.publicKeyPem,
          AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: address,
          AETHEX_GAMESERVER_OPS_BIND_ADDR: `127.0.0.1:${ports[2 * k + 1]}`,
          AETHEX_GAMESERVER_PERSISTENCE_DIRECTORY: join(o.directory, shard.name, 'snapshots'),
          ...o.env,
        };
        const logFile = typeof o.stdio === 'object' ? join(o.stdio.logDirectory, `${shard.name}.log`) : undefined;
        const logFd = logFile ? openSync(logFile, 'a') : undefined;
        const stdio = logFd ?? (o.stdio === 'ignore' ? 'ignore' : 'inherit');
        let child: ChildProcess;
        try {
          child = spawn(process.execPath, ['--conditions=aethex-source', '--import', 'tsx', MAIN], {
            env,
            stdio: ['ignore', stdio, stdio === 'ignore' ? 'pipe' : stdio],
          });
        } finally {
          // The child has its own descriptor of the file.
          if (logFd !== undefined) closeSync(logFd);
        }
        shard.process = child;
        let stderrTail = '';
        child.stderr?.on('data', (chunk: Buffer) => {
          stderrTail = (stderrTail + chunk.toString()).slice(-2000);
        });
        const tail = () => (logFile ? fileTail(logFile, 2000) : stderrTail);
        exited = new Promise((resolve) => child.once('exit', () => resolve()));
        const deadline = Date.now() + 30_000;
        for (;;) {
          if (child.exitCode !== null || child.signalCode !== null) {
            const how = child.signalCode ?? child.exitCode;
            throw new Error(`shard ${shard.name} exited with ${how} while starting${tail() ? `: ${tail().trim()}` : ''}`);
          }
          const ok = await fetch(`${opsUrl}/readyz`).then(
            (r) => {
              shard.startedAt ??= Date.now();
              return r.ok;
            },
            () => false,
          );
          if (ok) return;
          if (Date.now() > deadline) throw new Error(`shard ${shard.name} not ready within 30 s`);
          await new Promise((r) => setTimeout(r, 100));
        }
      },
      async kill(signal = 'SIGTERM') {
        const child = shard.process;
        if (child && child.exitCode === null && child.signalCode === null) child.kill(signal);
        await exited;
      },
    };
    return shard;
  });
  try {
    await Promise.all(shards.map((s) => s.start()));
  } catch (err) {
    await Promise.all(shards.map((s) => s.kill('SIGKILL')));
    throw err;
  }
  return {
    name,
    bounds,
    shards,
    mapFile,
    async stop() {
      await Promise.all(shards.map((s) => s.kill('SIGTERM')));
    },
  };
}
