#!/usr/bin/env node
// npm run soak [-- --seconds 600 --clients 130 --columns 2 --rows 2 --fault-every 4-10 --faults all
//                 --overlap 1 --seed N --churn 2.5 --pg-url URL --redis-url URL --logs DIR --json]
// A fault soak of a sharded world: real shard processes (startLocalWorld) on PostgreSQL and Redis,
// SDK clients with `rejoin` walking across the borders (clients.ts, a process of its own), and
// faults drawn with a seeded generator every few seconds, one at a time or `--overlap` at once (on
// different shards and stores): drains, SIGKILLs and SIGSTOPs
// of shards, links between two shards cut or paused, PostgreSQL and Redis cut or paused, players'
// connections cut, held or stalled (TCP proxies the soak runs in front of them, fault-proxy.ts).
// Then it stops the faults, lets the world
// settle, and checks what clients saw against what the shards say (checks.ts). Prints a table
// (`--json`: and one JSON object as the last line); exits 1 when a check fails. Everything it
// starts — processes (by pid), its database, its Redis keys, its temporary directory — goes at the
// end, on Ctrl-C too. See docs/testing.md, "The fault soak".
import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { parseCli, regions } from '@aethex/runtime';
import { createRng } from '../src/sim/step.js';
import { type LocalWorld, startLocalWorld } from '../src/world/local-world.js';
import { metricValue, scrapeMetrics } from '../src/world/metrics-scrape.js';
import { type CheckRow, evaluate, FAULT_KINDS, type FaultKind, type ShardRun, type SoakFindings } from './checks.js';
import type { ClientEvent, ClientState, ClientsCommand, ClientsConfig, ClientsMessage } from './client-protocol.js';
import { type FaultProxy, shardLinkDialler, soakPlayer, startFaultProxy } from './fault-proxy.js';
import { Faults } from './faults.js';
import { Observer } from './observer.js';
import { createSoakStores, type SoakStores } from './stores.js';

const USAGE =
  'usage: npm run soak -- [--seconds 600] [--clients 130] [--columns 2] [--rows 2] [--fault-every 4-10] ' +
  `[--faults all|none|${FAULT_KINDS.join(',')}] [--overlap 1] [--seed N] [--churn 2.5] [--pg-url URL] [--redis-url URL] ` +
  '[--log-level info] [--logs DIR] [--json]';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

const cli = parseCli('soak', USAGE, {
  seconds: { type: 'string', default: '600' },
  clients: { type: 'string', default: '130' },
  columns: { type: 'string', default: '2' },
  rows: { type: 'string', default: '2' },
  'fault-every': { type: 'string', default: '4-10' },
  faults: { type: 'string', default: 'all' },
  overlap: { type: 'string', default: '1' },
  seed: { type: 'string' },
  churn: { type: 'string', default: '2.5' },
  'pg-url': { type: 'string' },
  'redis-url': { type: 'string' },
  'log-level': { type: 'string', default: 'info' },
  logs: { type: 'string' },
  json: { type: 'boolean', default: false },
});
const { values, fail } = cli;
const seconds = cli.int('seconds', 10, 86_400);
const clientCount = cli.int('clients', 1, 2000);
const columns = cli.int('columns', 1, 8);
const rows = cli.int('rows', 1, 8);
if (columns * rows < 2) fail('--columns × --rows must be at least 2: a soak of one shard has no borders to cross');
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : cli.int('seed', 0, 2 ** 31 - 1);

