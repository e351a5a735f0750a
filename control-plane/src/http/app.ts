import { randomUUID } from 'node:crypto';
import { type Logger, TrustedProxies } from '@aethex/runtime';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyError, type FastifyInstance, LogController } from 'fastify';
import type { JWTVerifyGetKey } from 'jose';
import { Type } from 'typebox';
import type { KeyRing } from '../auth/keys.js';
import type { Principal } from '../auth/roles.js';
import { authService } from '../auth/routes.js';
import { createAuthenticator, SessionRevocations } from '../auth/sessions.js';
import type { ControlPlaneConfig } from '../config.js';
import { AppError } from '../errors.js';
import { savesService } from '../saves/routes.js';
import type { Stores } from '../stores.js';
import { createMetrics, type Metrics } from './metrics.js';
import { ErrorBody, errorResponses } from './schemas.js';

/** A route as registered, with which parts of the request and response have schemas. */
export interface RouteEntry {
  method: string;
  url: string;
  schemas: string[];
  /** Statuses with a response schema. */
  responses: string[];
}

export type App = FastifyInstance & { routeTable: RouteEntry[] };

/** What a service plugin is given: the config, the stores and the shared parts. */
export interface ServiceContext {
  config: ControlPlaneConfig;
  stores: Stores;
  metrics: Metrics;
  log: Logger;
  /** The auth service's key ring; absent in a process that only verifies (saves alone). */
  keys?: KeyRing;
  revocations: SessionRevocations;
  /** Verifies the Authorization header; throws 401 AppErrors. */
  authenticate: (authorization: string | undefined) => Promise<Principal>;
  /** Milliseconds since the epoch. */
  now: () => number;
}

export interface AppDeps {
  stores: Stores;
  log: Logger;
  keys?: KeyRing;
  /** Public keys for a process without the key ring (from `auth.jwks_url`). */
  verifyKeys?: JWTVerifyGetKey;
  now?: () => number;
}

/**
 * Fastify's trustProxy for http.trust_proxy: a test of each hop (the TCP peer, then the
 * X-Forwarded-For entries from the right) that stops at the first untrusted one — the client.
 * False (no header read) when nobody is trusted.
 */
function trustedProxies(list: string): false | ((address: string) => boolean) {
  const proxies = TrustedProxies.parse(list === 'false' ? '' : list);
  return proxies.size === 0 ? false : (address) => proxies.trusts(address);
}

/**
 * Builds the control plane's Fastify app with the services named in `config.services` mounted
 * under /api/v1, plus /healthz, /readyz, /metrics and the OpenAPI document at /docs. Does not
 * listen; the caller does (or uses `inject`).
 */
