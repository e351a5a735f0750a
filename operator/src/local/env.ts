import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, type Env, LOOPBACK_SHARD_ENV } from '@aethex/runtime';

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const GS = 'AETHEX_GAMESERVER_';

/** Set on every shard the local runtime starts: its shard directory. Lets a later run recognise a shard left behind. */
export const SHARD_MARKER = 'AETHEX_LOCAL_SHARD_DIR';

/**
 * Reads the `local.env` setting: a JSON object of variable names to string (or number, boolean)
 * values. It may carry a shard's secrets (links.secret, a database URL), so errors name what is
 * wrong and where, never a value: V8's JSON.parse message quotes the text.
 */
export function parseEnvSetting(value: string, key = 'local.env'): Record<string, string> {
  if (value.trim() === '') return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (err) {
    const at = /at position \d+/.exec((err as Error).message)?.[0];
    throw new ConfigError(key, `not valid JSON${at ? ` (${at})` : ''}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new ConfigError(key, 'expected a JSON object of variable names to values');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parsed)) {
    if (!NAME.test(k)) throw new ConfigError(key, `${JSON.stringify(k)} is not a variable name`);
    if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
      throw new ConfigError(
        key,
        `${k}: expected a string, number or boolean, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : 'an object'}`,
      );
    }
    out[k] = String(v);
  }
  return out;
}

export interface ShardEnvInput {
  /** The operator's own environment. */
  parentEnv: Env;
  /** The DesiredPod's container env: the shard's AETHEX_GAMESERVER_* settings, then template.env. */
  podEnv: readonly { name: string; value?: string; valueFrom?: unknown }[];
  /** `local.env`. */
  extraEnv: Readonly<Record<string, string>>;
  gatewayPort: number;
  opsPort: number;
  persistenceDirectory: string;
  shardDirectory: string;
  /** The development public key (PEM), asked for only when nothing else gives the shard a join-token key. */
  devPublicKey: () => string;
}

/**
 * A local shard's environment, later entries winning: the operator's environment without its
 * AETHEX_GAMESERVER_* and AETHEX_OPERATOR_* variables; the pod's env (values only — `valueFrom`
 * needs the API server and is skipped); the operator's own AETHEX_GAMESERVER_AUTH_* (passed
 * through); `local.env`; unless set by then, `LOOPBACK_SHARD_ENV` (no per-address limits: every
 * client is on 127.0.0.1); then the local listen addresses (127.0.0.1), snapshot directory and an
 * empty namespace. With neither auth.public_key nor auth.jwks_url set by then, the development
 * key's public half.
 */
export function shardProcessEnv(input: ShardEnvInput): { env: Record<string, string>; skipped: string[]; devKey: boolean } {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(input.parentEnv)) {
    if (v !== undefined && !k.startsWith(GS) && !k.startsWith('AETHEX_OPERATOR_')) env[k] = v;
  }
  const skipped: string[] = [];
  for (const e of input.podEnv) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom !== undefined) skipped.push(e.name);
    else env[e.name] = '';
  }
  for (const [k, v] of Object.entries(input.parentEnv)) if (v !== undefined && k.startsWith(`${GS}AUTH_`)) env[k] = v;
  Object.assign(env, input.extraEnv);
  for (const [k, v] of Object.entries(LOOPBACK_SHARD_ENV)) env[k] ??= v;
  env[`${GS}GATEWAY_BIND_ADDR`] = `127.0.0.1:${input.gatewayPort}`;
  env[`${GS}OPS_BIND_ADDR`] = `127.0.0.1:${input.opsPort}`;
  env[`${GS}PERSISTENCE_DIRECTORY`] = input.persistenceDirectory;
  // Local worlds all live in one file and one directory: no namespace in their keys or join tokens.
  env[`${GS}SHARD_NAMESPACE`] = '';
  env[SHARD_MARKER] = input.shardDirectory;
  const devKey = !env[`${GS}AUTH_PUBLIC_KEY`]?.trim() && !env[`${GS}AUTH_JWKS_URL`]?.trim();
  if (devKey) env[`${GS}AUTH_PUBLIC_KEY`] = input.devPublicKey();
  return { env, skipped, devKey };
}

/**
 * The development join-signing key in `directory`: made once (Ed25519, private half readable only
 * by its owner) and kept, so tokens signed with it stay good across runs. Returns the public half
 * (SPKI PEM) and the private key's path.
 */
export function developmentKey(directory: string): { publicKeyPem: string; privateKeyFile: string } {
  const privateKeyFile = join(directory, 'join-signing-key.pem');
  if (!existsSync(privateKeyFile)) {
    mkdirSync(directory, { recursive: true });
    const keys = generateKeyPairSync('ed25519');
    writeFileSync(privateKeyFile, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  }
  const publicKeyPem = createPublicKey(readFileSync(privateKeyFile, 'utf8')).export({ type: 'spki', format: 'pem' }).toString();
  return { publicKeyPem, privateKeyFile };
}
