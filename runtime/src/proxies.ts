import { BlockList, isIP } from 'node:net';
import parseForwarded from 'forwarded-parse';

/**
 * The request header a trusted proxy names its client in: `X-Forwarded-For` (what ingress-nginx,
 * Envoy, HAProxy's `option forwardfor` and the cloud load balancers write) or `Forwarded`
 * (RFC 7239: HAProxy's `option forwarded`, some CDNs). A server reads the one it is told to, never
 * both: a proxy that writes one passes the other on as the client wrote it.
 */
export const CLIENT_ADDRESS_HEADERS = ['x-forwarded-for', 'forwarded'] as const;
export type ClientAddressHeader = (typeof CLIENT_ADDRESS_HEADERS)[number];

/**
 * A `Forwarded` header's elements, as written, left to right: split at the commas outside quoted
 * strings (a quoted `for="[2001:db8::7]:443"` may hold anything, escaped quotes too). Read from
 * the right, where each proxy appended its own well-formed element: a quote the client left open
 * on the left only makes the client's own part one malformed element.
 */
function forwardedElements(value: string): string[] {
  const elements: string[] = [];
  let end = value.length;
  let quoted = false;
  for (let i = value.length - 1; i >= 0; i--) {
    const c = value[i];
    if (c === '"') {
      let backslashes = 0;
      while (i - 1 - backslashes >= 0 && value[i - 1 - backslashes] === '\\') backslashes++;
      if (backslashes % 2 === 0) quoted = !quoted;
    } else if (c === ',' && !quoted) {
      elements.push(value.slice(i + 1, end));
      end = i;
    }
  }
  elements.push(value.slice(0, end));
  return elements.reverse();
}

/**
 * The client addresses a header lists, left to right as proxies appended them, each as written:
 * an `X-Forwarded-For` entry, or the `for=` of a `Forwarded` element (unquoted; undefined for an
 * element that has none or is not well-formed, RFC 7239 section 4).
 */
function forwardedEntries(header: ClientAddressHeader, value: string): (string | undefined)[] {
  if (header === 'x-forwarded-for') return value.split(',').map((e) => e.trim());
  return forwardedElements(value).map((element) => {
    try {
      return parseForwarded(element.trim())[0]?.for;
    } catch {
      return undefined;
    }
  });
}

/**
 * One address of an `X-Forwarded-For` list or a `Forwarded` element's `for=` as proxies write them:
 * an IPv4 or IPv6 address, some with a port (`203.0.113.7:51234`, `[2001:db8::7]:443`) or an IPv6
 * one in brackets; the address alone, or undefined when the entry is none of these (`unknown`, an
 * obfuscated `_name`).
 */
function forwardedAddress(entry: string): string | undefined {
  if (isIP(entry) !== 0) return entry;
  const m = /^(?:\[([^\]]+)\]|([0-9.]+))(?::(\d{1,5}))?$/.exec(entry);
  if (!m || Number(m[3] ?? 0) > 65535) return undefined;
  const [address, version] = m[1] !== undefined ? [m[1], 6] : [m[2] as string, 4];
  // A bare IPv4 address was taken above: one without a port here is no address.
  return isIP(address) === version && (version === 6 || m[3] !== undefined) ? address : undefined;
}

/**
 * The proxies a server takes the client's address from (`X-Forwarded-For` or `Forwarded`) when
 * they are its TCP peer: a list of addresses and CIDR blocks. Anyone else's header is theirs to
 * write, so it is never read. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.5`, a dual-stack listener's view
 * of an IPv4 client) matches the IPv4 entries, and the other way round.
 */
export class TrustedProxies {
  private readonly list = new BlockList();
  /** Entries in the list; 0: nobody is trusted, and no header is read. */
  readonly size: number;

  private constructor(entries: readonly { address: string; prefix: number; family: 'ipv4' | 'ipv6' }[]) {
    for (const e of entries) this.list.addSubnet(e.address, e.prefix, e.family);
    this.size = entries.length;
  }

