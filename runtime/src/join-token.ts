import { createPublicKey, type KeyObject as NodeKeyObject } from 'node:crypto';
import { type CryptoKey, errors, type JWTVerifyGetKey, jwtVerify, type KeyObject, SignJWT } from 'jose';
import { RemoteKeySet, type RemoteKeySetOptions } from './jwks.js';
import { redactUrl, redactUrlsIn } from './settings.js';
import { worldRef } from './store-keys.js';

/**
 * What a join token grants: one player may join one shard of one instance of one world until it
 * expires. The shard verifies it; no AeThex service signs it yet (matchmaking is not built), so a
 * game's own backend or a development tool signs it with `signJoinToken`. `sub` carries the player id.
 */
export interface JoinClaims {
  playerId: string;
  /** The GameWorld's Kubernetes namespace; absent (or '') for a shard outside Kubernetes. */
  namespace?: string;
  world: string;
  instance: number;
  shard: string;
}

/** Algorithms a join token may use. Anything else, `none` and HMAC included, is refused. */
export const JOIN_TOKEN_ALGORITHMS = ['EdDSA', 'ES256'] as const;

/**
 * Why a token was refused: `invalid` (signature, expiry, issuer, audience, shape), `wrong_shard`,
 * or `keys_unavailable` (the JWKS URL could not be read: the shard's trouble, not the token's).
 */
export class JoinTokenError extends Error {
  constructor(
    readonly kind: 'invalid' | 'wrong_shard' | 'keys_unavailable',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'JoinTokenError';
  }
}

/** The JWKS URL could not be read (see `createJoinVerifier`). */
class KeysUnavailable extends Error {
  constructor(cause: unknown) {
    super('the join-token keys could not be loaded', { cause });
  }
}

export interface JoinVerifierOptions {
  /** PEM (SPKI) public key, or a JWKS URL; exactly one. */
  publicKeyPem?: string;
  jwksUrl?: string;
  issuer: string;
  audience: string;
  /**
   * The shard verifying: tokens for any other namespace, world, instance or shard are refused. A
   * token without a `namespace` claim is for namespace '' (a shard outside Kubernetes).
   */
  namespace?: string;
  world: string;
  instance: number;
  shard: string;
  /** Allowed clock skew in seconds (default 5). */
  clockToleranceS?: number;
  /**
   * Longest lifetime a token may have, `exp` − `iat`, in seconds (default 3600): a join token is a
   * bearer credential, good for any number of joins until it expires.
   */
  maxLifetimeS?: number;
  /** With a JWKS URL: how its key set is fetched and kept (tests shorten the intervals). */
  jwks?: RemoteKeySetOptions;
  /**
   * Tokens already verified, remembered until they expire (or, with a JWKS URL, until the key set
   * changes) so that a client reconnecting again and again with the same token costs one signature
   * check (default 4096; 0 turns it off).
   */
  cacheSize?: number;
  /** Seconds since the epoch (tests). */
  now?: () => number;
}

/** A join-token check (`createJoinVerifier`), with the state of its keys. */
export interface JoinVerifier {
  (token: string): Promise<JoinClaims>;
  /**
   * Whether the keys are in hand: always with a public key; with a JWKS URL, once a key set has
   * loaded (it is kept from then on, and fetched again in the background and, rate-limited, for a
   * token naming a `kid` it lacks: `RemoteKeySet`).
   */
  keysLoaded(): boolean;
  /** With a JWKS URL, milliseconds since the key set in use was fetched (undefined before it loads). */
  keysAgeMs(): number | undefined;
  /** Stops fetching the key set in the background (with a JWKS URL). */
  stop(): void;
  /**
   * With a JWKS URL, fetches the key set now, rejecting with why it could not be loaded (not found,
   * unreachable, not a key set); with a public key, nothing. The shard calls it at start and until
   * it succeeds: joins would fail `keys_unavailable` meanwhile, and it is not ready.
   */
  loadKeys(): Promise<void>;
}

/**
 * Builds the shard's join-token check. Verification is strict: the algorithm must be one of
 * JOIN_TOKEN_ALGORITHMS and match the key, `iss`, `aud`, `exp` and `sub` are required, and the
 * namespace, world, instance and shard claims must name this shard.
 */
