import { readFileSync } from 'node:fs';
import {
  base64url,
  CompactSign,
  decodeJwt,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  SignJWT,
  UnsecuredJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKeys, KeyRing } from '../src/auth/keys.js';
import { ROLE_PERMISSIONS } from '../src/auth/roles.js';
import { call, dropSchema, register, startPlane, type TestPlane, testEnv, writeKeysFile } from './harness.js';

/**
 * Forged and malformed access tokens. Every one is sent to GET /api/v1/auth/me and to the
 * victim's GET /api/v1/saves/:user_id and must get 401 AUTH_INVALID_TOKEN / AUTH_REQUIRED in the
 * one error shape. The forgeries start from the victim's real claims and change one thing, and a
 * positive control shows that the unchanged forgery (signed with the server's real key) is
 * accepted, so each refusal is for the reason the case names.
 */

const ISS = 'aethex';
const AUD = 'aethex-api';
const KID = 'test-key-1';
const TYP = 'at+jwt';
const PASSWORD = 'correct horse battery';

type Key = CryptoKey | Uint8Array;

interface Kit {
  victimId: string;
  victimAccess: string;
  victimRefresh: string;
  /** The claims the server put in the victim's access token (sub, sid, roles, …). */
  claims: JWTPayload;
  /** The server's own private signing key, from plane.keysFile. */
  realKey: Key;
  realPublic: JWK;
  attackerEd: { priv: Key; pub: JWK };
  attackerEs: Key;
  attackerRs: Key;
  /** Access token of a session that was logged out. */
  revokedAccess: string;
  revokedSid: string;
  /** Another account's id. */
  otherId: string;
  /** A key ring with kid test-key-0: a key the server never held or has rotated out. */
  rotatedOut: KeyRing;
  /** A key ring with our kid (test-key-1) but different key material (a replaced keys file). */
  replaced: KeyRing;
}

let plane: TestPlane;
let kit: Kit;

const nowS = () => Math.floor(Date.now() / 1000);
const seg = (v: unknown) => base64url.encode(typeof v === 'string' ? v : JSON.stringify(v));
const parts = (jwt: string) => jwt.split('.') as [string, string, string];

/** The victim's claims with a fresh iat/exp, then `set` applied and `drop` removed. */
function claimsWith(o: { set?: Record<string, unknown>; drop?: string[] } = {}): Record<string, unknown> {
  const t = nowS();
  const c: Record<string, unknown> = { ...kit.claims, iat: t, exp: t + 900, ...o.set };
  for (const k of o.drop ?? []) delete c[k];
  return c;
}

/** Signs claims with a header (default: the server's exact header) and key (default: the real key). */
async function forge(
  o: { set?: Record<string, unknown>; drop?: string[]; header?: Record<string, unknown>; dropHeader?: string[]; key?: Key } = {},
): Promise<string> {
  const header: Record<string, unknown> = { alg: 'EdDSA', kid: KID, typ: TYP, ...o.header };
  for (const k of o.dropHeader ?? []) delete header[k];
  return new SignJWT(claimsWith(o)).setProtectedHeader(header as { alg: string }).sign(o.key ?? kit.realKey);
}

/** Signs arbitrary payload bytes (not necessarily a JSON object) under a header, with jose. */
async function signRaw(header: Record<string, unknown>, payload: string, key: Key, crit?: Record<string, boolean>): Promise<string> {
  return new CompactSign(new TextEncoder().encode(payload))
    .setProtectedHeader(header as { alg: string })
    .sign(key, crit ? { crit } : undefined);
}

/** The victim's real token with its payload replaced by `mutate(payload)`, signature kept. */
function tamper(mutate: (p: Record<string, unknown>) => void): string {
  const [h, p, s] = parts(kit.victimAccess);
  const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as Record<string, unknown>;
  mutate(payload);
  return `${h}.${seg(payload)}.${s}`;
}

const bearer = (t: string) => `Bearer ${t}`;
const ADMIN = { roles: ['admin'], permissions: [...ROLE_PERMISSIONS.admin].sort() };

interface Case {
  name: string;
  /** The whole Authorization header value; undefined sends no header. */
  authorization: () => Promise<string | undefined> | string | undefined;
}

