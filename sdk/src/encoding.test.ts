// Property tests of the browser-safe byte helpers against Node's own base64 and SHA-256.
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { fromBase64, sha256Checksum, toBase64, toBytes } from './encoding.js';

describe('base64', () => {
  test('encodes exactly as Buffer does and decodes back to the same bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        const text = toBase64(bytes);
        expect(text).toBe(Buffer.from(bytes).toString('base64'));
        expect(fromBase64(text)).toEqual(bytes);
      }),
      { numRuns: 500 },
    );
  });

  test('decodes unpadded input too', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        expect(fromBase64(toBase64(bytes).replace(/=+$/, ''))).toEqual(bytes);
      }),
    );
  });

  test('round-trips every byte value, and large inputs', () => {
    const all = Uint8Array.from({ length: 256 }, (_, i) => i);
    expect(fromBase64(toBase64(all))).toEqual(all);
    const big = Uint8Array.from({ length: 300_001 }, (_, i) => (i * 7919) & 255);
    expect(toBase64(big)).toBe(Buffer.from(big).toString('base64'));
    // (Buffer.equals: vitest's deep equality is slow on 300 000 elements.)
    expect(Buffer.from(fromBase64(toBase64(big))).equals(big)).toBe(true);
  });

  test('refuses what is not base64 with a TypeError, never wrong bytes', () => {
    for (const bad of ['A', 'AAAAA', 'AB=C', '=AAA', '====', 'AA==AA==', 'ab-_', 'aé==', 'AA A']) {
      expect(() => fromBase64(bad), bad).toThrow(TypeError);
    }
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (s) => {
        try {
          const out = fromBase64(s);
          // Whatever it accepts, Node reads the same way.
          expect(out).toEqual(new Uint8Array(Buffer.from(s, 'base64')));
        } catch (err) {
          expect(err).toBeInstanceOf(TypeError);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe('sha256Checksum', () => {
  test("is the control plane's sha256:<hex> of the bytes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 512 }), async (bytes) => {
        expect(await sha256Checksum(bytes)).toBe(`sha256:${createHash('sha256').update(bytes).digest('hex')}`);
      }),
    );
    expect(await sha256Checksum(new Uint8Array(0))).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  test('hashes only the view, not the rest of its buffer', async () => {
    const whole = Uint8Array.from([1, 2, 3, 4, 5]);
    expect(await sha256Checksum(whole.subarray(1, 3))).toBe(await sha256Checksum(Uint8Array.from([2, 3])));
  });
});

test('toBytes encodes strings as UTF-8 and passes bytes through', () => {
  expect(toBytes('héllo')).toEqual(new Uint8Array(Buffer.from('héllo', 'utf8')));
  const b = Uint8Array.from([0, 255]);
  expect(toBytes(b)).toBe(b);
});
