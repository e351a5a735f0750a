import { type TSchema, Type } from 'typebox';
import { ERRORS, type ErrorCode } from '../errors.js';

/** The one error shape: `{ "error": { "code", "message", "data" } }`. */
export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable error code, e.g. SAVES_VERSION_CONFLICT' }),
      message: Type.String(),
      data: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    }),
  },
  { $id: 'ErrorBody' },
);

/**
 * Response schemas for the error statuses a route can answer, from the codes it may throw (plus
 * 400, 429 and 500, which any route can give).
 */
export function errorResponses(...codes: ErrorCode[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = {};
  for (const code of ['VALIDATION_FAILED', 'RATE_LIMITED', 'INTERNAL', 'UNAVAILABLE', ...codes] as ErrorCode[]) {
    out[ERRORS[code]] = Type.Ref('ErrorBody');
  }
  return out;
}

// Canonical lower-case form only: ids are compared as strings for authorization and used in object keys.
export const UserId = Type.String({
  pattern: '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$',
  description: 'A user id (UUID, lower case).',
});
export const BearerAuth = [{ bearer: [] }];