const cases: Case[] = [
  // --- algorithm confusion -------------------------------------------------------------------
  {
    name: "alg none, jose UnsecuredJWT (header {alg:'none'}, empty signature)",
    authorization: () => bearer(new UnsecuredJWT(claimsWith()).encode()),
  },
  {
    name: 'alg none with our kid and typ, claiming admin, empty signature',
    authorization: () => bearer(`${seg({ alg: 'none', kid: KID, typ: TYP })}.${seg(claimsWith({ set: ADMIN }))}.`),
  },
  {
    name: "alg 'None' (case variant), empty signature",
    authorization: () => bearer(`${seg({ alg: 'None', kid: KID, typ: TYP })}.${seg(claimsWith())}.`),
  },
  {
    name: 'real token re-headed as alg none, signature stripped',
    authorization: () => bearer(`${seg({ alg: 'none', kid: KID, typ: TYP })}.${parts(kit.victimAccess)[1]}.`),
  },
  {
    name: 'HS256 with the public JWK JSON string as HMAC secret',
    authorization: async () =>
      bearer(await forge({ header: { alg: 'HS256' }, key: new TextEncoder().encode(JSON.stringify(kit.realPublic)) })),
  },
  {
    name: "HS256 with the raw public key bytes ('x') as HMAC secret",
    authorization: async () => bearer(await forge({ header: { alg: 'HS256' }, key: base64url.decode(kit.realPublic.x as string) })),
  },
  {
    name: 'HS256 with the public key SPKI PEM as HMAC secret',
    authorization: async () => {
      const pub = await importJWK(kit.realPublic, 'EdDSA');
      const pem = await exportSPKI(pub as CryptoKey);
      return bearer(await forge({ header: { alg: 'HS256' }, key: new TextEncoder().encode(pem) }));
    },
  },
  {
    name: 'ES256 signed by another P-256 key with our kid',
    authorization: async () => bearer(await forge({ header: { alg: 'ES256' }, key: kit.attackerEs })),
  },
  {
    name: 'RS256 signed by an RSA key with our kid',
    authorization: async () => bearer(await forge({ header: { alg: 'RS256' }, key: kit.attackerRs })),
  },
  {
    name: "alg 'Ed25519' (not in the allowed list) signed by the real key",
    authorization: async () => bearer(await forge({ header: { alg: 'Ed25519' } })),
  },
  // --- wrong keys ------------------------------------------------------------------------------
  { name: 'unknown kid, signed by the real key', authorization: async () => bearer(await forge({ header: { kid: 'no-such-key' } })) },
  { name: 'no kid, signed by the real key', authorization: async () => bearer(await forge({ dropHeader: ['kid'] })) },
  {
    name: 'correct kid, signed by a different Ed25519 key',
    authorization: async () => bearer(await forge({ key: kit.attackerEd.priv })),
  },
  {
    name: 'signed by a rotated-out key (kid test-key-0, a KeyRing the server does not hold)',
    authorization: async () => {
      const c = claimsWith();
      const { sub: _s, iss: _i, aud: _a, iat: _t, exp: _e, ...rest } = c;
      return bearer(await kit.rotatedOut.sign(rest, kit.victimId, nowS(), 900, ISS, AUD));
    },
  },
  {
    name: 'signed by a replaced key file (same kid test-key-1, other key material)',
    authorization: async () => {
      const { sub: _s, iss: _i, aud: _a, iat: _t, exp: _e, ...rest } = claimsWith();
      return bearer(await kit.replaced.sign(rest, kit.victimId, nowS(), 900, ISS, AUD));
    },
  },
  // --- key material or extensions in the header ------------------------------------------------
  {
    name: 'embedded jwk (attacker key) in the header, signed by that key, no kid',
    authorization: async () => bearer(await forge({ header: { jwk: kit.attackerEd.pub }, dropHeader: ['kid'], key: kit.attackerEd.priv })),
  },
  {
    name: 'embedded jwk (attacker key) with our kid, signed by the attacker key',
    authorization: async () => bearer(await forge({ header: { jwk: kit.attackerEd.pub }, key: kit.attackerEd.priv })),
  },
  {
    name: 'embedded jwk header on a token signed by the real key (the header check alone refuses it)',
    authorization: async () => bearer(await forge({ header: { jwk: kit.attackerEd.pub } })),
  },
  {
    name: 'jku pointing at an attacker JWKS, signed by the attacker key',
    authorization: async () =>
      bearer(await forge({ header: { jku: 'https://attacker.example/jwks.json', kid: 'attacker' }, key: kit.attackerEd.priv })),
  },
  {
    name: 'jku header on a token signed by the real key',
    authorization: async () => bearer(await forge({ header: { jku: 'https://attacker.example/jwks.json' } })),
  },
  {
    name: 'x5u header on a token signed by the real key',
    authorization: async () => bearer(await forge({ header: { x5u: 'https://attacker.example/cert.pem' } })),
  },
  {
    name: "crit ['exp'] (unrecognised critical extension), signed by the real key",
    authorization: async () =>
      bearer(
        await signRaw({ alg: 'EdDSA', kid: KID, typ: TYP, crit: ['exp'], exp: nowS() + 900 }, JSON.stringify(claimsWith()), kit.realKey, {
          exp: true,
        }),
      ),
  },
  {
    name: "crit ['b64'] with b64 true (jose accepts it; the server's crit check must not), real key",
    authorization: async () =>
      bearer(await signRaw({ alg: 'EdDSA', kid: KID, typ: TYP, crit: ['b64'], b64: true }, JSON.stringify(claimsWith()), kit.realKey)),
  },
  // --- typ ---------------------------------------------------------------------------------------
  { name: "typ 'JWT', real key", authorization: async () => bearer(await forge({ header: { typ: 'JWT' } })) },
  { name: 'typ missing, real key', authorization: async () => bearer(await forge({ dropHeader: ['typ'] })) },
  { name: "typ 'rt+jwt', real key", authorization: async () => bearer(await forge({ header: { typ: 'rt+jwt' } })) },
  // --- registered claims -----------------------------------------------------------------------
  { name: 'wrong aud', authorization: async () => bearer(await forge({ set: { aud: 'aethex-admin' } })) },
  { name: 'aud missing', authorization: async () => bearer(await forge({ drop: ['aud'] })) },
  { name: 'wrong iss', authorization: async () => bearer(await forge({ set: { iss: 'https://evil.example' } })) },
  { name: 'iss missing', authorization: async () => bearer(await forge({ drop: ['iss'] })) },
  {
    name: 'expired 30 s ago (beyond the 5 s tolerance)',
    authorization: async () => bearer(await forge({ set: { iat: nowS() - 60, exp: nowS() - 30 } })),
  },
  { name: 'not yet valid (nbf 60 s in the future)', authorization: async () => bearer(await forge({ set: { nbf: nowS() + 60 } })) },
  {
    name: 'iat 60 s in the future',
    authorization: async () => bearer(await forge({ set: { iat: nowS() + 60, exp: nowS() + 900 } })),
  },
  {
    name: 'lifetime 906 s (longer than 900 + 5 s tolerance)',
    authorization: async () => bearer(await forge({ set: { iat: nowS(), exp: nowS() + 906 } })),
  },
  {
    name: 'issued 20 min ago, lifetime 24 h (old iat)',
    authorization: async () => bearer(await forge({ set: { iat: nowS() - 1200, exp: nowS() + 86_400 } })),
  },
  { name: 'exp missing', authorization: async () => bearer(await forge({ drop: ['exp'] })) },
  { name: 'iat missing', authorization: async () => bearer(await forge({ drop: ['iat'] })) },
  { name: 'exp as a string', authorization: async () => bearer(await forge({ set: { exp: String(nowS() + 900) } })) },
  // --- the claims the API relies on --------------------------------------------------------------
  { name: 'sub missing', authorization: async () => bearer(await forge({ drop: ['sub'] })) },
  { name: 'sid missing', authorization: async () => bearer(await forge({ drop: ['sid'] })) },
  { name: 'sid not a string', authorization: async () => bearer(await forge({ set: { sid: 12345 } })) },
  { name: 'user_id missing', authorization: async () => bearer(await forge({ drop: ['user_id'] })) },
  {
    name: 'user_id differs from sub (user_id = another account)',
    authorization: async () => bearer(await forge({ set: { user_id: kit.otherId } })),
  },
  {
    name: 'sub differs from user_id (sub = another account)',
    authorization: async () => bearer(await forge({ set: { sub: kit.otherId } })),
  },
  { name: 'roles a string, not an array', authorization: async () => bearer(await forge({ set: { roles: 'admin' } })) },
  { name: 'permissions missing', authorization: async () => bearer(await forge({ drop: ['permissions'] })) },
  { name: 'permissions contain a non-string', authorization: async () => bearer(await forge({ set: { permissions: ['read:saves', 1] } })) },
  { name: 'email a number', authorization: async () => bearer(await forge({ set: { email: 42 } })) },
  // --- sessions ----------------------------------------------------------------------------------
  { name: 'access token of a logged-out (revoked) session', authorization: () => bearer(kit.revokedAccess) },
  {
    name: 'fresh token (10 min lifetime) signed by the real key for a revoked session id',
    authorization: async () => bearer(await forge({ set: { sid: kit.revokedSid, exp: nowS() + 600 } })),
  },
  { name: 'refresh token (rt_…) used as an access token', authorization: () => bearer(kit.victimRefresh) },
  // --- tampering and malformed compact serialisation ---------------------------------------------
  {
    name: 'tampered payload: roles flipped to admin, signature kept',
    authorization: () =>
      bearer(
        tamper((p) => {
          Object.assign(p, ADMIN);
        }),
      ),
  },
  {
    name: 'tampered payload: sub and user_id moved to another account, signature kept',
    authorization: () =>
      bearer(
        tamper((p) => {
          p.sub = kit.otherId;
          p.user_id = kit.otherId;
        }),
      ),
  },
  {
    name: 'tampered payload: exp pushed out a day, signature kept',
    authorization: () =>
      bearer(
        tamper((p) => {
          p.exp = (p.exp as number) + 86_400;
        }),
      ),
  },
  {
    name: 'tampered header: kid changed, signature kept',
    authorization: () => {
      const [, p, s] = parts(kit.victimAccess);
      return bearer(`${seg({ alg: 'EdDSA', kid: 'other', typ: TYP })}.${p}.${s}`);
    },
  },
  { name: 'truncated signature (last 4 characters cut)', authorization: () => bearer(kit.victimAccess.slice(0, -4)) },
  {
    name: 'signature cut to half its length',
    authorization: () => {
      const [h, p, s] = parts(kit.victimAccess);
      return bearer(`${h}.${p}.${s.slice(0, Math.floor(s.length / 2))}`);
    },
  },
  {
    name: 'signature with one character changed',
    authorization: () => {
      const [h, p, s] = parts(kit.victimAccess);
      const flipped = `${s.slice(0, 10)}${s[10] === 'A' ? 'B' : 'A'}${s.slice(11)}`;
      return bearer(`${h}.${p}.${flipped}`);
    },
  },
  {
    name: "signature removed ('header.payload.')",
    authorization: () => {
      const [h, p] = parts(kit.victimAccess);
      return bearer(`${h}.${p}.`);
    },
  },
  {
    name: "two segments without a trailing dot ('header.payload')",
    authorization: () => {
      const [h, p] = parts(kit.victimAccess);
      return bearer(`${h}.${p}`);
    },
  },
  { name: 'extra segment appended to a real token (4 parts)', authorization: () => bearer(`${kit.victimAccess}.AAAA`) },
  {
    name: 'five segments (JWE-like compact form)',
    authorization: () =>
      bearer(
        `${seg({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: KID, typ: TYP })}.${seg('k')}.${seg('iv-iv-iv-iv')}.${seg(claimsWith())}.${seg('tag')}`,
      ),
  },
  { name: 'garbage base64 in three segments', authorization: () => bearer('abc.def.ghi') },
  { name: 'garbage: not a JWT at all', authorization: () => bearer('not-a-jwt') },
  { name: 'garbage: characters outside base64url', authorization: () => bearer('eyJ!!.@@@@.####') },
  { name: 'garbage: token of 5000 characters', authorization: () => bearer(`${'A'.repeat(2500)}.${'B'.repeat(2499)}`) },
  {
    name: 'payload that is not JSON, signed by the real key',
    authorization: async () => bearer(await signRaw({ alg: 'EdDSA', kid: KID, typ: TYP }, 'this is not json', kit.realKey)),
  },
  {
    name: 'payload a JSON array, signed by the real key',
    authorization: async () => bearer(await signRaw({ alg: 'EdDSA', kid: KID, typ: TYP }, JSON.stringify([claimsWith()]), kit.realKey)),
  },
  {
    name: 'header that is not JSON',
    authorization: () => {
      const [, p, s] = parts(kit.victimAccess);
      return bearer(`${seg('{"alg":"EdDSA",')}.${p}.${s}`);
    },
  },
  // --- the Authorization header itself -----------------------------------------------------------
  { name: 'no Authorization header', authorization: () => undefined },
  { name: 'empty Authorization header', authorization: () => '' },
  { name: "empty bearer ('Bearer ' with a trailing space)", authorization: () => 'Bearer ' },
  { name: "'Bearer' with no token", authorization: () => 'Bearer' },
  { name: "wrong scheme ('Basic xyz')", authorization: () => 'Basic xyz' },
  { name: "wrong scheme carrying a valid token ('Token <jwt>')", authorization: () => `Token ${kit.victimAccess}` },
  { name: 'valid token with no scheme', authorization: () => kit.victimAccess },
  { name: "two spaces after 'Bearer' before a valid token", authorization: () => `Bearer  ${kit.victimAccess}` },
];

