#!/usr/bin/env node
// `npm start`: the example world on this machine with no external service. The operator's local
// runtime reconciles examples/gameworld.yaml (a 2 × 2 world: four shard processes on their
// embedded defaults, with wandering NPCs), and bots play on every shard. Edit the file while it
// runs — instances, bounds, sharding — and the runtime applies it. Ctrl-C stops everything.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { parseCli } from '@aethex/runtime';

const USAGE =
  'usage: npm start [-- [--file examples/gameworld.yaml] [--bots N] [--npcs N] [--base-port P] [--status-port P] [--directory DIR]]';
const cli = parseCli('npm start', USAGE, {
  file: { type: 'string', short: 'f', default: 'examples/gameworld.yaml' },
  bots: { type: 'string', default: '20' },
  npcs: { type: 'string', default: '150' },
  'base-port': { type: 'string', default: '7700' },
  'status-port': { type: 'string', default: '7390' },
  directory: { type: 'string', default: '.aethex/local' },
});
const values = {
  file: cli.values.file as string,
  bots: String(cli.int('bots', 0, 2000)),
  npcs: String(cli.int('npcs', 0, 100000)),
  'base-port': String(cli.int('base-port', 1024, 65000)),
  'status-port': String(cli.int('status-port', 1024, 65535)),
  directory: cli.values.directory as string,
};

const node = ['--conditions=aethex-source', '--import', 'tsx'];
const directory = values.directory as string;
const statusUrl = `http://127.0.0.1:${values['status-port']}/status`;
const children: ChildProcess[] = [];
let stopping = false;

// Every child in a process group of its own (`detached`): a Ctrl-C in the terminal reaches this
// script alone, which stops each of them with one SIGTERM (a second signal makes the operator kill
// its shards without draining), however the SIGINT came.
const operator = spawn(process.execPath, [...node, 'operator/src/main.ts', '--runtime', 'local', '-f', values.file as string], {
  stdio: ['ignore', 'inherit', 'inherit'],
  detached: true,
  env: {
    ...process.env,
    AETHEX_OPERATOR_LOCAL_BASE_PORT: values['base-port'],
    AETHEX_OPERATOR_LOCAL_DIRECTORY: directory,
    AETHEX_OPERATOR_HTTP_LISTEN: `127.0.0.1:${values['status-port']}`,
    AETHEX_OPERATOR_LOG_LEVEL: process.env.AETHEX_OPERATOR_LOG_LEVEL ?? 'warn',
    AETHEX_OPERATOR_LOCAL_ENV: JSON.stringify({
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: values.npcs,
      // NPCs keep their slots (engine.npc_count's rule): past what the GameWorld's capacity leaves
      // them, room for them and up to 2,000 players.
      ...(Number(values.npcs) > 8000 ? { AETHEX_GAMESERVER_ENGINE_MAX_ENTITIES: String(Number(values.npcs) + 2000) } : {}),
      AETHEX_GAMESERVER_LOG_LEVEL: 'warn',
    }),
  },
});
children.push(operator);
operator.on('exit', (code) => {
  if (!stopping) console.error(`npm start: the operator exited (${code}); stopping`);
  stop(code ?? 1);
});

interface Proc {
  name: string;
  instance: number;
  state: string;
  gateway: string;
  ops: string;
}
interface Status {
  worlds: {
    name: string;
    errors?: string[];
    status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
    processes: Proc[];
  }[];
}

const isReady = (w: Status['worlds'][number]) => w.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') === true;

// Wait until every world in the file is Ready, then say where everything is and start the bots.
const READY_WAIT_S = 120;
let status: Status | undefined;
let ready = false;
for (let i = 0; i < READY_WAIT_S * 2 && !stopping && !ready; i++) {
  await new Promise((r) => setTimeout(r, 500));
  status = (await fetch(statusUrl)
    .then((r) => r.json())
    .catch(() => undefined)) as Status | undefined;
  ready = Boolean(status?.worlds.length) && (status as Status).worlds.every(isReady);
}
if (stopping) await new Promise(() => undefined); // stop() exits
if (!ready) {
  if (!status) console.error(`npm start: the operator's status (${statusUrl}) did not answer within ${READY_WAIT_S} s; stopping`);
  else {
    console.error(`npm start: not every world of ${values.file} was Ready within ${READY_WAIT_S} s; stopping:`);
    if (status.worlds.length === 0) console.error('  the file holds no GameWorld');
    for (const w of status.worlds.filter((w) => !isReady(w))) {
      const why = [
        ...(w.errors ?? []),
        ...(w.status?.conditions ?? [])
          .filter((c) => c.status !== 'True')
          .map((c) => `${c.type} ${c.status}: ${c.reason ?? ''} ${c.message ?? ''}`.trim()),
      ];
      console.error(`  ${w.name}: ${why.join('; ') || 'no conditions yet'}`);
    }
  }
  stop(1);
  await new Promise(() => undefined); // stop() exits
}
if (!status) throw new Error('unreachable: ready without a status');

const key = join(directory, 'join-signing-key.pem');
console.log(`\nAeThex running ${values.file} on the operator's local runtime (status: ${statusUrl})`);
for (const w of status.worlds) {
  for (const p of w.processes)
    console.log(`  ${p.name.padEnd(16)} players ${p.gateway}   viewer ${p.ops}/viewer   metrics ${p.ops}/metrics`);
  const first = w.processes[0];
  if (first && w.processes.length > 1) {
    const all = encodeURIComponent(w.processes.map((p) => p.ops).join(','));
    console.log(`  the whole world in one view: ${first.ops}/viewer?shards=${all}`);
  }
}
console.log(`Development join-signing key: ${key} (npm run bots -- --url <players> --world <world> --shard <name> --private-key ${key})\n`);

const shards = status.worlds.flatMap((w) => w.processes.map((p) => ({ world: w.name, ...p })));
const perShard = Math.ceil(Number(values.bots) / Math.max(1, shards.length));
for (const [i, s] of shards.entries()) {
  const count = Math.min(perShard, Number(values.bots) - i * perShard);
  if (count <= 0) break;
  const bots = spawn(
    process.execPath,
    [
      ...node,
      'sdk/src/bots.ts',
      '--url',
      s.gateway,
      '--world',
      s.world,
      '--instance',
      String(s.instance),
      '--shard',
      s.name,
      '--count',
      String(count),
      '--private-key',
      key,
      '--duration',
      '86400',
      '--prefix',
      `dev-bot-${s.name}`,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], detached: true },
  );
  children.push(bots);
}

/** Stops the bots and the operator (which drains its shards first): one SIGTERM each. */
function stop(code: number): void {
  if (stopping) return;
  stopping = true;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  const done = () => process.exit(code);
  if (operator.exitCode === null) operator.once('exit', done);
  else done();
  setTimeout(done, 15_000).unref();
}
process.on('SIGINT', () => stop(0));
process.on('SIGTERM', () => stop(0));
// The terminal closed: its group's signal does not reach the children (groups of their own).
process.on('SIGHUP', () => stop(0));
// However this script ends (an error thrown, a stop timed out), no child outlives it.
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
});
