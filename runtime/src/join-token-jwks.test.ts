import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT } from 'jose';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { createJoinVerifier, JoinTokenError, type JoinVerifier, signJoinToken } from './join-token.js';

const ed = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const pem = (k: typeof ed.publicKey) => k.export({ type: 'spki', format: 'pem' }).toString();
const jwkOf = (k: typeof ed.publicKey, kid: string) => ({ ...k.export({ format: 'jwk' }), kid, alg: 'EdDSA', use: 'sig' });
const claims = { playerId: 'player-1', world: 'frontier', instance: 0, shard: 'frontier-0-0' };
const opts = { issuer: 'aethex-control-plane', audience: 'aethex-shard', alg: 'EdDSA' as const };
const shard = { issuer: opts.issuer, audience: opts.audience, world: 'frontier', instance: 0, shard: 'frontier-0-0' };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` every 10 ms until it holds, failing after `timeoutMs` (well within the test's
 * 5 s) with `what`: for what background refreshes bring about, which a stalled process sees late.
 */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A real JWKS server whose answer the test changes: `serve` is the status and body of the next answers. */
async function jwksServer() {
  const state = { fetches: 0, status: 200, body: JSON.stringify({ keys: [jwkOf(ed.publicKey, 'k1')] }), chunked: false };
  const server: Server = createServer((_req, res) => {
    state.fetches++;
    if (state.chunked) {
      // No content-length: the body streams until it ends.
      res.writeHead(state.status, { 'content-type': 'application/json' });
      for (let i = 0; i < state.body.length; i += 16_384) res.write(state.body.slice(i, i + 16_384));
      res.end();
    } else res.writeHead(state.status, { 'content-type': 'application/json' }).end(state.body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { state, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` };
}

const servers: Server[] = [];
const verifiers: JoinVerifier[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const v of verifiers.splice(0)) v.stop();
});

async function verifier(options: Parameters<typeof createJoinVerifier>[0]): Promise<JoinVerifier> {
  const v = await createJoinVerifier(options);
  verifiers.push(v);
  return v;
}

async function refusal(verify: (t: string) => Promise<unknown>, token: string): Promise<JoinTokenError> {
  const err = await verify(token).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(JoinTokenError);
  return err as JoinTokenError;
}

/** A token signed by `key` with its own `iat` and `exp` (seconds since the epoch). */
const timed = (iat: number, exp: number, key = ed.privateKey) =>
  new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0' })
    .setProtectedHeader({ alg: 'EdDSA' })
    .setSubject('player-1')
    .setIssuer(opts.issuer)
    .setAudience(opts.audience)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(key);

