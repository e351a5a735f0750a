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

test('a URL error does not carry the URL it could not parse into the log', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  const log = createLogger('gameserver', 'info', sink as never);
  let err: unknown;
  try {
    new URL('redis://:S3cr#tPassw0rd@127.0.0.1:6379');
  } catch (e) {
    err = e;
  }
  expect((err as { input?: string }).input).toContain('S3cr#t');
  log.fatal({ err }, 'could not start');
  expect(lines).toHaveLength(1);
  expect(lines[0]).not.toContain('S3cr#t');
  expect(JSON.parse(lines[0] as string).err.input).toBe('[redacted]');
});
