import { describe, expect, test } from 'vitest';
import { ApiError } from './auth.js';
import { sha256Checksum } from './encoding.js';
import { verifySave } from './saves.js';

describe('verifySave', () => {
  const data = new TextEncoder().encode('level 3, 120 gold');

  test('accepts bytes matching their checksum and size', async () => {
    await expect(
      verifySave({ slot: 's', version: 1, checksum: await sha256Checksum(data), size: data.length }, data),
    ).resolves.toBeUndefined();
  });

  test('rejects a flipped bit or a wrong size with SAVES_CHECKSUM_MISMATCH', async () => {
    const meta = { slot: 'main', version: 4, checksum: await sha256Checksum(data), size: data.length };
    const flipped = data.slice();
    flipped[3] = (flipped[3] as number) ^ 1;
    const err = await verifySave(meta, flipped).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 0, code: 'SAVES_CHECKSUM_MISMATCH', data: { expected: meta.checksum } });
    expect((err as ApiError).message).toMatch(/^save main v4 arrived corrupted: expected sha256:[0-9a-f]{64}/);
    await expect(verifySave({ ...meta, size: data.length + 1 }, data)).rejects.toMatchObject({ code: 'SAVES_CHECKSUM_MISMATCH' });
  });
});
