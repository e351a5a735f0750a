import { describe, expect, it } from 'vitest';
import { generateSigningKeys, KeyRing, verifyAccessToken } from './keys.js';

describe('KeyRing', () => {
  it('signs with the first key, publishes every key without private parts, and verifies tokens of all', async () => {
    const a = await generateSigningKeys('EdDSA', 'new');
    const b = await generateSigningKeys('ES256', 'old');
    const ring = await KeyRing.fromJwks({ keys: [...a.keys, ...b.keys] });
    expect(ring.jwks.keys.map((k) => [k.kid, k.alg, k.d])).toEqual([
      ['new', 'EdDSA', undefined],
      ['old', 'ES256', undefined],
    ]);
    const oldRing = await KeyRing.fromJwks(b);
    const opts = { issuer: 'i', audience: 'a', clockToleranceS: 5, maxAgeS: 905, nowS: () => 1_000_000 };
    const claims = { user_id: 'u', sid: 's' };
    // A token from the old key still verifies during the overlap.
    const oldToken = await oldRing.sign(claims, 'u', 1_000_000, 900, 'i', 'a');
    expect((await verifyAccessToken(oldToken, ring.keySet(), opts)).sub).toBe('u');
    const newToken = await ring.sign(claims, 'u', 1_000_000, 900, 'i', 'a');
    expect(JSON.parse(Buffer.from(newToken.split('.')[0] as string, 'base64url').toString())).toEqual({
      alg: 'EdDSA',
      kid: 'new',
      typ: 'at+jwt',
    });
    // Once the old key is dropped, its tokens stop verifying.
    await expect(verifyAccessToken(oldToken, (await KeyRing.fromJwks(a)).keySet(), opts)).rejects.toThrow();
  });

  it.each([
    [{}, /expected \{ "keys"/],
    [{ keys: [{ kty: 'RSA', kid: 'r', d: 'x', n: 'y', e: 'AQAB' }] }, /only Ed25519 \(EdDSA\) and P-256 \(ES256\)/],
    [{ keys: [{ kty: 'oct', kid: 'h', k: 'c2VjcmV0' }] }, /only Ed25519/],
    [{ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'x' }] }, /needs a kid/],
  ])('refuses %j', async (doc, message) => {
    await expect(KeyRing.fromJwks(doc)).rejects.toThrow(message);
  });

  it('refuses a public key alone and a kid used twice', async () => {
    const k = (await generateSigningKeys('EdDSA', 'k')).keys[0];
    const { d: _d, ...pub } = k as Record<string, unknown>;
    await expect(KeyRing.fromJwks({ keys: [pub] })).rejects.toThrow(/private key material/);
    await expect(KeyRing.fromJwks({ keys: [k, k] })).rejects.toThrow(/kid k is used twice/);
  });
});
