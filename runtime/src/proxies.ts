import { BlockList, isIP } from 'node:net';

/**
 * One address of an `X-Forwarded-For` list as proxies write them: an IPv4 or IPv6 address, some
 * with a port (`203.0.113.7:51234`, `[2001:db8::7]:443`) or an IPv6 one in brackets; the address
 * alone, or undefined when the entry is none of these.
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
 * The proxies a server takes the client's address from (`X-Forwarded-For`) when they are its TCP
 * peer: a list of addresses and CIDR blocks. Anyone else's `X-Forwarded-For` is theirs to write,
 * so it is never read. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.5`, a dual-stack listener's view
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
   * The client's address behind `peer`, a trusted proxy, from the `X-Forwarded-For` it sent: the
   * right-most address that is not itself a trusted proxy (each proxy appends the address it took
   * the connection from, so what is left of that is the client's to write); the left-most when all
   * are. Undefined when there is no header or it is malformed (an entry that is no address, on the
   * way from the right): the caller then counts the proxy itself.
   */
  forwardedClient(forwardedFor: string | string[] | undefined): string | undefined {
    if (forwardedFor === undefined) return undefined;
    const entries = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
    let client: string | undefined;
    for (let i = entries.length - 1; i >= 0; i--) {
      client = forwardedAddress((entries[i] as string).trim());
      if (client === undefined || !this.trusts(client)) return client;
    }
    return client;
  }
}