const errorShape = (body: unknown) => {
  expect(body).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
  expect(Object.keys(body as object)).toEqual(['error']);
  expect(Object.keys((body as { error: object }).error).sort()).toEqual(['code', 'message']);
};

beforeAll(async () => {
  plane = await startPlane();
  const victim = await register(plane.url, 'victim@example.com');
  const other = await register(plane.url, 'other@example.com');
  // A second session of the victim, logged out: its access token must die at once.
  const second = await call(plane.url, 'POST', '/api/v1/auth/login', { body: { email: 'victim@example.com', password: PASSWORD } });
  if (second.status !== 200) throw new Error(`login: ${second.status} ${JSON.stringify(second.body)}`);
  const out = await call(plane.url, 'POST', '/api/v1/auth/logout', { token: second.body.access_token, body: {} });
  if (out.status !== 204) throw new Error(`logout: ${out.status} ${JSON.stringify(out.body)}`);

  const { keys } = JSON.parse(readFileSync(plane.keysFile, 'utf8')) as { keys: JWK[] };
  const realJwk = keys[0] as JWK;
  expect(realJwk.kid).toBe(KID);
  const { d: _d, ...realPublic } = realJwk;

  const ed = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const es = await generateKeyPair('ES256');
  const rs = await generateKeyPair('RS256', { modulusLength: 2048 });

  kit = {
    victimId: victim.id,
    victimAccess: victim.access,
    victimRefresh: victim.refresh,
    claims: decodeJwt(victim.access),
    realKey: await importJWK(realJwk, 'EdDSA'),
    realPublic,
    attackerEd: { priv: ed.privateKey, pub: { ...(await exportJWK(ed.publicKey)), kid: 'attacker' } },
    attackerEs: es.privateKey,
    attackerRs: rs.privateKey,
    revokedAccess: second.body.access_token,
    revokedSid: decodeJwt(second.body.access_token).sid as string,
    otherId: other.id,
    rotatedOut: await KeyRing.fromJwks(await generateSigningKeys('EdDSA', 'test-key-0')),
    replaced: await KeyRing.fromFile(await writeKeysFile()),
  };
  // The forgeries are built from these claims: make sure they are the server's shape.
  expect(Object.keys(kit.claims).sort()).toEqual([
    'aud',
    'email',
    'exp',
    'iat',
    'iss',
    'jti',
    'permissions',
    'roles',
    'sid',
    'sub',
    'user_id',
  ]);
  expect(kit.claims).toMatchObject({ sub: victim.id, user_id: victim.id, iss: ISS, aud: AUD });
});

