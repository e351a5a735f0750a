import { readFileSync } from 'node:fs';
import { closest } from 'fastest-levenshtein';
import { parse } from 'yaml';
import { ConfigError, type Env } from './config.js';

/** One setting: its type, range and default. Keys are dotted YAML paths (`engine.max_speed`). */
export type SettingSpec =
  | { type: 'int'; default: number; min: number; max: number; doc: string }
  | { type: 'number'; default: number; min: number; max: number; doc: string }
  | { type: 'string'; default: string; pattern?: RegExp; patternDoc?: string; doc: string }
  | { type: 'enum'; default: string; values: readonly string[]; doc: string }
  | { type: 'bool'; default: boolean; doc: string }
  | { type: 'listen'; default: string; doc: string }
  | { type: 'rect'; default: Rect; doc: string };

export interface Rect {
  minX: number;
  minY: number;
  maxX: number;
  maxY: number;
}

export type SettingsSchema = Record<string, SettingSpec>;

type ValueOf<S extends SettingSpec> = S extends { type: 'enum'; values: readonly (infer V)[] }
  ? V
  : S extends { type: 'int' | 'number' }
    ? number
    : S extends { type: 'bool' }
      ? boolean
      : S extends { type: 'listen' }
        ? { host: string; port: number }
        : S extends { type: 'rect' }
          ? Rect
          : string;

export type Settings<T extends SettingsSchema> = { [K in keyof T]: ValueOf<T[K]> };

/** The environment variable that overrides a key: `engine.max_speed` → `AETHEX_GAMESERVER_ENGINE_MAX_SPEED`. */
export function envName(prefix: string, key: string): string {
  return `${prefix}_${key.replaceAll('.', '_').toUpperCase()}`;
}

function flatten(value: unknown, path: string, out: Map<string, unknown>, schema: SettingsSchema): void {
  if (path !== '' && path in schema) {
    out.set(path, value);
    return;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const isSection = path === '' || Object.keys(schema).some((k) => k.startsWith(`${path}.`));
    throw new ConfigError(path || '(root)', isSection ? 'expected a mapping of settings' : 'unknown key');
  }
  for (const [k, v] of Object.entries(value)) flatten(v, path === '' ? k : `${path}.${k}`, out, schema);
}

function parseValue(key: string, spec: SettingSpec, raw: unknown, source: string): unknown {
  const fail = (what: string): never => {
    throw new ConfigError(key, `${what}, got ${JSON.stringify(raw)}${source}`);
  };
  switch (spec.type) {
    case 'int':
    case 'number': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : Number.NaN;
      const kind = spec.type === 'int' ? 'an integer' : 'a number';
      if (!Number.isFinite(n) || (spec.type === 'int' && !Number.isInteger(n)) || n < spec.min || n > spec.max) {
        fail(`expected ${kind} from ${spec.min} to ${spec.max}`);
      }
      return n;
    }
    case 'bool':
      if (raw === true || raw === 'true') return true;
      if (raw === false || raw === 'false') return false;
      return fail('expected true or false');
    case 'enum':
      if (typeof raw !== 'string' || !spec.values.includes(raw)) fail(`expected one of ${spec.values.join(', ')}`);
      return raw;
    case 'string':
      if (typeof raw !== 'string') fail('expected a string');
      if (spec.pattern && !spec.pattern.test(raw as string)) fail(`expected ${spec.patternDoc ?? spec.pattern.source}`);
      return raw;
    case 'listen': {
      const m = typeof raw === 'string' ? /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(raw.trim()) : null;
      const host = m?.[1];
      const port = Number(m?.[2]);
      if (host === undefined || port > 65535) return fail('expected host:port with a port from 0 to 65535');
      return { host: host.replace(/^\[|\]$/g, ''), port };
    }
    case 'rect': {
      let r: unknown = raw;
      if (typeof raw === 'string') {
        const parts = raw.split(',').map((p) => Number(p.trim()));
        r = parts.length === 4 ? { min_x: parts[0], min_y: parts[1], max_x: parts[2], max_y: parts[3] } : undefined;
      }
      const o = r as Record<string, unknown> | undefined;
      const nums = o && typeof o === 'object' ? [o.min_x, o.min_y, o.max_x, o.max_y] : [];
      const keys = o && typeof o === 'object' ? Object.keys(o).sort().join(',') : '';
      if (keys !== 'max_x,max_y,min_x,min_y' || !nums.every((v) => typeof v === 'number' && Number.isFinite(v))) {
        fail('expected { min_x, min_y, max_x, max_y } numbers (or "minX,minY,maxX,maxY" in the environment)');
      }
      const [minX, minY, maxX, maxY] = nums as number[];
      if (!((minX as number) < (maxX as number) && (minY as number) < (maxY as number))) fail('expected min_x < max_x and min_y < max_y');
      return { minX, minY, maxX, maxY };
    }
  }
}

