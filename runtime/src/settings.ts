import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { closest } from 'fastest-levenshtein';
import { parse } from 'yaml';
import { ConfigError, type Env } from './config.js';

/**
 * One setting: its type, range and default. Keys are dotted YAML paths (`engine.max_speed`).
 * `secret` marks a string that must never reach a terminal or a log in full: `'url'`, a URL that
 * may carry a password (errors show it with the password masked, see `redactUrl`); `'value'`, a
 * secret as a whole (errors never show it).
 */
export type SettingSpec =
  | { type: 'int'; default: number; min: number; max: number; doc: string }
  | { type: 'number'; default: number; min: number; max: number; doc: string }
  | { type: 'string'; default: string; pattern?: RegExp; patternDoc?: string; secret?: 'url' | 'value'; doc: string }
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

/** Where the query of a URL may carry a secret: `?password=`, `?token=`, `?secret=`, `?sslkey=`... */
const SECRET_PARAMETER = /pass|secret|token|key|auth|credential/i;

/**
 * `url` with the password of its userinfo and the values of password-like query parameters masked
 * (`postgres://aethex:***@db:5432/aethex`), for errors and logs; undefined when `url` does not
 * look like `scheme://...`, where nothing tells which part may be secret. The userinfo runs to
 * the last `@`: a password with an unescaped `/`, `?` or `#` (a malformed URL, but one people
 * write) is masked whole, at the price of masking too much when a query holds an `@`.
 */
export function redactUrl(url: string): string | undefined {
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(url)?.[0];
  if (scheme === undefined) return undefined;
  const at = url.lastIndexOf('@');
  const userinfo = at < 0 ? '' : url.slice(scheme.length, at + 1);
  const colon = userinfo.indexOf(':');
  // Userinfo without a colon may be a token alone (`https://TOKEN@host`): all of it is masked.
  const user = userinfo === '' ? '' : colon < 0 ? '***@' : `${userinfo.slice(0, colon)}:***@`;
  const [rest = '', query = '', fragment = ''] =
    /^([^?#]*)(\?[^#]*)?(#.*)?$/s.exec(url.slice(Math.max(scheme.length, at + 1)))?.slice(1) ?? [];
  const params = query.replace(/([?&])([^=&]*)=([^&]*)/g, (all, sep: string, name: string) =>
    SECRET_PARAMETER.test(name) ? `${sep}${name}=***` : all,
  );
  return `${scheme}${user}${rest}${params}${fragment}`;
}

/** `raw` as an error may show it: JSON, with what `spec.secret` marks secret left out. */
export function shownValue(spec: SettingSpec, raw: unknown): string {
  const secret = spec.type === 'string' ? spec.secret : undefined;
  if (secret === undefined) return JSON.stringify(raw);
  const url = secret === 'url' && typeof raw === 'string' ? redactUrl(raw) : undefined;
  return url === undefined ? 'a value not shown (secret)' : JSON.stringify(url);
}

/**
 * A number written in decimal, as operators write them: an optional sign, digits with an optional
 * fraction, an optional exponent. `Number()` alone also takes '' and whitespace (as 0), hex,
 * octal and binary, and Infinity.
 */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** A string or a YAML number as a finite number; undefined when it is not a decimal number. */
function decimal(raw: unknown): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) ? raw : undefined;
  if (typeof raw !== 'string' || !DECIMAL.test(raw.trim())) return undefined;
  const n = Number(raw.trim());
  return Number.isFinite(n) ? n : undefined;
}

/** An RFC 1123 host name: dot-separated labels of 1–63 letters, digits and inner hyphens, 253 at most. */
const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/**
 * What is wrong with a listen address `host:port`, or undefined when it is one Node can bind:
 * an IPv4 address, an IPv6 address in brackets, or a host name (an all-numeric dotted one is a
 * mistyped IPv4 address, not a name: the resolver fails on it only at start).
 */
function listenProblem(host: string, port: number): string | undefined {
  if (port > 65535) return `the port ${port} is past 65535`;
  if (host.startsWith('[')) return isIP(host.slice(1, -1)) === 6 ? undefined : `${host} is not an IPv6 address`;
  if (/^[0-9.]+$/.test(host)) return isIP(host) === 4 ? undefined : `${host} is not an IPv4 address`;
  return HOST_NAME.test(host) ? undefined : `${host} is not a host name (RFC 1123 labels of letters, digits and inner hyphens)`;
}

function parseValue(key: string, spec: SettingSpec, raw: unknown, source: string): unknown {
  const fail = (what: string): never => {
    throw new ConfigError(key, `${what}, got ${shownValue(spec, raw)}${source}`);
  };
  switch (spec.type) {
    case 'int':
    case 'number': {
      const n = decimal(raw) ?? Number.NaN;
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
      const expected = 'expected host:port (an IP address or a host name, and a port from 0 to 65535)';
      const m = typeof raw === 'string' ? /^(\[[^\]]*\]|[^:[\]]+):(\d{1,5})$/.exec(raw.trim()) : null;
      if (!m) return fail(expected);
      const [, host = '', digits] = m;
      const port = Number(digits);
      const problem = listenProblem(host, port);
      if (problem !== undefined) fail(`${expected}: ${problem}`);
      return { host: host.replace(/^\[|\]$/g, ''), port };
    }
    case 'rect': {
      let r: unknown = raw;
      if (typeof raw === 'string') {
        const texts = raw.split(',').map((p) => p.trim());
        const parts = texts.map(decimal);
        const bad = texts.length === 4 ? parts.indexOf(undefined) : -1;
        if (bad >= 0) fail(`expected "minX,minY,maxX,maxY" decimal numbers (part ${bad + 1} is ${JSON.stringify(texts[bad])})`);
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

/** Why a listen failed, by Node's error code, for an operator to act on. */
const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'the address is in use',
  EADDRNOTAVAIL: 'no interface of this machine has that address',
  EACCES: 'permission denied (a port below 1024 needs privileges)',
  ENOTFOUND: 'the host name does not resolve',
  EAI_AGAIN: 'the host name could not be resolved now',
};

/**
 * The message for a failed listen, naming the `listen` setting it was for (`gateway.bind_addr
 * (198.51.100.7:7777): no interface of this machine has that address (EADDRNOTAVAIL)`): Node's
 * error names only the address (`address`/`port`, or `hostname` when the name did not resolve).
 * A setting matches by its port (absent in the error for port 0) and its host (or by port alone
 * for a host name, which Node reports resolved); several that match are all named. Undefined when `err` is no listen error of
 * these settings (a store's ENOTFOUND, say).
 */
export function listenFailure(err: unknown, listeners: Record<string, { host: string; port: number }>): string | undefined {
  const e = err as NodeJS.ErrnoException & { address?: string; port?: number; hostname?: string };
  if (typeof e?.code !== 'string') return undefined;
  const keys = Object.entries(listeners)
    .filter(([, { host, port }]) =>
      e.syscall === 'getaddrinfo'
        ? e.hostname === host
        : (e.syscall === 'listen' || e.syscall === 'bind') && (e.port ?? 0) === port && (e.address === host || isIP(host) === 0),
    )
    .map(([key]) => key);
  if (keys.length === 0) return undefined;
  const at = keys.map((key) => {
    const { host, port } = listeners[key] as { host: string; port: number };
    return `${key} (${isIP(host) === 6 ? `[${host}]` : host}:${port})`;
  });
  return `${at.join(' or ')}: ${LISTEN_ERRORS[e.code] ?? e.message} (${e.code})`;
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