afterAll(async () => {
  await plane?.close();
  if (plane) await dropSchema(testEnv(), plane.config['postgres.schema']);
});

async function both(authorization: string | undefined) {
  const headers: Record<string, string> = authorization === undefined ? {} : { authorization };
  const me = await call(plane.url, 'GET', '/api/v1/auth/me', { headers });
  const saves = await call(plane.url, 'GET', `/api/v1/saves/${kit.victimId}`, { headers });
  return { me, saves };
}

describe('positive controls: the forging harness produces tokens the server accepts', () => {
  it('a token forged with the real key and the real claims of a live session gets 200', async () => {
    const t = nowS();
    const { iat: _i, exp: _e, sub: _s, iss: _is, aud: _a, ...custom } = kit.claims;
    const token = await new SignJWT(custom)
      .setProtectedHeader({ alg: 'EdDSA', kid: KID, typ: TYP })
      .setSubject(kit.victimId)
      .setIssuer(ISS)
      .setAudience(AUD)
      .setIssuedAt(t)
      .setExpirationTime(t + 900)
      .sign(kit.realKey);
    const { me, saves } = await both(bearer(token));
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ id: kit.victimId, email: 'victim@example.com' });
    expect(saves.status).toBe(200);
    expect(saves.body).toEqual({ saves: [], next_after: null });
  });

  it("forging with the server token's own iat and exp reproduces that token byte for byte", async () => {
    // Ed25519 signatures are deterministic: equal header, claims and key give the equal token.
    const { iat, exp, jti, sub: _s, iss: _is, aud: _a, ...custom } = kit.claims;
    const token = await new SignJWT(custom)
      .setProtectedHeader({ alg: 'EdDSA', kid: KID, typ: TYP })
      .setSubject(kit.victimId)
      .setIssuer(ISS)
      .setAudience(AUD)
      .setJti(jti as string)
      .setIssuedAt(iat as number)
      .setExpirationTime(exp as number)
      .sign(kit.realKey);
    expect(token).toBe(kit.victimAccess);
  });

  it('the default forge() (what every mutated case starts from) gets 200', async () => {
    const { me, saves } = await both(bearer(await forge()));
    expect(me.status).toBe(200);
    expect(saves.status).toBe(200);
  });

  it('the longest allowed lifetime (900 s + 5 s tolerance) is accepted', async () => {
    const t = nowS();
    const { me, saves } = await both(bearer(await forge({ set: { iat: t, exp: t + 905 } })));
    expect(me.status).toBe(200);
    expect(saves.status).toBe(200);
  });

  it.each([
    ['bearer', 'lower case'],
    ['BEARER', 'upper case'],
    ['bEaReR', 'mixed case'],
  ])("the scheme is case-insensitive: '%s' (%s) with a valid token gets 200", async (scheme) => {
    const { me, saves } = await both(`${scheme} ${kit.victimAccess}`);
    expect(me.status).toBe(200);
    expect(me.body.id).toBe(kit.victimId);
    expect(saves.status).toBe(200);
  });
});

