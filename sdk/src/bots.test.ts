// The bots CLI (`npm run bots`) run as it is run, against a scripted shard over a real WebSocket.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { aethex, encodeSnapshotMessage, SNAPSHOT_LAYOUT, SnapshotBodyWriter } from '@aethex/proto';
import { afterEach, expect, test } from 'vitest';
import { type WebSocket, WebSocketServer } from 'ws';
import type { BotReport } from './bots.js';

const { ClientMessage, ServerMessage } = aethex.v1;
const run = promisify(execFile);

let server: WebSocketServer | undefined;
afterEach(async () => {
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = undefined;
});

/** Runs the CLI with `args`: its exit status and output. */
async function bots(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const cli = fileURLToPath(new URL('./bots.ts', import.meta.url));
  try {
    const { stdout, stderr } = await run(process.execPath, ['--conditions=aethex-source', '--import', 'tsx', cli, ...args], {
      timeout: 30_000,
    });
    return { status: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { status: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/**
 * A scripted shard for the bots: answers a Join with `welcome` (then calls `onJoin` with the
 * socket and the join's player id) and every input with a snapshot acknowledging it (`onInput`
 * counts them) holding the entities `seen` says for that socket (none by default); its URL.
 */
async function snapshotShard(
  welcome: aethex.v1.IWelcome,
  on: { onJoin?: (socket: WebSocket, playerId: string) => void; onInput?: () => void; seen?: (socket: WebSocket) => number[] } = {},
): Promise<string> {
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (socket) => {
    let tick = 0;
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      if (msg.body === 'join') {
        socket.send(ServerMessage.encode({ welcome }).finish());
        const token = msg.join?.joinToken ?? '';
        const playerId = token.includes('.') ? JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).sub : token;
        on.onJoin?.(socket, playerId);
      } else if (msg.body === 'input') {
        on.onInput?.();
        tick++;
        const w = new SnapshotBodyWriter();
        for (const id of on.seen?.(socket) ?? []) w.full(id, id, 0, 1, 0);
        socket.send(
          encodeSnapshotMessage({
            tick,
            baseTick: 0,
            lastInputSeq: msg.input?.seq as number,
            layout: SNAPSHOT_LAYOUT,
            entities: w.bytes(),
            removed: new Uint32Array(0),
            removedCount: 0,
          }),
        );
      }
    });
  });
  await new Promise((r) => server?.once('listening', r));
  return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('bad flags are refused naming the flag, without a stack trace', async () => {
  const cases: [string[], string][] = [
    [
      ['--url', 'ws://127.0.0.1:1', '--token', 't', '--duration', '2'],
      "--duration must be seconds above 2 (the first 2 s are not measured) up to 86400, got '2'",
    ],
    [['--url', 'ws://bad host:1', '--token', 't'], "--url must be a ws:// or wss:// address, got 'ws://bad host:1'"],
    [
      ['--url', 'ws://127.0.0.1:1', '--private-key', '/nonexistent/key.pem'],
      "--private-key: cannot read a private key from /nonexistent/key.pem: ENOENT: no such file or directory, open '/nonexistent/key.pem'",
    ],
    [['--url', 'ws://127.0.0.1:1', '--private-key', fileURLToPath(import.meta.url)], '--private-key: cannot read a private key from '],
  ];
  for (const [args, message] of cases) {
    const { status, stderr } = await bots(...args);
    expect(status, args.join(' ')).toBe(2);
    expect(stderr, args.join(' ')).toContain(`bots: ${message}`);
    expect(stderr, args.join(' ')).not.toMatch(/^\s+at /m);
  }
}, 30_000);

test('--token alone runs one bot; a bot whose session ended is no longer driven, and the report measures the run after its first 2 s', async () => {
  const url = await snapshotShard(
    { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1, maxSpeed: 5 },
    // The session ends after 2.5 s: the shard closes it.
    { onJoin: (socket) => setTimeout(() => socket.close(4003, 'test over'), 2500) },
  );
  const { status, stdout, stderr } = await bots('--url', url, '--token', 't', '--duration', '3.5', '--json');
  expect(stderr).toBe('');
  expect(status).toBe(0);
  const report = JSON.parse(stdout.trim().split('\n').at(-1) as string) as BotReport;
  expect(report).toMatchObject({ bots: 1, joined: 1, closed: { 4003: 1 }, unacknowledged_inputs: 0 });
  // The 3.5 s run less its first 2 s: never less than 1.5 s (the run's timer does not fire early),
  // more by however late it fired on a busy machine; a report over the whole run would say 3.5 s.
  expect(report.seconds).toBeGreaterThanOrEqual(1.5);
  expect(report.seconds).toBeLessThan(3);
  expect(report.input_ack_ms.p50).toBeGreaterThan(0);
  expect(report.input_ack_ms.max).toBeGreaterThanOrEqual(report.input_ack_ms.p99);
  expect(report.raw?.latency_hist.reduce((a, b) => a + b, 0)).toBeGreaterThan(10);
}, 30_000);

test('every numeric flag is plain decimal: hex, exponents, signs and empty values are refused naming the flag', async () => {
  const base = ['--url', 'ws://127.0.0.1:1', '--token', 't'];
  const cases: [string[], string][] = [
    [['--duration', '0x10'], "--duration must be seconds above 2 (the first 2 s are not measured) up to 86400, got '0x10'"],
    [['--duration', '1e1'], "--duration must be seconds above 2 (the first 2 s are not measured) up to 86400, got '1e1'"],
    [['--ramp-ms', ''], "--ramp-ms must be a decimal number from 0 to 10000, got ''"],
    [['--ramp-ms=-0'], "--ramp-ms must be a decimal number from 0 to 10000, got '-0'"],
    [['--input-groups', ' 5'], "--input-groups must be a decimal integer from 1 to 25, got ' 5'"],
    [['--instance', '+1'], "--instance must be a decimal integer from 0 to 1000000, got '+1'"],
    [['--min-joined', '2'], "--min-joined must be a decimal integer from 0 to 1, got '2'"],
  ];
  for (const [args, message] of cases) {
    const { status, stderr } = await bots(...base, ...args);
    expect(status, args.join(' ')).toBe(2);
    expect(stderr, args.join(' ')).toContain(`bots: ${message}`);
  }
}, 30_000);

test('bots that did not join: the run exits 1 (below --min-joined, by default all), prints why, and averages over the bots that joined', async () => {
  const keyFile = join(mkdtempSync(join(tmpdir(), 'bots-key-')), 'key.pem');
  writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  let joins = 0;
  server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  server.on('connection', (socket) => {
    let tick = 0;
    socket.on('message', (data) => {
      const msg = ClientMessage.decode(data as Buffer);
      if (msg.body === 'join') {
        // The first bot of each run joins; the second is refused.
        if (joins++ % 2 === 1) {
          socket.send(
            ServerMessage.encode({ kick: { reason: aethex.v1.ReasonCode.REASON_CODE_SHARD_FULL, message: 'shard is full' } }).finish(),
          );
          socket.close(1013, 'shard full');
          return;
        }
        socket.send(
          ServerMessage.encode({ welcome: { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1, maxSpeed: 5 } }).finish(),
        );
      } else if (msg.body === 'input') {
        tick++;
        const w = new SnapshotBodyWriter();
        for (const id of [7, 8, 9, 10]) w.full(id, id, 0, 1, 0);
        socket.send(
          encodeSnapshotMessage({
            tick,
            baseTick: 0,
            lastInputSeq: msg.input?.seq as number,
            layout: SNAPSHOT_LAYOUT,
            entities: w.bytes(),
            removed: new Uint32Array(0),
            removedCount: 0,
          }),
        );
      }
    });
  });
  await new Promise((r) => server?.once('listening', r));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const args = ['--url', url, '--private-key', keyFile, '--count', '2', '--ramp-ms', '50', '--duration', '3.5', '--json'];

  const short = await bots(...args);
  expect(short.status).toBe(1);
  expect(short.stderr).toContain(
    'bots: only 1 of 2 bots joined (at least 2 wanted: --min-joined); join errors: {"kicked: SHARD_FULL: shard is full":1}',
  );
  expect(short.stdout).toContain('join failed: 1 × kicked: SHARD_FULL: shard is full');
  expect(short.stdout).toContain('kicked: 1 × SHARD_FULL');
  const report = JSON.parse(short.stdout.trim().split('\n').at(-1) as string) as BotReport;
  expect(report).toMatchObject({ bots: 2, joined: 1, kicked: { SHARD_FULL: 1 }, join_errors: { 'kicked: SHARD_FULL: shard is full': 1 } });
  // Four entities in the view of the one bot that joined.
  expect(report.entities_seen_avg).toBe(4);
  // One bot at one input (so one snapshot) a tick at most, over the seconds measured only.
  expect(report.snapshots).toBeGreaterThan(0);
  expect(report.snapshots / report.seconds).toBeLessThanOrEqual(42);

  const enough = await bots(...args, '--min-joined', '1');
  expect(enough.status).toBe(0);
  expect(enough.stderr).toBe('');
}, 30_000);

test("bots drive at the shard's tick from the Welcome (tickIntervalUs), not a fixed 25 ms", async () => {
  // An 80 Hz shard (12.5 ms): one snapshot for each input, so the report counts the inputs.
  let inputs = 0;
  let welcomedAt = 0;
  const url = await snapshotShard(
    { protocolVersion: 1, entityId: 7, tickRateHz: 80, tickIntervalUs: 12_500, positionScale: 1, maxSpeed: 5 },
    { onJoin: () => (welcomedAt = performance.now()), onInput: () => inputs++ },
  );
  const { status, stderr } = await bots('--url', url, '--token', 't', '--duration', '4', '--json');
  const seconds = (performance.now() - welcomedAt) / 1000;
  expect(stderr).toBe('');
  expect(status).toBe(0);
  // At most 80 a second (the SDK sends one input per tick at most); driven every 25 ms it would be
  // 40. Counted from the Welcome to the bot's exit, which is later than its last input: a slow
  // machine lowers the rate, never raises it.
  expect(inputs / seconds).toBeGreaterThan(55);
  expect(inputs / seconds).toBeLessThanOrEqual(81);
}, 30_000);

test('a bot whose session ended counts in the rates over the time it was connected, and not in the view at the end', async () => {
  const keyFile = join(mkdtempSync(join(tmpdir(), 'bots-key-')), 'key.pem');
  writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }));
  // Two bots, each seeing 4 entities a tick; the shard closes bot-0's session 3.5 s into the run
  // (1.5 s into the measured seconds) and, for its last 0.5 s, shows it 8.
  const seen = new Map<WebSocket, number[]>();
  const url = await snapshotShard(
    { protocolVersion: 1, entityId: 7, tickRateHz: 40, positionScale: 1, maxSpeed: 5 },
    {
      seen: (socket) => seen.get(socket) ?? [7, 8, 9, 10],
      onJoin: (socket, playerId) => {
        if (playerId !== 'bot-0') return;
        setTimeout(() => seen.set(socket, [7, 8, 9, 10, 11, 12, 13, 14]), 3000);
        setTimeout(() => socket.close(4003, 'test over'), 3500);
      },
    },
  );
  const { status, stdout, stderr } = await bots('--url', url, '--private-key', keyFile, '--count', '2', '--duration', '5.5', '--json');
  expect(stderr).toBe('');
  expect(status).toBe(0);
  expect(stdout).toContain('2/2 joined, 1 still on at the end');
  const report = JSON.parse(stdout.trim().split('\n').at(-1) as string) as BotReport;
  expect(report).toMatchObject({ joined: 2, live: 1, closed: { 4003: 1 }, entities_seen_avg: 4 });
  // Both received about the same a second while connected (bot-0 a little more: 8 entities for
  // its last 0.5 s); over the whole 3.5 s measured, bot-0's would read under half of bot-1's.
  const rates = report.raw?.rates ?? [];
  expect(rates).toHaveLength(2);
  const [low, high] = rates;
  expect((low as number) / (high as number)).toBeGreaterThan(0.6);
}, 30_000);
