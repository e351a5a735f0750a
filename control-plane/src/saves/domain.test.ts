import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AppError } from '../errors.js';
import { checksumOf, decodeSave, encodeSave, quotaCheck, writeAllowed } from './domain.js';

describe('writeAllowed', () => {
  it.each([
    [undefined, null, true],
    [undefined, 1, false],
    [1, null, false],
    [1, 1, true],
    [2, 1, false],
    [1, 2, false],
  ] as const)('current %s, expected %s → %s', (current, expected, ok) => {
    expect(writeAllowed(current, expected)).toBe(ok);
  });

  it('of many writers naming the same version, one wins and the rest lose (sequential application)', () => {
    fc.assert(
      fc.property(fc.array(fc.option(fc.integer({ min: 1, max: 5 }), { nil: null }), { maxLength: 40 }), (expectations) => {
        let current: number | undefined;
        const winners = new Map<number, number>();
        for (const e of expectations) {
          if (writeAllowed(current, e)) {
            current = (current ?? 0) + 1;
            winners.set(current, (winners.get(current) ?? 0) + 1);
          }
        }
        for (const n of winners.values()) expect(n).toBe(1);
        // Versions are dense: 1..current each won exactly once.
        expect([...winners.keys()]).toEqual(Array.from({ length: current ?? 0 }, (_, i) => i + 1));
      }),
    );
  });
});

describe('quotaCheck', () => {
  const ok = { usedBytes: 600, replacedBytes: 0, newBytes: 400, quotaBytes: 1000, slots: 1, newSlot: true, maxSlots: 2 };
  it('allows up to the quota exactly', () => expect(() => quotaCheck(ok)).not.toThrow());
  it('counts only the growth of a replaced slot', () =>
    expect(() => quotaCheck({ ...ok, newBytes: 900, replacedBytes: 500, newSlot: false })).not.toThrow());
  it('refuses a byte past the quota', () => expect(() => quotaCheck({ ...ok, newBytes: 401 })).toThrow(AppError));
  it('refuses a new slot past the slot count', () => expect(() => quotaCheck({ ...ok, slots: 2 })).toThrow(/at most 2 save slots/));
});

describe('encodeSave / decodeSave', () => {
  it('round-trips any bytes and reports the checksum of the original', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), async (bytes) => {
        const data = Buffer.from(bytes);
        const enc = await encodeSave(data);
        expect(enc.checksum).toBe(checksumOf(data));
        expect(await decodeSave(enc.stored, enc.checksum, 't')).toEqual(data);
      }),
      { numRuns: 50 },
    );
  });

  it('detects a flipped byte and a blob that is not gzip', async () => {
    const enc = await encodeSave(Buffer.from('the save'));
    const other = await encodeSave(Buffer.from('the savf'));
    await expect(decodeSave(other.stored, enc.checksum, 'x')).rejects.toMatchObject({ code: 'SAVES_CORRUPTED' });
    await expect(decodeSave(Buffer.from('plain'), enc.checksum, 'x')).rejects.toMatchObject({ code: 'SAVES_CORRUPTED' });
  });
});
