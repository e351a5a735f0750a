import { Writable } from 'node:stream';
import { expect, test } from 'vitest';
import { createLogger } from './logger.js';

test('logs JSON lines with the service name and censors secrets at any of the first levels', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const log = createLogger('gameserver', 'info', sink as never);
  log.info({ password: 'hunter2', req: { join_token: 'eyJ.secret' }, user: { creds: { token: 't0k' } }, player: 'p1' }, 'joined');
  log.debug('not at info level');
  expect(lines).toHaveLength(1);
  const record = JSON.parse(lines[0] as string);
  expect(record).toMatchObject({ service: 'gameserver', msg: 'joined', player: 'p1', password: '[redacted]' });
  expect(record.req.join_token).toBe('[redacted]');
  expect(record.user.creds.token).toBe('[redacted]');
  expect(lines[0]).not.toMatch(/hunter2|eyJ\.secret|t0k/);
});
