// A hostile client population for the gateway test: CONNECTIONS sockets, half of them joined with
// real tokens, sending fast-check-generated random and truncated frames at RATE messages/s in
// total for SECONDS. Closed sockets reconnect. Prints a JSON summary at the end: frames sent,
// reconnections, and the `Error` replies the shard sent back.
import { readFileSync } from 'node:fs';
import { aethex } from '@aethex/proto';
import fc from 'fast-check';
import { WebSocket } from 'ws';

const [url, tokensFile, connectionsArg, rateArg, secondsArg] = process.argv.slice(2);
const connections = Number(connectionsArg);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
if (!url || !tokensFile || !(connections > 0) || !(rate > 0) || !(seconds > 0)) {
  console.error('usage: fuzz-clients.ts <ws-url> <tokens.json> <connections> <messages/s> <seconds>');
  process.exit(2);
}
const tokens = JSON.parse(readFileSync(tokensFile, 'utf8')) as string[];
const valid = aethex.v1.ClientMessage.encode({ input: { seq: 7, move: { x: 1, y: 1 }, ackTick: 3, clientTimeMs: 99 } }).finish();
const frames = fc.sample(
  fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 300 }),
    fc.nat({ max: valid.length - 1 }).map((n) => valid.slice(0, n)),
    fc.uint8Array({ minLength: 1, maxLength: 40 }).map((tail) => Uint8Array.from([...valid, ...tail])),
  ),
  5000,
);
let sent = 0;
let reconnects = 0;
let errors = 0;
const sockets: (WebSocket | undefined)[] = new Array(connections);
function open(i: number): void {
  const ws = new WebSocket(url as string);
  ws.on('open', () => {
    if (i % 2 === 0)
      ws.send(aethex.v1.ClientMessage.encode({ join: { joinToken: tokens[i % tokens.length], protocolVersion: 1 } }).finish());
  });
  ws.on('message', (data) => {
    try {
      if (aethex.v1.ServerMessage.decode(data as Buffer).body === 'error') errors++;
    } catch {
      // Not the shard's to send, but not this test's to judge either.
    }
  });
  ws.on('close', () => {
    sockets[i] = undefined;
    reconnects++;
    setTimeout(() => open(i), 50);
  });
  ws.on('error', () => undefined);
  sockets[i] = ws;
}
for (let i = 0; i < connections; i++) open(i);
// Tell the test the attack begins, so it measures the attack and not this process compiling.
console.log(JSON.stringify({ started: true }));
// Paced by the clock, not by the timer: on a loaded machine the timer fires late, and each firing
// sends what is due so far (to a socket that is open), so the attack keeps its rate.
const began = performance.now();
const timer = setInterval(() => {
  const due = Math.floor(((performance.now() - began) / 1000) * rate);
  for (let tries = 4 * (due - sent); sent < due && tries > 0; tries--) {
    const ws = sockets[Math.floor(Math.random() * connections)];
    if (ws && ws.readyState === 1) {
      ws.send(frames[sent % frames.length] as Uint8Array);
      sent++;
    }
  }
}, 10);
setTimeout(() => {
  clearInterval(timer);
  console.log(JSON.stringify({ sent, reconnects, errors }));
  process.exit(0);
}, seconds * 1000);
