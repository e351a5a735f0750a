import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { closest } from 'fastest-levenshtein';
import { type Document, isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { ConfigError, type Env } from './config.js';

/**
 * One setting: its type, range and default. Keys are dotted YAML paths (`engine.max_speed`).
 * `secret` marks a string that must never reach a terminal or a log in full: `'url'`, a URL that
 * may carry a password or a token (errors show it with its password and query values masked, see
 * `redactUrl`); `'value'`, a secret as a whole (errors never show it).
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

/**
 * A YAML node as a setting's raw value, read as the environment's text is: a scalar is the text
 * written (`0x10`, `0o20`, `.inf` and `True` stay text, which parseValue refuses as it refuses them
 * in a variable), quoted or not; an empty one (`key:`, `~`, `null`) is null; a mapping (the world
 * bounds' `{ min_x, ... }`) an object of those, a sequence an array. An alias stands for its
 * scalar; one of a mapping or a sequence is refused (nothing here needs one, and a value may not
 * expand without bound).
 */
function yamlValue(node: unknown, doc: Document, path: string): unknown {
  if (isAlias(node)) {
    const target = node.resolve(doc);
    if (!isScalar(target)) throw new ConfigError(path, 'an alias (*name) of a mapping or a list is not supported here');
    return yamlValue(target, doc, path);
  }
  if (isScalar(node)) {
    if (node.value === null || node.value === undefined) return null;
    return typeof node.value === 'string' ? node.value : (node.source ?? String(node.value));
  }
  if (isMap(node))
    return Object.fromEntries(node.items.map((pair) => [String(yamlValue(pair.key, doc, path)), yamlValue(pair.value, doc, path)]));
  if (isSeq(node)) return node.items.map((item) => yamlValue(item, doc, path));
  return null;
}

/**
 * The settings of a YAML document into `out`, by their dotted keys. Each key is a name nested by
 * the dots (`engine: { tick_rate_ms: 25 }`): a key with a dot in it (`engine.tick_rate_ms: 25`) is
 * refused — the file would say one setting twice, nested and dotted, with nothing to tell which
 * wins — and so is any key that names no setting or section (`__proto__`, `constructor` included).
 * YAML itself refuses a key given twice in one mapping.
 */
function flatten(node: unknown, path: string, out: Map<string, unknown>, schema: SettingsSchema, doc: Document): void {
  if (path !== '' && Object.hasOwn(schema, path)) {
    out.set(path, yamlValue(node, doc, path));
    return;
  }
  // A section given by an alias (`log: *common`) is the mapping it names; the path grows at each
  // step and only sections go deeper, so even an alias of an enclosing mapping ends.
  if (isAlias(node)) node = node.resolve(doc);
  const isSection = path === '' || Object.keys(schema).some((k) => k.startsWith(`${path}.`));
  if (!isMap(node)) throw new ConfigError(path || '(root)', isSection ? 'expected a mapping of settings' : 'unknown key');
  if (!isSection) throw new ConfigError(path, 'unknown key');
  for (const pair of node.items) {
    const name = yamlValue(pair.key, doc, path);
    if (typeof name !== 'string') throw new ConfigError(path || '(root)', `a key must be a name, got ${JSON.stringify(name)}`);
    const key = path === '' ? name : `${path}.${name}`;
    if (name.includes('.')) {
      throw new ConfigError(
        key,
        `a key with a dot: the file nests keys by their dots (${name.split('.').join(': { ')}: …${' }'.repeat(name.split('.').length - 1)})`,
      );
    }
    flatten(pair.value, key, out, schema, doc);
  }
}

/** The parts of a `scheme://...` URL that redactUrl tells apart, each with its delimiter. */
interface UrlParts {
  /** `postgres://` */
  scheme: string;
  /** `user:password@`, `token@` or '' */
  userinfo: string;
  /** The host and the path. */
  rest: string;
  /** `?a=1&b=2` or '' */
  query: string;
  /** `#...` or '' */
  fragment: string;
}

/**
 * `url` in its parts, or undefined when it does not look like `scheme://...`, where nothing tells
 * which part may be secret. The userinfo runs to the last `@`: a password with an unescaped `/`,
 * `?` or `#` (a malformed URL, but one people write) is taken whole, at the price of taking too
 * much when a query holds an `@`.
 */
function urlParts(url: string): UrlParts | undefined {
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(url)?.[0];
  if (scheme === undefined) return undefined;
  const at = url.lastIndexOf('@');
  const userinfo = at < 0 ? '' : url.slice(scheme.length, at + 1);
  const [rest = '', query = '', fragment = ''] =
    /^([^?#]*)(\?[^#]*)?(#.*)?$/s.exec(url.slice(Math.max(scheme.length, at + 1)))?.slice(1) ?? [];
  return { scheme, userinfo, rest, query, fragment };
}

/**
 * `url` with its secrets masked, for errors and logs: the password of its userinfo
 * (`postgres://aethex:***@db:5432/aethex`; userinfo without a colon may be a token alone, and is
 * masked whole), the value of every query parameter (`?sslmode=***&token=***`: a signed URL
 * carries its signature and token under any name — `sig`, `k`, `X-Amz-Signature` — so no name is
 * taken as harmless) and the fragment. Undefined when `url` does not look like `scheme://...`:
 * nothing tells which part of it may be secret. The one masking of a URL: `redactUrlsIn` masks
 * URLs inside a text with it.
 */
export function redactUrl(url: string): string | undefined {
  const parts = urlParts(url);
  if (parts === undefined) return undefined;
  const { scheme, userinfo, rest, query, fragment } = parts;
  const colon = userinfo.indexOf(':');
  const user = userinfo === '' ? '' : colon < 0 ? '***@' : `${userinfo.slice(0, colon)}:***@`;
  const params = query.replace(/([?&])([^&]*)/g, (all, sep: string, param: string) => {
    const eq = param.indexOf('=');
    if (eq < 0) return param === '' ? all : `${sep}***`;
    return eq === param.length - 1 ? all : `${sep}${param.slice(0, eq)}=***`;
  });
  return `${scheme}${user}${rest}${params}${fragment.length > 1 ? '#***' : fragment}`;
}

/**
 * What of `url` is secret, as written and percent-decoded: what redactUrl masks (the password or
 * token of its userinfo, every query value, the fragment), or all of it when it is no
 * `scheme://...` URL. Parts shorter than 4 characters are left out: masking every `1` of a message
 * would hide more than it protects.
 */
function secretParts(url: string): string[] {
  const parts = urlParts(url);
  let secrets: string[];
  if (parts === undefined) {
    secrets = [url];
  } else {
    const colon = parts.userinfo.indexOf(':');
    secrets = [parts.userinfo.slice(colon + 1, -1), parts.fragment.slice(1)];
    for (const param of parts.query.slice(1).split('&')) secrets.push(param.slice(param.indexOf('=') + 1));
  }
  const decoded = secrets.map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  return [...new Set([...secrets, ...decoded])].filter((s) => s.length >= 4).sort((a, b) => b.length - a.length);
}

/** A URL inside a text: a scheme, `://`, and what follows up to white space or a quote, less trailing punctuation. */
const URL_IN_TEXT = /[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s"'`<>]*[^\s"'`<>).,;:]/g;

/**
 * `text` — an error's message, which may quote the URL it failed on (fetch's `Request cannot be
 * constructed from a URL that includes credentials: http://user:password@...`) — with every URL
 * in it masked by redactUrl and, given `url` (a secret setting's value), every other appearance of
 * its secrets (`secretParts`) masked too. For any text that embeds another error's message.
 */
export function redactUrlsIn(text: string, url?: string): string {
  let out = text.replace(URL_IN_TEXT, (found) => redactUrl(found) ?? found);
  if (url !== undefined) for (const secret of secretParts(url)) out = out.replaceAll(secret, '***');
  return out;
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

/**
 * A value's text (a variable's, or a YAML scalar's as written: yamlValue) as a finite number;
 * undefined when it is not a decimal number. The one reading of a number, from either source.
 */
function decimal(raw: unknown): number | undefined {
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
      if (raw === 'true') return true;
      if (raw === 'false') return false;
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
      // "minX,minY,maxX,maxY" (the environment) or { min_x, min_y, max_x, max_y } (the file): four
      // decimal numbers either way.
      const o = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>) : undefined;
      const texts =
        typeof raw === 'string'
          ? raw.split(',').map((p) => p.trim())
          : o && Object.keys(o).sort().join(',') === 'max_x,max_y,min_x,min_y'
            ? [o.min_x, o.min_y, o.max_x, o.max_y]
            : [];
      if (texts.length !== 4) return fail('expected { min_x, min_y, max_x, max_y } numbers (or "minX,minY,maxX,maxY" in the environment)');
      const parts = texts.map(decimal);
      const bad = parts.indexOf(undefined);
      if (bad >= 0) {
        fail(
          typeof raw === 'string'
            ? `expected "minX,minY,maxX,maxY" decimal numbers (part ${bad + 1} is ${JSON.stringify(texts[bad])})`
            : `expected { min_x, min_y, max_x, max_y } decimal numbers (${['min_x', 'min_y', 'max_x', 'max_y'][bad]} is ${JSON.stringify(texts[bad])})`,
        );
      }
      const [minX, minY, maxX, maxY] = parts as number[];
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

/** A port number as Kubernetes writes one: decimal, 1 to 65535. */
const isPort = (value: string): boolean => /^[1-9]\d{0,4}$/.test(value) && Number(value) <= 65535;

/**
 * A service-link URL, `<proto>://<cluster IP>:<port>` (an IPv6 address in brackets, or bare from
 * kubelets before `net.JoinHostPort`): its protocol and port, or undefined.
 */
function linkUrl(value: string): { proto: string; port: string } | undefined {
  const m = /^(tcp|udp|sctp):\/\/(\[[^\]]+\]|.+):(\d+)$/.exec(value);
  if (!m || !isPort(m[3] as string) || isIP((m[2] as string).replace(/^\[(.*)\]$/, '$1')) === 0) return undefined;
  return { proto: m[1] as string, port: m[3] as string };
}

/**
 * The variables the kubelet sets for each Service with a cluster IP in a pod's namespace
 * (pkg/kubelet/envvars; a Service named `aethex-gameserver-ops` gives `AETHEX_GAMESERVER_OPS_PORT`,
 * under our prefix), each by its name's shape and what its value must then be. `<SVC>` is the
 * Service's name upper-cased, `-` as `_`; `<PORT>` a port number; `<PROTO>` TCP, UDP or SCTP.
 */
const SERVICE_LINKS: readonly [RegExp, (value: string, m: RegExpExecArray) => boolean][] = [
  // <SVC>_SERVICE_HOST=10.0.0.11
  [/._SERVICE_HOST$/, (v) => isIP(v) !== 0],
  // <SVC>_SERVICE_PORT=6379, and <SVC>_SERVICE_PORT_<PORT NAME>=6379 for each named port
  [/._SERVICE_PORT(_[A-Z0-9_]+)?$/, (v) => isPort(v)],
  // <SVC>_PORT=tcp://10.0.0.11:6379 (the first port)
  [/._PORT$/, (v) => linkUrl(v) !== undefined],
  // <SVC>_PORT_6379_TCP=tcp://10.0.0.11:6379
  [/._PORT_(\d+)_(TCP|UDP|SCTP)$/, (v, m) => linkUrl(v)?.port === m[1] && linkUrl(v)?.proto === m[2]?.toLowerCase()],
  // <SVC>_PORT_6379_TCP_PROTO=tcp, _PORT=6379, _ADDR=10.0.0.11
  [/._PORT_(\d+)_(TCP|UDP|SCTP)_PROTO$/, (v, m) => v === m[2]?.toLowerCase()],
  [/._PORT_(\d+)_(TCP|UDP|SCTP)_PORT$/, (v, m) => v === m[1] && isPort(v)],
  [/._PORT_(\d+)_(TCP|UDP|SCTP)_ADDR$/, (v) => isIP(v) !== 0],
];

/**
 * Whether `name=value` is a variable Kubernetes sets for a Service (SERVICE_LINKS): its name of
 * one of their shapes and its value of the form that shape has. A misspelt setting that merely
 * ends like one (`AETHEX_GAMESERVER_GATEWAY_PORT=7777`) is not.
 */
function isServiceLink(name: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  return SERVICE_LINKS.some(([shape, valid]) => {
    const m = shape.exec(name);
    return m !== null && valid(value, m);
  });
}

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
    if (!name.startsWith(`${prefix}_`) || knownSet.has(name) || isServiceLink(name, env[name])) continue;
    if (!ownsPrefix && !sections.some((section) => name.startsWith(`${section}_`))) continue;
    throw new ConfigError(name, `not a setting (did you mean ${closest(name, known)}?)`);
  }
}

/**
 * Reads settings from an optional YAML file, then from `<prefix>_<KEY>` environment variables
 * (which win), then defaults. A variable that is empty or only white space is unset: it neither
 * sets its key nor clears the file's value (Kubernetes' `value: ""` and a compose file's `KEY=`
 * leave the setting alone); an empty value in the file is refused where the setting's type has no
 * empty value (a number, a listen address...). Values from the file are read as the environment's
 * text (yamlValue), by the same parser. Unknown keys in the file or the environment (see `flatten`
 * and `refuseUnknownVariables`; `ownsPrefix` defaults to true), values of the wrong type and
 * values out of range throw a ConfigError naming the key, the allowed range and where the value
 * came from.
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
    // Read as a document, not as JavaScript values: each scalar's text is parsed as a variable's
    // would be (yamlValue), and keys are looked up only among the schema's own (flatten).
    const doc = parseDocument(text);
    const [error] = doc.errors;
    if (error !== undefined) throw new ConfigError(options.file, `not valid YAML: ${error.message.split('\n')[0]}`);
    if (doc.contents !== null) flatten(doc.contents, '', fromFile, schema, doc);
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
