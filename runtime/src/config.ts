/**
 * Thrown when a configuration value is missing or out of range. `key` names the setting exactly as
 * the operator wrote it (an environment variable or a YAML path), so the message can be acted on.
 */
export class ConfigError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(`${key}: ${message}`);
    this.name = 'ConfigError';
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

/** Reads an integer setting; absent or empty gives `fallback`; anything outside [min, max] throws. */
export function intSetting(env: Env, key: string, fallback: number, min: number, max: number): number {
  const raw = env[key];
  if (raw === undefined || raw.trim() === '') return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(key, `expected an integer from ${min} to ${max}, got '${raw}'`);
  const value = Number(raw.trim());
  if (value < min || value > max) throw new ConfigError(key, `expected an integer from ${min} to ${max}, got ${value}`);
  return value;
}

/** Reads a string setting that must be one of `allowed`; absent or empty gives `fallback`. */
export function enumSetting<T extends string>(env: Env, key: string, fallback: T, allowed: readonly T[]): T {
  const raw = env[key];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = raw.trim() as T;
  if (!allowed.includes(value)) throw new ConfigError(key, `expected one of ${allowed.join(', ')}, got '${raw}'`);
  return value;
}

/** Reads a `host:port` listen address; the port may be 0 (any free port). */
export function listenSetting(env: Env, key: string, fallback: string): { host: string; port: number } {
  const raw = (env[key] ?? '').trim() || fallback;
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port > 65535) throw new ConfigError(key, `expected host:port with a port from 0 to 65535, got '${raw}'`);
  return { host: (match[1] as string).replace(/^\[|\]$/g, ''), port };
}
