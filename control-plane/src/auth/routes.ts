import { Type } from 'typebox';
import { AppError } from '../errors.js';
import type { App, ServiceContext } from '../http/app.js';
import { BearerAuth, errorResponses, UserId } from '../http/schemas.js';
import { Hasher, needsRehash } from './passwords.js';
import { RateLimiter } from './rate-limit.js';
import { AuthRepository, type UserRow } from './repository.js';
import { permissionsFor } from './roles.js';

const Email = Type.String({ format: 'email', minLength: 3, maxLength: 254 });
// NIST SP 800-63B: at least 8 characters; the upper bound caps the cost an attacker can ask for.
const Password = Type.String({ minLength: 8, maxLength: 128 });
const DisplayName = Type.String({ minLength: 0, maxLength: 64, pattern: '^[^\\u0000-\\u001f]*$' });

const User = Type.Object({
  id: UserId,
  email: Type.Union([Type.String(), Type.Null()]),
  display_name: Type.String(),
  roles: Type.Array(Type.String()),
  permissions: Type.Array(Type.String()),
  created_at: Type.String({ format: 'date-time' }),
});

const Tokens = Type.Object({
  token_type: Type.Literal('Bearer'),
  access_token: Type.String(),
  expires_in: Type.Integer({ description: 'Seconds until the access token expires.' }),
  refresh_token: Type.String({ description: 'Single use: every refresh returns its successor.' }),
  refresh_expires_at: Type.String({ format: 'date-time', description: 'When the session ends, however often it is refreshed.' }),
  user: User,
});

function userView(u: UserRow) {
  return {
    id: u.id,
    email: u.email,
    display_name: u.display_name,
    roles: u.roles,
    permissions: permissionsFor(u.roles),
    created_at: u.created_at.toISOString(),
  };
}