export async function createJoinVerifier(options: JoinVerifierOptions): Promise<JoinVerifier> {
  let key: CryptoKey | KeyObject | JWTVerifyGetKey;
  let keysLoaded = () => true;
  let loadKeys = async (): Promise<void> => undefined;
  let keysAgeMs = (): number | undefined => undefined;
  let keysGeneration = () => 0;
  let stop = (): void => undefined;
  if (options.publicKeyPem && options.jwksUrl) throw new Error('give either a public key or a JWKS URL, not both');
  if (options.publicKeyPem) {
    key = joinPublicKey(options.publicKeyPem);
  } else if (options.jwksUrl) {
    const remote = new RemoteKeySet(options.jwksUrl, options.jwks);
    keysLoaded = () => remote.loaded();
    loadKeys = () => remote.load();
    keysAgeMs = () => remote.ageMs();
    keysGeneration = () => remote.generation;
    stop = () => remote.stop();
    key = async (header, token) => {
      try {
        return await remote.getKey(header, token);
      } catch (err) {
        // No key for the token's `kid` or algorithm is about the token. Anything else — fetch
        // failing (a TypeError), a timeout, an answer that is not 200 or not a key set — is the
        // shard unable to load its keys, which no token could fix.
        if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys) throw err;
        throw new KeysUnavailable(err);
      }
    };
  } else {
    throw new Error('a join verifier needs a public key or a JWKS URL');
  }
  const tolerance = options.clockToleranceS ?? 5;
  const now = options.now ?? (() => Date.now() / 1000);
  const cacheSize = options.cacheSize ?? 4096;
  const maxLifetime = options.maxLifetimeS ?? 3600;
  // token → its claims, expiry and the key set that verified it. Only tokens that passed every
  // check are kept; the same bytes carry the same signature, so the answer cannot change until
  // `exp` (checked on every hit) or, with a JWKS URL, until the key set changes (a key rotated out
  // must stop verifying: a hit from an older set is checked again in full).
  const verified = new Map<string, { claims: JoinClaims; exp: number; keys: number }>();
  const verify = async (token: string): Promise<JoinClaims> => {
    const hit = verified.get(token);
    if (hit) {
      if (now() - tolerance < hit.exp && hit.keys === keysGeneration()) return { ...hit.claims };
      verified.delete(token);
    }
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, key as CryptoKey, {
        algorithms: [...JOIN_TOKEN_ALGORITHMS],
        issuer: options.issuer,
        audience: options.audience,
        requiredClaims: ['exp', 'sub', 'iat'],
        clockTolerance: tolerance,
        currentDate: new Date(now() * 1000),
      }));
    } catch (err) {
      if (err instanceof KeysUnavailable) {
        // The underlying error may quote the URL (fetch's do): shown masked, as the URL itself is.
        const why = redactUrlsIn((err.cause as Error)?.message ?? String(err.cause), options.jwksUrl);
        throw new JoinTokenError(
          'keys_unavailable',
          `join token not verified: the keys at ${redactUrl(options.jwksUrl ?? '') ?? 'auth.jwks_url'} could not be loaded (${why})`,
          {
            cause: err.cause,
          },
        );
      }
      throw new JoinTokenError('invalid', `join token rejected: ${(err as Error).message}`, { cause: err });
    }
    // jose checked both are numbers. No token is issued in the future (beyond the clock skew), and
    // `exp` − `iat` bounds how long a leaked token (a bearer credential) is good for.
    const iat = payload.iat as number;
    if (iat > now() + tolerance) throw new JoinTokenError('invalid', 'join token rejected: issued in the future (iat)');
    if ((payload.exp as number) - iat > maxLifetime)
      throw new JoinTokenError('invalid', `join token rejected: lifetime exp - iat of ${(payload.exp as number) - iat} s is too long`);
    const { sub, world, instance, shard, namespace = '' } = payload;
    if (typeof sub !== 'string' || sub === '' || sub.length > 128)
      throw new JoinTokenError('invalid', 'join token has no valid sub (player id)');
    const bad = unprintableAt(sub);
    if (bad !== undefined)
      throw new JoinTokenError(
        'invalid',
        `join token has a sub (player id) with a control character or a lone surrogate (U+${sub.charCodeAt(bad).toString(16).toUpperCase().padStart(4, '0')} at position ${bad}): a player id is stored and keyed as text`,
      );
    if (typeof world !== 'string' || typeof shard !== 'string' || typeof instance !== 'number' || !Number.isInteger(instance)) {
      throw new JoinTokenError('invalid', 'join token lacks world, instance or shard claims');
    }
    if (typeof namespace !== 'string') throw new JoinTokenError('invalid', 'join token has a namespace claim that is not a string');
    const ns = options.namespace ?? '';
    if (namespace !== ns || world !== options.world || instance !== options.instance || shard !== options.shard) {
      throw new JoinTokenError(
        'wrong_shard',
        `join token is for ${worldRef(namespace, world)}/${instance}/${shard}, this is ${worldRef(ns, options.world)}/${options.instance}/${options.shard}`,
      );
    }
    const claims: JoinClaims = { playerId: sub, world, instance, shard, ...(namespace ? { namespace } : {}) };
    if (cacheSize > 0) {
      // Full: forget the oldest (tokens are short-lived, so the oldest is the first to expire).
      if (verified.size >= cacheSize) verified.delete(verified.keys().next().value as string);
      verified.set(token, { claims, exp: payload.exp as number, keys: keysGeneration() });
    }
    return { ...claims };
  };
  return Object.assign(verify, { keysLoaded, loadKeys, keysAgeMs, stop });
}