describe('join-token keys from a JWKS URL', () => {
  test('the last set that loaded is kept through an outage longer than its refresh interval, and its age is known', async () => {
    const { state, url } = await jwksServer();
    const verify = await verifier({ ...shard, jwksUrl: url, cacheSize: 0, jwks: { refreshMs: 100, retryMs: 50 } });
    await verify.loadKeys();
    const loadedBy = performance.now();
    state.status = 503;
    // Several background refreshes fail meanwhile.
    await sleep(600);
    await until('two failed refreshes', () => state.fetches > 2);
    expect(verify.keysLoaded()).toBe(true);
    expect(await verify(await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }))).toEqual(claims);
    // Its age counts from the fetch that loaded it, not from the failed ones since: at least the time
    // measured since the load returned (600 ms and more).
    const outage = performance.now() - loadedBy;
    expect(verify.keysAgeMs()).toBeGreaterThanOrEqual(outage);
    // Back: the next refresh (within the back-off, at most refreshMs) makes the set young again, its
    // age less than the time since the key server came back. Until then it only grows older.
    const back = performance.now();
    state.status = 200;
    await until('a refresh that loads', () => (verify.keysAgeMs() as number) < performance.now() - back);
  });

  test('tokens cannot make the shard hammer a failing key server: one fetch in flight, then a cooldown and a back-off', async () => {
    const { state, url } = await jwksServer();
    state.status = 503;
    const verify = await verifier({ ...shard, jwksUrl: url });
    await expect(verify.loadKeys()).rejects.toThrow(/Expected 200 OK/);
    const before = state.fetches;
    const forged = await signJoinToken(other.privateKey, claims, { ...opts, kid: 'x' });
    // 20 at once (one fetch in flight at most), then 20 one after another (the cooldown).
    const errs = await Promise.all(Array.from({ length: 20 }, () => refusal(verify, forged)));
    for (let i = 0; i < 20; i++) errs.push(await refusal(verify, forged));
    for (const e of errs) expect(e.kind).toBe('keys_unavailable');
    expect(state.fetches - before).toBeLessThanOrEqual(1);
  });

  test('a token naming an unknown kid refreshes the set at most once per cooldown', async () => {
    const { state, url } = await jwksServer();
    // The key set's clock (milliseconds) is the test's: the cooldown is what the clock says, however
    // long the verifications take.
    let clock = 0;
    const verify = await verifier({ ...shard, jwksUrl: url, jwks: { cooldownMs: 300, refreshMs: 60_000, now: () => clock } });
    await verify.loadKeys();
    clock = 350;
    const before = state.fetches;
    // A key added to the set since: the token naming it triggers the refresh that finds it.
    state.body = JSON.stringify({ keys: [jwkOf(ed.publicKey, 'k1'), jwkOf(other.publicKey, 'k2')] });
    expect(await verify(await signJoinToken(other.privateKey, claims, { ...opts, kid: 'k2' }))).toEqual(claims);
    expect(state.fetches - before).toBe(1);
    // Forged kids within the cooldown (which that fetch began at 350) fetch nothing more...
    const forged = (kid: string) => signJoinToken(other.privateKey, claims, { ...opts, kid });
    for (let i = 0; i < 20; i++) {
      clock = 350 + i * 15;
      const e = await refusal(verify, await forged(`nope-${i}`));
      expect(e.kind).toBe('invalid');
    }
    clock = 649;
    expect((await refusal(verify, await forged('nope-649'))).kind).toBe('invalid');
    expect(state.fetches - before).toBe(1);
    // ...and once it is over, the next one fetches the set again: once.
    clock = 700;
    expect((await refusal(verify, await forged('nope-700'))).kind).toBe('invalid');
    expect((await refusal(verify, await forged('nope-701'))).kind).toBe('invalid');
    expect(state.fetches - before).toBe(2);
  });

  test('a remembered token stops verifying once its key is rotated out of the set', async () => {
    const { state, url } = await jwksServer();
    const verify = await verifier({ ...shard, jwksUrl: url, jwks: { refreshMs: 100 } });
    await verify.loadKeys();
    const token = await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' });
    expect(await verify(token)).toEqual(claims);
    expect(await verify(token)).toEqual(claims);
    state.body = JSON.stringify({ keys: [jwkOf(other.publicKey, 'k2')] });
    // The next background refresh (every 100 ms) loads the new set, and the token, remembered from the
    // old one, is checked again against it.
    await until('the remembered token refused', () =>
      verify(token).then(
        () => false,
        () => true,
      ),
    );
    expect((await refusal(verify, token)).kind).toBe('invalid');
  });

  test('a token signed with an RSA (RS256) or an HMAC (HS256) key of the set is refused: the algorithm is not allowed', async () => {
    const { state, url } = await jwksServer();
    // The PEM path refuses such keys by their type; from a key set only the algorithm allow-list does.
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const secret = randomBytes(32);
    state.body = JSON.stringify({
      keys: [
        jwkOf(ed.publicKey, 'k1'),
        { ...rsa.publicKey.export({ format: 'jwk' }), kid: 'rsa', alg: 'RS256', use: 'sig' },
        { kty: 'oct', k: secret.toString('base64url'), kid: 'hmac', alg: 'HS256', use: 'sig' },
      ],
    });
    const verify = await verifier({ ...shard, jwksUrl: url, cacheSize: 0 });
    await verify.loadKeys();
    const signed = (alg: string, kid: string, key: Parameters<SignJWT['sign']>[0]) =>
      new SignJWT({ world: 'frontier', instance: 0, shard: 'frontier-0-0' })
        .setProtectedHeader({ alg, kid })
        .setSubject('player-1')
        .setIssuer(opts.issuer)
        .setAudience(opts.audience)
        .setIssuedAt()
        .setExpirationTime('1m')
        .sign(key);
    for (const token of [await signed('RS256', 'rsa', rsa.privateKey), await signed('HS256', 'hmac', secret)]) {
      const err = await refusal(verify, token);
      expect(err.kind).toBe('invalid');
      expect(err.message).toBe('join token rejected: "alg" (Algorithm) Header Parameter value not allowed');
    }
    expect(await verify(await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }))).toEqual(claims);
  });

  test('a key set answer over 64 KiB is refused, saying so, whether or not it declares its length', async () => {
    const { state, url } = await jwksServer();
    state.body = JSON.stringify({ keys: [jwkOf(ed.publicKey, 'k1')], padding: 'x'.repeat(200_000) });
    for (const chunked of [false, true]) {
      state.chunked = chunked;
      const verify = await verifier({ ...shard, jwksUrl: url });
      await expect(verify.loadKeys()).rejects.toThrow(/larger than 65536 bytes/);
      expect(verify.keysLoaded()).toBe(false);
    }
  });

  test('a JWKS URL with a secret in it is shown masked in the errors', async () => {
    const { state, url } = await jwksServer();
    state.status = 503;
    const verify = await verifier({ ...shard, jwksUrl: `${url}?access_token=TOPSECRET123` });
    const err = await refusal(verify, await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }));
    expect(err.kind).toBe('keys_unavailable');
    expect(err.message).toContain('access_token=***');
    expect(err.message).not.toContain('TOPSECRET123');
  });

  test('a JWKS URL with credentials, which fetch refuses to send, is refused when the verifier is made, masked', async () => {
    const url = 'http://jwksuser:hunter2@127.0.0.1:30996/jwks.json?token=SEKRETTOKEN&access_token=SEKRET2&sig=SEKRET3&k=SEKRET4';
    const made = createJoinVerifier({ ...shard, jwksUrl: url }).then((v) => {
      verifiers.push(v);
      return v;
    });
    await expect(made).rejects.toThrow(
      'the JWKS URL http://jwksuser:***@127.0.0.1:30996/jwks.json?token=***&access_token=***&sig=***&k=*** carries credentials (user:password@), which fetch refuses to send',
    );
    await expect(made).rejects.not.toThrow(/hunter2|SEKRET/);
  });

  test('an error of fetch that quotes the URL reaches neither loadKeys nor a join with its secrets', async () => {
    const url = 'http://127.0.0.1:30996/jwks.json?token=SEKRETTOKEN&sig=SEKRET3&k=SEKRET4';
    // As undici words its refusals: the URL in the message (and in its cause's).
    vi.stubGlobal('fetch', async (input: string) => {
      throw new TypeError(`Request cannot be constructed from a URL: ${input}`, { cause: new Error(`connect ECONNREFUSED ${input}`) });
    });
    try {
      const verify = await verifier({ ...shard, jwksUrl: url, jwks: { cooldownMs: 0 } });
      const loading = await verify.loadKeys().then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(loading?.message).toBe(
        'Request cannot be constructed from a URL: http://127.0.0.1:30996/jwks.json?token=***&sig=***&k=***: connect ECONNREFUSED http://127.0.0.1:30996/jwks.json?token=***&sig=***&k=***',
      );
      expect(loading?.name).toBe('TypeError');
      const err = await refusal(verify, await signJoinToken(ed.privateKey, claims, { ...opts, kid: 'k1' }));
      expect(err.kind).toBe('keys_unavailable');
      expect(err.message).toBe(
        'join token not verified: the keys at http://127.0.0.1:30996/jwks.json?token=***&sig=***&k=*** could not be loaded (Request cannot be constructed from a URL: http://127.0.0.1:30996/jwks.json?token=***&sig=***&k=***: connect ECONNREFUSED http://127.0.0.1:30996/jwks.json?token=***&sig=***&k=***)',
      );
      // Nothing a logger's error serializer walks (message, causes, stack) holds them either.
      for (let e: unknown = err; e instanceof Error; e = e.cause) expect(`${e.message}\n${e.stack}`).not.toMatch(/SEKRET/);
    } finally {
      vi.unstubAllGlobals();
    }
  });
});

