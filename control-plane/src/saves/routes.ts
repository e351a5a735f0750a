import { Type } from 'typebox';
import { mayAccess, type Principal } from '../auth/roles.js';
import { AppError } from '../errors.js';
import type { App, ServiceContext } from '../http/app.js';
import { BearerAuth, errorResponses, UserId } from '../http/schemas.js';
import { BlobStore } from './blobs.js';
import { checksumOf, decodeSave, encodeSave } from './domain.js';
import { type CommitResult, type SaveMeta, SavesRepository } from './repository.js';

const Slot = Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$', description: 'Slot name: 1–64 of A-Z a-z 0-9 _ . -' });
const Version = Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER });
const Label = Type.String({ maxLength: 64, pattern: '^[\\x20-\\x7e]*$' });
const Meta = Type.Object({
  slot: Type.String(),
  version: Type.Integer(),
  size: Type.Integer({ description: 'Uncompressed bytes.' }),
  stored_size: Type.Integer({ description: 'Bytes stored (gzip).' }),
  checksum: Type.String({ description: 'sha256:<hex> of the uncompressed bytes; verified on every read.' }),
  device_id: Type.String(),
  game_version: Type.String(),
  engine_version: Type.String(),
  restored_from: Type.Union([Type.Integer(), Type.Null()]),
  created_at: Type.String({ format: 'date-time' }),
});
const Conflict = Type.Ref('ErrorBody', {
  description: 'SAVES_VERSION_CONFLICT: data.current is the current version (null if the slot does not exist).',
});
const PAGE_MAX = 100;
const Params = Type.Object({ user_id: UserId });
const SlotParams = Type.Object({ user_id: UserId, slot: Slot });

