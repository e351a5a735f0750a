#!/usr/bin/env node
// npm run world -- --columns 2 --rows 2 [--size 500] [--npcs 50] [--base-port 7800] [--bots 0] [--directory .aethex/world]
// Runs every shard of one world on loopback, linked to its neighbours, and prints where they are.
import { type ChildProcess, spawn } from 'node:child_process';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCli } from '@aethex/runtime';
import { startLocalWorld } from './local-world.js';

const USAGE =
  'usage: npm run world -- --columns <n> --rows <n> [--size <units per region>] [--npcs <per shard>] [--bots <total>] [--base-port <port>] [--directory <dir>] [--name <world>]';

const cli = parseCli('world', USAGE, {
  columns: { type: 'string', default: '2' },
  rows: { type: 'string', default: '2' },
  size: { type: 'string', default: '500' },
  npcs: { type: 'string', default: '50' },
  bots: { type: 'string', default: '0' },
  'base-port': { type: 'string', default: '7800' },
  directory: { type: 'string', default: '.aethex/world' },
  name: { type: 'string', default: 'world' },
});
const { values, fail } = cli;
const flag = cli.int;
const columns = flag('columns', 1, 16);
const rows = flag('rows', 1, 16);
const size = flag('size', 50, 100_000);
const npcs = flag('npcs', 0, 100_000);
const bots = flag('bots', 0, 100_000);
const basePort = flag('base-port', 1024, 65_000);
const name = values.name as string;
if (!/^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$/.test(name)) fail('--name must be a DNS label of at most 42 characters');
const directory = resolve(values.directory as string, name);
mkdirSync(directory, { recursive: true });

// A development signing key: the shards trust its public half; bots sign their join tokens with it.
const keyFile = join(directory, 'join-signing-key.pem');
if (!existsSync(keyFile)) {
  writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
}
const publicKeyPem = createPublicKey(readFileSync(keyFile, 'utf8')).export({ type: 'spki', format: 'pem' }).toString();

const world = await startLocalWorld({
  name,
  columns,
  rows,
  bounds: { minX: 0, minY: 0, maxX: size * columns, maxY: size * rows },
  directory,
  publicKeyPem,
  basePort,
  env: {
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: String(npcs),
    // NPCs keep their slots: room for them and the default 2,000 players (engine.npc_count's rule).
    AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: String(Math.max(10_000, npcs + 2000)),
    AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
  },
});

console.log(`world ${name}: ${columns} × ${rows} shards, bounds 0,0 → ${size * columns},${size * rows}; shard map ${world.mapFile}`);
console.table(
  world.shards.map((s) => ({
    shard: s.name,
    region: `${s.region.minX},${s.region.minY} → ${s.region.maxX},${s.region.maxY}`,
    players: s.url,
    viewer: `${s.opsUrl}/viewer`,
  })),
);
console.log(
  `all shards in one view: ${world.shards[0]?.opsUrl}/viewer?shards=${encodeURIComponent(world.shards.map((s) => s.opsUrl).join(','))}`,
);
console.log(
  `bots: npm run bots -- --url ${world.shards[0]?.url} --world ${name} --shard ${world.shards[0]?.name} --private-key ${keyFile} --count 50`,
);

const children: ChildProcess[] = [];
if (bots > 0) {
  const script = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'sdk', 'src', 'bots.ts');
  world.shards.forEach((s, k) => {
    const count = Math.floor(bots / world.shards.length) + (k < bots % world.shards.length ? 1 : 0);
    if (count === 0) return;
    const args = ['--url', s.url, '--world', name, '--shard', s.name, '--private-key', keyFile, '--count', String(count)];
    children.push(
      spawn(
        process.execPath,
        ['--conditions=aethex-source', '--import', 'tsx', script, ...args, '--duration', '86400', '--prefix', `bot-${k}`],
        {
          stdio: 'inherit',
        },
      ),
    );
  });
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const c of children) c.kill('SIGTERM');
    world.stop().then(() => process.exit(0));
  });
}
