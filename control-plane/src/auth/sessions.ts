import type { Redis } from 'ioredis';
import type { JWTVerifyGetKey } from 'jose';
import { AppError } from '../errors.js';
import { verifyAccessToken } from './keys.js';
import type { Principal } from './roles.js';

/**
 * Revoked sessions, shared by every replica through Redis. An access token names its session
 * (`sid`); revoking the session (logout, logout-all, refresh reuse) makes its unexpired access
 * tokens fail at once instead of living out their 15 minutes. Entries expire when the last
 * access token of the session would have.
 */
export class SessionRevocations {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlS: number,
  ) {}

  async revoke(sids: readonly string[]): Promise<void> {
    if (sids.length === 0) return;
    const p = this.redis.multi();
    for (const sid of sids) p.set(`${this.prefix}revoked:${sid}`, '1', 'EX', this.ttlS);
    await p.exec();
  }

  async isRevoked(sid: string): Promise<boolean> {
    return (await this.redis.exists(`${this.prefix}revoked:${sid}`)) === 1;
  }
}

export interface AuthenticatorOptions {
  keys: JWTVerifyGetKey;
  revocations: SessionRevocations;
  issuer: string;
  audience: string;
  clockToleranceS: number;
  accessTtlS: number;
  nowS: () => number;
}

const BEARER = /^Bearer ([A-Za-z0-9_.~+/=-]{1,4096})$/i;

/**
 * Turns an Authorization header into a Principal, or throws AUTH_REQUIRED / AUTH_INVALID_TOKEN
 * (401). Every reason for refusal gets the same message, so a caller learns nothing about why.
 */
export function createAuthenticator(o: AuthenticatorOptions): (authorization: string | undefined) => Promise<Principal> {
  return async (authorization) => {
    if (authorization === undefined || authorization === '')
      throw new AppError('AUTH_REQUIRED', 'an access token is required (Authorization: Bearer …)');
    const m = BEARER.exec(authorization);
    if (!m) throw new AppError('AUTH_INVALID_TOKEN', 'invalid access token');
    let claims: Record<string, unknown>;
    try {
      claims = await verifyAccessToken(m[1] as string, o.keys, {
        issuer: o.issuer,
        audience: o.audience,
        clockToleranceS: o.clockToleranceS,
        maxAgeS: o.accessTtlS + o.clockToleranceS,
        nowS: o.nowS,
      });
    } catch {
      throw new AppError('AUTH_INVALID_TOKEN', 'invalid access token');
    }
    const { sub, sid, email, roles, permissions } = claims;
    const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
    if (
      typeof sub !== 'string' ||
      typeof sid !== 'string' ||
      !strings(roles) ||
      !strings(permissions) ||
      (email !== null && typeof email !== 'string')
    ) {
      throw new AppError('AUTH_INVALID_TOKEN', 'invalid access token');
    }
    if (claims.user_id !== sub) throw new AppError('AUTH_INVALID_TOKEN', 'invalid access token');
    if (await o.revocations.isRevoked(sid)) throw new AppError('AUTH_INVALID_TOKEN', 'invalid access token');
    return { userId: sub, email: email as string | null, roles, permissions, sid };
  };
}