/** The saves service: versioned blobs per user and slot, under /api/v1/saves. */
export async function savesService(app: App, ctx: ServiceContext): Promise<void> {
  const { config, stores, metrics } = ctx;
  if (!stores.s3) throw new Error('saves service needs S3');
  const repo = new SavesRepository(stores.pg);
  const blobs = new BlobStore(stores.s3.client, stores.s3.bucket);
  const maxBytes = config['saves.max_bytes'];
  const limits = {
    quotaBytes: config['saves.quota_bytes'],
    maxSlots: config['saves.max_slots'],
    historyLimit: config['saves.history_limit'],
  };
  const base64Max = Math.ceil(maxBytes / 3) * 4;
  const tags = ['saves'];

  // Every saves route needs a caller: check the token before the body is read or validated, so an
  // anonymous client cannot make the server parse a large upload.
  const principals = new WeakMap<object, Principal>();
  app.addHook('onRequest', async (request) => {
    principals.set(request, await ctx.authenticate(request.headers.authorization));
  });

  function allowed(request: object, ownerId: string, permission: 'read:saves' | 'write:saves'): Principal {
    const who = principals.get(request);
    if (!who) throw new AppError('AUTH_REQUIRED', 'an access token is required (Authorization: Bearer …)');
    if (!mayAccess(who, ownerId, permission))
      throw new AppError('AUTH_FORBIDDEN', `not allowed to ${permission.replace(':', ' ')} of this user`);
    return who;
  }

  function settle(r: CommitResult): SaveMeta {
    if (r.kind === 'conflict') {
      metrics.saveConflicts.inc();
      throw new AppError('SAVES_VERSION_CONFLICT', r.current ? `the slot is at version ${r.current.version}` : 'the slot does not exist', {
        current: r.current,
      });
    }
    if (r.unreferenced.length > 0) void blobs.remove(r.unreferenced);
    return r.meta;
  }

  app.get(
    '/:user_id',
    {
      schema: {
        tags,
        summary: "List a user's save slots with their current metadata",
        security: BearerAuth,
        params: Params,
        querystring: Type.Object(
          { limit: Type.Integer({ minimum: 1, maximum: PAGE_MAX, default: 50 }), after: Type.Optional(Slot) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ saves: Type.Array(Meta), next_after: Type.Union([Type.String(), Type.Null()]) }),
          ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_FORBIDDEN'),
        },
      },
    },
    async (request) => {
      const { user_id } = request.params as { user_id: string };
      const q = request.query as { limit: number; after?: string };
      allowed(request, user_id, 'read:saves');
      const saves = await repo.list(user_id, q.after, q.limit);
      return { saves, next_after: saves.length === q.limit ? (saves.at(-1)?.slot ?? null) : null };
    },
  );

  app.get(
    '/:user_id/:slot',
    {
      schema: {
        tags,
        summary: 'Load a save (the current version, or `version`)',
        description: 'The checksum is verified before anything is sent; a corrupted blob is reported as SAVES_CORRUPTED, never served.',
        security: BearerAuth,
        params: SlotParams,
        querystring: Type.Object({ version: Type.Optional(Version) }, { additionalProperties: false }),
        response: {
          200: Type.Object({ meta: Meta, data: Type.String({ contentEncoding: 'base64' }) }),
          ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_FORBIDDEN', 'SAVES_NOT_FOUND', 'SAVES_CORRUPTED'),
        },
      },
    },
    async (request) => {
      const { user_id, slot } = request.params as { user_id: string; slot: string };
      const { version } = request.query as { version?: number };
      allowed(request, user_id, 'read:saves');
      const v = await repo.get(user_id, slot, version);
      if (!v)
        throw new AppError(
          'SAVES_NOT_FOUND',
          version === undefined ? `no save in slot ${slot}` : `version ${version} of slot ${slot} is not kept`,
        );
      let data: Buffer;
      try {
        let stored: Buffer;
        try {
          stored = await blobs.get(v.object_key, v.object_version);
        } catch (err) {
          // A version pruned (or a slot deleted) between reading its row and its blob is not
          // corruption: look again, and answer as if the row had not been found.
          const again = err instanceof AppError && err.code === 'SAVES_CORRUPTED' ? await repo.get(user_id, slot, version) : v;
          if (!again || again.object_version !== v.object_version) {
            throw new AppError(
              'SAVES_NOT_FOUND',
              version === undefined ? `no save in slot ${slot}` : `version ${version} of slot ${slot} is not kept`,
            );
          }
          throw err;
        }
        data = await decodeSave(stored, v.checksum, `${slot} v${v.version}`);
      } catch (err) {
        if (err instanceof AppError && err.code === 'SAVES_CORRUPTED') {
          metrics.saveCorrupt.inc();
          request.log.error({ user_id, slot, version: v.version, object_version: v.object_version }, err.message);
        }
        throw err;
      }
      const { object_key: _k, object_version: _o, ...meta } = v;
      return { meta, data: data.toString('base64') };
    },
  );

  app.put(
    '/:user_id/:slot',
    {
      bodyLimit: base64Max + 4096,
      schema: {
        tags,
        summary: 'Write a new version of a save',
        description:
          'Name the version this write replaces in `expected_version` (null: create only). A stale write gets 409 SAVES_VERSION_CONFLICT with the current metadata in data.current. A 200 means the save is durable.',
        security: BearerAuth,
        params: SlotParams,
        body: Type.Object(
          {
            data: Type.String({
              maxLength: base64Max,
              pattern: '^[A-Za-z0-9+/]*={0,2}$',
              contentEncoding: 'base64',
              description: `The save, base64; at most ${maxBytes} bytes decoded.`,
            }),
            expected_version: Type.Union([Version, Type.Null()]),
            checksum: Type.Optional(
              Type.String({
                pattern: '^sha256:[0-9a-f]{64}$',
                description: 'If given, the server refuses the write unless the bytes match.',
              }),
            ),
            device_id: Type.Optional(Label),
            game_version: Type.Optional(Label),
            engine_version: Type.Optional(Label),
          },
          { additionalProperties: false },
        ),
        response: {
          200: Meta,
          409: Conflict,
          ...errorResponses(
            'AUTH_REQUIRED',
            'AUTH_INVALID_TOKEN',
            'AUTH_FORBIDDEN',
            'USER_NOT_FOUND',
            'SAVES_TOO_LARGE',
            'SAVES_QUOTA_EXCEEDED',
          ),
        },
      },
    },
    async (request) => {
      const { user_id, slot } = request.params as { user_id: string; slot: string };
      const body = request.body as {
        data: string;
        expected_version: number | null;
        checksum?: string;
        device_id?: string;
        game_version?: string;
        engine_version?: string;
      };
      allowed(request, user_id, 'write:saves');
      const data = Buffer.from(body.data, 'base64');
      if (data.length > maxBytes)
        throw new AppError('SAVES_TOO_LARGE', `a save may hold at most ${maxBytes} bytes; this one has ${data.length}`, {
          max_bytes: maxBytes,
        });
      if (body.checksum !== undefined && body.checksum !== checksumOf(data)) {
        throw new AppError('VALIDATION_FAILED', 'body/checksum: does not match the data sent', {
          expected: body.checksum,
          actual: checksumOf(data),
        });
      }
      const enc = await encodeSave(data);
      const key = BlobStore.key(user_id, slot);
      const objectVersion = await blobs.put(key, enc.stored, enc.checksum);
      let r: CommitResult;
      try {
        r = await repo.commit(
          user_id,
          slot,
          body.expected_version,
          {
            objectKey: key,
            objectVersion,
            size: enc.size,
            storedSize: enc.stored.length,
            checksum: enc.checksum,
            deviceId: body.device_id ?? '',
            gameVersion: body.game_version ?? '',
            engineVersion: body.engine_version ?? '',
            restoredFrom: null,
          },
          limits,
        );
      } catch (err) {
        // Refused before commit (quota, unknown user): the upload is garbage. Any other error may
        // have come after a commit, so the blob stays.
        if (err instanceof AppError) void blobs.remove([{ key, versionId: objectVersion }]);
        throw err;
      }
      if (r.kind === 'conflict') void blobs.remove([{ key, versionId: objectVersion }]);
      return settle(r);
    },
  );

  app.delete(
    '/:user_id/:slot',
    {
      schema: {
        tags,
        summary: 'Delete a slot and all its versions',
        security: BearerAuth,
        params: SlotParams,
        querystring: Type.Object({ expected_version: Version }, { additionalProperties: false }),
        response: {
          204: Type.Null(),
          409: Conflict,
          ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_FORBIDDEN', 'USER_NOT_FOUND', 'SAVES_NOT_FOUND'),
        },
      },
    },
    async (request, reply) => {
      const { user_id, slot } = request.params as { user_id: string; slot: string };
      const { expected_version } = request.query as { expected_version: number };
      const who = allowed(request, user_id, 'write:saves');
      const r = await repo.remove(user_id, slot, expected_version);
      if (r.kind === 'conflict') settle(r);
      else if (r.unreferenced.length > 0) void blobs.remove(r.unreferenced);
      await stores.pg.query(`INSERT INTO audit_log (user_id, actor_id, action, address, data) VALUES ($1, $2, 'save_deleted', $3, $4)`, [
        user_id,
        who.userId,
        request.ip,
        { slot, version: expected_version },
      ]);
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/:user_id/:slot/history',
    {
      schema: {
        tags,
        summary: "A slot's kept versions, newest first",
        security: BearerAuth,
        params: SlotParams,
        querystring: Type.Object(
          { limit: Type.Integer({ minimum: 1, maximum: PAGE_MAX, default: 20 }), before: Type.Optional(Version) },
          { additionalProperties: false },
        ),
        response: {
          200: Type.Object({ versions: Type.Array(Meta), next_before: Type.Union([Type.Integer(), Type.Null()]) }),
          ...errorResponses('AUTH_REQUIRED', 'AUTH_INVALID_TOKEN', 'AUTH_FORBIDDEN'),
        },
      },
    },
    async (request) => {
      const { user_id, slot } = request.params as { user_id: string; slot: string };
      const q = request.query as { limit: number; before?: number };
      allowed(request, user_id, 'read:saves');
      const versions = await repo.history(user_id, slot, q.before, q.limit);
      return { versions, next_before: versions.length === q.limit ? (versions.at(-1)?.version ?? null) : null };
    },
  );

  app.post(
    '/:user_id/:slot/restore',
    {
      schema: {
        tags,
        summary: 'Make an old version current again (as a new version)',
        security: BearerAuth,
        params: SlotParams,
        body: Type.Object(
          { version: Version, expected_version: Version, device_id: Type.Optional(Label) },
          { additionalProperties: false },
        ),
        response: {
          200: Meta,
          409: Conflict,
          ...errorResponses(
            'AUTH_REQUIRED',
            'AUTH_INVALID_TOKEN',
            'AUTH_FORBIDDEN',
            'USER_NOT_FOUND',
            'SAVES_NOT_FOUND',
            'SAVES_QUOTA_EXCEEDED',
          ),
        },
      },
    },
    async (request) => {
      const { user_id, slot } = request.params as { user_id: string; slot: string };
      const body = request.body as { version: number; expected_version: number; device_id?: string };
      const who = allowed(request, user_id, 'write:saves');
      const meta = settle(
        await repo.commit(user_id, slot, body.expected_version, { restore: body.version, deviceId: body.device_id ?? '' }, limits),
      );
      await stores.pg.query(`INSERT INTO audit_log (user_id, actor_id, action, address, data) VALUES ($1, $2, 'save_restored', $3, $4)`, [
        user_id,
        who.userId,
        request.ip,
        { slot, from: body.version, version: meta.version },
      ]);
      return meta;
    },
  );
}
