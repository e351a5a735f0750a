import { type DestinationStream, type Logger, pino } from 'pino';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * The one way a deployable makes its logger: JSON lines with `service` on every record, and the
 * fields that may carry secrets (tokens, passwords, authorization headers) censored wherever they
 * appear one or two levels deep, and the text a URL error could not parse.
 */
export function createLogger(service: string, level: LogLevel = 'info', destination?: DestinationStream): Logger {
  const secretKeys = ['password', 'token', 'join_token', 'resume_token', 'refresh_token', 'secret', 'authorization'];
  // Node's URL errors (ERR_INVALID_URL) carry the whole text they could not parse as `input`: a
  // database or Redis URL with its password.
  const redact = [...secretKeys.flatMap((k) => [k, `*.${k}`, `*.*.${k}`]), 'err.input', '*.err.input'];
  return pino({ level, base: { service }, redact: { paths: redact, censor: '[redacted]' } }, destination);
}

export type { Logger };