export async function buildApp(config: ControlPlaneConfig, deps: AppDeps): Promise<App> {
  const now = deps.now ?? Date.now;
  const metrics = createMetrics();
  const app = Fastify({
    loggerInstance: deps.log,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config['http.body_limit_bytes'],
    requestTimeout: config['http.request_timeout_ms'],
    connectionTimeout: config['http.request_timeout_ms'],
    keepAliveTimeout: config['http.keep_alive_timeout_ms'],
    trustProxy: trustedProxies(config['http.trust_proxy']),
    return503OnClosing: true,
    exposeHeadRoutes: false,
    genReqId: () => randomUUID(),
    routerOptions: { maxParamLength: 200, ignoreTrailingSlash: false },
    ajv: { customOptions: { removeAdditional: false, coerceTypes: true, useDefaults: true, allErrors: false } },
  }).withTypeProvider<TypeBoxTypeProvider>() as unknown as App;

  app.decorate('routeTable', [] as RouteEntry[]);
  app.addHook('onRoute', (route) => {
    const schema = (route.schema ?? {}) as Record<string, unknown>;
    const schemas = ['params', 'querystring', 'body', 'response'].filter((k) => schema[k] !== undefined);
    const responses = Object.keys((schema.response as Record<string, unknown> | undefined) ?? {});
    for (const method of [route.method].flat()) app.routeTable.push({ method, url: route.url, schemas, responses });
  });
  app.addSchema(ErrorBody);

  app.setErrorHandler((err: FastifyError | AppError, request, reply) => {
    let e: AppError;
    if (err instanceof AppError) {
      e = err;
    } else if (err.validation) {
      const issues = err.validation.map((v) => ({
        where: `${err.validationContext ?? 'request'}${v.instancePath}`,
        message: v.message ?? '',
      }));
      e = new AppError('VALIDATION_FAILED', `${issues[0]?.where}: ${issues[0]?.message}`, { issues });
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      e = new AppError('PAYLOAD_TOO_LARGE', `request body is larger than this route's limit`);
    } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      e = new AppError('UNSUPPORTED_MEDIA_TYPE', 'unsupported Content-Type; send application/json');
    } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      e = new AppError('BAD_REQUEST', err.message);
    } else {
      request.log.error({ err, reqId: request.id, route: request.routeOptions.url }, 'request failed');
      e = new AppError('INTERNAL', 'internal error', { request_id: request.id });
    }
    if (e.status >= 500 && e.code !== 'INTERNAL') request.log.warn({ code: e.code, reqId: request.id }, e.message);
    if (e.retryAfterS !== undefined) reply.header('retry-after', String(e.retryAfterS));
    reply.status(e.status).send({ error: { code: e.code, message: e.message, ...(e.data ? { data: e.data } : {}) } });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });
  app.addHook('onResponse', async (request, reply) => {
    metrics.requestDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? 'unmatched', status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'AeThex control plane',
        version: '1.0.0',
        description: 'Auth and cloud saves. Errors are { error: { code, message, data } }.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const revocations = new SessionRevocations(
    deps.stores.redis,
    deps.stores.redisPrefix,
    config['auth.access_ttl_s'] + config['auth.clock_tolerance_s'],
  );
  const verifyKeys = deps.verifyKeys ?? deps.keys?.keySet();
  if (!verifyKeys) throw new Error('buildApp needs the key ring or verification keys');
  const authenticator = createAuthenticator({
    keys: verifyKeys,
    revocations,
    issuer: config['auth.issuer'],
    audience: config['auth.audience'],
    clockToleranceS: config['auth.clock_tolerance_s'],
    accessTtlS: config['auth.access_ttl_s'],
    nowS: () => Math.floor(now() / 1000),
  });
  const authenticate = async (authorization: string | undefined) => {
    try {
      return await authenticator(authorization);
    } catch (err) {
      if (err instanceof AppError) throw err;
      throw new AppError('UNAVAILABLE', 'session store unavailable; retry shortly', undefined, 1);
    }
  };
  const ctx: ServiceContext = { config, stores: deps.stores, metrics, log: deps.log, keys: deps.keys, revocations, authenticate, now };

  const hidden = { schema: { hide: true } };
  app.get('/healthz', hidden, async () => ({ status: 'ok' }));
  app.get('/readyz', hidden, async (_request, reply) => {
    try {
      await deps.stores.ping();
      return { status: 'ready' };
    } catch (err) {
      return reply.status(503).send({ error: { code: 'UNAVAILABLE', message: (err as Error).message } });
    }
  });
  app.get('/metrics', hidden, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  if (config.serviceList.includes('auth')) {
    if (!deps.keys) throw new Error('the auth service needs the key ring');
    await app.register(async (scope) => authService(scope as unknown as App, ctx), { prefix: '/api/v1/auth' });
    app.get(
      '/.well-known/jwks.json',
      {
        schema: {
          tags: ['auth'],
          summary: 'Public keys that verify access tokens',
          response: { 200: Type.Object({ keys: Type.Array(Type.Record(Type.String(), Type.Unknown())) }), ...errorResponses() },
        },
      },
      async (_request, reply) => {
        reply.header('cache-control', 'public, max-age=300');
        return deps.keys?.jwks;
      },
    );
  }
  if (config.serviceList.includes('saves')) {
    await app.register(async (scope) => savesService(scope as unknown as App, ctx), { prefix: '/api/v1/saves' });
  }
  return app;
}
