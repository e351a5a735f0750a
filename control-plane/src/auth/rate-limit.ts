import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AppError } from '../errors.js';

// Reserves one login attempt against three budgets at once, atomically, before any hashing:
// per address, per (account, address) and per account. When the account's budget is spent, an
// address that has not tried this account in the window still gets one attempt, so the owner can
// sign in from a new address while the addresses that keep failing stay locked out.
// KEYS: address, pair, account. ARGV: address budget, pair budget, account budget, window (s).
// Returns { allowed (1|0), retry-after ms, scope index }.
const LOGIN_SCRIPT = `
local a = tonumber(redis.call('GET', KEYS[1]) or '0')
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
local c = tonumber(redis.call('GET', KEYS[3]) or '0')
local blocked = 0
if a >= tonumber(ARGV[1]) then blocked = 1
elseif p >= tonumber(ARGV[2]) then blocked = 2
elseif c >= tonumber(ARGV[3]) and p > 0 then blocked = 3 end
if blocked > 0 then
  local ttl = redis.call('PTTL', KEYS[blocked])
  if ttl < 0 then ttl = tonumber(ARGV[4]) * 1000 end
  return { 0, ttl, blocked }
end
for i = 1, 3 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[4]) end
end
return { 1, 0, 0 }
`;

// Counts one hit in a fixed window. KEYS: counter. ARGV: budget, window (s). Returns { allowed, retry-after ms }.
const WINDOW_SCRIPT = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = tonumber(ARGV[2]) * 1000 end
  return { 0, ttl }
end
return { 1, 0 }
`;

const SCOPES = ['', 'address', 'account_address', 'account'] as const;

export interface LoginBudgets {
  windowS: number;
  account: number;
  pair: number;
  address: number;
}

/** Rate limits kept in Redis so every replica shares them. Each check is one round trip. */
export class RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly onLimited: (scope: string) => void = () => undefined,
  ) {}

  private static id(s: string): string {
    return createHash('sha256').update(s).digest('base64url').slice(0, 22);
  }

  /** Reserves a login attempt for `email` from `address`; throws RATE_LIMITED (429) when a budget is spent. */
  async reserveLogin(email: string, address: string, b: LoginBudgets): Promise<void> {
    const acct = RateLimiter.id(email);
    const addr = RateLimiter.id(address);
    const keys = [
      `${this.prefix}rl:login:addr:${addr}`,
      `${this.prefix}rl:login:pair:${acct}:${addr}`,
      `${this.prefix}rl:login:acct:${acct}`,
    ];
    const [ok, ttlMs, scope] = (await this.redis.eval(LOGIN_SCRIPT, 3, ...keys, b.address, b.pair, b.account, b.windowS)) as number[];
    if (ok !== 1) this.limited(SCOPES[scope as number] ?? 'login', ttlMs as number);
  }

  /** Forgets an address's failures on an account after it signs in successfully. */
  async loginSucceeded(email: string, address: string): Promise<void> {
    await this.redis.del(`${this.prefix}rl:login:pair:${RateLimiter.id(email)}:${RateLimiter.id(address)}`);
  }

  /** Counts a hit of `scope` by `who`; throws RATE_LIMITED (429) past `budget` per `windowS`. */
  async hit(scope: string, who: string, budget: number, windowS: number): Promise<void> {
    const key = `${this.prefix}rl:${scope}:${RateLimiter.id(who)}`;
    const [ok, ttlMs] = (await this.redis.eval(WINDOW_SCRIPT, 1, key, budget, windowS)) as number[];
    if (ok !== 1) this.limited(scope, ttlMs as number);
  }

  private limited(scope: string, ttlMs: number): never {
    this.onLimited(scope);
    const retryAfterS = Math.max(1, Math.ceil(ttlMs / 1000));
    throw new AppError('RATE_LIMITED', `too many attempts; retry in ${retryAfterS} s`, { scope, retry_after_s: retryAfterS }, retryAfterS);
  }
}