  /**
   * The proxies of a comma-separated list of addresses (`10.0.0.7`, `fd00::7`) and CIDR blocks
   * (`10.0.0.0/8`, `fd00::/8`); white space around an entry is ignored, the empty text is the empty
   * list. Throws an Error naming the first entry that is neither (an empty one too).
   */
  static parse(text: string): TrustedProxies {
    if (text.trim() === '') return new TrustedProxies([]);
    const entries = text.split(',').map((raw, i, all) => {
      const entry = raw.trim();
      const which = all.length > 1 ? ` (entry ${i + 1} of ${all.length})` : '';
      const bad = (why: string): never => {
        throw new Error(`${JSON.stringify(entry)}${which} ${why}`);
      };
      if (entry === '') return bad('is empty: a comma-separated list of IP addresses and CIDR blocks');
      const [address = '', prefixText, ...rest] = entry.split('/');
      const version = isIP(address);
      if (version === 0 || rest.length > 0) return bad('is not an IP address or a CIDR block (10.0.0.0/8, fd00::/8)');
      const bits = version === 4 ? 32 : 128;
      if (prefixText !== undefined && !/^\d{1,3}$/.test(prefixText)) return bad(`has no prefix length after the / (0 to ${bits})`);
      const prefix = prefixText === undefined ? bits : Number(prefixText);
      if (prefix > bits) return bad(`has a prefix length past ${bits}`);
      return { address, prefix, family: version === 4 ? ('ipv4' as const) : ('ipv6' as const) };
    });
    return new TrustedProxies(entries);
  }

  /** Whether `address` (a socket's `remoteAddress`) is one of the trusted proxies. */
  trusts(address: string | undefined): boolean {
    if (this.size === 0 || address === undefined) return false;
    const version = isIP(address);
    return version !== 0 && this.list.check(address, version === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * The client's address behind `peer`, a trusted proxy, from the header it names clients in
   * (`header`; `X-Forwarded-For` unless told otherwise): the right-most address that is not itself
   * a trusted proxy (each proxy appends the address it took the connection from, so what is left of
   * that is the client's to write); the left-most when all are. Undefined when there is no header
   * or it is malformed on the way from the right (an entry that is no address: `unknown`, an
   * obfuscated `_name`, a `Forwarded` element without `for=` or not well-formed): the caller then
   * counts the proxy itself.
   */
  forwardedClient(value: string | string[] | undefined, header: ClientAddressHeader = 'x-forwarded-for'): string | undefined {
    if (value === undefined) return undefined;
    const entries = forwardedEntries(header, Array.isArray(value) ? value.join(',') : value);
    let client: string | undefined;
    for (let i = entries.length - 1; i >= 0; i--) {
      const entry = entries[i];
      client = entry === undefined ? undefined : forwardedAddress(entry);
      if (client === undefined || !this.trusts(client)) return client;
    }
    return client;
  }
}

/** The 12 bytes a PROXY protocol v2 header starts with. */
const PROXY_V2_SIGNATURE = Uint8Array.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** What a PROXY protocol v1 header starts with. */
const PROXY_V1_START = Uint8Array.from([0x50, 0x52, 0x4f, 0x58, 0x59, 0x20]); // 'PROXY '
/** The longest v1 header, CRLF included (the protocol's own bound). */
export const PROXY_V1_MAX_BYTES = 107;

/**
 * What `readProxyHeader` found at the start of a connection: `more` bytes needed to tell; an
 * `error` (not a PROXY header, or a malformed one); or a header of `length` bytes whose `source` is
 * the client's address — undefined when the header names none (v1 `UNKNOWN`, a v2 `LOCAL` command
 * such as a load balancer's health check, a v2 `UNSPEC` or `UNIX` address): the connection is then
 * the proxy's own.
 */
export type ProxyHeader =
  | { state: 'more' }
  | { state: 'error'; error: string }
  | { state: 'done'; length: number; source: string | undefined };

/** Whether `buf` begins with `prefix`, or is a beginning of it (`partial`). */
function startsWith(buf: Uint8Array, prefix: Uint8Array): 'yes' | 'partial' | 'no' {
  const n = Math.min(buf.length, prefix.length);
  for (let i = 0; i < n; i++) if (buf[i] !== prefix[i]) return 'no';
  return buf.length >= prefix.length ? 'yes' : 'partial';
}

/** An IPv6 address from 16 bytes, as Node writes one (`::` for the longest run of zero groups, `::ffff:a.b.c.d` when mapped). */
function ipv6Text(b: Uint8Array, at: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(((b[at + 2 * i] as number) << 8) | (b[at + 2 * i + 1] as number));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff)
    return `::ffff:${b[at + 12]}.${b[at + 13]}.${b[at + 14]}.${b[at + 15]}`;
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLength).join(':')}`;
}

/** The v1 header line `line` (without its CRLF): the client's address, or an error. */
function proxyV1Source(line: string): { source: string | undefined } | { error: string } {
  const parts = line.split(' ');
  if (parts[1] === 'UNKNOWN') return { source: undefined };
  if (parts.length !== 6 || (parts[1] !== 'TCP4' && parts[1] !== 'TCP6'))
    return {
      error: 'PROXY v1 header is not "PROXY TCP4|TCP6 <source> <destination> <source port> <destination port>" nor "PROXY UNKNOWN"',
    };
  const version = parts[1] === 'TCP4' ? 4 : 6;
  const [source, destination, sourcePort, destinationPort] = parts.slice(2) as [string, string, string, string];
  if (isIP(source) !== version || isIP(destination) !== version) return { error: `PROXY v1 header's addresses are not both IPv${version}` };
  for (const port of [sourcePort, destinationPort])
    if (!/^(0|[1-9]\d{0,4})$/.test(port) || Number(port) > 65535)
      return { error: `PROXY v1 header's port ${JSON.stringify(port)} is not 0 to 65535` };
  return { source };
}