/** Seconds as a decimal number in [min, max], or `fail` naming the flag. */
function secondsOf(flag: string, raw: string, min: number, max: number): number {
  const n = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : Number.NaN;
  if (!(n >= min && n <= max)) fail(`--${flag} must be seconds from ${min} to ${max}, got '${raw}'`);
  return n;
}
const everyRaw = values['fault-every'] as string;
const everyParts = everyRaw.split('-');
if (everyParts.length > 2) fail(`--fault-every must be seconds or a range like 4-10, got '${everyRaw}'`);
const faultEvery = {
  min: secondsOf('fault-every', everyParts[0] as string, 0.5, 3600),
  max: secondsOf('fault-every', (everyParts[1] ?? everyParts[0]) as string, 0.5, 3600),
};
if (faultEvery.min > faultEvery.max) fail(`--fault-every: the range's start is above its end ('${everyRaw}')`);
const faultsRaw = values.faults as string;
const kinds: FaultKind[] =
  faultsRaw === 'all' ? [...FAULT_KINDS] : faultsRaw === 'none' ? [] : (faultsRaw.split(',').map((k) => k.trim()) as FaultKind[]);
for (const k of kinds)
  if (!FAULT_KINDS.includes(k)) fail(`--faults: unknown fault '${k}' (known: ${FAULT_KINDS.join(', ')}; or all, none)`);
const overlap = cli.int('overlap', 1, 4);
if (overlap > columns * rows)
  fail(`--overlap ${overlap}: faults under way at once act on different shards, and there are ${columns * rows}`);