describe('forged and invalid access tokens', () => {
  it('has at least 30 distinct cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it.each(cases)('$name → 401', async ({ authorization }) => {
    const value = await authorization();
    const { me, saves } = await both(value);
    for (const [route, r] of [
      ['GET /api/v1/auth/me', me],
      ['GET /api/v1/saves/:victim', saves],
    ] as const) {
      expect(r.status, `${route}: ${JSON.stringify(r.body)}`).toBe(401);
      errorShape(r.body);
      expect(['AUTH_INVALID_TOKEN', 'AUTH_REQUIRED'], route).toContain(r.body.error.code);
      // Every refusal reads the same, so a caller learns nothing about why.
      if (r.body.error.code === 'AUTH_INVALID_TOKEN') expect(r.body.error.message).toBe('invalid access token');
    }
    expect(saves.body).toEqual(me.body);
  });

  it('distinct cases produce distinct headers (no case degenerates into another)', async () => {
    const values = await Promise.all(cases.map(async (c) => ({ name: c.name, value: String(await c.authorization()) })));
    const seen = new Map<string, string>();
    const same: string[] = [];
    for (const { name, value } of values) {
      const first = seen.get(value);
      if (first !== undefined) same.push(`${first} = ${name}`);
      else seen.set(value, name);
    }
    expect(same, 'cases that send the same Authorization header').toEqual([]);
  });
});
