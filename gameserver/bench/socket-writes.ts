#!/usr/bin/env node
// npm run bench:socket-writes [-- --json] [--connections N] [--rounds N] [--bytes N]
// What one round of small socket writes costs the shard's tick thread — one write per client, as a
// tick's snapshots are — and whether a second thread writing half of them shortens the round.
// A receiver process (this file with --receive) holds the other ends and reads everything, as the
// bots do. Three ways to write each round:
//   socket.write   Node's stream (the gateway's way before writeWhole, and still behind a queue), one thread;
//   writeSync(fd)  the socket's descriptor written directly (the gateway's `writeWhole`), one thread;
//   2 threads      writeSync(fd), half the sockets on a worker thread, half on this one.
import { type ChildProcess, fork } from 'node:child_process';
import { writeSync } from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { parseCli, percentile } from '@aethex/runtime';
import { socketFd } from '@aethex/runtime/ws-frames';

const SELF = fileURLToPath(import.meta.url);

// The second writer, woken and waited for through shared memory as the shard's snapshot threads
// are (ctl[0]: round begun, ctl[1]: round done). Plain JavaScript: runs the same from source and built.
const WRITER = `
const { workerData } = require('node:worker_threads');
const { writeSync } = require('node:fs');
const { fds, bytes, ctl } = workerData;
const buf = Buffer.alloc(bytes, 1);
for (let seen = 0; ; ) {
  Atomics.wait(ctl, 0, seen);
  seen = Atomics.load(ctl, 0);
  if (seen < 0) break;
  for (const fd of fds) writeSync(fd, buf);
  Atomics.store(ctl, 1, seen);
  Atomics.notify(ctl, 1);
}`;

if (process.argv[2] === '--receive') {
  // Started by main() below, not by hand.
  const [port, count] = process.argv.slice(3).map(Number) as [number, number];
  if (!process.send || !(port > 0 && port < 65_536) || !(count >= 1)) {
    console.error("--receive <port> <count> starts this benchmark's own receiver process; run the benchmark without it");
    process.exit(2);
  }
  let open = 0;
  for (let i = 0; i < count; i++) {
    const c = net.connect(port, '127.0.0.1', () => {
      if (++open === count) process.send?.('up');
    });
    c.on('data', () => undefined);
  }
} else {
  await main();
}

async function main(): Promise<void> {
  const USAGE = 'usage: npm run bench:socket-writes [-- --json] [--connections N] [--rounds N] [--bytes N]';
  const cli = parseCli('bench:socket-writes', USAGE, {
    json: { type: 'boolean', default: false },
    connections: { type: 'string', default: '1000' },
    rounds: { type: 'string', default: '400' },
    bytes: { type: 'string', default: '80' },
  });
  const connections = cli.int('connections', 2, 10_000);
  const rounds = cli.int('rounds', 50, 100_000);
  const bytes = cli.int('bytes', 1, 65_536);

  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    sockets.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const receiver: ChildProcess = fork(SELF, ['--receive', String(port), String(connections)]);
  await new Promise((resolve) => receiver.once('message', resolve));
  while (sockets.length < connections) await new Promise((r) => setTimeout(r, 10));
  const fds = sockets.map(socketFd);
  if (fds.some((fd) => fd < 0)) throw new Error('no file descriptor for a socket on this platform');
  const buf = Buffer.alloc(bytes, 1);
  const half = connections >> 1;
  const ctl = new Int32Array(new SharedArrayBuffer(8));
  const worker = new Worker(WRITER, { eval: true, workerData: { fds: fds.slice(half), bytes, ctl } });
  await new Promise((r) => setTimeout(r, 300));

  const modes = {
    'socket.write': async () => {
      for (const s of sockets) s.write(buf);
    },
    'writeSync(fd)': async () => {
      for (const fd of fds) writeSync(fd, buf);
    },
    '2 threads': async () => {
      const round = (ctl[0] as number) + 1;
      Atomics.store(ctl, 0, round);
      Atomics.notify(ctl, 0);
      for (let i = 0; i < half; i++) writeSync(fds[i] as number, buf);
      while (Atomics.load(ctl, 1) !== round) Atomics.wait(ctl, 1, Atomics.load(ctl, 1), 1000);
    },
  };
  // Modes take turns round by round, so a noisy machine's slow minutes fall on all of them alike.
  const names = Object.keys(modes) as (keyof typeof modes)[];
  const wall = new Map(names.map((m) => [m, [] as number[]]));
  const cpu = new Map(names.map((m) => [m, [] as number[]]));
  for (let r = 0; r < rounds; r++) {
    for (const mode of names) {
      const c = process.cpuUsage();
      const s = performance.now();
      await modes[mode]();
      (wall.get(mode) as number[]).push(performance.now() - s);
      const used = process.cpuUsage(c);
      (cpu.get(mode) as number[]).push(used.user + used.system);
      // One round per 40 Hz tick, as the shard writes.
      await new Promise((res) => setTimeout(res, 25));
    }
  }
  const results = names.map((mode) => {
    const times = (wall.get(mode) as number[]).sort((a, b) => a - b);
    const cpuUs = (cpu.get(mode) as number[]).sort((a, b) => a - b);
    return {
      mode,
      round_ms: { p50: Math.round(percentile(times, 50) * 100) / 100, p90: Math.round(percentile(times, 90) * 100) / 100 },
      cpu_us_per_write: Math.round((percentile(cpuUs, 50) / connections) * 10) / 10,
    };
  });
  Atomics.store(ctl, 0, -1);
  Atomics.notify(ctl, 0);
  await worker.terminate();
  receiver.kill();
  for (const s of sockets) s.destroy();
  server.close();

  console.log(`\nSocket writes: ${connections} loopback connections, ${bytes} B each per round, ${rounds} rounds 25 ms apart\n`);
  console.log('| writer | round p50 ms | round p90 ms | CPU µs per write (median round, all threads) |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const r of results) console.log(`| ${r.mode} | ${r.round_ms.p50} | ${r.round_ms.p90} | ${r.cpu_us_per_write} |`);
  if (cli.values.json) console.log(JSON.stringify({ connections, bytes, rounds, results }));
}