const churnSeconds = secondsOf('churn', values.churn as string, 0, 3600);
const logLevel = values['log-level'] as string;
if (!LOG_LEVELS.includes(logLevel)) fail(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got '${logLevel}'`);
// The soak is a script, not a deployable: it reads the test environment's two variables itself
// (@aethex/testing's testEnv wants every server of the environment, and the soak needs two).
const pgUrl = (values['pg-url'] as string | undefined) ?? process.env.AETHEX_TEST_PG_URL;
const redisUrl = (values['redis-url'] as string | undefined) ?? process.env.AETHEX_TEST_REDIS_URL;
if (!pgUrl || !redisUrl) {
  fail(
    `needs PostgreSQL and Redis (missing ${[!pgUrl && '--pg-url or AETHEX_TEST_PG_URL', !redisUrl && '--redis-url or AETHEX_TEST_REDIS_URL'].filter(Boolean).join(', ')}): ` +
      'run `npm run test-env -- up` and then `eval "$(npm run -s test-env -- env)"`, or give the URLs',
  );
}
const urlOf = (flag: string, raw: string, schemes: string[]) => {
  let u: URL | undefined;
  try {
    u = new URL(raw);
  } catch {
    // refused below
  }
  if (!u || !schemes.includes(u.protocol)) fail(`--${flag} must be a ${schemes.map((s) => `${s}//`).join(' or ')} URL`);
  return u as URL;
};
const pgTarget = urlOf('pg-url', pgUrl as string, ['postgres:', 'postgresql:']);
const redisTarget = urlOf('redis-url', redisUrl as string, ['redis:', 'rediss:']);
const json = values.json === true;
const logsDir = values.logs === undefined ? undefined : resolve(values.logs as string);

/** Region size in world units: a client walking at WALK_STEP / INPUT_MS crosses one in about 3 s. */
const REGION = 200;
const WALK_STEP = 3;
const INPUT_MS = 50;
const NPCS_PER_SHARD = 10;
/** The shards' persistence.snapshot_interval_ms (the default, said here because the checks use it). */
const SNAPSHOT_INTERVAL_MS = 5000;
/** The shards' engine.rejoin_window_ms (the default): the settle waits for restored players nobody rejoined this long. */
const REJOIN_WINDOW_MS = 30_000;
/** After the faults: clients walk on this long (handoffs on a healed world), then stand. */
const WALK_ON_MS = 10_000;
/** How long the settle waits at most for each of: every client live, custody at 0, outboxes relayed. */
const SETTLE_MS = 60_000;

const log = (s: string) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 23)}] ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- what is running, so that everything goes at the end, also on error and Ctrl-C -------------

const world = `soak-${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const playerPrefix = `${world}-p`;
const live: {
  dir?: string;
  world?: LocalWorld;
  clients?: ChildProcess;
  proxies: FaultProxy[];
  stores?: SoakStores;
  faults?: Faults;
} = { proxies: [] };
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    live.faults?.stopWatching();
    live.faults?.continueAll();
    if (live.clients && live.clients.exitCode === null && live.clients.signalCode === null) live.clients.kill('SIGKILL');
    // Every shard process by pid: a paused one was continued above, so SIGKILL ends it at once.
    const shards = live.world?.shards ?? [];
    await Promise.all(
      shards.map(async (s) => {
        const c = s.process;
        if (c?.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
        try {
          process.kill(c.pid, 'SIGCONT');
        } catch {
          // gone
        }
        await s.kill('SIGKILL');
      }),
    );
    await Promise.all(live.proxies.map((p) => p.close()));
    await live.stores
      ?.remove()
      .catch((err: unknown) => log(`could not remove the soak's database or Redis keys: ${(err as Error).message}`));
    if (live.dir) rmSync(live.dir, { recursive: true, force: true });
  })();
  return cleaning;
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: stopping, removing what the soak started...`);
    void cleanup().finally(() => process.exit(130));
  });
}

// --- the clients' process ---------------------------------------------------------------------

interface ClientsProcess {
  child: ChildProcess;
  events: ClientEvent[];
  send(c: ClientsCommand): void;
  started: Promise<number>;
  report(): Promise<ClientState[]>;
  /** Resolves true at the next handoff into (or out of) `shard`, false after `ms`. */
  nextHandoff(shard: string, direction: 'into' | 'out of', ms: number): Promise<boolean>;
}

function startClients(config: ClientsConfig, eventsFile: string | undefined): ClientsProcess {
  const child = spawn(
    process.execPath,
    ['--conditions=aethex-source', '--import', 'tsx', join(import.meta.dirname, 'clients.ts'), JSON.stringify(config)],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  const events: ClientEvent[] = [];
  const waiters = new Set<{ shard: string; direction: 'into' | 'out of'; resolve: (v: boolean) => void }>();
  let reported: ((r: ClientState[]) => void) | undefined;
  let started: (n: number) => void = () => undefined;
  const startedP = new Promise<number>((resolve, reject) => {
    started = resolve;
    child.once('exit', (code) => reject(new Error(`the clients' process exited (${code}) before every player joined`)));
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const m = JSON.parse(line) as ClientsMessage;
    if ('event' in m) {
      events.push(m.event);
      if (eventsFile) appendFileSync(eventsFile, `${line}\n`);
      if (m.event.e === 'handoff') {
        const { from, to } = m.event;
        for (const w of [...waiters]) {
          if (w.shard !== (w.direction === 'into' ? to : from)) continue;
          waiters.delete(w);
          w.resolve(true);
        }
      }
    } else if ('started' in m) started(m.started.joined);
    else if ('report' in m) reported?.(m.report);
  });
  return {
    child,
    events,
    send: (c) => child.stdin?.write(`${JSON.stringify(c)}\n`),
    started: startedP,
    report() {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the clients did not report within 10 s')), 10_000);
        reported = (r) => {
          clearTimeout(timer);
          reported = undefined;
          resolve(r);
        };
        child.stdin?.write(`${JSON.stringify({ cmd: 'report' } satisfies ClientsCommand)}\n`);
      });
    },
    nextHandoff(shard, direction, ms) {
      return new Promise((resolve) => {
        const w = { shard, direction, resolve };
        waiters.add(w);
        setTimeout(() => {
          if (waiters.delete(w)) resolve(false);
        }, ms);
      });
    },
  };
}

// --- the run ------------------------------------------------------------------------------------

async function waitFor(what: string, check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return true;
    await sleep(500);
  }
  log(`gave up waiting for ${what} after ${ms} ms`);
  return false;
}

interface Result {
  findings: SoakFindings;
  faultsEndedAt: number;
  startedAt: number;
  handoffsPerSecond: number;
}

