#!/usr/bin/env node
// `npm start`: a whole shard on this machine with no external service. Generates a development
// signing key (the shard trusts its public half), starts the shard server with wandering NPCs on
// its embedded defaults (snapshots in .aethex/snapshots, presence in process), and drives bots
// against it. Ctrl-C stops everything.
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    bots: { type: 'string', default: '50' },
    npcs: { type: 'string', default: '500' },
    port: { type: 'string', default: '7777' },
    'ops-port': { type: 'string', default: '7350' },
  },
  strict: true,
});
for (const [flag, v, max] of [
  ['--bots', values.bots, 5000],
  ['--npcs', values.npcs, 100000],
  ['--port', values.port, 65535],
  ['--ops-port', values['ops-port'], 65535],
] as const) {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > max) {
    console.error(`npm start: ${flag} must be an integer from 0 to ${max}, got '${v}'`);
    process.exit(2);
  }
}

const dir = mkdtempSync(join(tmpdir(), 'aethex-dev-'));
const keys = generateKeyPairSync('ed25519');
const privateKeyFile = join(dir, 'join-signing-key.pem');
writeFileSync(privateKeyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
const node = ['--conditions=aethex-source', '--import', 'tsx'];
const children: ChildProcess[] = [];

const shard = spawn(process.execPath, [...node, 'gameserver/src/main.ts'], {
  stdio: 'inherit',
  env: {
    ...process.env,
    AETHEX_GAMESERVER_AUTH_PUBLIC_KEY: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    AETHEX_GAMESERVER_GATEWAY_BIND_ADDR: `127.0.0.1:${values.port}`,
    AETHEX_GAMESERVER_OPS_BIND_ADDR: `127.0.0.1:${values['ops-port']}`,
    AETHEX_GAMESERVER_ENGINE_NPC_COUNT: values.npcs,
    AETHEX_GAMESERVER_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS: String(Number(values.bots) + 16),
  },
});
children.push(shard);
shard.on('exit', (code) => {
  console.error(`npm start: the shard exited (${code}); stopping`);
  stop(code ?? 1);
});

// Give the shard a moment to listen, then start the bots.
await new Promise((r) => setTimeout(r, 1500));
console.log(
  `\nAeThex shard running: players ws://127.0.0.1:${values.port}, viewer http://127.0.0.1:${values['ops-port']}/viewer, metrics http://127.0.0.1:${values['ops-port']}/metrics`,
);
console.log(
  `Development join-signing key: ${privateKeyFile} (npm run bots -- --url ws://127.0.0.1:${values.port} --private-key ${privateKeyFile})\n`,
);
if (Number(values.bots) > 0) {
  const bots = spawn(
    process.execPath,
    [
      ...node,
      'sdk/src/bots.ts',
      '--url',
      `ws://127.0.0.1:${values.port}`,
      '--count',
      values.bots,
      '--private-key',
      privateKeyFile,
      '--duration',
      '86400',
      '--prefix',
      'dev-bot',
    ],
    { stdio: 'inherit' },
  );
  children.push(bots);
}

function stop(code: number): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  setTimeout(() => process.exit(code), 500).unref();
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