describe('join-token lifetime', () => {
  test('a token issued in the future, or living longer than the limit, is refused; one within it verifies', async () => {
    const verify = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey) });
    const now = Math.floor(Date.now() / 1000);
    expect((await refusal(verify, await timed(now + 600, now + 900))).message).toBe('join token rejected: issued in the future (iat)');
    expect((await refusal(verify, await timed(now, now + 10 * 365 * 86400))).message).toBe(
      'join token rejected: lifetime exp - iat of 315360000 s is too long',
    );
    expect((await refusal(verify, await timed(now, now + 3601))).kind).toBe('invalid');
    expect(await verify(await timed(now, now + 3600))).toEqual(claims);
    // Within the clock skew (5 s) ahead is taken; beyond it, not.
    expect(await verify(await timed(now + 3, now + 60))).toEqual(claims);
    expect((await refusal(verify, await timed(now + 30, now + 90))).message).toBe('join token rejected: issued in the future (iat)');
    const strict = await createJoinVerifier({ ...shard, publicKeyPem: pem(ed.publicKey), maxLifetimeS: 100 });
    expect((await refusal(strict, await signJoinToken(ed.privateKey, claims, { ...opts, ttlSeconds: 120 }))).kind).toBe('invalid');
    expect(await strict(await signJoinToken(ed.privateKey, claims, opts))).toEqual(claims);
  });
});
