// An idle process that notices when the machine does not run it: a 2 ms timer that reports every
// wake-up later than 20 ms as one JSON line {at, ms} (epoch milliseconds). Tests that bound
// latencies run it beside the work under test, so that a stall of the whole shared machine (the
// VM paused, every core taken) is told apart from a stall of the process under test.
let last = performance.now();
setInterval(() => {
  const now = performance.now();
  if (now - last > 20) process.stdout.write(`${JSON.stringify({ at: performance.timeOrigin + last, ms: now - last })}\n`);
  last = now;
}, 2);
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
