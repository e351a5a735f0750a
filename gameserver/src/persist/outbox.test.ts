// The in-process outbox and sink, which need no server (the contract they share with PostgreSQL
// and Redis is test/persist-contract.test.ts).
import { expect, test } from 'vitest';
import { CallbackSink, type DomainEvent, MemoryOutbox, type RelayedEvent } from './outbox.js';

const key = { namespace: '', world: 'w', instance: 0, shard: 'w-0-0' };
const joined = (n: number): DomainEvent => ({ type: 'player_joined', playerId: `p${n}`, at: n, eventKey: `k:${n}` });

test('the in-process outbox keeps the keys of the last 10,000 relayed events, not of every event it ever took', async () => {
  const outbox = new MemoryOutbox();
  const seen: RelayedEvent[] = [];
  const sink = new CallbackSink((e) => seen.push(e));
  const events = Array.from({ length: 10_001 }, (_, i) => joined(i + 1));
  await outbox.append(key, events);
  while ((await outbox.relay(key, sink)) > 0);
  expect(seen).toHaveLength(10_001);
  // Past 10,000 relayed it forgets them, keys and all: an append of the first one again is new to it.
  await outbox.append(key, [joined(1)]);
  expect(await outbox.pending(key)).toBe(1);
  // One it relayed since is still known: its retried append is skipped.
  await outbox.append(key, [joined(1)]);
  expect(await outbox.pending(key)).toBe(1);
});
