// Opens N WebSocket connections to a shard and keeps them open without joining; prints "open N"
// once all are open. Used by bench:shard to measure memory per idle connection.
import { WebSocket } from 'ws';

const [url, countArg] = process.argv.slice(2);
const count = Number(countArg);
if (!url || !Number.isInteger(count) || count < 1 || count > 50_000) {
  console.error('usage: idle-clients.ts <ws-url> <count 1..50000>');
  process.exit(2);
}
const sockets: WebSocket[] = [];
let open = 0;
let failed = 0;
await new Promise<void>((resolve) => {
  let started = 0;
  const next = () => {
    // At most 200 handshakes in flight.
    while (started < count && started - open - failed < 200) {
      started++;
      const ws = new WebSocket(url);
      ws.on('open', () => {
        open++;
        if (open + failed === count) resolve();
        else next();
      });
      ws.on('error', () => {
        failed++;
        if (open + failed === count) resolve();
        else next();
      });
      sockets.push(ws);
    }
  };
  next();
});
console.log(`open ${open} (failed ${failed})`);
process.on('SIGTERM', () => {
  for (const s of sockets) s.terminate();
  process.exit(0);
});
setInterval(() => undefined, 60_000);
