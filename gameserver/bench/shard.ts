#!/usr/bin/env node
// npm run bench:shard [-- --json] [--ticks N] [--threads N] [--e2e-clients N] [--e2e-seconds S] [--bot-processes N] [--bot-input-groups N] [--bot-nice N] [--bot-sched normal|batch] [--skip-e2e]
// 1. End to end: a shard in this process, bots in separate processes over loopback.
// 2. The largest client count that holds 40 Hz (tick p99 ≤ 25 ms), stepping up, then bisecting.
// 3. Memory per idle connection with 10,000 open sockets (a fresh shard process: its RSS from a new heap).
// 4. Kernel: simulation + grid + area of interest + snapshot encoding, no sockets; with one
//    snapshot thread and with --threads (engine.snapshot_threads, default 2: this machine's cores).
// 5. State snapshot: taking the shard's persistent state on the tick, and assembling its game
//    states off it, at 10,000 entities without game state, with 2,000 of 256 B, 10,000 of 4 KiB.
// Prints tables; with --json, one JSON object as the last line.
import os from 'node:os';
import { parseCli } from '@aethex/runtime';
import { type E2eResult, idleMemoryFresh, runE2e } from './e2e.js';
import { type KernelResult, runKernel } from './kernel.js';
import { runStateSnapshot, type StateSnapshotResult } from './state-snapshot.js';

const USAGE =
  'usage: npm run bench:shard [-- --json] [--ticks N] [--threads N] [--e2e-clients N] [--e2e-seconds S] [--bot-processes N] [--bot-input-groups N] [--bot-nice N] [--bot-sched normal|batch] [--skip-e2e]';
const cli = parseCli('bench:shard', USAGE, {
  json: { type: 'boolean', default: false },
  ticks: { type: 'string', default: '1200' },
  threads: { type: 'string', default: '2' },
  'e2e-clients': { type: 'string', default: '1000' },
  'e2e-seconds': { type: 'string', default: '120' },
  // One per core: each process more adds a process the scheduler shares the cores with (session 13).
  'bot-processes': { type: 'string', default: '2' },
  // Players' inputs arrive spread through a tick, not in one burst (session 13).
  'bot-input-groups': { type: 'string', default: '5' },
  'bot-nice': { type: 'string', default: '0' },
  'bot-sched': { type: 'string', default: 'normal' },
  'skip-e2e': { type: 'boolean', default: false },
});
const { values } = cli;
const ticks = cli.int('ticks', 100, 100_000);
const threads = cli.int('threads', 1, 16);
const e2eClients = cli.int('e2e-clients', 10, 10_000);
const e2eSeconds = cli.int('e2e-seconds', 10, 3600);
const botProcesses = cli.int('bot-processes', 1, 16);
const botNice = cli.int('bot-nice', 0, 19);
const botSched = String(values['bot-sched']);
if (botSched !== 'normal' && botSched !== 'batch') cli.fail(`--bot-sched must be normal or batch, got "${botSched}"`);
const botInputGroups = cli.int('bot-input-groups', 1, 25);
const bots = { nice: botNice, batch: botSched === 'batch', inputGroups: botInputGroups };
const botsAs = `nice ${botNice}${bots.batch ? ', SCHED_BATCH' : ''}, inputs in ${botInputGroups} group(s) a tick`;
const log = (s: string) => process.stderr.write(`${s}\n`);

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
let e2e: E2eResult | undefined;
const ramp: { clients: number; tick_p99_ms: number; holds: boolean }[] = [];
let idle: { kb_per_connection: number; connections: number } | undefined;
if (!values['skip-e2e']) {
  log(`end to end: ${e2eClients} bots in ${botProcesses} processes (${botsAs}) for ${e2eSeconds} s, ${threads} snapshot thread(s)...`);
  e2e = await runE2e(e2eClients, e2eSeconds, botProcesses, threads, bots);
  const tryClients = async (clients: number) => {
    log(`ramp: ${clients} bots for 20 s...`);
    const r = await runE2e(clients, 20, botProcesses, threads, bots);
    const holds = r.tick_ms.p99 <= 25 && r.joined === clients;
    ramp.push({ clients, tick_p99_ms: r.tick_ms.p99, holds });
    return holds;
  };
  // Step up until a count fails, then halve the gap to the last count that held (to 50 clients).
  let held = 0;
  let failed = 0;
  for (const clients of [100, 250, 500, 1000, 1500, 2000, 2500]) {
    if (!(await tryClients(clients))) {
      failed = clients;
      break;
    }
    held = clients;
  }
  while (failed > 0 && failed - held > 50) {
    const mid = Math.round((held + failed) / 100) * 50;
    if (await tryClients(mid)) held = mid;
    else failed = mid;
  }
  log('idle: 10,000 open sockets, the shard in a fresh process...');
  idle = await idleMemoryFresh(10_000);
}
// Kernels run after the end-to-end parts, so the shard's RSS there is not inflated by them.
const kernels: KernelResult[] = [];
// The third: the issue's density of a crowd (10,000 on 2,000 × 2,000, aoi_radius 200: ~314 in
// reach), more than engine.max_visible, so every view keeps the nearest 255 (at --threads only).
for (const c of [
  { entities: 10_000, subscribers: 2_000, visible: 32 },
  { entities: 20_000, subscribers: 5_000, visible: 32 },
  { entities: 10_000, subscribers: 2_000, visible: 314 },
]) {
  for (const t of c.visible > 32 ? [threads] : threads > 1 ? [threads, 1] : [1]) {
    log(`kernel ${c.entities} entities / ${c.subscribers} subscribers, ${t} snapshot thread(s): ${ticks} ticks...`);
    kernels.push(await runKernel({ ...c, ticks, warmup: 200, threads: t }));
  }
}
const stateSnapshots: StateSnapshotResult[] = [];
for (const [states, stateBytes] of [
  [0, 0],
  [2_000, 256],
  [10_000, 4096],
] as const) {
  log(`state snapshot: 10,000 entities, ${states} game states of ${stateBytes} B...`);
  stateSnapshots.push(await runStateSnapshot({ entities: 10_000, states, stateBytes, samples: states === 10_000 ? 30 : 200 }));
}
const kernelAt = (entities: number, t: number, crowded = false) =>
  kernels.find((k) => k.entities === entities && k.threads === t && k.inRangeAvg > 256 === crowded) as KernelResult;

