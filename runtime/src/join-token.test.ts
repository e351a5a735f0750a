import { createHmac, generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { describe, expect, test } from 'vitest';
import { createJoinVerifier, JoinTokenError, signJoinToken } from './join-token.js';

const ed = generateKeyPairSync('ed25519');
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ed25519');
const pem = (k: typeof ed.publicKey) => k.export({ type: 'spki', format: 'pem' }).toString();
const claims = { playerId: 'player-1', world: 'frontier', instance: 0, shard: 'frontier-0-0' };
const opts = { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' as const };
const shard = { issuer: opts.issuer, audience: opts.audience, world: 'frontier', instance: 0, shard: 'frontier-0-0' };
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function rejects(verify: (t: string) => Promise<unknown>, token: string, kind: JoinTokenError['kind'] = 'invalid') {
  const err = await verify(token).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JoinTokenError);
  expect((err as JoinTokenError).kind).toBe(kind);
}

describe('join tokens', () => {
  test('a token signed for this shard verifies, with Ed25519 and with P-256', async () => {
    const verify = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    expect(await verify(await signJoinToken(ed.privateKey, claims, opts))).toEqual(claims);
    const verifyEc = await createJoinVerifier({ ...shard, publicKeyPem: pem(ec.publicKey) });
    expect(await verifyEc(await signJoinToken(ec.privateKey, claims, { ...opts, alg: 'ES256' }))).toEqual(claims);
  });

  test('a sub (player id) with a control character or a lone surrogate is refused, saying why; other characters are taken', async () => {
    const verify = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    // NUL is what PostgreSQL text refuses; every one of these would poison a key, a row or a log line.
    for (const [playerId, at] of [
      ['bad\u0000player', '0000 at position 3'],
      ['\u0007bell', '0007 at position 0'],
      ['new\nline', '000A at position 3'],
      ['del\u007f', '007F at position 3'],
      ['c1\u0085', '0085 at position 2'],
      ['half\ud83d', 'D83D at position 4'],
      ['\ude00lone', 'DE00 at position 0'],
    ] as const) {
      const token = await signJoinToken(ed.privateKey, { ...claims, playerId }, opts);
      const err = await verify(token).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(JoinTokenError);
      expect((err as JoinTokenError).kind).toBe('invalid');
      expect((err as Error).message).toBe(
        `join token has a sub (player id) with a control character or a lone surrogate (U+${at}): a player id is stored and keyed as text`,
      );
    }
    for (const playerId of ['émilie', '玩家', 'smile😀', 'a b', 'x'.repeat(128)]) {
      expect((await verify(await signJoinToken(ed.privateKey, { ...claims, playerId }, opts))).playerId).toBe(playerId);
    }
    // 128 characters at most.
    await expect(verify(await signJoinToken(ed.privateKey, { ...claims, playerId: 'x'.repeat(129) }, opts))).rejects.toThrow(
      new JoinTokenError('invalid', 'join token has no valid sub (player id)'),
    );
  });

  test('forged, expired, misdirected and malformed tokens are refused', async () => {
    const verify = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    const good = await signJoinToken(ed.privateKey, claims, opts);
    const [h, p, s] = good.split('.') as [string, string, string];
    const now = Math.floor(Date.now() / 1000);
    const payload = {
      sub: 'player-1',
      world: 'frontier',
      instance: 0,
      shard: 'frontier-0-0',
      iss: opts.issuer,
      aud: opts.audience,
      iat: now,
      exp: now + 60,
    };
    const forged = [
      // alg none, unsigned
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`,
      // HS256 "signed" with the public key as the HMAC secret (key confusion)
      (() => {
        const head = b64({ alg: 'HS256', typ: 'JWT' });
        const body = b64(payload);
        return `${head}.${body}.${createHmac('sha256', pem(ed.publicKey)).update(`${head}.${body}`).digest('base64url')}`;
      })(),
      await signJoinToken(other.privateKey, claims, opts), // wrong key
      await signJoinToken(ed.privateKey, claims, { ...opts, audience: 'someone-else' }), // wrong audience
      await signJoinToken(ed.privateKey, claims, { ...opts, issuer: 'evil' }), // wrong issuer
      await new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0' }) // expired
        .setProtectedHeader({ alg: 'EdDSA' })
        .setSubject('player-1')
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt(now - 600)
        .setExpirationTime(now - 300)
        .sign(ed.privateKey),
      await new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0' }) // no exp
        .setProtectedHeader({ alg: 'EdDSA' })
        .setSubject('player-1')
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt()
        .sign(ed.privateKey),
      await new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0' }) // not yet valid
        .setProtectedHeader({ alg: 'EdDSA' })
        .setSubject('player-1')
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt()
        .setNotBefore(now + 600)
        .setExpirationTime(now + 900)
        .sign(ed.privateKey),
      await new SignJWT({ world: 'frontier', shard: 'frontier-0-0' }) // no instance claim
        .setProtectedHeader({ alg: 'EdDSA' })
        .setSubject('player-1')
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt()
        .setExpirationTime('1m')
        .sign(ed.privateKey),
      `${h}.${b64({ ...payload, sub: 'admin' })}.${s}`, // tampered payload
      `${h}.${p}.${s.slice(0, -4)}`, // truncated signature
      `${h}.${p}`, // two parts
      'not-a-jwt',
      '',
    ];
    for (const token of forged) await rejects(verify, token);
  });

  test('a valid token for another world, instance or shard is refused as wrong_shard', async () => {
    const verify = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    await rejects(verify, await signJoinToken(ed.privateKey, { ...claims, shard: 'frontier-0-1' }, opts), 'wrong_shard');
    await rejects(verify, await signJoinToken(ed.privateKey, { ...claims, instance: 3 }, opts), 'wrong_shard');
    await rejects(verify, await signJoinToken(ed.privateKey, { ...claims, world: 'elsewhere' }, opts), 'wrong_shard');
  });

  test('the namespace claim must name the shard’s namespace: a same-named world in another namespace refuses the token', async () => {
    const prod = await createJoinVerifier({ ...shard, namespace: 'prod', publicKeyPem: pem(ed.publicKey) });
    const forProd = { ...claims, namespace: 'prod' };
    expect(await prod(await signJoinToken(ed.privateKey, forProd, opts))).toEqual(forProd);
    await rejects(prod, await signJoinToken(ed.privateKey, { ...claims, namespace: 'staging' }, opts), 'wrong_shard');
    // No claim is namespace '': refused by a shard in a namespace, and the other way round.
    await rejects(prod, await signJoinToken(ed.privateKey, claims, opts), 'wrong_shard');
    const outside = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    const err = await outside(await signJoinToken(ed.privateKey, forProd, opts)).catch((e: unknown) => e);
    expect((err as JoinTokenError).kind).toBe('wrong_shard');
    expect((err as Error).message).toBe('join token is for prod/frontier/0/frontier-0-0, this is frontier/0/frontier-0-0');
    // A namespace that is not a string is malformed.
    const now = Math.floor(Date.now() / 1000);
    const odd = await new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0', namespace: 7 })
      .setProtectedHeader({ alg: 'EdDSA' })
      .setSubject('player-1')
      .setIssuer(opts.issuer)
      .setAudience(opts.audience)
      .setIssuedAt(now)
      .setExpirationTime(now + 60)
      .sign(ed.privateKey);
    await rejects(prod, odd, 'invalid');
  });

  test('a verified token is remembered only until it expires, refused tokens never, and the cache is bounded', async () => {
    // The verifier's clock follows real time plus a shift the test moves: tokens are signed at real
    // time, so a clock frozen at the start would see a token signed a second later as issued in the future.
    let shift = 0;
    const verify = await createJoinVerifier({
      ...shard,
      publicKeyPem: pem(ed.publicKey),
      clockToleranceS: 0,
      cacheSize: 2,
      now: () => Date.now() / 1000 + shift,
    });
    const token = await signJoinToken(ed.privateKey, claims, { ...opts, ttlSeconds: 30 });
    const [h, p, s] = token.split('.') as [string, string, string];
    expect(await verify(token)).toEqual(claims);
    // The answer is a copy: changing it does not change what the next join gets.
    (await verify(token)).playerId = 'someone-else';
    expect(await verify(token)).toEqual(claims);
    // A remembered token is still refused once it expires.
    shift = 31;
    await rejects(verify, token);
    shift = 0;
    expect(await verify(token)).toEqual(claims);
    // A tampered copy of a remembered token is a different string and is checked in full.
    await rejects(verify, `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BA' : 'AA'}`);
    // A token for another shard is refused every time, not remembered.
    const elsewhere = await signJoinToken(ed.privateKey, { ...claims, shard: 'frontier-0-1' }, opts);
    await rejects(verify, elsewhere, 'wrong_shard');
    await rejects(verify, elsewhere, 'wrong_shard');
    // Two more good tokens push the first out of a cache of two; it still verifies (checked again).
    for (const id of ['player-2', 'player-3']) await verify(await signJoinToken(ed.privateKey, { ...claims, playerId: id }, opts));
    expect(await verify(token)).toEqual(claims);
  });

  test('from a JWKS URL: a token of a served key verifies, one of an unknown key is invalid, keys that cannot be loaded are the shard’s trouble', async () => {
    let status = 200;
    const jwk = { ...ed.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA', use: 'sig' };
    const server = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(status === 200 ? JSON.stringify({ keys: [jwk] }) : '{}');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
    try {
      const verify = await createJoinVerifier({ ...shard, jwksUrl: url, cacheSize: 0 });
      expect(await verify(await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }))).toEqual(claims);
      await rejects(verify, await signJoinToken(other.privateKey, claims, { ...opts, kid: 'k2' }));
      await rejects(verify, await signJoinToken(other.privateKey, claims, { ...opts, kid: 'k1' }));
      // The set answers 500 (a fresh verifier: the first one keeps the set it has).
      status = 500;
      const broken = await createJoinVerifier({ ...shard, jwksUrl: url });
      await rejects(broken, await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }), 'keys_unavailable');
    } finally {
      server.close();
    }
    // Nothing listens there any more: fetch fails with a TypeError, which is no bad signature.
    const gone = await createJoinVerifier({ ...shard, jwksUrl: url });
    const err = await gone(await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JoinTokenError);
    expect((err as JoinTokenError).kind).toBe('keys_unavailable');
    expect((err as JoinTokenError).message).toMatch(
      /^join token not verified: the keys at http:\/\/127\.0\.0\.1:\d+\/jwks could not be loaded/,
    );
  });

  test('keys from a JWKS URL are loaded on asking: not loaded while the URL fails, loaded once it serves a key set', async () => {
    let status = 404;
    const jwk = { ...ed.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'EdDSA', use: 'sig' };
    const server = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(status === 200 ? JSON.stringify({ keys: [jwk] }) : '{}');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const verify = await createJoinVerifier({ ...shard, jwksUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` });
      expect(verify.keysLoaded()).toBe(false);
      await expect(verify.loadKeys()).rejects.toThrow(/Expected 200 OK/);
      expect(verify.keysLoaded()).toBe(false);
      status = 200;
      await verify.loadKeys();
      expect(verify.keysLoaded()).toBe(true);
      expect(await verify(await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }))).toEqual(claims);
    } finally {
      server.close();
    }
    const fromPem = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    expect(fromPem.keysLoaded()).toBe(true);
    await fromPem.loadKeys();
  });

  test('a key that is neither Ed25519 nor P-256 is refused at start', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    await expect(createJoinVerifier({ ...shard, publicKeyPem: pem(rsa.publicKey) })).rejects.toThrow(/not an Ed25519 or P-256/);
    await expect(createJoinVerifier({ ...shard })).rejects.toThrow(/needs a public key or a JWKS URL/);
  });
});
