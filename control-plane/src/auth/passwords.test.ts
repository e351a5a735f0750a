import { describe, expect, it } from 'vitest';
import { AppError } from '../errors.js';
import { Hasher, hashParams, needsRehash } from './passwords.js';

const wanted = { memoryKiB: 19_456, iterations: 2 };

describe('needsRehash', () => {
  it.each([
    ['$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', false],
    ['$argon2id$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA', false],
    ['$argon2id$v=19$m=4096,t=2,p=1$c2FsdA$aGFzaA', true],
    ['$argon2id$v=19$m=19456,t=1,p=1$c2FsdA$aGFzaA', true],
    ['$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA', true],
    ['$2b$10$abcdefghijklmnopqrstuv', true],
  ])('%s → %s', (phc, expected) => expect(needsRehash(phc, wanted)).toBe(expected));

  it('reads the parameters of a hash it made', async () => {
    const h = new Hasher(wanted, 1, 0);
    expect(hashParams(await h.hash('pw-123456'))).toEqual(wanted);
  });
});

describe('Hasher', () => {
  it('verifies, refuses a wrong password and an unknown account at the same cost', async () => {
    const h = new Hasher(wanted, 2, 4);
    const stored = await h.hash('right password');
    expect(await h.verify(stored, 'right password')).toBe(true);
    expect(await h.verify(stored, 'wrong password')).toBe(false);
    expect(await h.verify(undefined, 'right password')).toBe(false);
    expect(h.computed).toBe(4);
  });

  it('runs at most `concurrency` at once and refuses past the queue with AUTH_BUSY', async () => {
    const h = new Hasher(wanted, 1, 2);
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => h.hash('pw-123456')));
    const refused = results.filter((r) => r.status === 'rejected');
    expect(refused).toHaveLength(2);
    expect((refused[0] as PromiseRejectedResult).reason).toBeInstanceOf(AppError);
    expect((refused[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'AUTH_BUSY', status: 503, retryAfterS: 1 });
    expect(h.computed).toBe(3);
  });
});