/**
 * Where `id` holds a character a player id must not: a control character (C0, DEL, C1) — PostgreSQL
 * text refuses NUL, and none belongs in a key or a log line — or half of a surrogate pair (it has
 * no UTF-8 form: written out, it would become U+FFFD, another id). Undefined when there is none.
 */
export function unprintableAt(id: string): number | undefined {
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    if (c < 0x20 || (c >= 0x7f && c <= 0x9f)) return i;
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = id.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      return i;
    }
    if (c >= 0xdc00 && c <= 0xdfff) return i;
  }
  return undefined;
}

/**
 * The key of `publicKeyPem`, the one check of a join-token public key (the shard's configuration
 * runs it at load, the verifier when built): an SPKI PEM (`-----BEGIN PUBLIC KEY-----`; a private
 * key or a certificate would give createPublicKey a public half too) of a key for one of
 * JOIN_TOKEN_ALGORITHMS, Ed25519 or P-256. Throws an Error saying what it is instead; the error
 * never quotes the PEM.
 */
export function joinPublicKey(publicKeyPem: string): NodeKeyObject {
  if (!/^\s*-----BEGIN PUBLIC KEY-----\r?\n/.test(publicKeyPem)) {
    throw new Error('not a PEM public key: expected SPKI, beginning -----BEGIN PUBLIC KEY-----');
  }
  let key: NodeKeyObject;
  try {
    key = createPublicKey({ key: publicKeyPem, format: 'pem' });
  } catch (err) {
    throw new Error(`not a PEM public key: ${(err as Error).message}`);
  }
  const type = key.asymmetricKeyType;
  const curve = key.asymmetricKeyDetails?.namedCurve;
  if (type === 'ed25519' || (type === 'ec' && curve === 'prime256v1')) return key;
  throw new Error(`the public key is not an Ed25519 or P-256 SPKI PEM (it is an ${type ?? 'unknown'} key${curve ? ` on ${curve}` : ''})`);
}

/**
 * Signs a join token: what a game's token service, the development tools and the tests use.
 * `ttlSeconds` defaults to 60: join tokens are short-lived.
 */
export async function signJoinToken(
  privateKey: CryptoKey | KeyObject,
  claims: JoinClaims,
  options: { issuer: string; audience: string; alg: (typeof JOIN_TOKEN_ALGORITHMS)[number]; kid?: string; ttlSeconds?: number },
): Promise<string> {
  const { playerId, namespace, ...rest } = claims;
  return new SignJWT({ ...rest, ...(namespace ? { namespace } : {}) })
    .setProtectedHeader({ alg: options.alg, typ: 'JWT', ...(options.kid ? { kid: options.kid } : {}) })
    .setSubject(playerId)
    .setIssuer(options.issuer)
    .setAudience(options.audience)
    .setIssuedAt()
    .setExpirationTime(`${options.ttlSeconds ?? 60}s`)
    .sign(privateKey);
}
