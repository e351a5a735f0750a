import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
  SignJWT,
} from 'jose';

/** Algorithms an access token may be signed with. `none`, HMAC and RSA are refused. */
export const ACCESS_TOKEN_ALGORITHMS = ['EdDSA', 'ES256'] as const;
export type AccessTokenAlgorithm = (typeof ACCESS_TOKEN_ALGORITHMS)[number];

/** The JOSE `typ` of an access token (RFC 9068), so no other JWT can stand in for one. */
export const ACCESS_TOKEN_TYPE = 'at+jwt';

interface SigningKey {
  kid: string;
  alg: AccessTokenAlgorithm;
  key: CryptoKey | Uint8Array;
}

function algOf(jwk: JWK, where: string): AccessTokenAlgorithm {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519' && (jwk.alg === undefined || jwk.alg === 'EdDSA' || jwk.alg === 'Ed25519')) return 'EdDSA';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256' && (jwk.alg === undefined || jwk.alg === 'ES256')) return 'ES256';
  throw new Error(`${where}: only Ed25519 (EdDSA) and P-256 (ES256) keys are accepted`);
}

/**
 * The signing keys of the auth service. The first key signs; every key verifies and is published
 * in the JWKS. Rotation with overlap: put a new key first, keep the old one for at least an
 * access-token lifetime, then remove it.
 */
export class KeyRing {
  private constructor(
    private readonly signing: SigningKey,
    readonly jwks: JSONWebKeySet,
  ) {}

  /** Reads `{ "keys": [private JWK, …] }`; throws naming the file and the key at fault. */
  static async fromFile(path: string): Promise<KeyRing> {
    let doc: unknown;
    try {
      doc = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new Error(`signing keys file ${path}: ${(err as Error).message}`);
    }
    return KeyRing.fromJwks(doc, path);
  }

  static async fromJwks(doc: unknown, where = 'signing keys'): Promise<KeyRing> {
    const keys = (doc as { keys?: unknown })?.keys;
    if (!Array.isArray(keys) || keys.length === 0) throw new Error(`${where}: expected { "keys": [ … ] } with at least one key`);
    const publicKeys: JWK[] = [];
    const kids = new Set<string>();
    let first: SigningKey | undefined;
    for (const [i, raw] of keys.entries()) {
      const jwk = raw as JWK;
      const at = `${where} key ${i}`;
      if (typeof jwk?.kid !== 'string' || !/^[A-Za-z0-9._-]{1,64}$/.test(jwk.kid))
        throw new Error(`${at}: needs a kid of 1–64 of A-Z a-z 0-9 . _ -`);
      if (kids.has(jwk.kid)) throw new Error(`${at}: kid ${jwk.kid} is used twice`);
      kids.add(jwk.kid);
      const alg = algOf(jwk, at);
      if (typeof jwk.d !== 'string') throw new Error(`${at}: private key material (d) is missing`);
      const { d: _d, key_ops: _ops, ext: _ext, ...pub } = jwk;
      publicKeys.push({ ...pub, alg, use: 'sig' });
      if (!first) first = { kid: jwk.kid, alg, key: await importJWK({ ...jwk, alg }, alg) };
    }
    return new KeyRing(first as SigningKey, { keys: publicKeys });
  }

  /** Signs an access token valid for `ttlS` seconds from `nowS`. */
  async sign(claims: JWTPayload, subject: string, nowS: number, ttlS: number, issuer: string, audience: string): Promise<string> {
    return new SignJWT(claims)
      .setProtectedHeader({ alg: this.signing.alg, kid: this.signing.kid, typ: ACCESS_TOKEN_TYPE })
      .setSubject(subject)
      .setIssuer(issuer)
      .setAudience(audience)
      .setJti(randomUUID())
      .setIssuedAt(nowS)
      .setExpirationTime(nowS + ttlS)
      .sign(this.signing.key);
  }

  keySet(): JWTVerifyGetKey {
    return createLocalJWKSet(this.jwks);
  }
}

/** Public keys fetched from a JWKS URL, cached, refetched on an unknown kid at most every 30 s. */
export function remoteKeySet(url: string): JWTVerifyGetKey {
  return createRemoteJWKSet(new URL(url), { timeoutDuration: 5000, cooldownDuration: 30_000, cacheMaxAge: 600_000 });
}

export interface VerifyOptions {
  issuer: string;
  audience: string;
  clockToleranceS: number;
  /** Longest lifetime a token may claim; older `iat` is refused. */
  maxAgeS: number;
  /** Seconds since the epoch (injected clock). */
  nowS: () => number;
}

/**
 * Verifies an access token strictly: algorithm in ACCESS_TOKEN_ALGORITHMS and matching the key
 * named by `kid`, `typ` at+jwt, issuer, audience, `exp`/`nbf`/`iat` with the tolerance, a lifetime
 * no longer than `maxAgeS`, and the claims the API relies on. Throws on any failure.
 */
export async function verifyAccessToken(token: string, keys: JWTVerifyGetKey, o: VerifyOptions): Promise<JWTPayload> {
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    algorithms: [...ACCESS_TOKEN_ALGORITHMS],
    issuer: o.issuer,
    audience: o.audience,
    typ: ACCESS_TOKEN_TYPE,
    requiredClaims: ['exp', 'iat', 'sub', 'sid'],
    clockTolerance: o.clockToleranceS,
    maxTokenAge: o.maxAgeS,
    currentDate: new Date(o.nowS() * 1000),
  });
  if (typeof protectedHeader.kid !== 'string') throw new Error('token has no kid');
  if (
    protectedHeader.crit !== undefined ||
    protectedHeader.jku !== undefined ||
    protectedHeader.jwk !== undefined ||
    protectedHeader.x5u !== undefined
  ) {
    throw new Error('token header carries key material or critical extensions');
  }
  if ((payload.exp as number) - (payload.iat as number) > o.maxAgeS) throw new Error('token lifetime is longer than allowed');
  return payload;
}

/** A fresh private JWK set with one key, for `npm run keygen` and tests. */
export async function generateSigningKeys(
  alg: AccessTokenAlgorithm = 'EdDSA',
  kid = `k-${Date.now().toString(36)}`,
): Promise<{ keys: JWK[] }> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, kid, alg }] };
}