const maxAt40 = ramp.filter((r) => r.holds).reduce((m, r) => Math.max(m, r.clients), 0);

console.log(`\nShard benchmark — ${machine}${process.execArgv.length > 0 ? `, node ${process.execArgv.join(' ')}` : ''}\n`);
console.log(`Kernel (${ticks} ticks after 200 warm-up, no sockets)\n`);
console.log(
  '| entities | subscribers | snapshot threads | in reach avg | visible avg | tick p50 ms | tick p99 ms | tick max ms | ns/pair | bytes/client/tick | GC max ms |',
);
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of kernels) {
  console.log(
    `| ${r.entities} | ${r.subscribers} | ${r.threads} | ${r.inRangeAvg} | ${r.visibleAvg} | ${r.tick_ms.p50} | ${r.tick_ms.p99} | ${r.tick_ms.max} | ${r.ns_per_pair} | ${r.bytes_per_client_tick} | ${r.gc_max_pause_ms} |`,
  );
}
console.log('\nState snapshot (every persistence.snapshot_interval_ms): taken on the tick, game states assembled off it\n');
console.log(
  '| entities | game states × bytes | blob MB | on the tick p50 / p99 / max ms | off the tick: longest turn ms | all turns p50 / max ms |',
);
console.log('| ---: | ---: | ---: | --- | ---: | --- |');
for (const r of stateSnapshots) {
  console.log(
    `| ${r.entities} | ${r.states} × ${r.state_bytes} | ${r.blob_mb} | ${r.capture_ms.p50} / ${r.capture_ms.p99} / ${r.capture_ms.max} | ${r.assemble_turn_max_ms} | ${r.assemble_total_ms.p50} / ${r.assemble_total_ms.max} |`,
  );
}
if (e2e) {
  console.log(
    `\nEnd to end (${e2e.joined}/${e2e.clients} bots in ${botProcesses} processes at ${botsAs}, ${e2e.seconds} s, ${threads} snapshot thread(s) with ${e2e.thread_sessions.join(' / ')} sessions half way, loopback, same cores)\n`,
  );
  console.log(
    '| tick p50 / p99 / max ms | ticks > 25 ms | less CPU waits: tick p50 / p99 / max ms | ticks > 25 ms | downstream B/s per client median / p99 | input→ack ms p50 / p99 | max snapshot gap ms | RSS MB | shard CPU % | bots CPU % | GC max ms | GC after joins: p99 / max ms, > 5 ms, total ms | snapshot threads’ GC after joins: max ms, > 5 ms | kicked | closed (by code) |',
  );
  console.log('| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- |');
  console.log(
    `| ${e2e.tick_ms.p50} / ${e2e.tick_ms.p99} / ${e2e.tick_ms.max} | ${e2e.ticks_over_25ms} | ${e2e.tick_unqueued_ms.p50} / ${e2e.tick_unqueued_ms.p99} / ${e2e.tick_unqueued_ms.max} | ${e2e.ticks_over_25ms_unqueued} | ${e2e.bytes_per_client_s.median} / ${e2e.bytes_per_client_s.p99} | ${e2e.input_ack_ms.p50} / ${e2e.input_ack_ms.p99} | ${e2e.max_snapshot_gap_ms} | ${e2e.rss_mb} | ${e2e.shard_cpu_pct} | ${e2e.bots_cpu_pct} | ${e2e.gc_max_pause_ms} | ${e2e.gc_pauses.p99_ms} / ${e2e.gc_pauses.max_ms}, ${e2e.gc_pauses.over_5ms}, ${e2e.gc_pauses.total_ms} | ${e2e.gc_pauses.threads.max_ms}, ${e2e.gc_pauses.threads.over_5ms} | ${JSON.stringify(e2e.kicked)} | ${JSON.stringify(e2e.closed)} |`,
  );
  const j = e2e.join_tick_ms;
  console.log(
    `While the bots joined (first 4 s, not in the figures above): tick p50 / p99 / max ${j.p50} / ${j.p99} / ${j.max} ms, ${j.over_25ms} over 25 ms`,
  );
  console.log(
    `\nClients holding 40 Hz (tick p99 ≤ 25 ms, 20 s each): ${ramp.map((r) => `${r.clients}: ${r.tick_p99_ms} ms${r.holds ? '' : ' ✗'}`).join(', ')}`,
  );
  console.log(`Largest: ${maxAt40}`);
}
if (idle) console.log(`\nIdle connections: ${idle.connections} open, ${idle.kb_per_connection} KB each`);
if (values.json) {
  const k = kernelAt(10_000, threads);
  const k1 = kernelAt(10_000, 1);
  console.log(
    JSON.stringify({
      machine,
      node_flags: process.execArgv,
      snapshot_threads: threads,
      bot_processes: botProcesses,
      bot_input_groups: botInputGroups,
      bot_nice: botNice,
      bot_sched: botSched,
      kernel: { tick_ms: k.tick_ms, ns_per_pair: k.ns_per_pair, bytes_per_client_tick: k.bytes_per_client_tick, visible_avg: k.visibleAvg },
      kernel_single_thread: { tick_ms: k1.tick_ms, ns_per_pair: k1.ns_per_pair },
      kernel_20k_5k: kernelAt(20_000, threads),
      kernel_crowded: kernelAt(10_000, threads, true),
      state_snapshot: stateSnapshots,
      ...(threads > 1 ? { kernel_20k_5k_single_thread: kernelAt(20_000, 1) } : {}),
      ...(e2e
        ? {
            e2e: {
              tick_ms: e2e.tick_ms,
              bytes_per_client_s: e2e.bytes_per_client_s,
              input_ack_ms: e2e.input_ack_ms,
              rss_mb: e2e.rss_mb,
              shard_cpu_pct: e2e.shard_cpu_pct,
              bots_cpu_pct: e2e.bots_cpu_pct,
              clients: e2e.joined,
              max_clients_at_40hz: maxAt40,
              ticks_over_25ms: e2e.ticks_over_25ms,
              tick_unqueued_ms: e2e.tick_unqueued_ms,
              ticks_over_25ms_unqueued: e2e.ticks_over_25ms_unqueued,
              max_snapshot_gap_ms: e2e.max_snapshot_gap_ms,
              thread_sessions: e2e.thread_sessions,
              gc_pauses: e2e.gc_pauses,
              join_tick_ms: e2e.join_tick_ms,
              kicked: e2e.kicked,
              closed: e2e.closed,
            },
            ramp,
          }
        : {}),
      ...(idle ? { idle } : {}),
      gc_max_pause_ms: Math.max(...kernels.map((r) => r.gc_max_pause_ms), e2e?.gc_max_pause_ms ?? 0),
    }),
  );
}
process.exit(0);