async function run(): Promise<Result> {
  const dir = mkdtempSync(join(os.tmpdir(), 'aethex-soak-'));
  live.dir = dir;
  const logDirectory = logsDir ?? join(dir, 'logs');
  mkdirSync(logDirectory, { recursive: true });
  log(
    `world ${world}, seed ${seed}, ${clientCount} clients, ${columns} × ${rows} shards, ${seconds} s of faults (${kinds.join(', ') || 'none'})`,
  );
  log(`shard logs in ${logDirectory}${logsDir ? '' : ' (removed at the end; --logs DIR keeps them)'}`);

  const stores = await createSoakStores(pgUrl as string, redisUrl as string, world, playerPrefix);
  live.stores = stores;
  const pg = await startFaultProxy(() => ({ host: pgTarget.hostname, port: Number(pgTarget.port || 5432) }));
  const redis = await startFaultProxy(() => ({ host: redisTarget.hostname, port: Number(redisTarget.port || 6379) }));
  live.proxies.push(pg, redis);
  const shardPg = new URL(stores.databaseUrl);
  shardPg.host = pg.address;
  const shardRedis = new URL(redisUrl as string);
  shardRedis.host = redis.address;

  // Two proxies per shard in front of its players' port. One is named in the shard map: the
  // neighbours' links go through it (and can be cut). Players go through the other, the edge:
  // they are redirected by name (handoff.redirect_url ws://{name}) and clients.ts maps the names
  // to the edges' addresses, as an edge in front of the shards would — so the players' own
  // connections can fail too, apart from the links (each labelled with its player's id).
  const count = columns * rows;
  const shardAddress: string[] = [];
  const toShard = (k: number) => () => {
    const [host, port] = (shardAddress[k] as string).split(':');
    return { host: host as string, port: Number(port) };
  };
  const links = await Promise.all(Array.from({ length: count }, (_, k) => startFaultProxy(toShard(k), shardLinkDialler)));
  live.proxies.push(...links);
  const edges = await Promise.all(Array.from({ length: count }, (_, k) => startFaultProxy(toShard(k), soakPlayer)));
  live.proxies.push(...edges);

  const keys = generateKeyPairSync('ed25519');
  const keyFile = join(dir, 'join-signing-key.pem');
  writeFileSync(keyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const bounds = { minX: 0, minY: 0, maxX: REGION * columns, maxY: REGION * rows };
  const spawnAt = Date.now();
  const w = await startLocalWorld({
    name: world,
    columns,
    rows,
    bounds,
    directory: join(dir, 'world'),
    publicKeyPem: keys.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    basePort: 0,
    stdio: { logDirectory },
    mapAddress: (k, address) => {
      shardAddress[k] = address;
      return (links[k] as FaultProxy).address;
    },
    env: {
      AETHEX_GAMESERVER_PERSISTENCE_POSTGRES_URL: shardPg.toString(),
      AETHEX_GAMESERVER_PRESENCE_REDIS_URL: shardRedis.toString(),
      AETHEX_GAMESERVER_HANDOFF_REDIRECT_URL: 'ws://{name}',
      AETHEX_GAMESERVER_ENGINE_NPC_COUNT: String(NPCS_PER_SHARD),
      AETHEX_GAMESERVER_ENGINE_AOI_RADIUS: '60',
      AETHEX_GAMESERVER_PERSISTENCE_SNAPSHOT_INTERVAL_MS: String(SNAPSHOT_INTERVAL_MS),
      AETHEX_GAMESERVER_ENGINE_REJOIN_WINDOW_MS: String(REJOIN_WINDOW_MS),
      AETHEX_GAMESERVER_LOG_LEVEL: logLevel,
    },
  });
  live.world = w;
  const readyAt = Date.now();
  const faults = new Faults(
    {
      world: w,
      columns,
      rows,
      links,
      pg,
      redis,
      nextHandoff: (shard, direction, ms) => clients.nextHandoff(shard, direction, ms),
      edges,
      nextRedirect: (shard, ms) => nextRedirect(w.shards.find((s) => s.name === shard)?.index ?? -1, ms),
      log,
    },
    createRng(seed ^ 0x5eed),
    kinds,
  );
  live.faults = faults;
  for (const s of w.shards) faults.runs.push({ shard: s.name, cause: 'start', spawnAt, startedAt: s.startedAt, readyAt });
  // A player's connection to one shard opening while one of theirs to another is open: the resume
  // after a redirect (a handoff under way), for aiming client-network faults at.
  const redirectWaiters = new Set<{ k: number; resolve: (player: string | undefined) => void }>();
  edges.forEach((edge, k) => {
    edge.onLabel((player) => {
      if (redirectWaiters.size === 0) return;
      if (!edges.some((other, j) => j !== k && other.open().some((c) => c.label === player))) return;
      for (const waiter of [...redirectWaiters]) {
        if (waiter.k !== k) continue;
        redirectWaiters.delete(waiter);
        waiter.resolve(player);
      }
    });
  });
  const nextRedirect = (k: number, ms: number) =>
    new Promise<string | undefined>((resolve) => {
      const waiter = { k, resolve };
      redirectWaiters.add(waiter);
      setTimeout(() => {
        if (redirectWaiters.delete(waiter)) resolve(undefined);
      }, ms);
    });
  const expectedLinks = regions(bounds, columns, rows).reduce((a, g) => a + 2 * g.neighbours.length, 0);
  const linksUp = async () => {
    const all = await Promise.all(w.shards.map((s) => scrapeMetrics(s.opsUrl, 1500)));
    return all.reduce((a, m) => a + metricValue(m, 'aether_shard_links_up'), 0) === expectedLinks;
  };
  if (!(await waitFor('the shard links to come up', linksUp, 30_000))) throw new Error('the shard links did not come up within 30 s');
  log(`${count} shards ready: ${w.shards.map((s) => `${s.name} ws://${s.address} ops ${s.opsUrl}`).join('; ')}`);

  const clients = startClients(
    {
      world,
      shards: w.shards.map((s) => ({ name: s.name, address: (edges[s.index] as FaultProxy).address })),
      bounds,
      privateKeyFile: keyFile,
      count: clientCount,
      playerPrefix,
      step: WALK_STEP,
      inputEveryMs: INPUT_MS,
      churnMs: Math.round(churnSeconds * 1000),
      seed,
    },
    logsDir ? join(logsDir, 'client-events.jsonl') : undefined,
  );
  live.clients = clients.child;
  const joined = await clients.started;
  log(`${joined} clients joined and walking`);

  const observer = new Observer(w.shards);
  observer.start(250, 2000);
  const startedAt = Date.now();
  const handoffs = () => clients.events.filter((e) => e.e === 'handoff').length;
  const progress = setInterval(() => {
    const e = clients.events;
    log(
      `${Math.round((Date.now() - startedAt) / 1000)} s: ${handoffs()} handoffs, ${e.filter((x) => x.e === 'rejoined').length} rejoins, ` +
        `${faults.records.length} faults, custody peak ${observer.custodyMax}, ${observer.duplicates.length} duplicate sightings`,
    );
  }, 15_000);

  // Faults, every fault-every seconds: `overlap` of these in step, so up to that many are under
  // way at once (each on things the others leave alone).
  const end = startedAt + seconds * 1000;
  const injector = async (i: number) => {
    const rng = createRng(seed ^ 0xfa17 ^ (i * 0x9e37));
    while (Date.now() < end) {
      const gap = (faultEvery.min + rng() * (faultEvery.max - faultEvery.min)) * 1000;
      await sleep(Math.max(0, Math.min(gap, end - Date.now())));
      if (Date.now() >= end || kinds.length === 0) continue;
      await faults.inject();
    }
  };
  await Promise.all(Array.from({ length: overlap }, (_, i) => injector(i)));
  const faultsEndedAt = Date.now();
  const handoffsPerSecond = handoffs() / ((faultsEndedAt - startedAt) / 1000);
  log(`faults over (${faults.records.length}); healing and letting the world settle`);
  await faults.heal();
  await waitFor('the shard links to come up again', linksUp, 30_000);
  await sleep(WALK_ON_MS);
  clients.send({ cmd: 'stand' });
  let finals: ClientState[] = [];
  await waitFor(
    'every client to be live with its inputs answered',
    async () => {
      finals = await clients.report();
      return finals.every((c) => c.live && c.unacknowledged === 0 && c.sinceSnapshotMs < 1000);
    },
    SETTLE_MS,
  );
  clearInterval(progress);
  await observer.stop();
  let ownership = await observer.round();
  for (let i = 0; i < 10 && !ownership.complete; i++) {
    await sleep(500);
    ownership = await observer.round();
  }
  let custody: Record<string, number> = {};
  await waitFor(
    'every custody copy to be released',
    async () => {
      custody = await observer.custody();
      return Object.keys(custody).length === count && Object.values(custody).every((n) => n === 0);
    },
    SETTLE_MS,
  );
  // A player restored from a stale snapshot (their departure lost with a SIGKILL) keeps a place
  // until their rejoin window, counted from the restart, ends: the streams say so until then.
  await waitFor(
    'every restored player nobody came back for to go',
    async () => (await observer.sum('aether_players_awaiting_rejoin')) === 0,
    REJOIN_WINDOW_MS + 15_000,
  );
  await waitFor(
    'every outbox to be relayed',
    async () => (await observer.sum('aether_outbox_queued_events')) + (await observer.sum('aether_outbox_pending_events')) === 0,
    SETTLE_MS,
  );
  // The relay flushes every 250 ms: the pending gauge is as of the last relay.
  await sleep(1000);
  const streams = await stores.readStreams();
  const findings = evaluate({
    events: clients.events,
    finals,
    ownership: { duplicates: observer.duplicates, finalOwners: ownership.owners, rounds: observer.rounds },
    custody: { max: observer.custodyMax, final: custody },
    streams,
    faults: faults.records,
    runs: faults.runs,
    faultsEndedAt,
    endAt: Date.now(),
    snapshotIntervalMs: SNAPSHOT_INTERVAL_MS,
    ownerHistory: observer.owners,
    rejoinWindowMs: REJOIN_WINDOW_MS,
  });
  // What the outbox (PostgreSQL) holds for the handoff events the streams lack: appended and not
  // relayed, or never appended.
  for (const m of findings.missingHandoffEvents.filter((x) => x.killedAt === undefined).slice(0, 20)) {
    const rows = await stores.outboxRows(m.shard, m.player).catch(() => []);
    (m as typeof m & { outbox?: unknown }).outbox = rows.filter((r) => Math.abs(r.at - m.at) <= 10_000);
  }
  if (logsDir) {
    writeFileSync(join(logsDir, 'faults.json'), JSON.stringify({ faults: faults.records, runs: faults.runs }, null, 1));
    writeFileSync(join(logsDir, 'streams.json'), JSON.stringify(Object.fromEntries([...streams].map(([k, v]) => [k, v])), null, 0));
  }
  return { findings, faultsEndedAt, startedAt, handoffsPerSecond };
}

// --- the report ---------------------------------------------------------------------------------

function table(rowsOut: CheckRow[]): string {
  const width = Math.max(...rowsOut.map((r) => r.check.length));
  const lines = [`${'check'.padEnd(width)}  ${'count'.padStart(7)}  status`, `${'-'.repeat(width)}  -------  ------`];
  for (const r of rowsOut) {
    lines.push(`${r.check.padEnd(width)}  ${String(r.count).padStart(7)}  ${r.status === 'info' ? '' : r.status}`);
    if (r.detail) lines.push(`${''.padEnd(width)}           ${r.detail}`);
  }
  return lines.join('\n');
}

function cases(f: SoakFindings): string {
  const out: string[] = [];
  const list = (title: string, items: unknown[]) => {
    if (items.length === 0) return;
    out.push(`\n${title} (${items.length}${items.length > 20 ? ', the first 20' : ''}):`);
    for (const i of items.slice(0, 20)) out.push(`  ${JSON.stringify(i)}`);
  };
  list(
    'players lost',
    f.lost.filter((l) => !l.explained),
  );
  list('players stuck', f.stuck);
  list('entity ids held by two players at once', f.sharedIds);
  list(
    'handoff events missing from a stream, not explained by a SIGKILL',
    f.missingHandoffEvents.filter((m) => m.killedAt === undefined),
  );
  list('sessions that went on after the player quit', f.afterQuit);
  list('false departures', f.falseDepartures);
  list('stream places that disagree with the clients at the end', f.placeMismatches);
  list(
    'set-backs not explained by a SIGKILL',
    f.setBacks.filter((s) => s.killedAt === undefined),
  );
  list(
    'players hit by a client-network fault not back within the rejoin window, or whose stalled connection was never given up',
    f.clientFaults.filter((c) => c.outcome === 'not back' || c.outcome === 'late' || c.outcome === 'unnoticed'),
  );
  return out.join('\n');
}

let exitCode = 1;
try {
  const r = await run();
  const failed = r.findings.rows.filter((row) => row.status === 'FAIL');
  const faultsRecords = live.faults?.records ?? [];
  // Faults that were under way while another was (with --overlap above 1).
  const overlapped = faultsRecords.filter((f) => faultsRecords.some((g) => g !== f && g.at < f.endAt && f.at < g.endAt)).length;
  console.log(
    `\nsoak ${world}: seed ${seed}, ${clientCount} clients, ${columns} × ${rows} shards, ${Math.round((r.faultsEndedAt - r.startedAt) / 1000)} s of faults ` +
      `(${faultsRecords.length}, ${overlapped} of them while another was under way), ${r.handoffsPerSecond.toFixed(1)} handoffs/s\n`,
  );
  console.log(table(r.findings.rows));
  const detail = cases(r.findings);
  if (detail) console.log(detail);
  console.log(failed.length === 0 ? '\nall checks passed' : `\n${failed.length} check(s) failed`);
  if (json) {
    const { rows: checkRows, ...rest } = r.findings;
    const cap = <T>(l: T[]) => l.slice(0, 50);
    console.log(
      JSON.stringify({
        soak: {
          world,
          seed,
          seconds,
          clients: clientCount,
          columns,
          rows,
          faultEvery,
          faults: kinds,
          overlap,
          churnSeconds,
        },
        passed: failed.length === 0,
        overlappedFaults: overlapped,
        handoffsPerSecond: Math.round(r.handoffsPerSecond * 10) / 10,
        checks: checkRows,
        // The cases behind the failing counts (those explained by a SIGKILL are only counted).
        cases: {
          lost: cap(rest.lost.filter((l) => !l.explained)),
          stuck: cap(rest.stuck),
          sharedIds: cap(rest.sharedIds),
          missingHandoffEvents: cap(rest.missingHandoffEvents.filter((m) => m.killedAt === undefined)),
          afterQuit: cap(rest.afterQuit),
          falseDepartures: cap(rest.falseDepartures),
          placeMismatches: cap(rest.placeMismatches),
          setBacks: cap(rest.setBacks.filter((b) => b.killedAt === undefined)),
          clientFaults: cap(rest.clientFaults.filter((c) => c.outcome === 'not back' || c.outcome === 'late' || c.outcome === 'unnoticed')),
        },
        faults: faultsRecords,
        runs: live.faults?.runs ?? ([] as ShardRun[]),
      }),
    );
  }
  exitCode = failed.length === 0 ? 0 : 1;
} catch (err) {
  log(`soak failed: ${(err as Error).stack ?? String(err)}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
