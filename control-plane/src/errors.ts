/**
 * The catalogue of error codes the control plane answers with. Codes are stable API: clients
 * branch on them, so a code is never renamed or reused for another meaning.
 */
export const ERRORS = {
  BAD_REQUEST: 400,
  VALIDATION_FAILED: 400,
  AUTH_REQUIRED: 401,
  AUTH_INVALID_TOKEN: 401,
  AUTH_INVALID_CREDENTIALS: 401,
  AUTH_REFRESH_INVALID: 401,
  AUTH_FORBIDDEN: 403,
  NOT_FOUND: 404,
  USER_NOT_FOUND: 404,
  SAVES_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  AUTH_EMAIL_TAKEN: 409,
  AUTH_ALREADY_REGISTERED: 409,
  SAVES_VERSION_CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  SAVES_TOO_LARGE: 413,
  SAVES_QUOTA_EXCEEDED: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SAVES_CORRUPTED: 500,
  UNAVAILABLE: 503,
  AUTH_BUSY: 503,
} as const;

export type ErrorCode = keyof typeof ERRORS;

/**
 * A failure the client can act on. Domain code throws these; one error handler turns them into
 * `{ "error": { "code", "message", "data" } }` with the catalogue's status. `retryAfterS` becomes
 * a Retry-After header.
 */
export class AppError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly data?: Record<string, unknown>,
    readonly retryAfterS?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'AppError';
    this.status = ERRORS[code];
  }
}
