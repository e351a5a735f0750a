import { createLogger } from '@aethex/runtime';
import { expect, test } from 'vitest';
import { BehindLog } from './behind-log.js';

test('ticks dropped: the first drop, then a count at most every 10 s, then one line once the loop keeps up', () => {
  const lines: Record<string, unknown>[] = [];
  let now = 0;
  const behind = new BehindLog(createLogger('test', 'info', { write: (line: string) => void lines.push(JSON.parse(line)) }), () => now);
  // 16 drops a second for 25 s, a tick between each.
  for (; now < 25_000; now += 62.5) {
    behind.skipped(2);
    behind.stepped();
  }
  expect(lines.map((l) => l.msg)).toEqual([
    'tick loop fell behind; ticks dropped',
    'tick loop fell behind; ticks dropped (still failing: 160 more failures since the last line)',
    'tick loop fell behind; ticks dropped (still failing: 160 more failures since the last line)',
  ]);
  expect(lines[0]).toMatchObject({ level: 40, ticks: 2, dropped: 2 });
  expect(lines[2]).toMatchObject({ level: 40, ticks: 2, dropped: 642, failures: 160, failing_for_ms: 20_000 });
  // Kept up for 10 s: one line, and the next drop is a first again.
  for (const end = now + 10_000; now <= end; now += 25) behind.stepped();
  expect(lines.at(-1)).toMatchObject({ level: 30, msg: 'tick loop works again after 400 failures' });
  behind.skipped(3);
  expect(lines.at(-1)).toMatchObject({ msg: 'tick loop fell behind; ticks dropped', ticks: 3, dropped: 3 });
  expect(lines).toHaveLength(5);
});
