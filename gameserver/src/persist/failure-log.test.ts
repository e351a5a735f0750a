import { createLogger } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { FailureLog } from './failure-log.js';

test('after it works again, a new run of failures is counted from nothing: its summary holds none of the last run’s', () => {
  const lines: Record<string, unknown>[] = [];
  let now = 0;
  const log = new FailureLog(
    createLogger('test', 'info', { write: (line: string) => void lines.push(JSON.parse(line)) }),
    'outbox append',
    () => now,
    1000,
  );
  // A first run: its first failure, and 3 more before a summary was due.
  for (; now < 400; now += 100) log.failed('warn', new Error('down'), {}, 'outbox append failed; will retry');
  log.recovered();
  expect(lines.map((l) => l.msg)).toEqual(['outbox append failed; will retry', 'outbox append works again after 4 failures']);
  // A second run: its first failure, then 2 more, the last one a summary.
  for (const at of [2000, 2100, 3000]) {
    now = at;
    log.failed('warn', new Error('down again'), {}, 'outbox append failed; will retry');
  }
  expect(lines.slice(2).map((l) => l.msg)).toEqual([
    'outbox append failed; will retry',
    'outbox append failed; will retry (still failing: 2 more failures since the last line)',
  ]);
  expect(lines.at(-1)).toMatchObject({ failures: 2, failing_for_ms: 1000, reason: 'down again' });
});
