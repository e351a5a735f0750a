/**
 * Thrown when a configuration value is missing or out of range. `key` names the setting exactly as
 * the operator wrote it (a YAML path, an environment variable or a file), so the message can be
 * acted on.
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