/** The auth service: accounts, sessions and tokens, under /api/v1/auth. */
export async function authService(app: App, ctx: ServiceContext): Promise<void> {
  const { config, stores, metrics } = ctx;
  const repo = new AuthRepository(stores.pg);
  if (!ctx.keys) throw new Error('auth service needs the key ring');
  const keys = ctx.keys;
  const hasher = new Hasher(
    { memoryKiB: config['auth.argon2_memory_kib'], iterations: config['auth.argon2_iterations'] },
    config['auth.hash_concurrency'],
    config['auth.hash_queue'],
    (op) => metrics.passwordHashes.inc({ op }),
  );
  const limiter = new RateLimiter(stores.redis, stores.redisPrefix, (scope) => metrics.rateLimited.inc({ scope }));
  const window = config['auth.login_window_s'];
  const accessTtl = config['auth.access_ttl_s'];

  async function accessToken(u: UserRow, sid: string): Promise<string> {
    const claims = { user_id: u.id, email: u.email, roles: u.roles, permissions: permissionsFor(u.roles), sid };
    return keys.sign(claims, u.id, Math.floor(ctx.now() / 1000), accessTtl, config['auth.issuer'], config['auth.audience']);
  }

  async function startSession(u: UserRow) {
    const expiresAt = new Date(ctx.now() + config['auth.refresh_ttl_s'] * 1000);
    const { familyId, token } = await repo.startFamily(u.id, expiresAt);
    return {
      token_type: 'Bearer' as const,
      access_token: await accessToken(u, familyId),
      expires_in: accessTtl,
      refresh_token: token,
      refresh_expires_at: expiresAt.toISOString(),
      user: userView(u),
    };
  }

  const tags = ['auth'];

  app.post(
    '/register',
    {
      schema: {
        tags,
        summary: 'Create an account with email and password; starts a session',
        body: Type.Object({ email: Email, password: Password, display_name: Type.Optional(DisplayName) }, { additionalProperties: false }),
        response: { 201: Tokens, ...errorResponses('AUTH_EMAIL_TAKEN', 'AUTH_BUSY') },
      },
    },
    async (request, reply) => {
      const body = request.body as { email: string; password: string; display_name?: string };
      await limiter.hit('signup', request.ip, config['auth.signup_address_budget'], window);
      const email = body.email.trim().toLowerCase();
      const passwordHash = await hasher.hash(body.password);
      const user = await repo.createUser({ email, passwordHash, deviceId: null, displayName: body.display_name ?? '', roles: ['player'] });
      await repo.audit('register', { userId: user.id, actorId: user.id, address: request.ip });
      return reply.status(201).send(await startSession(user));
    },
  );

  app.post(
    '/login',
    {
      schema: {
        tags,
        summary: 'Sign in with email and password; starts a session',
        description:
          'An unknown email and a wrong password get the same 401. Budgets per account and address are checked before any hashing (429 with Retry-After).',
        body: Type.Object({ email: Email, password: Password }, { additionalProperties: false }),
        response: { 200: Tokens, ...errorResponses('AUTH_INVALID_CREDENTIALS', 'AUTH_BUSY') },
      },
    },
    async (request) => {
      const body = request.body as { email: string; password: string };
      const email = body.email.trim().toLowerCase();
      await limiter.reserveLogin(email, request.ip, {
        windowS: window,
        account: config['auth.login_account_budget'],
        pair: config['auth.login_pair_budget'],
        address: config['auth.login_address_budget'],
      });
      const user = await repo.byEmail(email);
      const ok = await hasher.verify(user?.password_hash ?? undefined, body.password);
      if (!user || !ok) {
        await repo.audit('login_failed', { userId: user?.id, address: request.ip });
        throw new AppError('AUTH_INVALID_CREDENTIALS', 'email or password is wrong');
      }
      await limiter.loginSucceeded(email, request.ip);
      if (user.password_hash && needsRehash(user.password_hash, hasher.params)) {
        await repo.setPasswordHash(user.id, await hasher.hash(body.password));
      }
      await repo.audit('login', { userId: user.id, actorId: user.id, address: request.ip });
      return startSession(user);
    },
  );

  app.post(
    '/guest',
    {
      schema: {
        tags,
        summary: 'Sign in as a guest by device id (created on first use); upgradable to a full account',
        body: Type.Object(
          {
            device_id: Type.String({
              minLength: 16,
              maxLength: 128,
              pattern: '^[A-Za-z0-9._:-]+$',
              description: "A random id the device keeps; it is the guest's credential.",
            }),
          },
          { additionalProperties: false },
        ),
        response: { 200: Tokens, ...errorResponses() },
      },
    },
    async (request) => {
      const body = request.body as { device_id: string };
      await limiter.hit('guest', request.ip, config['auth.signup_address_budget'], window);
      const { user, created } = await repo.guest(body.device_id);
      await repo.audit(created ? 'guest_created' : 'guest_login', { userId: user.id, actorId: user.id, address: request.ip });
      return startSession(user);
    },
  );

  app.post(
    '/refresh',
    {
      schema: {
        tags,
        summary: 'Trade a refresh token for a new access token and its successor refresh token',
        description: 'A refresh token works once. Presenting a spent one revokes its whole session.',
        body: Type.Object({ refresh_token: Type.String({ minLength: 1, maxLength: 128 }) }, { additionalProperties: false }),
        response: { 200: Tokens, ...errorResponses('AUTH_REFRESH_INVALID') },
      },
    },
    async (request) => {
      const body = request.body as { refresh_token: string };
      await limiter.hit('refresh', request.ip, config['auth.refresh_address_budget'], 60);
      const r = await repo.rotate(body.refresh_token, new Date(ctx.now()));
      if (r.kind === 'reused') {
        metrics.refreshReuse.inc();
        await ctx.revocations.revoke([r.familyId]);
        request.log.warn({ user_id: r.userId, family_id: r.familyId }, 'spent refresh token presented again; session revoked');
      }
      if (r.kind !== 'ok') throw new AppError('AUTH_REFRESH_INVALID', 'refresh token is invalid, expired or revoked; sign in again');
      const user = await repo.byId(r.userId);
      if (!user) throw new AppError('AUTH_REFRESH_INVALID', 'refresh token is invalid, expired or revoked; sign in again');
      return {
        token_type: 'Bearer' as const,
        access_token: await accessToken(user, r.familyId),
        expires_in: accessTtl,
        refresh_token: r.token,
        refresh_expires_at: r.expiresAt.toISOString(),
        user: userView(user),
      };
    },
  );

  app.post(
    '/logout',
    {
      schema: {
        tags,
        summary: 'End this session, or every session of the account (`all: true`)',
        description: 'Refresh tokens stop working and access tokens of the ended sessions are refused at once.',
        security: BearerAuth,
        body: Type.Optional(Type.Object({ all: Type.Optional(Type.Boolean()) }, { additionalProperties: false })),
        response: { 204: Type.Null(), ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN') },
      },
    },
    async (request, reply) => {
      const who = await ctx.authenticate(request.headers.authorization);
      const all = (request.body as { all?: boolean } | undefined)?.all === true;
      const revoked = await repo.revoke(who.userId, all ? 'all' : who.sid, all ? 'logout_all' : 'logout', new Date(ctx.now()));
      await ctx.revocations.revoke(all ? [...new Set([...revoked, who.sid])] : [who.sid]);
      await repo.audit(all ? 'logout_all' : 'logout', {
        userId: who.userId,
        actorId: who.userId,
        address: request.ip,
        data: { sessions: revoked.length },
      });
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/me',
    {
      schema: {
        tags,
        summary: "The caller's profile",
        security: BearerAuth,
        response: { 200: User, ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'USER_NOT_FOUND') },
      },
    },
    async (request) => {
      const who = await ctx.authenticate(request.headers.authorization);
      const user = await repo.byId(who.userId);
      if (!user) throw new AppError('USER_NOT_FOUND', 'this account no longer exists');
      return userView(user);
    },
  );

  app.patch(
    '/me',
    {
      schema: {
        tags,
        summary: "Update the caller's profile",
        security: BearerAuth,
        body: Type.Object({ display_name: DisplayName }, { additionalProperties: false }),
        response: { 200: User, ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_FORBIDDEN', 'USER_NOT_FOUND') },
      },
    },
    async (request) => {
      const who = await ctx.authenticate(request.headers.authorization);
      if (!who.permissions.includes('write:profile')) throw new AppError('AUTH_FORBIDDEN', 'missing permission write:profile');
      const user = await repo.setDisplayName(who.userId, (request.body as { display_name: string }).display_name);
      if (!user) throw new AppError('USER_NOT_FOUND', 'this account no longer exists');
      return userView(user);
    },
  );

  app.post(
    '/upgrade',
    {
      schema: {
        tags,
        summary: 'Give a guest account an email and password (it becomes a player, keeping its data)',
        security: BearerAuth,
        body: Type.Object({ email: Email, password: Password }, { additionalProperties: false }),
        response: {
          200: Type.Object({ token_type: Type.Literal('Bearer'), access_token: Type.String(), expires_in: Type.Integer(), user: User }),
          ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_ALREADY_REGISTERED', 'AUTH_EMAIL_TAKEN', 'AUTH_BUSY'),
        },
      },
    },
    async (request) => {
      const who = await ctx.authenticate(request.headers.authorization);
      const body = request.body as { email: string; password: string };
      await limiter.hit('signup', request.ip, config['auth.signup_address_budget'], window);
      if ((await repo.byId(who.userId))?.email)
        throw new AppError('AUTH_ALREADY_REGISTERED', 'this account already has an email and password');
      const user = await repo.upgradeGuest(who.userId, body.email.trim().toLowerCase(), await hasher.hash(body.password));
      await repo.audit('upgrade', { userId: user.id, actorId: user.id, address: request.ip });
      return { token_type: 'Bearer' as const, access_token: await accessToken(user, who.sid), expires_in: accessTtl, user: userView(user) };
    },
  );
}
