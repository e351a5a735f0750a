// The shard's side of bench:shard's idle-memory figure, in a process of its own: its RSS grows from
// a fresh heap, not into pages the end-to-end runs before it already hold. Prints one JSON line.
import { idleMemory } from './e2e.js';

const count = Number(process.argv[2]);
if (!Number.isInteger(count) || count < 1)
  throw new Error(`idle-shard: connection count must be a positive integer, got '${process.argv[2]}'`);
console.log(JSON.stringify(await idleMemory(count)));
process.exit(0);
