#!/usr/bin/env node
// npm run bench:shard [-- --json] [--ticks N]
// Kernel of the shard server: simulation + grid + area of interest + snapshot encoding, no sockets.
// Prints a table; with --json, one JSON object as the last line.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { type KernelResult, runKernel } from './kernel.js';

const { values } = parseArgs({
  options: { json: { type: 'boolean', default: false }, ticks: { type: 'string', default: '1200' } },
  strict: true,
});
const ticks = Number(values.ticks);
if (!Number.isInteger(ticks) || ticks < 100 || ticks > 100_000) {
  console.error(`bench:shard: --ticks must be an integer from 100 to 100000, got '${values.ticks}'`);
  process.exit(2);
}

const cases = [
  { entities: 10_000, subscribers: 2_000, visible: 32 },
  { entities: 20_000, subscribers: 5_000, visible: 32 },
];
const results: KernelResult[] = [];
for (const c of cases) {
  process.stderr.write(`kernel ${c.entities} entities / ${c.subscribers} subscribers: ${ticks} ticks...\n`);
  results.push(await runKernel({ ...c, ticks, warmup: 200 }));
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
console.log(`\nShard kernel (${ticks} ticks after 200 warm-up; ${machine})\n`);
console.log('| entities | subscribers | visible avg | tick p50 ms | tick p99 ms | tick max ms | ns/pair | bytes/client/tick | GC max ms |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  console.log(
    `| ${r.entities} | ${r.subscribers} | ${r.visibleAvg} | ${r.tick_ms.p50} | ${r.tick_ms.p99} | ${r.tick_ms.max} | ${r.ns_per_pair} | ${r.bytes_per_client_tick} | ${r.gc_max_pause_ms} |`,
  );
}
const main = results[0] as KernelResult;
console.log(
  `\ntargets (10,000 / 2,000): tick p50 ≤ 4 ms: ${main.tick_ms.p50 <= 4 ? 'met' : 'MISSED'}; p99 ≤ 8 ms: ${main.tick_ms.p99 <= 8 ? 'met' : 'MISSED'}`,
);
if (values.json) {
  console.log(
    JSON.stringify({
      machine,
      kernel: {
        tick_ms: main.tick_ms,
        ns_per_pair: main.ns_per_pair,
        bytes_per_client_tick: main.bytes_per_client_tick,
        visible_avg: main.visibleAvg,
      },
      kernel_20k_5k: results[1],
      gc_max_pause_ms: Math.max(...results.map((r) => r.gc_max_pause_ms)),
    }),
  );
}