/**
 * The variables Kubernetes sets for each Service in a pod's namespace (`<NAME>_SERVICE_HOST`,
 * `<NAME>_PORT_7700_TCP_ADDR`, ...): a Service named `aethex-auth` gives `AETHEX_AUTH_PORT`. Not
 * settings, whatever their prefix.
 */
const SERVICE_LINK = /_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT|PORT_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)$/;

/**
 * Refuses a `<prefix>_*` variable that names no setting: a misspelt one would otherwise leave
 * its setting at the default without a word (a shard meant for PostgreSQL running on local files).
 * `ownsPrefix`: every variable with the prefix is one of ours; otherwise (a prefix shared with
 * other programs) only those under one of the schema's sections.
 */
function refuseUnknownVariables(schema: SettingsSchema, prefix: string, env: Env, ownsPrefix: boolean): void {
  const known = Object.keys(schema).map((key) => envName(prefix, key));
  const knownSet = new Set(known);
  const sections = [...new Set(Object.keys(schema).map((key) => envName(prefix, key.split('.')[0] as string)))];
  for (const name of Object.keys(env)) {
    if (!name.startsWith(`${prefix}_`) || knownSet.has(name) || SERVICE_LINK.test(name)) continue;
    if (!ownsPrefix && !sections.some((section) => name.startsWith(`${section}_`))) continue;
    throw new ConfigError(name, `not a setting (did you mean ${closest(name, known)}?)`);
  }
}

/**
 * Reads settings from an optional YAML file, then from `<prefix>_<KEY>` environment variables
 * (which win), then defaults. Unknown keys in the file or the environment (see
 * `refuseUnknownVariables`; `ownsPrefix` defaults to true), values of the wrong type and values
 * out of range throw a ConfigError naming the key, the allowed range and where the value came
 * from.
 */
export function loadSettings<T extends SettingsSchema>(
  schema: T,
  options: { prefix: string; env: Env; file?: string; ownsPrefix?: boolean },
): Settings<T> {
  refuseUnknownVariables(schema, options.prefix, options.env, options.ownsPrefix ?? true);
  const fromFile = new Map<string, unknown>();
  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new ConfigError(options.file, `cannot read the configuration file (${(err as NodeJS.ErrnoException).code ?? err})`);
    }
    let doc: unknown;
    try {
      doc = parse(text) ?? {};
    } catch (err) {
      throw new ConfigError(options.file, `not valid YAML: ${(err as Error).message.split('\n')[0]}`);
    }
    flatten(doc, '', fromFile, schema);
  }
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(schema)) {
    const variable = envName(options.prefix, key);
    const fromEnv = options.env[variable];
    if (fromEnv !== undefined && fromEnv.trim() !== '') {
      out[key] = parseValue(key, spec, fromEnv.trim(), ` (from ${variable})`);
    } else if (fromFile.has(key)) {
      out[key] = parseValue(key, spec, fromFile.get(key), ` (from ${options.file})`);
    } else {
      out[key] = spec.type === 'listen' ? parseValue(key, spec, spec.default, ' (default)') : spec.default;
    }
  }
  return out as Settings<T>;
}