/**
 * Reads a PROXY protocol header (v1 text or v2 binary, https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt)
 * at the start of `buf`, the first bytes a proxy sent on a connection. Parsed here rather than with
 * an npm parser: what a server needs is where the header ends, while the bytes after it are still
 * arriving — the parsers on the registry take a complete header, and proxy-protocol-js returns a v2
 * header's TLVs and the client's first bytes as one.
 */
export function readProxyHeader(buf: Uint8Array): ProxyHeader {
  const v2 = startsWith(buf, PROXY_V2_SIGNATURE);
  const v1 = startsWith(buf, PROXY_V1_START);
  if (v2 === 'partial' || v1 === 'partial') return { state: 'more' };
  if (v1 === 'yes') {
    const end = Math.min(buf.length, PROXY_V1_MAX_BYTES);
    for (let i = PROXY_V1_START.length; i < end - 1; i++) {
      if (buf[i] === 0x0d && buf[i + 1] === 0x0a) {
        let line = '';
        for (let k = 0; k < i; k++) {
          const c = buf[k] as number;
          if (c < 0x20 || c > 0x7e) return { state: 'error', error: 'PROXY v1 header holds a byte that is not printable ASCII' };
          line += String.fromCharCode(c);
        }
        const r = proxyV1Source(line);
        return 'error' in r ? { state: 'error', error: r.error } : { state: 'done', length: i + 2, source: r.source };
      }
    }
    return buf.length >= PROXY_V1_MAX_BYTES
      ? { state: 'error', error: `PROXY v1 header has no CRLF within ${PROXY_V1_MAX_BYTES} bytes` }
      : { state: 'more' };
  }
  if (v2 === 'no') return { state: 'error', error: 'the connection does not start with a PROXY protocol header (v1 or v2)' };
  if (buf.length < 16) return { state: 'more' };
  const versionCommand = buf[12] as number;
  if (versionCommand >> 4 !== 2) return { state: 'error', error: `PROXY v2 header has version ${versionCommand >> 4}, not 2` };
  const command = versionCommand & 0x0f;
  if (command > 1) return { state: 'error', error: `PROXY v2 header has command ${command}, not LOCAL (0) or PROXY (1)` };
  const family = (buf[13] as number) >> 4;
  if (family > 3) return { state: 'error', error: `PROXY v2 header has address family ${family}, not 0 to 3` };
  const length = 16 + (((buf[14] as number) << 8) | (buf[15] as number));
  const needs = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0;
  if (length - 16 < needs)
    return { state: 'error', error: `PROXY v2 header's address block is ${length - 16} bytes, under the ${needs} its family needs` };
  if (buf.length < length) return { state: 'more' };
  if (command === 0 || family === 0 || family === 3) return { state: 'done', length, source: undefined };
  // A connection of ours is a stream: a client address of a datagram one is no client of it.
  const transport = (buf[13] as number) & 0x0f;
  if (transport !== 1) return { state: 'error', error: `PROXY v2 header's transport is ${transport}, not STREAM (1)` };
  const source = family === 1 ? `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}` : ipv6Text(buf, 16);
  return { state: 'done', length, source };
}
